"""The late-compression statistics on constructed and on null trajectories.

Truth "no compression" (a rise then a plateau, noise only, one-off spikes in a
few seeds, snapshots shuffled in time): every signed statistic must decide
"reproduced" for a compression claim (rule: greater than 0 at the 95% level,
the strictest threshold) in at most 5% of Monte Carlo replicates, within
Monte Carlo error; the old per-seed max-minus-final must fail that (it is >= 0
by construction). Truth "compression of a known size": the signed statistics
find it, with the size inside their interval most of the time.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from ibscope.reproduce import (
    LATE_COMPRESSION_STATISTICS,
    REPRODUCED,
    Rule,
    compute_statistic,
    decide,
    fitting_end_index,
    signed_compression,
    t_interval,
)

SEEDS, SNAPS = 10, 40
EPOCHS = np.unique(np.round(np.logspace(0, np.log10(2000), SNAPS - 1))).astype(float)
EPOCHS = np.concatenate([[0.0], EPOCHS])
T = EPOCHS.size
NOISE = 0.05  # bits, per snapshot and seed
RULE = Rule("greater", 0.0, 0.95)


def _rise(tau: float) -> np.ndarray:
    return 1.0 - np.exp(-EPOCHS / tau)


def _trajectories(kind: str, rng: np.random.Generator, seeds: int = SEEDS, fall: float = 0.0):
    """(I(X;T), I(T;Y)) arrays (seeds, snapshots) of one constructed setting; the truth is 'fall' bits of
    compression after the fitting phase (0 for every null kind)."""
    ity = 0.9 * _rise(50.0) + rng.normal(0, NOISE, (seeds, T))
    if kind == "plateau":  # I(X;T) rises (faster than I(T;Y)) and stays: no compression
        ixt = 3.0 + 4.0 * _rise(15.0) + rng.normal(0, NOISE, (seeds, T))
    elif kind == "noise":  # nothing happens at all
        ixt = 5.0 + rng.normal(0, NOISE, (seeds, T))
        ity = 0.5 + rng.normal(0, NOISE, (seeds, T))
    elif kind == "spikes":  # plateau + a one-off excursion of 1 bit in two seeds at a random snapshot
        ixt = 3.0 + 4.0 * _rise(15.0) + rng.normal(0, NOISE, (seeds, T))
        for s in rng.choice(seeds, 2, replace=False):
            ixt[s, rng.integers(T)] += 1.0
    elif kind == "shuffled":  # a rise-then-fall trajectory, each seed's snapshots shuffled in time
        base = 3.0 + 4.0 * _rise(15.0) - 1.0 * (EPOCHS / EPOCHS[-1])
        ixt = np.stack([rng.permutation(base) for _ in range(seeds)]) + rng.normal(0, NOISE, (seeds, T))
    elif kind == "compression":  # rise, then a linear fall of `fall` bits from the fitting end to the end
        k = fitting_end_index(0.9 * _rise(50.0))
        down = np.clip((EPOCHS - EPOCHS[k]) / (EPOCHS[-1] - EPOCHS[k]), 0.0, 1.0)
        ixt = 3.0 + 4.0 * _rise(15.0) - fall * down + rng.normal(0, NOISE, (seeds, T))
    else:
        raise AssertionError(kind)
    return ixt, ity


def _verdict(values: np.ndarray, rule: Rule = RULE) -> str:
    m, lo, hi, n = t_interval(values, rule.level)
    return decide(m, lo, hi, rule, n=n, interval="t").verdict


def _mc_se(p: float, reps: int) -> float:
    return float(np.sqrt(p * (1 - p) / reps))


REPS = 2000  # Monte Carlo replicates: the standard error of a 5% rate is 0.49 points


def _reproduced_rate(values: np.ndarray, rule: Rule = RULE) -> float:
    """Share of Monte Carlo replicates (rows of ``values``, one column per seed) whose Student-t interval over
    seeds decides 'reproduced' under ``rule`` (vectorized; checked against t_interval + decide below)."""
    from scipy import stats

    ok = np.isfinite(values).all(axis=1)
    n = values.shape[1]
    m, sd = values.mean(axis=1), values.std(axis=1, ddof=1)
    half = stats.t.ppf((1 + rule.level) / 2, n - 1) * sd / np.sqrt(n)
    hit = (m - half > rule.threshold) if rule.direction == "greater" else (m + half < rule.threshold)
    return float((hit & ok).mean())


@pytest.mark.parametrize("kind", ["plateau", "noise", "spikes", "shuffled"])
def test_signed_statistics_false_positive_rate_on_null_trajectories(kind):
    rng = np.random.default_rng(["plateau", "noise", "spikes", "shuffled"].index(kind))
    values = {"after_fitting": [], "late_window": [], "max_minus_final": []}
    for _ in range(REPS):
        ixt, ity = _trajectories(kind, rng)
        for method, v in values.items():
            v.append(signed_compression(ixt, EPOCHS, method=method,
                                        i_ty=ity if method == "after_fitting" else None)["values"])
    values = {m: np.array(v) for m, v in values.items()}
    for v in values.values():  # the vectorized rate is the library's decision
        assert [_verdict(r) == REPRODUCED for r in v[:20]] == [_reproduced_rate(r[None]) == 1.0 for r in v[:20]]
    fpr = {m: _reproduced_rate(v) for m, v in values.items()}
    bound = 0.05 + 2 * _mc_se(0.05, REPS)
    assert fpr["after_fitting"] <= bound, fpr
    assert fpr["late_window"] <= bound, fpr
    # the old statistic reads noise as compression: its false-positive rate is far above the nominal 5%
    assert fpr["max_minus_final"] > 0.3, fpr


def test_old_statistic_reads_noise_as_compression_at_the_catalogue_threshold():
    """At the catalogue's 0.1-bit threshold too: noise of 0.1 bit per snapshot makes max - final 'compress'."""
    rng = np.random.default_rng(7)
    rule = Rule("greater", 0.1)
    old, new = [], []
    for _ in range(300):
        ixt = 5.0 + rng.normal(0, 0.1, (SEEDS, T))
        ity = 0.5 + rng.normal(0, 0.1, (SEEDS, T))
        old.append(signed_compression(ixt, EPOCHS, method="max_minus_final")["values"])
        new.append(signed_compression(ixt, EPOCHS, i_ty=ity)["values"])
    assert _reproduced_rate(np.array(old), rule) > 0.75 and _reproduced_rate(np.array(new), rule) == 0


@pytest.mark.parametrize("fall", [0.3, 1.0])
def test_signed_statistics_detect_a_known_compression(fall):
    rng = np.random.default_rng(int(fall * 10))
    reps, found, covered = 200, 0, 0
    k = fitting_end_index(0.9 * _rise(50.0))  # the noiseless curve's fitting end
    for _ in range(reps):
        ixt, ity = _trajectories("compression", rng, fall=fall)
        res = signed_compression(ixt, EPOCHS, i_ty=ity)
        # windows of 2 snapshots: the early one starts at the fitting end, the late one ends at the end
        e0, e1 = EPOCHS[res["start"]: res["start"] + 2], EPOCHS[-2:]
        drop = lambda e: fall * np.clip((e - EPOCHS[k]) / (EPOCHS[-1] - EPOCHS[k]), 0, 1)  # noqa: E731
        truth = float(drop(e1).mean() - drop(e0).mean())
        truth += float((4.0 * (1 - np.exp(-e0 / 15.0))).mean() - (4.0 * (1 - np.exp(-e1 / 15.0))).mean())
        m, lo, hi, _ = t_interval(res["values"])
        found += lo > 0
        covered += lo <= truth <= hi
    assert found / reps > 0.95
    assert covered / reps > 0.9  # nominal 95%; the fitting end is found from the noisy I(T;Y)


def test_fitting_end_rule_and_bad_input():
    assert fitting_end_index([0.0, 0.5, 0.95, 1.0, 1.0]) == 2
    assert fitting_end_index([0.0, 0.5, 0.95, 1.0, 1.0], plateau=0.5) == 1
    assert fitting_end_index([1.0, 0.9, 0.8]) == 0  # no rise: no fitting phase
    for bad, match in (([], "non-empty"), ([0.0, np.nan], "non-finite")):
        with pytest.raises(ValueError, match=match):
            fitting_end_index(bad)
    with pytest.raises(ValueError, match="plateau"):
        fitting_end_index([0.0, 1.0], plateau=1.5)
    x = np.zeros((3, 6))
    e = np.arange(6.0)
    with pytest.raises(ValueError, match="method"):
        signed_compression(x, e, method="peak")
    with pytest.raises(ValueError, match="i_ty"):
        signed_compression(x, e)
    with pytest.raises(ValueError, match="epochs"):
        signed_compression(x, e[::-1], method="late_window")
    with pytest.raises(ValueError, match="window"):
        signed_compression(x, e, method="late_window", window=0)
    with pytest.raises(ValueError, match="from_epoch"):
        signed_compression(x, e, method="late_window", from_epoch=5)
    # a fitting phase that ends inside the last window leaves nothing to test: NaN values, with the reason
    late = signed_compression(x, e, i_ty=np.tile([0.0, 0, 0, 0, 0, 1.0], (3, 1)))
    assert np.isnan(late["values"]).all() and "no post-fitting phase" in late["reason"]


def test_signed_values_can_be_negative_and_average_to_the_curve_fall():
    """Per seed early-minus-late window means; their mean is the seed-averaged curve's fall (a rising I(X;T):
    negative)."""
    rng = np.random.default_rng(3)
    ixt = 5.0 + 0.5 * (EPOCHS / EPOCHS[-1]) + rng.normal(0, 0.01, (SEEDS, T))
    res = signed_compression(ixt, EPOCHS, method="late_window", window=3, from_epoch=200)
    curve = ixt.mean(axis=0)
    start = int(np.searchsorted(EPOCHS, 200))
    assert res["values"].mean() == pytest.approx(curve[start:start + 3].mean() - curve[-3:].mean())
    assert res["values"].mean() < -0.1 and res["start_epoch"] >= 200


# --- every late-compression statistic of the registry, through its DataFrame interface ---

def _table(rng, kind: str, groups: dict[str, tuple[str, float]], by: str = "grid", seeds: int = SEEDS):
    """A tishby-like results table: per group (kind, fall) and seed, the 'hidden2' trajectories; the
    generalization gap is unrelated to the compression."""
    rows = []
    for g, (k, fall) in groups.items():
        ixt, ity = _trajectories(k, rng, seeds=seeds, fall=fall)
        gap = rng.uniform(0, 0.2, seeds)
        for s in range(seeds):
            for j, epoch in enumerate(EPOCHS):
                rows.append({"task_id": f"{g}-s{s}", "seed": s, by: g, "epoch": epoch, "layer": "hidden2",
                             "layer_index": 2, "estimator": "binning", "i_xt": ixt[s, j], "i_ty": ity[s, j],
                             "unit": "bits", "train_acc": 1.0, "test_acc": 1.0 - gap[s], "train_loss": 0.1,
                             "test_loss": 0.2})
    return pd.DataFrame(rows)


def _params(name: str) -> dict:
    base = {"run": "r", "estimator": "binning"}
    return {"compression_after_fitting": {**base, "where": {"grid": "a"}},
            "late_window_fall": {**base, "where": {"grid": "a"}},
            "compression_difference": {"a": {"run": "r", "where": {"grid": "a"}},
                                       "b": {"run": "r", "where": {"grid": "b"}}, "estimator": "binning"},
            "late_compression_every": {**base, "by": "grid"},
            "late_compression_range": {**base, "by": "grid"},
            "compression_gap_spearman": {**base, "by": "grid", "n_resamples": 300}}[name]


def _rule(name: str) -> Rule:
    # what a false positive is for each: compression (every group / arm a over b / some pair differs) where
    # there is none; for the correlation, rho < 0 where compression and gap are unrelated
    return Rule("less", 0.0) if name == "compression_gap_spearman" else RULE


DF_REPS = 150  # per statistic: MC standard error of a 5% rate 1.8 points


@pytest.mark.slow
@pytest.mark.parametrize("name", LATE_COMPRESSION_STATISTICS)
def test_every_late_compression_statistic_on_null_runs(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    kinds = ["plateau", "noise", "spikes", "shuffled"]
    hits = old_hits = 0
    for i in range(DF_REPS):
        k = kinds[i % 4]
        table = {"r": _table(rng, k, {"a": (k, 0.0), "b": (k, 0.0), "c": (k, 0.0)})}
        stat = compute_statistic(name, table, _params(name), 0.95)
        hits += decide(stat.estimate, stat.low, stat.high, _rule(name), n=stat.n, interval="").verdict == REPRODUCED
        if name not in ("compression_after_fitting", "late_window_fall") and i < 40:
            old = compute_statistic(name, table, {**_params(name), "method": "max_minus_final"}, 0.95)
            old_hits += decide(old.estimate, old.low, old.high, _rule(name), n=old.n,
                               interval="").verdict == REPRODUCED
    assert hits / DF_REPS <= 0.05 + 2 * _mc_se(0.05, DF_REPS), (name, hits)
    if name in ("late_compression_every",):
        assert old_hits / 40 > 0.3  # the old statistic in the same grid statistic reads noise as compression


def test_dataframe_statistics_find_a_known_compression():
    rng = np.random.default_rng(11)
    table = {"r": _table(rng, "compression", {"a": ("compression", 1.0), "b": ("plateau", 0.0),
                                              "c": ("compression", 1.0)})}
    after = compute_statistic("compression_after_fitting", table, _params("compression_after_fitting"), 0.95)
    assert after.low > 0.5 and after.unit == "bits" and after.details["method"] == "after_fitting"
    assert after.per_replicate["value"].mean() == pytest.approx(after.estimate)
    diff = compute_statistic("compression_difference", table, _params("compression_difference"), 0.95)
    assert diff.low > 0.5
    rng_ = compute_statistic("late_compression_range", table, _params("late_compression_range"), 0.95)
    assert rng_.low > 0.5 and set(rng_.details["largest_pair"]) & {"b"}
    every = compute_statistic("late_compression_every", table, _params("late_compression_every"), 0.95)
    assert every.details["least"] == "b" and every.high < 0.2


def test_compared_groups_share_one_start():
    """Same I(X;T) (still rising) in both groups, but group a's I(T;Y) plateaus early and b's late: from their
    own fitting ends the groups would 'differ' by the rise between the two starts; from the common start (the
    later fitting end) they do not."""
    rng = np.random.default_rng(5)
    rows = []
    for g, tau in (("a", 5.0), ("b", 200.0)):
        for s in range(SEEDS):
            ixt = 3.0 + 2.0 * EPOCHS / EPOCHS[-1] + rng.normal(0, 0.01, T)
            ity = 0.9 * (1 - np.exp(-EPOCHS / tau))
            for j, epoch in enumerate(EPOCHS):
                rows.append({"task_id": f"{g}-s{s}", "seed": s, "grid": g, "epoch": epoch, "layer": "hidden2",
                             "layer_index": 2, "estimator": "binning", "i_xt": ixt[j], "i_ty": ity[j],
                             "unit": "bits"})
    table = {"r": pd.DataFrame(rows)}
    own_a = compute_statistic("compression_after_fitting", table, _params("compression_after_fitting"), 0.95)
    own_b = compute_statistic("compression_after_fitting", table,
                              {**_params("compression_after_fitting"), "where": {"grid": "b"}}, 0.95)
    assert own_a.details["start_epoch"] < own_b.details["start_epoch"]
    assert own_b.estimate - own_a.estimate > 0.2  # each group from its own end: a spurious difference
    diff = compute_statistic("compression_difference", table, _params("compression_difference"), 0.95)
    rng_ = compute_statistic("late_compression_range", table, _params("late_compression_range"), 0.95)
    assert diff.low <= 0 <= diff.high and abs(diff.estimate) < 0.02
    assert rng_.low == 0 and rng_.estimate < 0.02
    assert diff.details["arms"]["a"]["start_epoch"] == diff.details["arms"]["b"]["start_epoch"]
