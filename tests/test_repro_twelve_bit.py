"""The 12-bit claims over a grid axis: their statistics on constructed tables, and the shared runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ibscope.reproduce import catalogue, compute_statistic
from ibscope.reproduce._run import _run_key, run_spec
from ibscope.reproduce._verdict import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Rule,
    decide,
    t_interval,
)


def _table(groups: dict[str, list[float]], by: str = "activation") -> pd.DataFrame:
    """Per group and seed: I(X;T) of 'hidden2' rises to 3 + c at epoch 10, then ends at 3 (compression c);
    I(T;Y) rises from 0.1 to 0.5 by epoch 10 (the end of the fitting phase)."""
    rows = []
    for g, comps in groups.items():
        for seed, c in enumerate(comps):
            for epoch, ixt in ((0, 1.0), (10, 3.0 + c), (100, 3.0)):
                for layer, li in (("hidden2", 2), ("output", 3)):
                    rows.append({"task_id": f"{g}-s{seed}", "seed": seed, by: g, "epoch": epoch, "layer": layer,
                                 "layer_index": li, "estimator": "adaptive_binning",
                                 "i_xt": ixt if layer == "hidden2" else 1.0,
                                 "i_ty": 0.1 if epoch == 0 else 0.5, "unit": "bits"})
    return pd.DataFrame(rows)


def _verdict(stat, rule):
    return decide(stat.estimate, stat.low, stat.high, rule, n=stat.n, interval=stat.interval).verdict


def test_late_compression_every_is_the_least_group_with_bonferroni_intervals():
    groups = {"relu": [0.5, 0.6, 0.55, 0.52], "elu": [0.30, 0.34, 0.31, 0.33], "tanh": [0.9, 1.0, 0.95, 0.97]}
    params = {"run": "r", "estimator": "adaptive_binning", "by": "activation"}
    stat = compute_statistic("late_compression_every", {"r": _table(groups)}, params, 0.95)
    assert stat.details["least"] == "elu" and stat.details["layer"] == "hidden2" and stat.n == 4
    m, lo, hi, _ = t_interval(groups["elu"], 1 - 0.05 / 3)
    assert (stat.estimate, stat.high) == pytest.approx((m, hi))
    assert stat.low == pytest.approx(min(t_interval(v, 1 - 0.05 / 3)[1] for v in groups.values()))
    assert _verdict(stat, Rule("greater", 0.1)) == REPRODUCED
    # one group that does not compress decides the claim against it
    flat = {**groups, "elu": [0.0, 0.01, -0.01, 0.005]}
    assert _verdict(compute_statistic("late_compression_every", {"r": _table(flat)}, params, 0.95),
                    Rule("greater", 0.1)) == NOT_REPRODUCED
    noisy = {**groups, "elu": [0.0, 1.0, -0.5, 0.8]}
    assert _verdict(compute_statistic("late_compression_every", {"r": _table(noisy)}, params, 0.95),
                    Rule("greater", 0.1)) == INCONCLUSIVE


def test_late_compression_range_over_init_scales():
    params = {"run": "r", "estimator": "adaptive_binning", "by": "init_scale"}
    spread = {"0.5": [0.10, 0.12, 0.11], "1.0": [0.5, 0.52, 0.49], "2.0": [0.9, 0.92, 0.88]}
    stat = compute_statistic("late_compression_range", {"r": _table(spread, "init_scale")}, params, 0.95)
    assert stat.estimate == pytest.approx(np.mean(spread["2.0"]) - np.mean(spread["0.5"]))
    assert set(stat.details["largest_pair"]) == {"0.5", "2.0"} and len(stat.details["pairs"]) == 3
    assert stat.low <= stat.estimate <= stat.high
    assert _verdict(stat, Rule("greater", 0.1)) == REPRODUCED
    same = {k: [0.30, 0.31, 0.29] for k in spread}
    st2 = compute_statistic("late_compression_range", {"r": _table(same, "init_scale")}, params, 0.95)
    assert st2.low == 0.0 and st2.high < 0.1 and _verdict(st2, Rule("greater", 0.1)) == NOT_REPRODUCED


def test_grid_statistics_refuse_one_group_and_unknown_column():
    table = _table({"relu": [0.1, 0.2]})
    for name in ("late_compression_every", "late_compression_range"):
        with pytest.raises(ValueError, match="one value"):
            compute_statistic(name, {"r": table}, {"run": "r", "estimator": "adaptive_binning", "by": "activation"},
                              0.95)
        with pytest.raises(ValueError, match="column 'width'"):
            compute_statistic(name, {"r": table}, {"run": "r", "estimator": "adaptive_binning", "by": "width"}, 0.95)


def test_relu_claims_share_one_run():
    """Saxe's two claims, Chelombiev's adaptive-binning, L2 and last-layer claims read one ReLU sweep."""
    claims = catalogue()
    ids = ["saxe-relu-fixed-bins", "saxe-snapshot-range-artefact", "chelombiev-adaptive-relu",
           "chelombiev-l2-compression", "chelombiev-last-layer-generalization"]
    for profile in ("tiny", "quick", "paper"):
        keys = {_run_key(run_spec(claims[c], name, profile, 5)) for c in ids for name in claims[c].runs}
        assert len(keys) == 1, (profile, keys)
