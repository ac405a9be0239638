"""The statistics of the Shwartz-Ziv claims (trajectory_excursion, quantity_difference across runs) on
constructed tables whose answers are known, and the claims' runs at the tiny profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from ibscope.reproduce import compute_statistic, get_claim, run_spec

T = [0.0, 1.0, 10.0, 100.0, float("inf")]


def _trajectories(curves: dict[str, list[list[float]]]) -> pd.DataFrame:
    """Rows like the ntk experiment's: one value per (dataset, seed, t)."""
    rows = []
    for dataset, per_seed in curves.items():
        for seed, values in enumerate(per_seed):
            rows += [{"seed": seed, "dataset": dataset, "split": "test", "source": "infinite", "t": t,
                      "quantity": "gibbs_loss", "value": v, "unit": "bits"} for t, v in zip(T, values, strict=True)]
    return pd.DataFrame(rows)


def test_trajectory_excursion_rise_after_min_and_fall_after_max():
    # seed s: minimum 1.0 at t=10, last value 1.0 + d_s
    d = [0.3, 0.5, 0.4]
    small = [[3.0, 2.0, 1.0, 1.0 + x / 2, 1.0 + x] for x in d]
    large = [[3.0, 2.0, 1.5, 1.2, 1.1] for _ in d]  # ends at its minimum: 0
    runs = {"r": _trajectories({"small": small, "large": large})}
    level = 0.95
    st = compute_statistic("trajectory_excursion", runs, {"run": "r", "quantity": "gibbs_loss", "extreme": "min",
                                                          "a": {"where": {"dataset": "small"}}}, level)
    m, s = np.mean(d), np.std(d, ddof=1)
    half = scipy.stats.t.ppf(0.975, 2) * s / np.sqrt(3)
    assert st.n == 3 and st.unit == "bits" and st.estimate == pytest.approx(m)
    assert (st.low, st.high) == pytest.approx((m - half, m + half))
    assert list(st.per_replicate["t_at_min"]) == [10.0, 10.0, 10.0]
    st = compute_statistic("trajectory_excursion", runs, {"run": "r", "quantity": "gibbs_loss",
                                                          "a": {"where": {"dataset": "large"}}}, level)
    assert st.estimate == pytest.approx(0.0) and st.high == pytest.approx(0.0)
    # paired difference small - large = d
    st = compute_statistic("trajectory_excursion", runs, {"run": "r", "quantity": "gibbs_loss",
                                                          "a": {"where": {"dataset": "small"}},
                                                          "b": {"where": {"dataset": "large"}}}, level)
    assert st.estimate == pytest.approx(m) and "paired" in st.interval
    # fall after the peak: peak 3.0 at t=0, last 1.1 -> 1.9; 'small' ends 1+d -> 2-d
    st = compute_statistic("trajectory_excursion", runs, {"run": "r", "quantity": "gibbs_loss", "extreme": "max",
                                                          "a": {"where": {"dataset": "small"}}}, level)
    assert st.estimate == pytest.approx(2.0 - m)


def test_trajectory_excursion_errors():
    runs = {"r": _trajectories({"small": [[1.0, 2.0, 3.0, 4.0, 5.0]] * 2, "large": [[1.0] * 5] * 2})}
    with pytest.raises(ValueError, match="More than one value per seed"):  # two datasets mixed
        compute_statistic("trajectory_excursion", runs, {"run": "r", "quantity": "gibbs_loss", "a": {}}, 0.95)
    with pytest.raises(ValueError, match="extreme"):
        compute_statistic("trajectory_excursion", runs, {"run": "r", "quantity": "gibbs_loss", "extreme": "mean",
                                                         "a": {"where": {"dataset": "small"}}}, 0.95)
    with pytest.raises(ValueError, match="along"):
        compute_statistic("trajectory_excursion", runs, {"run": "r", "quantity": "gibbs_loss", "along": "epoch",
                                                         "a": {"where": {"dataset": "small"}}}, 0.95)
    with pytest.raises(ValueError, match="unknown keys"):
        compute_statistic("trajectory_excursion", runs, {"run": "r", "quantity": "gibbs_loss",
                                                         "a": {"dataset": "small"}}, 0.95)
    with pytest.raises(ValueError, match="names no run"):
        compute_statistic("trajectory_excursion", runs, {"quantity": "gibbs_loss",
                                                         "a": {"where": {"dataset": "small"}}}, 0.95)


def _accuracies(method: str, values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"seed": range(len(values)), "method": method, "quantity": "test_accuracy",
                         "value": values, "unit": "fraction", "task_id": [f"{method}{s}" for s in range(len(values))]})


def test_quantity_difference_across_runs_pairs_by_seed():
    a = [0.90, 0.95, 0.80, 0.85]
    diff = [0.01, 0.03, -0.01, 0.02]
    # run 'smoothed' lists the seeds in another order: the pairing must follow the seed, not the row order
    b_rows = _accuracies("vib", [x - dx for x, dx in zip(a, diff, strict=True)]).iloc[::-1]
    runs = {"arms": pd.concat([_accuracies("dual_ib", a), _accuracies("vib", [0.0] * 4)]), "smoothed": b_rows}
    st = compute_statistic("quantity_difference", runs,
                           {"quantity": "test_accuracy", "a": {"run": "arms", "where": {"method": "dual_ib"}},
                            "b": {"run": "smoothed", "where": {"method": "vib"}}}, 0.95)
    m, s = np.mean(diff), np.std(diff, ddof=1)
    half = scipy.stats.t.ppf(0.975, 3) * s / 2
    assert st.n == 4 and st.unit == "fraction"
    assert (st.estimate, st.low, st.high) == pytest.approx((m, m - half, m + half))
    # an unpaired (Welch) reading would be far wider: a's spread is 0.06, the differences' 0.017
    with pytest.raises(ValueError, match="several rows per seed"):
        compute_statistic("quantity_difference", runs,
                          {"quantity": "test_accuracy", "a": {"run": "arms"}, "b": {"run": "smoothed"}}, 0.95)
    with pytest.raises(ValueError, match="runs are"):
        compute_statistic("quantity_difference", runs,
                          {"quantity": "test_accuracy", "a": {"run": "nope"}, "b": {"run": "smoothed"}}, 0.95)


def test_claims_share_runs_and_where_selects_the_ntk_rows():
    vib = get_claim("shwartz-ziv-dual-ib-vs-vib")
    ls = get_claim("shwartz-ziv-dual-ib-vs-label-smoothing")
    assert run_spec(vib, "arms", "quick", 5) == run_spec(ls, "arms", "quick", 5)  # one shared directory
    ntk = [get_claim(f"shwartz-ziv-ntk-{c}") for c in ("ixz-rises", "no-compression", "sample-size",
                                                        "overfit-in-time")]
    specs = [run_spec(c, "ensemble", "quick", 5) for c in ntk]
    assert all(s == specs[0] for s in specs)
    assert ntk[0].statistic_params["a"]["t"] == float("inf")  # YAML .inf selects the t = inf rows


@pytest.mark.slow
def test_szntk_claims_end_to_end_tiny(tmp_path):
    from ibscope.reproduce import reproduce

    for claim in ("shwartz-ziv-ntk-overfit-in-time", "shwartz-ziv-dual-ib-vs-label-smoothing"):
        res = reproduce(claim, profile="tiny", out=tmp_path, workers=0, progress=False)
        assert res.verdict.n == 3 and np.isfinite(res.verdict.estimate)
