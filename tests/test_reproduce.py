"""Tests of ibscope.reproduce: decision rules, statistics on constructed tables, the claim catalogue."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from ibscope.reproduce import (
    INCONCLUSIVE,
    LATE_COMPRESSION_STATISTICS,
    NOT_REPRODUCED,
    REPRODUCED,
    UNDERPOWERED,
    VERDICTS,
    Rule,
    bootstrap_interval,
    catalogue,
    compute_statistic,
    decide,
    load_claim,
    minimum_detectable_effect,
    reproduce,
    run_spec,
    t_interval,
)


@pytest.mark.parametrize("direction, lo, hi, expected", [
    ("greater", 0.2, 0.5, REPRODUCED),
    ("greater", -0.3, -0.1, NOT_REPRODUCED),
    ("greater", 0.05, 0.3, INCONCLUSIVE),
    ("less", -0.3, 0.05, REPRODUCED),
    ("less", 0.15, 0.4, NOT_REPRODUCED),
    ("less", 0.05, 0.2, INCONCLUSIVE),
])
def test_decide_gives_each_verdict(direction, lo, hi, expected):
    rule = Rule(direction, 0.1)
    v = decide((lo + hi) / 2, lo, hi, rule, n=5, interval="t")
    assert v.verdict == expected
    assert f"{lo:.4g}" in v.reason


def test_decide_unknown_interval_is_inconclusive():
    v = decide(0.5, float("nan"), float("nan"), Rule("greater", 0.1), n=1, interval="t")
    assert v.verdict == INCONCLUSIVE and "at least 2" in v.reason
    with pytest.raises(ValueError, match="low"):
        decide(0.5, 0.6, 0.4, Rule("greater", 0.1), n=3, interval="t")


@pytest.mark.parametrize("bad, match", [
    ({"direction": "up", "threshold": 0.1}, "direction"),
    ({"direction": "less", "threshold": float("nan")}, "threshold"),
    ({"direction": "less", "threshold": 0.1, "level": 1.0}, "level"),
])
def test_rule_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        Rule.from_dict(bad)


def test_t_interval_matches_scipy():
    x = np.array([0.3, 0.1, 0.45, 0.2, 0.33, 0.27])
    m, lo, hi, n = t_interval(x, 0.9)
    ref = scipy.stats.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=scipy.stats.sem(x))
    assert n == 6 and m == pytest.approx(x.mean())
    np.testing.assert_allclose([lo, hi], ref, rtol=1e-12)
    assert np.isnan(t_interval([1.0], 0.95)[1])


def test_bootstrap_interval_covers_and_handles_degenerate():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 1.0, 200)
    est, lo, hi, n = bootstrap_interval(np.mean, x, n_resamples=500)
    assert lo < 2.0 < hi and lo < est < hi and n == 200
    assert np.isnan(bootstrap_interval(lambda r: float("nan"), x, n_resamples=50)[1])


def _plane_table(compressions, *, seeds=None, wd=None, gaps=None):
    """A tishby-like table: per seed, I(X;T) of 'hidden3' rises to 3 + c at epoch 10 then ends at 3; I(T;Y) rises
    from 0.1 to 0.5 by epoch 10 (the fitting phase ends there)."""
    rows = []
    for i, c in enumerate(compressions):
        seed = i if seeds is None else seeds[i]
        for epoch, ixt in ((0, 1.0), (10, 3.0 + c), (100, 3.0)):
            for layer, li in (("hidden2", 2), ("hidden3", 3), ("output", 4)):
                row = {"seed": seed, "epoch": epoch, "layer": layer, "layer_index": li, "estimator": "binning",
                       "i_xt": ixt if layer == "hidden3" else 1.0, "i_ty": 0.1 if epoch == 0 else 0.5,
                       "unit": "bits",
                       "train_acc": 1.0, "test_acc": 1.0 - (gaps[i] if gaps is not None else 0.1),
                       "train_loss": 0.1, "test_loss": 0.2}
                if wd is not None:
                    row["weight_decay"] = wd
                    row["task_id"] = f"wd{wd}-s{seed}"
                rows.append(row)
    return pd.DataFrame(rows)


def test_late_compression_statistic_on_constructed_table():
    c = [0.3, 0.5, 0.4, 0.6]
    stat = compute_statistic("late_compression", {"r": _plane_table(c)},
                             {"run": "r", "estimator": "binning", "layer": "last_hidden"}, 0.95)
    assert stat.details["layer"] == "hidden3" and stat.unit == "bits"
    np.testing.assert_allclose(stat.per_replicate.sort_values("seed")["value"], c, atol=1e-12)
    m, lo, hi, _ = t_interval(c)
    assert (stat.estimate, stat.low, stat.high) == pytest.approx((m, lo, hi))
    # only snapshots from epoch 50 on: the peak at epoch 10 is left out, so no compression
    late = compute_statistic("late_compression", {"r": _plane_table(c)},
                             {"run": "r", "estimator": "binning", "from_epoch": 50}, 0.95)
    assert late.estimate == pytest.approx(0.0)


def test_compression_difference_and_spearman():
    table = pd.concat([_plane_table([0.5, 0.6, 0.55], wd=0.001, gaps=[0.03, 0.01, 0.02]),
                       _plane_table([0.1, 0.15, 0.05], wd=0.0, gaps=[0.2, 0.15, 0.25])], ignore_index=True)
    diff = compute_statistic("compression_difference", {"r": table},
                             {"a": {"run": "r", "where": {"weight_decay": 0.001}},
                              "b": {"run": "r", "where": {"weight_decay": 0.0}}, "estimator": "binning"}, 0.95)
    assert diff.estimate == pytest.approx(0.55 - 0.1)
    assert decide(diff.estimate, diff.low, diff.high, Rule("greater", 0.0), n=diff.n, interval="").verdict == REPRODUCED
    rho = compute_statistic("compression_gap_spearman", {"r": table},
                            {"run": "r", "estimator": "binning", "n_resamples": 300}, 0.95)
    assert rho.n == 6 and rho.estimate == pytest.approx(-1.0)


def test_quantity_difference_is_paired_by_seed():
    rows = [{"seed": s, "method": m, "quantity": "test_accuracy", "value": v, "unit": "fraction"}
            for s, (a, b) in enumerate([(0.9, 0.8), (0.85, 0.8), (0.95, 0.9)]) for m, v in (("pib", a), ("sgd", b))]
    stat = compute_statistic("quantity_difference", {"r": pd.DataFrame(rows)},
                             {"run": "r", "quantity": "test_accuracy", "a": {"method": "pib"}, "b": {"method": "sgd"}},
                             0.95)
    assert stat.estimate == pytest.approx(np.mean([0.1, 0.05, 0.05])) and stat.n == 3


def test_statistic_errors_name_the_problem():
    with pytest.raises(ValueError, match="Unknown statistic"):
        compute_statistic("nope", {}, {}, 0.95)
    with pytest.raises(ValueError, match="run 'x'"):
        compute_statistic("late_compression", {"r": _plane_table([0.1])}, {"run": "x", "estimator": "binning"}, 0.95)
    with pytest.raises(ValueError, match="estimator 'kde'"):
        compute_statistic("late_compression", {"r": _plane_table([0.1])}, {"run": "r", "estimator": "kde"}, 0.95)
    with pytest.raises(ValueError, match="bad parameters"):
        compute_statistic("late_compression", {"r": _plane_table([0.1])}, {"run": "r", "estimator": "binning",
                                                                              "colour": 1}, 0.95)


def test_catalogue_claims_are_valid_at_every_profile():
    from ibscope.experiments.runner import resolve_config
    from ibscope.reproduce._statistics import STATISTICS
    from ibscope.sweep import grid_points

    claims = catalogue()
    assert len(claims) >= 8
    for claim in claims.values():
        assert claim.statistic in STATISTICS
        assert {"tiny", "quick", "paper"} <= set(claim.profiles)
        assert claim.seeds("quick") >= 5 and claim.seeds("paper") >= 10
        for profile in claim.profiles:
            for name in claim.runs:
                spec = run_spec(claim, name, profile, 2)
                for point in grid_points(spec.grid):
                    resolve_config(spec.experiment, profile=spec.profile, overrides={**spec.config, **point})


def test_claim_file_errors(tmp_path):
    good = (catalogue()["yu-csib-vs-mse"])
    import yaml

    base = {"id": "c", "paper": "p", "statement": "s", "profiles": {"quick": {"seeds": 5}},
            "follows": "the paper's Fig. 1", "deviations": ["batch 512 (paper: 256)"],
            "runs": {"r": {"experiment": "csib_regression", "config": {}}},
            "statistic": {"name": "quantity_mean", "params": {}}, "rule": {"direction": "less", "threshold": 0}}
    cases = [({"statistic": {"name": "evil"}}, "unknown statistic"),
             ({"runs": {"r": {"experiment": "os"}}}, "not registered"),
             ({"id": "other"}, "must equal its file name"),
             ({"extra": 1}, "unknown keys"),
             ({"profiles": {"quick": {"seeds": 5, "epochs": 3}}}, "'seeds' and 'config' only"),
             ({"follows": ""}, "'follows'"), ({"follows": 3}, "'follows'"),
             ({"deviations": "batch"}, "'deviations'"), ({"deviations": ["ok", ""]}, "'deviations'"),
             ({"paper_effect": "big"}, "'paper_effect'"), ({"paper_effect": float("nan")}, "'paper_effect'")]
    for change, match in cases:
        p = tmp_path / "c.yaml"
        p.write_text(yaml.safe_dump({**base, **change}))
        with pytest.raises(ValueError, match=match):
            load_claim(p)
    for key in ("follows", "deviations"):
        p.write_text(yaml.safe_dump({k: v for k, v in base.items() if k != key}))
        with pytest.raises(ValueError, match=f"missing keys \\['{key}'\\]"):
            load_claim(p)
    p.write_text(yaml.safe_dump({**base, "deviations": [], "paper_effect": 0.02}))
    c = load_claim(p)
    assert c.deviations == () and c.paper_effect == 0.02 and c.follows == "the paper's Fig. 1"
    assert good.rule.direction == "less"


@pytest.mark.slow
def test_two_claims_end_to_end_at_tiny_profile(tmp_path):
    for cid in ("tishby-tanh-compression", "yu-csib-vs-mse"):
        res = reproduce(cid, profile="tiny", out=tmp_path, workers=0, progress=False)
        assert res.verdict.verdict in VERDICTS and res.verdict.n == 3
        rec = json.loads((tmp_path / "claims" / cid / "verdict.json").read_text())
        assert rec["verdict"]["verdict"] == res.verdict.verdict and rec["seeds"] == 3
        for run in res.runs.values():
            assert (tmp_path / run / "report.html").is_file()
    index = (tmp_path / "index.html").read_text()
    assert "tishby-tanh-compression" in index and "not run" in index  # the other claims are listed as not run
    assert "/sweep_infoplane.png'" in index  # the runs' own figures are shown with the claim
    # a second call recomputes nothing and gives the same verdict
    again = reproduce("yu-csib-vs-mse", profile="tiny", out=tmp_path, workers=0, progress=False)
    assert again.verdict.estimate == res.verdict.estimate


def test_cli_lists_claims_and_refuses_no_claim(capsys):
    from ibscope.cli import main

    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(cid in out for cid in catalogue())
    assert out.count("follows:") == len(catalogue()) and out.count("deviations:") == len(catalogue())
    assert "batch 512 (Saxe et al.'s code, artemyk/ibsgd: 256)" in out and "paper effect: 0.005" in out
    with pytest.raises(SystemExit, match="name one CLAIM"):
        main(["reproduce"])
    assert main(["reproduce", "no-such-claim", "--out", "/nonexistent/x"]) == 2
    assert "Unknown claim 'no-such-claim'" in capsys.readouterr().err


def test_underpowered_when_the_paper_effect_is_below_the_detectable_effect():
    rule = Rule("greater", 0.0)
    v = decide(0.01, -0.02, 0.04, rule, n=5, interval="t", paper_effect=0.005, mde=0.04)
    assert v.verdict == UNDERPOWERED and "could not detect" in v.reason and UNDERPOWERED in VERDICTS
    # a detectable paper effect, no paper effect, or a decided interval: the verdict is unchanged
    assert decide(0.01, -0.02, 0.04, rule, n=5, interval="t", paper_effect=0.1, mde=0.04).verdict == INCONCLUSIVE
    assert decide(0.01, -0.02, 0.04, rule, n=5, interval="t", mde=0.04).verdict == INCONCLUSIVE
    assert decide(0.03, 0.01, 0.05, rule, n=5, interval="t", paper_effect=0.005, mde=0.04).verdict == REPRODUCED
    with pytest.raises(ValueError, match="paper_effect"):
        decide(0.01, -0.02, 0.04, rule, n=5, interval="t", paper_effect=float("inf"), mde=0.04)


def test_minimum_detectable_effect_is_the_t_power_formula_and_has_80_percent_power():
    x = np.array([0.3, 0.1, 0.45, 0.2, 0.33, 0.27])
    m, lo, hi, n = t_interval(x, 0.95)
    se = scipy.stats.sem(x)
    mde = minimum_detectable_effect(lo, hi, n, 0.95)
    assert mde == pytest.approx((scipy.stats.t.ppf(0.975, 5) + scipy.stats.t.ppf(0.8, 5)) * se)
    # projected to 4x the replicates the standard error halves (and the t quantiles shrink)
    mde24 = minimum_detectable_effect(lo, hi, n, 0.95, seeds=24)
    assert mde24 == pytest.approx((scipy.stats.t.ppf(0.975, 23) + scipy.stats.t.ppf(0.8, 23)) * se / 2)
    assert np.isnan(minimum_detectable_effect(float("nan"), float("nan"), 1, 0.95))
    with pytest.raises(ValueError, match="level"):
        minimum_detectable_effect(0.0, 1.0, 5, 1.5)
    # power check by simulation: a true effect of one MDE (sd known from the design) is detected ~80% of the time
    rng = np.random.default_rng(0)
    sd, k = 1.0, 8
    d = (scipy.stats.t.ppf(0.975, k - 1) + scipy.stats.t.ppf(0.8, k - 1)) * sd / np.sqrt(k)
    sims = rng.normal(d, sd, (4000, k))
    lo = sims.mean(1) - scipy.stats.t.ppf(0.975, k - 1) * sims.std(1, ddof=1) / np.sqrt(k)
    assert 0.72 < (lo > 0).mean() < 0.86  # the t approximation of power (noncentral t: ~0.77 at k = 8)


def test_claims_state_setting_deviations_and_use_only_signed_compression_statistics():
    for claim in catalogue().values():
        assert claim.follows and isinstance(claim.deviations, tuple)
        assert claim.statistic != "late_compression", claim.id  # the old max-minus-final: for the record only
        if claim.statistic in LATE_COMPRESSION_STATISTICS:
            assert claim.statistic_params.get("method", "after_fitting") != "max_minus_final", claim.id
    claims = catalogue()
    assert claims["tishby-tanh-compression"].statistic == "compression_after_fitting"
    assert claims["wang-pib-vs-vanilla"].paper_effect == pytest.approx(0.005)
    assert any("sigmoid" in d for d in claims["chelombiev-adaptive-binning-activations"].deviations)


def test_catalogue_page_shows_deviations_and_power_escaped(tmp_path):
    from ibscope.reproduce import build_catalogue_report

    d = tmp_path / "claims" / "wang-pib-vs-vanilla"
    d.mkdir(parents=True)
    rec = {"claim": "wang-pib-vs-vanilla", "profile": "quick<script>", "seeds": 5,
           "statistic": {"name": "quantity_difference", "params": {}, "unit": "<b>fraction</b>"},
           "verdict": {"verdict": UNDERPOWERED, "estimate": 0.01, "low": -0.02, "high": 0.04, "level": 0.95,
                       "n": 5, "interval": "Student t", "reason": "r<i>", "details": {}},
           "power": {"mde": 0.041, "n": 5, "paper_seeds": 10, "mde_at_paper_seeds": 0.025, "paper_effect": 0.005,
                     "paper_effect_distance": 0.005, "detectable": False},
           "runs": {}}
    (d / "verdict.json").write_text(json.dumps(rec))
    page = build_catalogue_report(tmp_path).read_text()
    assert "<th>deviations</th><th>power</th>" in page
    assert "MDE 0.041 &lt;b&gt;fraction&lt;/b&gt; at n=5" in page and "not detectable" in page
    assert "<script>" not in page and "<b>fraction</b>" not in page and "r&lt;i&gt;" in page
    assert "VGG nets on CIFAR-10/100" in page  # the claim's deviations
    assert f"<b>{UNDERPOWERED}</b>" in page and "not run" in page
