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
    assert len(iiw) == len(ibc.METHODS) and (iiw["unit"] == "bits").all() and (iiw["value"] >= 0).all()
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


def test_dual_ib_and_label_smoothing_tiny(tmp_path):
    cfg = dict(ibc.PROFILES["test"])
    base = ibc.run_seed(ibc.Config(method="vib", **cfg), 0, tmp_path)
    dual = ibc.run_seed(ibc.Config(method="dual_ib", **cfg), 0, tmp_path)
    smooth = ibc.run_seed(ibc.Config(method="vib", label_smoothing=0.1, **cfg), 0, tmp_path)
    for df in (dual, smooth):
        assert list(df["quantity"]) == list(base["quantity"]) and list(df["unit"]) == list(base["unit"])
        acc = df[df["quantity"] == "test_accuracy"]["value"].item()
        assert 0 <= acc <= 1
    assert (dual["method"] == "dual_ib").all()
    # label smoothing changes the training (another IIW), dual IB too
    iiw = {k: d[d["quantity"] == "iiw"]["value"].item() for k, d in (("vib", base), ("dual", dual), ("ls", smooth))}
    assert len({round(v, 9) for v in iiw.values()}) == 3
    assert "config_hash" not in dual.columns  # the runner owns the result cache and the hash
    again = ibc.run_seed(ibc.Config(method="dual_ib", **cfg), 0, tmp_path)  # deterministic given the seed
    pd.testing.assert_frame_equal(again, dual)


def test_stochastic_objectives_add_the_smoothed_cross_entropy():
    """dual IB + w * CE_ls and VIB with CE_ls equal their formulas (bits) on one batch."""
    import math

    from ibscope.objectives import DualIBLoss, NoisyLabels, gaussian_kl

    cfg = {k: v for k, v in ibc.PROFILES["test"].items() if k != "latent_dim"}
    torch.manual_seed(0)
    x, y = torch.randn(8, 64), torch.arange(8) % 10
    for c in (ibc.Config(method="dual_ib", dual_ce_weight=0.5, label_smoothing=0.2, **cfg),
              ibc.Config(method="vib", label_smoothing=0.2, **cfg)):
        model = ibc._build(c, 0, 64, 10)
        out = model(x)
        model.forward = lambda _x, out=out: out  # the same z samples in the objective
        loss, _ = ibc._stochastic_objective(c, 10).fn(model, (x, y))
        ce = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 10), y.repeat(out.logits.shape[0]),
                                               label_smoothing=0.2)
        kl = gaussian_kl(out.mu, out.std).mean()
        if c.method == "vib":
            want = (ce + c.vib_beta * kl) / math.log(2)
        else:
            dual, _ = DualIBLoss(c.vib_beta, noisy_labels=NoisyLabels.smoothing(0.1, 10))(out, y, x)
            want = dual + 0.5 * ce / math.log(2)
        assert float(loss) == pytest.approx(float(want), rel=1e-6)


def test_vib_and_dual_ib_share_the_initialization():
    small = {k: v for k, v in ibc.PROFILES["test"].items() if k != "latent_dim"}
    vib = ibc._build(ibc.Config(method="vib", **small), 3, 64, 10)
    dual = ibc._build(ibc.Config(method="dual_ib", **small), 3, 64, 10)
    assert all(torch.equal(a, b) for a, b in zip(vib.parameters(), dual.parameters(), strict=True))


@pytest.mark.parametrize("bad, match", [
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"label_smoothing": -0.1}, "label_smoothing"),
    ({"label_smoothing": True}, "label_smoothing"),
    ({"method": "dual_ib", "dual_noise": 0.0}, "dual_noise"),
    ({"method": "dual_ib", "dual_gamma": -1.0}, "dual_gamma"),
    ({"method": "dual_ib", "dual_ce_weight": float("nan")}, "dual_ce_weight"),
    ({"method": "dual_ib", "label_smoothing": 0.1}, "dual_ce_weight"),
])
def test_dual_ib_and_label_smoothing_bad_config(bad, match):
    with pytest.raises(ValueError, match=match):
        ibc.Config(**bad)
