"""The language-model claims (conklin-fitting-then-compression, skean-intermediate-layers), the lm_tiny
experiment's contract and the interior_extreme statistic on null and on shaped curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ibscope.reproduce import catalogue
from ibscope.reproduce._statistics import STATISTICS, interior_extreme_per_run
from ibscope.reproduce._verdict import t_interval


def _curves(values: np.ndarray, epoch: int = 10) -> pd.DataFrame:
    """values (seeds, layers) -> tidy rows of quantity 'q' at one epoch (plus an earlier epoch of noise)."""
    rows = []
    for s, v in enumerate(values):
        for i, x in enumerate(v):
            rows.append({"seed": s, "epoch": epoch, "layer_index": i, "quantity": "q", "value": float(x),
                         "unit": "bits"})
            rows.append({"seed": s, "epoch": 0, "layer_index": i, "quantity": "q", "value": 99.0, "unit": "bits"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("shape,n_sim", [("flat", 100), pytest.param("decreasing", 400, marks=pytest.mark.slow),
                                         pytest.param("increasing", 400, marks=pytest.mark.slow),
                                         pytest.param("flat", 400, marks=pytest.mark.slow)])
def test_interior_extreme_is_conservative_on_null_curves(shape, n_sim):
    rng = np.random.default_rng(0)
    base = {"flat": np.zeros(6), "decreasing": -0.3 * np.arange(6), "increasing": 0.3 * np.arange(6)}[shape]
    seeds, hits, means, insample = 5, 0, [], []
    for _ in range(n_sim):
        v = base + rng.normal(0, 1, (seeds, 6))
        per = interior_extreme_per_run(_curves(v), quantity="q")
        assert (per["epoch"] == 10).all() and per["out_of_sample"].all()
        _, lo, _, _ = t_interval(per["value"].to_numpy(), 0.95)
        hits += lo > 0
        means.append(per["value"].mean())
        insample.append(np.mean(np.minimum(v[:, 0], v[:, -1]) - v[:, 1:-1].min(1)))
    # false 'reproduced' verdicts at most the nominal 2.5% one-sided (plus Monte Carlo slack)
    assert hits / n_sim < 0.05
    assert np.mean(means) < 0.05
    if shape == "flat":  # the in-sample minimum over 4 interior layers would be biased towards the claim
        assert np.mean(insample) > 0.3


def test_interior_extreme_detects_a_dip_and_a_peak():
    rng = np.random.default_rng(1)
    u = np.array([3.0, 2.2, 1.5, 1.9, 2.8])
    v = u + rng.normal(0, 0.1, (6, 5))
    stat = STATISTICS["interior_extreme"]({"r": _curves(v)}, run="r", quantity="q", level=0.95)
    assert stat.low > 1.0 and stat.n == 6 and stat.unit == "bits"
    assert stat.estimate == pytest.approx(np.mean(np.minimum(v[:, 0], v[:, -1]) - v[:, 2]), abs=1e-12)
    assert stat.details["median_at_x"] == 2
    peak = STATISTICS["interior_extreme"]({"r": _curves(-v)}, run="r", quantity="q", extreme="max", level=0.95)
    assert peak.estimate == pytest.approx(stat.estimate, abs=1e-12)
    with pytest.raises(ValueError, match="extreme"):
        interior_extreme_per_run(_curves(v), quantity="q", extreme="median")
    with pytest.raises(ValueError, match=">= 3"):
        interior_extreme_per_run(_curves(v[:, :2]), quantity="q")
    with pytest.raises(ValueError, match="quantity"):
        interior_extreme_per_run(_curves(v), quantity="nope")


def test_lm_claims_are_in_the_catalogue():
    claims = catalogue()
    c = claims["conklin-fitting-then-compression"]
    assert c.statistic == "compression_after_fitting" and c.runs["gpt"].experiment == "lm_tiny"
    s = claims["skean-intermediate-layers"]
    assert s.statistic == "interior_extreme" and s.statistic_params["extreme"] == "min"
    assert c.deviations and s.deviations


def test_lm_tiny_rows_feed_both_statistics(tmp_path):
    pytest.importorskip("transformers")
    from ibscope.experiments import _lm_tiny
    from ibscope.experiments.runner import resolve_config

    cfg = resolve_config("lm_tiny", profile="test")
    df = pd.concat([_lm_tiny.run_seed(cfg, s, tmp_path / f"s{s}") for s in (0, 1)], ignore_index=True)
    assert set(df["unit"]) == {"bits"}
    plane = df[df["estimator"].eq("soft")]
    assert sorted(plane["epoch"].unique()) == _lm_tiny.snapshot_steps(cfg.steps, cfg.n_snapshots)
    assert (plane["i_ty"] >= -1e-9).all() and (plane["i_xt"] <= np.log2(cfg.soft_bins) + 1e-9).all()
    rate = df[df["quantity"].eq("entropy_rate")]["value"]
    ce = df[df["quantity"].eq("cross_entropy")]["value"]
    assert rate.nunique() == 1 and (ce > rate.iloc[0] - 0.05).all()  # a cross-entropy bounds the rate
    stat = STATISTICS["compression_after_fitting"]({"gpt": df}, run="gpt", estimator="soft",
                                                   layer="last_hidden", level=0.95)
    assert stat.n == 2 and stat.per_replicate["layer"].iloc[0] == f"hidden_states.{cfg.n_layer}"
    ext = STATISTICS["interior_extreme"]({"gpt": df}, run="gpt", quantity="prompt_entropy", level=0.95)
    assert ext.n == 2 and np.isfinite(ext.estimate)
    assert len(_lm_tiny.plot(df, tmp_path)) == 2 and len(_lm_tiny.summarize(df))
    with pytest.raises(ValueError, match="support"):
        resolve_config("lm_tiny", overrides={"support": 20})


def _two_checkpoints(first: np.ndarray, last: np.ndarray) -> pd.DataFrame:
    """(seeds, layers) values at epoch 0 and at epoch 10 -> tidy rows of quantity 'q'."""
    rows = []
    for epoch, values in ((0, first), (10, last)):
        for s, v in enumerate(values):
            rows += [{"seed": s, "epoch": epoch, "layer_index": i, "quantity": "q", "value": float(x),
                      "unit": "bits"} for i, x in enumerate(v)]
    return pd.DataFrame(rows)


def test_interior_change_on_null_curves_finds_no_effect():
    """Every layer falls by the same amount plus noise: 'reproduced' at most at the nominal one-sided rate."""
    from ibscope.reproduce._statistics import interior_change_per_run

    rng = np.random.default_rng(0)
    seeds, n_sim, hits, means = 5, 300, 0, []
    for _ in range(n_sim):
        first = 3.0 + rng.normal(0, 0.3, (seeds, 5))
        last = first - 1.0 + rng.normal(0, 0.3, (seeds, 5))
        per = interior_change_per_run(_two_checkpoints(first, last), quantity="q")
        _, lo, _, _ = t_interval(per["value"].to_numpy(), 0.95)
        hits += lo > 0
        means.append(per["value"].mean())
    assert hits / n_sim < 0.05
    assert abs(np.mean(means)) < 0.03


def test_interior_change_detects_larger_interior_fall_and_refuses_bad_input():
    from ibscope.reproduce._statistics import interior_change_per_run

    rng = np.random.default_rng(1)
    first = 3.8 + rng.normal(0, 0.05, (6, 5))
    last = np.array([3.2, 2.6, 2.7, 2.8, 2.9]) + rng.normal(0, 0.05, (6, 5))
    stat = STATISTICS["interior_change"]({"r": _two_checkpoints(first, last)}, run="r", quantity="q", level=0.95)
    fall = first - last
    assert stat.estimate == pytest.approx(np.mean(fall[:, 1:-1].mean(1) - fall[:, 0]), abs=1e-12)
    assert stat.low > 0.3 and stat.n == 6 and stat.unit == "bits"
    # the same curves read against the last layer, and reversed in time, give the opposite signs
    rev = STATISTICS["interior_change"]({"r": _two_checkpoints(last, first)}, run="r", quantity="q", level=0.95)
    assert rev.estimate == pytest.approx(-stat.estimate, abs=1e-12)
    with pytest.raises(ValueError, match="reference"):
        interior_change_per_run(_two_checkpoints(first, last), quantity="q", reference="middle")
    with pytest.raises(ValueError, match=">= 3"):
        interior_change_per_run(_two_checkpoints(first[:, :2], last[:, :2]), quantity="q")
    with pytest.raises(ValueError, match="one epoch"):
        interior_change_per_run(_two_checkpoints(first, last).query("epoch == 0"), quantity="q")
    with pytest.raises(ValueError, match="quantity"):
        interior_change_per_run(_two_checkpoints(first, last), quantity="nope")


def test_skean_training_claim_shares_the_skean_run():
    claims = catalogue()
    t, s = claims["skean-training-intermediate-layers"], claims["skean-intermediate-layers"]
    assert t.statistic == "interior_change" and t.runs["gpt"].experiment == "lm_tiny"
    assert t.runs["gpt"].config == s.runs["gpt"].config  # one run decides both claims
