"""The ib_compare and csib_regression experiments on their tiny 'test' profiles."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from ibscope.experiments import _csib_regression as reg
from ibscope.experiments import _ib_compare as ibc


def test_ib_compare_all_methods_tiny(tmp_path):
    frames = [ibc.run_seed(ibc.Config(method=m, **ibc.PROFILES["test"]), 0, tmp_path) for m in ibc.METHODS]
    res = pd.concat(frames, ignore_index=True)
    assert set(res["method"]) == set(ibc.METHODS)
    acc = res[res["quantity"] == "test_accuracy"]
    assert ((acc["value"] >= 0) & (acc["value"] <= 1)).all() and (acc["unit"] == "fraction").all()
    iiw = res[res["quantity"] == "iiw"]
    assert len(iiw) == 5 and (iiw["unit"] == "bits").all() and (iiw["value"] >= 0).all()
    assert res["unit"].notna().all()
    # resume: a second call reads the stored rows
    again = ibc.run_seed(ibc.Config(method="vanilla", **ibc.PROFILES["test"]), 0, tmp_path)
    pd.testing.assert_frame_equal(again, frames[0])
    summary = ibc.summarize(pd.concat([res, res.assign(seed=1)]))
    assert {"mean", "ci95", "n_seeds"} <= set(summary.columns)
    assert all(p.exists() for p in ibc.plot(res, tmp_path / "fig"))


def test_summarize_t_interval_in_order_of_appearance():
    from scipy import stats

    vals = {"vib": [0.90, 0.92, 0.95, 0.91], "pib": [0.80, 0.84, 0.82, 0.86]}
    rows = [{"dataset": "digits", "method": m, "quantity": "test_accuracy", "seed": s, "value": v,
             "unit": "fraction"} for m, vs in vals.items() for s, v in enumerate(vs)]
    summary = ibc.summarize(pd.DataFrame(rows))
    assert list(summary["method"]) == ["vib", "pib"]  # not sorted
    for m, vs in vals.items():
        row = summary[summary["method"] == m].iloc[0]
        v = pd.Series(vs)
        assert row["mean"] == pytest.approx(v.mean())
        assert row["ci95"] == pytest.approx(stats.t.ppf(0.975, 3) * v.std(ddof=1) / 2)
        assert row["n_seeds"] == 4 and row["unit"] == "fraction"


def test_same_initialization_for_every_method():
    cfg = {k: v for k, v in ibc.PROFILES["test"].items() if k != "latent_dim"}
    base = ibc._build(ibc.Config(method="vanilla", **cfg), 3, 64, 10)
    for m in ("l2", "dropout", "pib"):
        other = ibc._build(ibc.Config(method=m, **cfg), 3, 64, 10)
        lin_a = [p for p in base.parameters()]
        lin_b = [p for p in other.parameters()]
        assert all(torch.equal(a, b) for a, b in zip(lin_a, lin_b, strict=False))
    vib = ibc._build(ibc.Config(method="vib", **cfg), 3, 64, 10)
    assert torch.equal(vib.encoder.trunk[0].weight, base[0].weight)


def test_ib_compare_bad_config():
    with pytest.raises(ValueError, match="method"):
        ibc.Config(method="sgld")
    with pytest.raises(ValueError, match="dataset"):
        ibc.Config(dataset="cifar")
    with pytest.raises(ValueError, match="pib_beta"):
        ibc.Config(pib_beta=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        ibc.Config(temperature=-0.1)


def test_csib_regression_tiny(tmp_path):
    # every data set once (methods in turn) and every method on diabetes
    pairs = dict.fromkeys([(d, reg.METHODS[i % len(reg.METHODS)]) for i, d in enumerate(reg.DATASETS)]
                          + [("diabetes", m) for m in reg.METHODS])
    rows = [reg.run_seed(reg.Config(method=m, dataset=d, **reg.PROFILES["test"]), 0, tmp_path) for d, m in pairs]
    res = pd.concat(rows, ignore_index=True)
    rmse = res[res["quantity"] == "test_rmse"]
    assert len(rmse) == len(pairs) and (rmse["value"] > 0).all()
    assert set(rmse["unit"]) == {"target"}  # the default rmse_unit
    assert all(p.exists() for p in reg.plot(res, tmp_path / "fig"))
    with pytest.raises(ValueError, match="method"):
        reg.Config(method="mae")
