import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

# Property tests draw their examples deterministically, so a CI run is reproducible.
settings.register_profile("ibscope", derandomize=True, deadline=None)
settings.load_profile("ibscope")

torch.set_num_threads(int(os.environ.get("IBSCOPE_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $IBSCOPE_DATA); tests that need it skip with a reason when absent."""
    from ibscope.data import data_dir

    d = data_dir()
    if not d.is_dir():
        pytest.skip(f"shared data directory {d} not present (set IBSCOPE_DATA)")
    return d


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: tiny networks, and references computed on one thread (a
    reduction's split can move the last bits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _fresh_diagnostic_warnings():
    """Each test is its own 'run': diagnostic flags warn again (no state leaks between tests)."""
    from ibscope.estimators import reset_warnings

    reset_warnings()
    yield
    reset_warnings()


@pytest.fixture
def assert_batched_rows():
    """``check(single, batched, seeds)``: an experiment's ``run_seeds`` rows against its one-seed rows.

    Same seeds, columns, rows and order, every non-value column equal (settings, config hash), the
    values equal up to float reassociation in the batched products (rtol 1e-4, atol 1e-6).
    """
    import pandas as pd

    def check(single, batched, seeds):
        assert sorted(batched) == sorted(seeds)
        for s in seeds:
            a, b = single[s].reset_index(drop=True), batched[s].reset_index(drop=True)
            assert list(a.columns) == list(b.columns) and len(a) == len(b)
            same = [c for c in a.columns if c != "value"]
            pd.testing.assert_frame_equal(a[same], b[same])
            np.testing.assert_allclose(b.value.to_numpy(), a.value.to_numpy(), rtol=1e-4, atol=1e-6)

    return check
