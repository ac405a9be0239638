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
