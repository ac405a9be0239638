"""Tests of the Wang et al. (2022) claims' statistics (quantity_spearman, interior_peak) and claim files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from ibscope.reproduce import catalogue, compute_statistic, reproduce
from ibscope.reproduce._statistics import quantities_per_run

WANG = ["wang-iiw-transition-heldout", "wang-iiw-transition-init", "wang-iiw-gap-batch-size",
        "wang-iiw-gap-width", "wang-iiw-gap-label-noise", "wang-pib-vs-vanilla", "wang-pib-vs-l2",
        "wang-pib-vs-dropout"]


def _sweep(points: list[dict]) -> pd.DataFrame:
    """A sweep-like table: per run (task_id, seed) tracked rows at iterations 0, 10 and final rows at 10."""
    rows = []
    for i, p in enumerate(points):
        for q, v in p.items():
            for it, val in ((0, 0.0), (10, v)):
                rows.append({"task_id": f"t{i}", "seed": i % 3, "iteration": it, "quantity": q, "value": val,
                             "layer": "total", "method": "tracked", "unit": "bits"})
            rows.append({"task_id": f"t{i}", "seed": i % 3, "iteration": 10, "quantity": q, "value": v,
                         "layer": "total", "method": "final", "unit": "bits"})
    return pd.DataFrame(rows)


def test_quantity_spearman_on_constructed_tables():
    rng = np.random.default_rng(0)
    iiw = rng.uniform(1, 100, 12)
    test = rng.uniform(0.5, 0.9, 12)
    # train accuracy = test + a gap increasing with iiw: rho(iiw, train - test) = 1 exactly
    gap = 0.001 * iiw
    df = _sweep([{"iiw": a, "train_acc": t + g, "test_acc": t} for a, t, g in zip(iiw, test, gap, strict=True)])
    s = compute_statistic("quantity_spearman", {"r": df},
                          {"run": "r", "x": "iiw", "y": {"a": "train_acc", "b": "test_acc"}, "also": ["train_acc"]},
                          0.95)
    assert s.estimate == pytest.approx(1.0) and s.low == pytest.approx(1.0) and s.n == 12 and s.unit == "rho"
    assert np.allclose(np.sort(s.per_replicate["value"]), np.sort(gap)) and "train_acc" in s.per_replicate
    # a decreasing relation, a single quantity as y
    df2 = _sweep([{"iiw": a, "gap": -a} for a in iiw])
    s2 = compute_statistic("quantity_spearman", {"r": df2}, {"run": "r", "x": "iiw", "y": "gap"}, 0.95)
    assert s2.estimate == pytest.approx(-1.0) and s2.high == pytest.approx(-1.0)
    # independent noise: rho near 0, interval covers 0
    df3 = _sweep([{"iiw": a, "gap": g} for a, g in zip(rng.normal(size=60), rng.normal(size=60), strict=True)])
    s3 = compute_statistic("quantity_spearman", {"r": df3}, {"run": "r", "x": "iiw", "y": "gap"}, 0.95)
    r = scipy.stats.spearmanr(df3[df3.method == "final"].query("quantity == 'iiw'").value,
                              df3[df3.method == "final"].query("quantity == 'gap'").value).statistic
    assert s3.estimate == pytest.approx(r) and s3.low < 0 < s3.high and abs(s3.estimate) < 0.4
    # the last value of each run is used (iteration 10, not the zeros at iteration 0)
    per = quantities_per_run({"r": df2}, run="r", quantities=["iiw"])
    assert np.allclose(np.sort(per["iiw"]), np.sort(iiw))


def test_quantity_spearman_errors():
    df = _sweep([{"iiw": 1.0, "gap": 0.1}, {"iiw": 2.0, "gap": 0.2}, {"iiw": 3.0, "gap": 0.3}])
    layered = pd.concat([df, df.assign(layer="layer1", value=df["value"] + 5)], ignore_index=True)
    with pytest.raises(ValueError, match="several different values"):
        compute_statistic("quantity_spearman", {"r": layered}, {"run": "r", "x": "iiw", "y": "gap"}, 0.95)
    ok = compute_statistic("quantity_spearman", {"r": layered},
                           {"run": "r", "x": "iiw", "y": "gap", "where": {"layer": "total"}}, 0.95)
    assert ok.estimate == pytest.approx(1.0)
    with pytest.raises(ValueError, match="quantity 'nope'"):
        compute_statistic("quantity_spearman", {"r": df}, {"run": "r", "x": "nope", "y": "gap"}, 0.95)
    with pytest.raises(ValueError, match="'y' must be"):
        compute_statistic("quantity_spearman", {"r": df}, {"run": "r", "x": "iiw", "y": {"a": "gap"}}, 0.95)


def _curves(curves: list[list[float]]) -> pd.DataFrame:
    rows = []
    for seed, c in enumerate(curves):
        for it, v in enumerate(c):
            rows.append({"seed": seed, "iteration": it * 5, "quantity": "iiw", "value": v, "layer": "total",
                         "method": "fisher_quadratic", "unit": "bits"})
        rows.append({"seed": seed, "iteration": 5 * (len(c) - 1), "quantity": "iiw", "value": c[-1],
                     "layer": "total", "method": "final", "unit": "bits"})
    return pd.DataFrame(rows)


def test_interior_peak_values_and_sign():
    # rise then fall: (4 - 2) / 4 = 0.5, (10 - 5) / 10 = 0.5, (3 - 0) / 3 = 1, (2 - 1) / 2 = 0.5
    up_down = _curves([[0, 4, 3, 2], [5, 10, 8, 1], [0, 3, 0], [0, 1, 2, 1]])
    s = compute_statistic("interior_peak", {"r": up_down}, {"run": "r", "quantity": "iiw"}, 0.95)
    assert np.allclose(s.per_replicate["value"], [0.5, 0.5, 1.0, 0.5]) and s.estimate == pytest.approx(0.625)
    assert list(s.per_replicate["peak_at"]) == [5.0, 5.0, 5.0, 10.0] and s.low > 0 and s.n == 4
    # monotone rise (2 - 3) / 3 or fall (2 - 3) / 3, (3 - 4) / 4: negative -> the claim would be refuted
    mono = _curves([[1, 2, 3], [3, 2, 1], [2, 3, 4], [4, 3, 2]])
    m = compute_statistic("interior_peak", {"r": mono}, {"run": "r", "quantity": "iiw"}, 0.95)
    assert np.allclose(m.per_replicate["value"], [-1 / 3, -1 / 3, -0.25, -0.25]) and m.high < 0
    with pytest.raises(ValueError, match="at least 3"):
        compute_statistic("interior_peak", {"r": _curves([[1, 2]])}, {"run": "r", "quantity": "iiw"}, 0.95)


def test_wang_claims_in_catalogue_share_runs():
    from ibscope.reproduce._run import _run_key, run_spec

    claims = catalogue()
    assert set(WANG) <= set(claims)
    key = {cid: {_run_key(run_spec(claims[cid], r, "quick", 5)) for r in claims[cid].runs} for cid in WANG}
    assert key["wang-pib-vs-vanilla"] == key["wang-pib-vs-l2"] == key["wang-pib-vs-dropout"]
    assert key["wang-iiw-transition-heldout"] == key["wang-iiw-transition-init"]
    assert key["wang-iiw-transition-heldout"] <= key["wang-iiw-gap-batch-size"]
    pib = claims["wang-pib-vs-vanilla"].runs["digits"]
    assert pib.grid["method"] == ["vanilla", "l2", "dropout", "pib"]


@pytest.mark.slow
def test_wang_iiw_claims_end_to_end_at_tiny_profile(tmp_path):
    for cid in ("wang-iiw-transition-heldout", "wang-iiw-transition-init", "wang-iiw-gap-batch-size"):
        res = reproduce(cid, profile="tiny", out=tmp_path, workers=0, progress=False)
        assert res.verdict.n >= 3 and np.isfinite(res.verdict.estimate)
