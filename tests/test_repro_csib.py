"""CS-IB regression reproductions: the worst-group statistic, the extended csib_regression experiment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ibscope.experiments import _csib_regression as reg
from ibscope.reproduce._statistics import compute_statistic, worst_group_interval
from ibscope.reproduce._verdict import NOT_REPRODUCED, REPRODUCED, Rule, decide


def _t(values, level):
    v = np.asarray(values, float)
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return v.mean(), v.mean() - half, v.mean() + half


# ---------------------------------------------------------------- worst_group_interval
def test_worst_group_interval_is_the_bonferroni_max_and_min():
    a, b, c = [1.0, 2.0, 3.0], [5.0, 5.5, 6.0, 7.0], [-2.0, 0.0, 1.0]
    per = pd.DataFrame({"g": ["a"] * 3 + ["b"] * 4 + ["c"] * 3, "value": a + b + c})
    lvl = 1 - 0.05 / 3  # Bonferroni over three groups
    exp = {k: _t(v, lvl) for k, v in (("a", a), ("b", b), ("c", c))}
    est, lo, hi, n, groups = worst_group_interval(per, by="g", level=0.95, worst="max")
    assert est == pytest.approx(5.875)  # group b's mean
    assert lo == pytest.approx(max(e[1] for e in exp.values()))
    assert hi == pytest.approx(max(e[2] for e in exp.values()))
    assert n == 3 and list(groups["g"]) == ["a", "b", "c"]
    assert np.allclose(groups["level"], lvl)
    # the group intervals are wider than unadjusted 95% ones (the correction is applied)
    assert groups.loc[0, "high"] - groups.loc[0, "low"] > _t(a, 0.95)[2] - _t(a, 0.95)[1] + 0.1
    est, lo, hi, _, _ = worst_group_interval(per, by="g", level=0.95, worst="min")
    assert est == pytest.approx(np.mean(c))
    assert lo == pytest.approx(min(e[1] for e in exp.values()))
    assert hi == pytest.approx(min(e[2] for e in exp.values()))


def test_worst_group_interval_one_group_is_the_plain_t_interval_and_bad_input():
    v = [0.3, 0.1, 0.4, 0.2]
    est, lo, hi, n, _ = worst_group_interval(pd.DataFrame({"g": 1, "value": v}), by="g", level=0.9)
    assert (est, lo, hi) == pytest.approx(_t(v, 0.9)) and n == 4
    # a group with one replicate: no interval (an inconclusive verdict), not a silent number
    per = pd.DataFrame({"g": ["a", "a", "b"], "value": [1.0, 2.0, 3.0]})
    _, lo, hi, n, _ = worst_group_interval(per, by="g")
    assert np.isnan(lo) and np.isnan(hi) and n == 1
    with pytest.raises(ValueError, match="worst"):
        worst_group_interval(per, by="g", worst="mean")
    with pytest.raises(ValueError, match="no column 'dataset'"):
        worst_group_interval(per, by="dataset")
    with pytest.raises(ValueError, match="empty"):
        worst_group_interval(per.iloc[:0], by="g")


# ---------------------------------------------------------------- quantity_difference_every
def _table(shift_b: dict[str, float]) -> pd.DataFrame:
    """Two data sets x methods {new, old} x 6 seeds; new - old = -1 + seed noise (+ shift per data set)."""
    rng = np.random.default_rng(0)
    rows = []
    for ds in ("d1", "d2"):
        for s in range(6):
            base = 5.0 + rng.normal()
            d = -1.0 + 0.1 * rng.normal() + shift_b.get(ds, 0.0)
            rows += [{"task_id": f"{ds}-new-{s}", "dataset": ds, "method": "new", "seed": s, "quantity": "test_rmse",
                      "value": base + d, "unit": "target_sd"},
                     {"task_id": f"{ds}-old-{s}", "dataset": ds, "method": "old", "seed": s, "quantity": "test_rmse",
                      "value": base, "unit": "target_sd"}]
    return pd.DataFrame(rows)


PARAMS = {"run": "r", "quantity": "test_rmse", "a": {"method": "new"}, "b": {"method": "old"}, "by": "dataset"}


def test_quantity_difference_every_holds_only_when_every_group_holds():
    rule = Rule("less", 0.0, 0.95)
    ok = compute_statistic("quantity_difference_every", {"r": _table({})}, PARAMS, 0.95)
    assert ok.unit == "target_sd" and ok.n == 6 and -1.1 < ok.estimate < -0.9
    assert decide(ok.estimate, ok.low, ok.high, rule, n=ok.n, interval=ok.interval).verdict == REPRODUCED
    per = ok.per_replicate
    assert len(per) == 12 and {"dataset", "seed", "a", "b", "value", "group_estimate", "group_low",
                               "group_high", "group_n"} <= set(per.columns)
    assert np.allclose(per["value"], per["a"] - per["b"])
    assert set(ok.details["groups"]) == {"d1", "d2"} and ok.details["group_level"] == pytest.approx(0.975)
    # d2's difference is +1 instead of -1: the worst group refutes the claim, though d1 still holds
    bad = compute_statistic("quantity_difference_every", {"r": _table({"d2": 2.0})}, PARAMS, 0.95)
    assert bad.details["worst_group"] == "d2" and 0.9 < bad.estimate < 1.1
    assert bad.details["groups"]["d1"]["high"] < 0
    assert decide(bad.estimate, bad.low, bad.high, rule, n=bad.n, interval=bad.interval).verdict == NOT_REPRODUCED
    # the plain paired difference does not pool the data sets silently (it would say 0 on average)
    with pytest.raises(ValueError, match="several rows per seed"):
        compute_statistic("quantity_difference", {"r": _table({"d2": 2.0})},
                          {k: v for k, v in PARAMS.items() if k not in ("by", "worst")}, 0.95)


def test_quantity_difference_every_errors():
    runs = {"r": _table({})}
    with pytest.raises(ValueError, match="'by' names column 'task'"):
        compute_statistic("quantity_difference_every", runs, {**PARAMS, "by": "task"}, 0.95)
    with pytest.raises(ValueError, match="No rows of run 'r' with method = 'vib'"):
        compute_statistic("quantity_difference_every", runs, {**PARAMS, "b": {"method": "vib"}}, 0.95)
    with pytest.raises(ValueError, match="quantity 'rmse'"):
        compute_statistic("quantity_difference_every", runs, {**PARAMS, "quantity": "rmse"}, 0.95)


# ---------------------------------------------------------------- the experiment
def test_config_validation_names_the_setting():
    for bad, match in [({"method": "nib"}, "method"), ({"dataset": "linnerud"}, "dataset"),
                       ({"vib_beta": -1.0}, "vib_beta"), ({"vib_beta": True}, "vib_beta"),
                       ({"rmse_unit": "bits"}, "rmse_unit"), ({"n_synthetic": 0}, "n_synthetic")]:
        with pytest.raises(ValueError, match=match):
            reg.Config(**bad)


def test_synthetic_data_are_fixed_by_split_seed_and_shaped():
    for ds, d_in, d_out in [("friedman1", 10, 1), ("friedman2", 4, 1), ("friedman3", 4, 1), ("linear_2d", 20, 2)]:
        cfg = reg.Config(dataset=ds, n_synthetic=100)
        xtr, ytr, xte, yte = reg._data(cfg)
        assert xtr.shape == (70, d_in) and yte.shape == (30, d_out)
        assert np.array_equal(reg._data(cfg)[1], ytr)
        assert not np.array_equal(reg._data(reg.Config(dataset=ds, n_synthetic=100, split_seed=1))[1], ytr)


def test_rmse_units_and_resume(tmp_path, monkeypatch, one_thread):
    kw = {**reg.PROFILES["test"], "dataset": "linear_2d", "method": "csib"}
    tgt = reg.run_seed(reg.Config(**kw), 0, tmp_path).set_index("quantity")
    sd = reg.run_seed(reg.Config(**kw, rmse_unit="sd"), 0, tmp_path).set_index("quantity")
    assert set(tgt["unit"]) == {"target"} and set(sd["unit"]) == {"target_sd"}
    # the two targets have different scales: the sd unit is not the target unit divided by one number
    _, ytr, _, _ = reg._data(reg.Config(**kw))
    assert ytr.std(0).min() * sd.loc["test_rmse", "value"] < tgt.loc["test_rmse", "value"] \
        < ytr.std(0).max() * sd.loc["test_rmse", "value"]
    # a finished seed is kept by the runner and read back, not trained again
    import ibscope.training as training
    from ibscope.experiments import runner

    args = dict(seeds=[0], out_dir=tmp_path / "run", overrides={**kw, "rmse_unit": "sd"}, progress=False,
                report=False)
    runner.run("csib_regression", **args)
    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("trained again"))
    again = pd.read_parquet(runner.run("csib_regression", **args) / "results.parquet").set_index("quantity")
    np.testing.assert_allclose(again.loc[sd.index, "value"], sd["value"], rtol=1e-9)


def test_vib_with_a_large_beta_carries_no_information(one_thread):
    """Ground truth: with vib_beta = 10 the posterior collapses to the prior, so I(Z;X) <= KL -> 0 bits and
    the prediction is the training mean (test RMSE = that of the mean); with beta = 0 it learns x sin x."""
    kw = {"method": "vib", "dataset": "heteroscedastic", "hidden": (8,), "epochs": 100, "n_synthetic": 200,
          "batch_size": 50, "lr": 5e-2, "rmse_unit": "sd"}
    cfg = reg.Config(**kw, vib_beta=10.0)
    _, ytr, _, yte = reg._data(cfg)
    mean_rmse = float(np.sqrt((((yte - ytr.mean()) / ytr.std()) ** 2).mean()))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        collapsed = reg.run_seed(cfg, 0, tmp).set_index("quantity")["value"]
        learned = reg.run_seed(reg.Config(**kw, vib_beta=0.0), 0, tmp).set_index("quantity")["value"]
    assert collapsed["izx_upper"] < 0.05 and abs(collapsed["test_rmse"] - mean_rmse) < 0.01
    assert learned["izx_upper"] > 10 and learned["test_rmse"] < 0.9 * mean_rmse


@pytest.mark.slow
def test_csib_vs_vib_claim_end_to_end_at_tiny_profile(tmp_path):
    from ibscope.reproduce import reproduce

    res = reproduce("yu-csib-vs-vib", profile="tiny", out=tmp_path, workers=0, progress=False)
    assert res.verdict.n == 3 and set(res.verdict.details["groups"]) == set(reg.DATASETS)
    per = pd.read_csv(tmp_path / "claims" / "yu-csib-vs-vib" / "replicates.csv")
    assert len(per) == 3 * len(reg.DATASETS)
    # the claims share their run: yu-csib-vs-mse trains nothing new
    other = reproduce("yu-csib-vs-mse", profile="tiny", out=tmp_path, workers=0, progress=False)
    assert other.runs == res.runs


# ---------------------------------------------------------------- the reference code's objective
def test_code_loss_of_a_1d_target_is_the_sum_of_squared_errors_over_ln2():
    """Ground truth, derived from the code's kernels: a 1-D target's Gram matrices are constant (1 within y
    and within y_hat, exp(-||y - y_hat||^2 / 2) across), so its CS term is -2 log2(c S) + 2 log2 S = SSE/ln2."""
    import math

    import torch

    from ibscope.objectives import cs_qmi_normalized, csib_code_loss, gaussian_gram

    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(40, 3, generator=g), torch.randn(40, 5, generator=g)
    y = torch.randn(40, 1, generator=g)
    y_hat = y + 0.2 * torch.randn(40, 1, generator=g)
    kx = gaussian_gram(x, 1.0)
    s = float((kx.sum(1) / (kx ** 2).sum(1)).sum())  # the code's per-row weights summed
    c = math.exp(-float(((y - y_hat) ** 2).sum()) / 2)
    expected = (-2 * math.log2(c * s) + 2 * math.log2(s))
    loss, terms = csib_code_loss(x, z, y, y_hat, 0.0)
    assert float(loss) == pytest.approx(expected, rel=1e-4) and terms["fit"] == pytest.approx(expected, rel=1e-4)
    # beta adds the normalized CS-QMI, which is 1 for Z = X and below 1 for an independent Z
    assert float(cs_qmi_normalized(kx, kx)) == pytest.approx(1.0, rel=1e-5)
    loss_b, terms_b = csib_code_loss(x, z, y, y_hat, 0.5)
    assert 0 < terms_b["i_cs_normalized"] < 1
    assert float(loss_b) == pytest.approx(expected + 0.5 * terms_b["i_cs_normalized"], rel=1e-4)
    # several target columns: per-row kernels, 0 for a perfect prediction
    y2 = torch.randn(40, 2, generator=g)
    assert csib_code_loss(x, z, y2, y2.clone(), 0.0)[1]["fit"] == pytest.approx(0.0, abs=1e-5)
    assert csib_code_loss(x, z, y2, y2 + 1.0, 0.0)[1]["fit"] > 0.1


def test_paper_code_mode_runs_and_selects_the_best_test_epoch(tmp_path, one_thread):
    kw = {**reg.PROFILES["test"], **reg.PROFILES["paper_code"], "hidden": (8,), "epochs": 4,
          "dataset": "heteroscedastic", "method": "csib", "rmse_unit": "sd"}
    cfg = reg.Config(**kw)
    assert (cfg.mode, cfg.select, cfg.lr_step) == ("paper_code", "best_test", (10, 0.6))
    out = reg.run_seed(cfg, 0, tmp_path).set_index("quantity")["value"]
    assert out["test_rmse"] <= out["test_rmse_last"] and np.isfinite(out["train_rmse"])
    for bad, match in [({"mode": "paper"}, "mode"), ({"select": "best"}, "select"),
                       ({"lr_step": (0, 0.5)}, "lr_step"), ({"lr_step": (10, 1.5)}, "lr_step")]:
        with pytest.raises(ValueError, match=match):
            reg.Config(**bad)
