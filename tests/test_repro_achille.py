"""quantity_spearman with layers and a required flag on constructed tables, and the achille-* claims."""

import numpy as np
import pandas as pd
import pytest

from ibscope.reproduce import _statistics as S
from ibscope.reproduce._claims import catalogue

ACHILLE = [c for c in catalogue() if c.startswith("achille-")]


def _table(x, y, *, flag=None, extra_steps=False):
    rows = []
    for i, (a, b) in enumerate(zip(x, y, strict=True)):
        tid = f"p={i % 3}__seed={i}"
        rows.append({"task_id": tid, "seed": i, "step": 10, "layer": "total", "quantity": "w", "value": a})
        rows.append({"task_id": tid, "seed": i, "step": 10, "layer": "fc1", "quantity": "w", "value": -a})
        rows.append({"task_id": tid, "seed": i, "step": 10, "layer": "total", "quantity": "gap", "value": b})
        if extra_steps:  # an earlier value of the same quantity, anti-correlated: must be ignored
            rows.append({"task_id": tid, "seed": i, "step": 0, "layer": "total", "quantity": "gap", "value": -b})
        if flag is not None:
            rows.append({"task_id": tid, "seed": i, "step": 10, "layer": "total", "quantity": "ok",
                         "value": float(flag[i])})
    return pd.DataFrame(rows)


def _stat(df, **kw):
    params = {"run": "r", "x": "w", "x_layer": "total", "y": "gap", "n_resamples": 400, **kw}
    return S.compute_statistic("quantity_spearman", {"r": df}, params, 0.95)


def test_monotone_relations_give_plus_and_minus_one():
    x = np.arange(12.0)
    up = _stat(_table(x, x ** 3, extra_steps=True))
    assert [up.estimate, up.low, up.high] == pytest.approx([1.0, 1.0, 1.0]) and (up.n, up.unit) == (12, "rho")
    down = _stat(_table(x, -x))
    assert [down.estimate, down.high] == pytest.approx([-1.0, -1.0])


def test_ties_match_scipy_spearman():
    from scipy import stats

    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 4, 30).astype(float), rng.integers(0, 3, 30).astype(float)
    assert _stat(_table(x, y)).estimate == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_layer_selects_the_rows():
    x = np.arange(12.0)
    st = _stat(_table(x, x), x_layer="fc1")  # fc1 holds -x
    assert st.estimate == pytest.approx(-1.0)


def test_interval_covers_a_noisy_positive_relation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    st = _stat(_table(x, x + rng.normal(size=60)))
    assert 0.4 < st.estimate < 0.9 and st.low < st.estimate < st.high and st.low > 0.2


def test_require_leaves_out_flagged_replicates():
    x = np.arange(12.0)
    y = x.copy()
    flag = np.ones(12)
    y[:4], flag[:4] = 100.0 - x[:4], 0  # four anti-correlated replicates, flagged
    with_bad = _stat(_table(x, y, flag=flag))
    without = _stat(_table(x, y, flag=flag), require="ok")
    assert with_bad.estimate < 0.9
    assert without.estimate == pytest.approx(1.0) and without.n == 8 and without.details["left_out"] == 4


def test_bad_input_is_named():
    x = np.arange(6.0)
    df = _table(x, x)
    with pytest.raises(ValueError, match="nothing"):
        _stat(df, x="nothing")
    with pytest.raises(ValueError, match="several different values"):  # two layers of w and no layer given
        _stat(df, x_layer=None)
    with pytest.raises(ValueError, match="run"):
        S.compute_statistic("quantity_spearman", {"other": df}, {"run": "r", "x": "w", "y": "gap"}, 0.95)


def test_achille_claims_are_registered_with_a_fixed_positive_rule():
    # the four digits claims and their two MNIST-8k/2k counterparts
    assert sorted(ACHILLE) == sorted([
        "achille-invariance-shift", "achille-iw-label-noise", "achille-iw-train-size", "achille-iw-width",
        "achille-iw-label-noise-mnist", "achille-iw-train-size-mnist"])
    for cid in ACHILLE:
        c = catalogue()[cid]
        assert c.statistic == "quantity_spearman"
        assert (c.rule.direction, c.rule.threshold) == ("greater", 0.0)
        assert c.seeds("quick") >= 5 and c.seeds("paper") >= 10
        assert c.statistic_params["require"] == "lagrangian_converged"
        assert all(r.experiment == "lagrangian" for r in c.runs.values())


@pytest.mark.slow
def test_tiny_profile_end_to_end(tmp_path):
    from ibscope.reproduce import reproduce

    res = reproduce("achille-iw-label-noise", profile="tiny", out=tmp_path, workers=0, progress=False)
    assert res.verdict.n >= 2 and np.isfinite(res.verdict.estimate)
    assert (res.directory / "verdict.json").is_file()
