"""The weight-information, PIB and iiw-experiment values are unchanged by the refactor onto
the shared per-example-gradient engine and ``ibscope.training.fit``.

tests/data/weights_reference.csv was written by tests/data/weights_reference.py at
commit 71c7e3d (before the refactor); see tests/data/README.md.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

DATA = Path(__file__).parent / "data"


def _module():
    spec = importlib.util.spec_from_file_location("weights_reference", DATA / "weights_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REF = _module()
TABLE = pd.read_csv(DATA / "weights_reference.csv")


@pytest.mark.parametrize("case", list(REF.CASES))
def test_values_unchanged(case):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = REF.CASES[case]()
    finally:
        torch.set_num_threads(threads)
    ref = TABLE[TABLE.case == case]
    expected = dict(zip(ref.key, ref.value, strict=True))
    assert set(got) == set(expected)
    bad = []
    for key, want in expected.items():
        value = float(got[key])
        if math.isnan(want) and math.isnan(value):
            continue
        if not math.isclose(value, want, rel_tol=1e-6, abs_tol=1e-9):
            bad.append((key, value, want))
    assert not bad, f"{len(bad)} values changed, e.g. {bad[:5]}"
