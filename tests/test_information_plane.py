"""Tests of ibscope.InformationPlane / information_plane: inputs, selectors, errors, resume, memory."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ibscope
from ibscope import estimators
from ibscope.models import MLP, ConvNet
from ibscope.tracking import InformationPlane, information_plane
from ibscope.tracking._plane import COLUMNS, read_plane_table
from ibscope.training import fit, load_checkpoint


def _data(n=240, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


class Shared(nn.Module):
    """One Linear applied twice (weight sharing)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.block = nn.Linear(6, 6)
        self.act = nn.Tanh()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.act(self.block(self.act(self.block(x)))))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(6, 3), nn.Linear(4, 3)
        self.mix = nn.Tanh()
        self.head = nn.Linear(3, 2)

    def forward(self, xa, xb):
        return self.head(self.mix(self.a(xa) + self.b(xb)))


class GRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gru = nn.GRU(3, 4, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])


def test_table_contract_and_json(tmp_path):
    x, y = _data()
    m = MLP(6, (5, 3), 2, seed=0)
    plane = InformationPlane(m, x, y, estimators=["binning", "ksg"], schedule=[0, 2], out_dir=tmp_path)
    fit(m, nn.CrossEntropyLoss(), (x, y), torch.optim.Adam(m.parameters(), 1e-2), epochs=2, batch_size=32,
        callbacks=[plane], eval_data=(x, y), progress=False)
    df = plane.results()
    assert list(df.columns[:len(COLUMNS)]) == COLUMNS
    assert {"train_loss", "eval_loss", "eval_acc"} <= set(df.columns)
    assert sorted(df["epoch"].unique()) == [0, 2] and len(df) == 2 * 3 * 2
    assert df["layer_index"].tolist()[:3] == [1, 2, 3] and (df["n"] == 240).all()
    assert df["i_xt_lo"].isna().all() and df["ci_level"].isna().all()
    from ibscope.estimators import (
        FLAG_DESCRIPTIONS,  # flags are ';'-joined names of the diagnostics ('' healthy)
    )
    assert {f for v in df["flags"] for f in v.split(";") if f} <= set(FLAG_DESCRIPTIONS)
    # 240 samples in 30^5 bins at initialization: binning's I(X;T) sits at log2 240, flagged
    first = df[(df["epoch"] == 0) & (df["estimator"] == "binning") & (df["layer"] == "hidden1")]
    assert "saturated_xt" in first["flags"].iloc[0]
    assert (df["seconds"] >= 0).all() and (df["unit"] == "bits").all()
    # epoch 0 is the initialization: no training loss yet, but an eval loss
    e0 = df[df["epoch"] == 0]
    assert e0["train_loss"].isna().all() and e0["eval_loss"].notna().all()
    # binning of a deterministic net: I(X;T) = H(T) <= log2 n, I(T;Y) <= H(Y) <= 1 bit
    b = df[df["estimator"] == "binning"]
    assert (b["i_xt"] <= math.log2(240) + 1e-9).all() and (b["i_ty"] <= 1 + 1e-9).all()
    on_disk = pd.read_parquet(tmp_path / "information_plane.parquet")
    assert len(on_disk) == len(df)
    meta = json.loads((tmp_path / "information_plane.json").read_text())
    assert meta["format"] == "ibscope.information_plane/1" and meta["layers"] == ["hidden1", "hidden2", "output"]
    assert set(meta["estimators"]) == {"binning", "ksg"} and meta["schedule"] == [0, 2]
    assert meta["ci"] is None and meta["n_samples"] == 240 and meta["unit"] == "bits"
    # tanh hidden layers get the (-1, 1) binning range, the softmax output (0, 1)
    assert meta["estimators"]["binning"]["params"]["value_range"] == [-1.0, 1.0]
    assert meta["estimators"]["binning"]["per_layer"]["output"]["value_range"] == [0.0, 1.0]
    # the binning rows equal the estimator on the recorded activations
    with torch.no_grad():
        h1 = torch.tanh(m.fc1(x)).numpy()
    want = estimators.get("binning", value_range=(-1, 1)).plane(h1, y.numpy())
    got = df[(df["estimator"] == "binning") & (df["epoch"] == 2) & (df["layer"] == "hidden1")]
    assert got["i_xt"].item() == pytest.approx(want[0], abs=1e-9)
    assert got["i_ty"].item() == pytest.approx(want[1], abs=1e-9)


def test_resume_skips_epochs_on_disk(tmp_path):
    x, y = _data()
    m = MLP(6, (5,), 2, seed=0)
    p1 = InformationPlane(m, x, y, estimators="binning", out_dir=tmp_path)
    assert len(p1.record(0)) == 2
    p2 = InformationPlane(m, x, y, estimators="binning", out_dir=tmp_path)
    assert p2.epochs_done() == [0] and len(p2.record(0)) == 0 and len(p2.record(3)) == 2
    assert sorted(read_plane_table(tmp_path)["epoch"].unique()) == [0, 3]  # the parts, before compaction
    assert p2.compact() == tmp_path / "information_plane.parquet"
    assert sorted(pd.read_parquet(tmp_path / "information_plane.parquet")["epoch"].unique()) == [0, 3]
    with pytest.raises(ValueError, match="other estimators"):
        InformationPlane(m, x, y, estimators="kde_upper", out_dir=tmp_path)


def test_hand_loop_equals_fit():
    x, y = _data()
    loss = nn.CrossEntropyLoss()

    def run_fit():
        m = MLP(6, (5, 3), 2, seed=1)
        plane = InformationPlane(m, x, y, estimators=["binning", "kde_upper"], schedule=[0, 1, 3])
        fit(m, loss, (x, y), torch.optim.SGD(m.parameters(), lr=0.2), epochs=3, batch_size=40, seed=5,
            callbacks=[plane], progress=False)
        return plane.results()

    def run_hand():
        m = MLP(6, (5, 3), 2, seed=1)
        opt = torch.optim.SGD(m.parameters(), lr=0.2)
        plane = InformationPlane(m, x, y, estimators=["binning", "kde_upper"])
        g = torch.Generator().manual_seed(5)
        plane.record(0)
        for epoch in range(1, 4):
            for idx in torch.split(torch.randperm(len(x), generator=g), 40):
                opt.zero_grad()
                loss(m(x[idx]), y[idx]).backward()
                opt.step()
            if epoch in (1, 3):
                plane.record(epoch)
        return plane.results()

    a, b = run_fit(), run_hand()
    cols = ["epoch", "layer", "layer_index", "estimator", "unit", "flags", "n"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    np.testing.assert_allclose(a[["i_xt", "i_ty"]].to_numpy(), b[["i_xt", "i_ty"]].to_numpy(), rtol=1e-6, atol=1e-6)
    # training moved the plane (the comparison is not between two initializations)
    last = a[(a["epoch"] == 3) & (a["estimator"] == "kde_upper")]["i_ty"].to_numpy()
    first = a[(a["epoch"] == 0) & (a["estimator"] == "kde_upper")]["i_ty"].to_numpy()
    assert np.abs(last - first).max() > 1e-3


def test_weight_sharing_error_and_call():
    x, y = _data()
    net = Shared()
    with pytest.raises(ValueError, match=r"Layer 'block' ran 2 times in one forward pass.*call="):
        information_plane(net, x, y, layers=["block"], estimators="ksg")
    first = information_plane(net, x, y, layers=["block"], call="first", estimators="kde_upper")
    last = information_plane(net, x, y, layers=["block"], call="last", estimators="kde_upper")
    both = information_plane(net, x, y, layers=["block"], call={"block": "all"}, estimators="kde_upper")
    with torch.no_grad():
        t1 = net.block(x)
        t2 = net.block(torch.tanh(t1))
    est = estimators.get("kde_upper")
    assert first["i_xt"].item() == pytest.approx(est.plane(t1, y)[0], rel=1e-6)
    assert last["i_xt"].item() == pytest.approx(est.plane(t2, y)[0], rel=1e-6)
    assert both["i_xt"].item() == pytest.approx(est.plane(torch.cat([t1, t2], 1), y)[0], rel=1e-6)
    # batched recording keeps the rows of each call apart (the old recorder interleaved them)
    batched = information_plane(net, x, y, layers=["block"], call="all", estimators="kde_upper", batch_size=50)
    assert batched["i_xt"].item() == pytest.approx(both["i_xt"].item(), rel=1e-6)


def test_gru_with_output_selector():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 5, 3, generator=g)
    y = (x[:, :, 0].sum(1) > 0).long()
    net = GRUNet()
    with pytest.raises(TypeError, match=r"Layer 'gru' returns a tuple.*output="):
        information_plane(net, x, y, layers=["gru"], estimators="ksg")
    df = information_plane(net, x, y, layers=["gru"], output=0, estimators="kde_upper")
    with torch.no_grad():
        want = estimators.get("kde_upper").plane(net.gru(x)[0].reshape(120, -1), y)
    assert df["i_xt"].item() == pytest.approx(want[0], rel=1e-6)
    # h_n is (layers, batch, hidden): not batch-first, said plainly; a function selects it
    with pytest.raises(ValueError, match="first dimension is not the samples"):
        information_plane(net, x, y, layers=["gru"], output=1, estimators="ksg")
    df = information_plane(net, x, y, layers=["gru"], output=lambda o: o[1][-1], estimators="ksg")
    assert df["i_ty"].item() > 0


def test_two_inputs_tuple_and_dataloader():
    xa, y = _data(200, 6)
    xb = torch.randn(200, 4, generator=torch.Generator().manual_seed(3))
    net = TwoInputs()
    kw = dict(layers=["mix"], estimators=["kde_upper", "ksg"])
    a = information_plane(net, (xa, xb), y, **kw)
    loader = DataLoader(TensorDataset(xa, xb, y), batch_size=64, shuffle=False)
    b = information_plane(net, loader, None, **kw)  # labels from the batches' last element
    c = information_plane(net, DataLoader(TensorDataset(xa, xb), batch_size=64), y, **kw)
    for other in (b, c):
        np.testing.assert_allclose(a[["i_xt", "i_ty"]].to_numpy(), other[["i_xt", "i_ty"]].to_numpy(),
                                   rtol=1e-6, atol=1e-9)
    # I(X;T) of a non-plane estimator uses both inputs (side by side)
    with torch.no_grad():
        t = net.mix(net.a(xa) + net.b(xb))
    want = estimators.get("ksg").estimate(torch.cat([xa, xb], 1), t)
    assert a[a["estimator"] == "ksg"]["i_xt"].item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="shuffle"):
        InformationPlane(net, DataLoader(TensorDataset(xa, xb, y), batch_size=64, shuffle=True), None)


def test_bad_input_named_at_construction():
    x, y = _data()
    m = MLP(6, (5,), 2, seed=0)
    with pytest.raises(TypeError, match="'model'"):
        InformationPlane(lambda t: t, x, y)
    with pytest.raises(ValueError, match=r"\['nope'\] not found.*'layers'"):
        InformationPlane(m, x, y, layers=["nope"])
    with pytest.raises(ValueError, match="different lengths: 240 inputs, 239 labels"):
        InformationPlane(m, x, y[:-1])
    with pytest.raises(ValueError, match="'estimators': Unknown estimator 'magic'"):
        InformationPlane(m, x, y, estimators="magic")
    with pytest.raises(ValueError, match="'labels' is None"):
        InformationPlane(m, x, None)
    with pytest.raises(ValueError, match="'ci'"):
        InformationPlane(m, x, y, ci=95)
    with pytest.raises(ValueError, match="'labels' must be integer"):
        InformationPlane(m, x, y.float() + 0.5)
    plane = InformationPlane(m, x, y, schedule=[0, 5])
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError, match=r"'schedule' has epoch\(s\) \[5\] past .*epochs=3"):
        fit(m, nn.CrossEntropyLoss(), (x, y), opt, epochs=3, batch_size=32, callbacks=[plane], progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))  # no step was taken


def test_ci_columns_and_default_schedule(tmp_path):
    x, y = _data(200)
    m = MLP(6, (4,), 2, seed=0)
    plane = InformationPlane(m, x, y, estimators=["binning", "ksg"], ci=0.9, n_resamples=5, n_snapshots=3,
                             out_dir=tmp_path)
    fit(m, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(m.parameters(), lr=0.1), epochs=4, batch_size=50,
        callbacks=[plane], progress=False)
    df = plane.results()
    assert plane.schedule[0] == 0 and plane.schedule[-1] == 4 and sorted(df["epoch"].unique()) == plane.schedule
    assert (df["ci_level"] == 0.9).all()
    for q, flag in (("i_xt", "saturated_xt"), ("i_ty", "saturated_ty")):
        # a value at its ceiling gets no interval (NaN bounds) and says so in its flags
        none = df[f"{q}_lo"].isna()
        assert df.loc[none, "flags"].str.contains(flag).all() and df.loc[none, f"{q}_hi"].isna().all()
        ok = df[~none]
        assert len(ok) and (ok[f"{q}_lo"] <= ok[f"{q}_hi"]).all() and (ok[f"{q}_lo"] >= 0).all()
        # the interval is around the estimate (not a constant, not degenerate everywhere)
        assert ((ok[f"{q}_lo"] <= ok[q] + 1e-9) & (ok[q] <= ok[f"{q}_hi"] + 1e-9)).mean() > 0.7
    assert (df["i_xt_hi"] - df["i_xt_lo"]).max() > 0
    assert json.loads((tmp_path / "information_plane.json").read_text())["ci"] == 0.9


def test_checkpoint_resume_keeps_rows_in_memory(tmp_path):
    x, y = _data(120)
    m = MLP(6, (4,), 2, seed=0)
    plane = InformationPlane(m, x, y, estimators="binning", schedule=[0, 1, 2])
    fit(m, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(m.parameters(), lr=0.1), epochs=2, batch_size=40,
        callbacks=[plane], checkpoint_dir=tmp_path, progress=False)
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["callbacks"][plane.state_key]
    fresh = InformationPlane(m, x, y, estimators="binning", schedule=[0, 1, 2])
    fresh.load_state_dict(saved)
    assert fresh.epochs_done() == [0, 1, 2] and len(fresh.results()) == len(plane.results())


def test_wide_layers_are_projected_and_grouped():
    # a conv layer of 8 x 14 x 14 = 1568 units, reduced to 64 dims as it is recorded
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 784, generator=g)
    y = torch.randint(0, 10, (300,), generator=g)
    net = ConvNet(channels=(8,), dense=16, seed=0)
    plane = InformationPlane(net, x, y, estimators="kde_upper", max_features=64, max_bytes=300 * 64 * 4,
                             batch_size=100)
    assert plane.recorder.widths()["hidden1"] == 1568
    groups = plane._groups()
    # hidden1 fills the budget alone; the narrow dense and output layers share one pass
    assert groups == [["hidden1"], ["hidden2", "output"]]
    acts, _ = plane.recorder.capture(["hidden1"])
    assert acts["hidden1"].shape == (300, 64)
    assert plane.recorder.reduction_["hidden1"] == {"method": "random_projection", "from": 1568, "to": 64,
                                                    "seed": 0}
    # the projection is fixed across snapshots and preserves distances (Johnson-Lindenstrauss)
    again, _ = plane.recorder.capture(["hidden1"])
    assert torch.equal(acts["hidden1"], again["hidden1"])
    with torch.no_grad():
        full = net.hidden1(net.conv1(x.reshape(-1, 1, 28, 28))).reshape(300, -1)
    ratio = torch.pdist(acts["hidden1"]) / torch.pdist(full)
    assert 0.6 < float(ratio.min()) and float(ratio.max()) < 1.4 and abs(float(ratio.mean()) - 1) < 0.05
    df = plane.record(0)
    row = df[df["layer"] == "hidden1"]
    assert "random_projection" in row["flags"].item().split(";")
    assert not df[df["layer"] != "hidden1"]["flags"].str.contains("random_projection").any()


def test_lazy_exports():
    assert ibscope.InformationPlane is InformationPlane and ibscope.information_plane is information_plane


def test_plot_writes_the_figure(tmp_path):
    x, y = _data(100)
    m = MLP(6, (4,), 2, seed=0)
    plane = InformationPlane(m, x, y, estimators="binning", out_dir=tmp_path)
    with pytest.raises(ValueError, match="Nothing to plot"):
        plane.plot()
    plane.record(0)
    path = plane.plot()
    assert path == tmp_path / "information_plane.png" and path.stat().st_size > 1000


def test_default_estimator_and_pca_cache_match_compressed():
    x, y = _data(300, 8)
    m = MLP(8, (6, 3), 2, seed=0)
    df = information_plane(m, x, y)
    assert set(df["estimator"]) == {"pca_ksg"}
    est = estimators.get("compressed", estimator="ksg", compression="pca", dim_x=4, dim_y=4)
    with torch.no_grad():
        h1 = torch.tanh(m.fc1(x))
        h2 = torch.tanh(m.fc2(h1))
    for layer, t in (("hidden1", h1), ("hidden2", h2)):  # 6 units: PCA'd; 3 units: left as they are
        row = df[df["layer"] == layer]
        assert row["i_xt"].item() == pytest.approx(est.estimate(x, t), rel=1e-6, abs=1e-9)
        assert row["i_ty"].item() == pytest.approx(est.estimate(t, y, discrete_y=True), rel=1e-6, abs=1e-9)


def test_list_of_batches_is_a_loader():
    x, y = _data(120)
    m = MLP(6, (4,), 2, seed=0)
    batches = [(x[i:i + 50], y[i:i + 50]) for i in range(0, 120, 50)]
    a = information_plane(m, batches, None, estimators="binning")
    b = information_plane(m, x, y, estimators="binning")
    np.testing.assert_allclose(a[["i_xt", "i_ty"]].to_numpy(), b[["i_xt", "i_ty"]].to_numpy(), rtol=1e-9)


def test_groups_count_the_layers_own_dtype():
    # a float64 model: two 8-wide layers of 100 rows hold 2 x 6400 bytes; at the float32 count (2 x 3200) they
    # would be grouped under max_bytes=8000 and the recorder's budget check would refuse the capture
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    x, y = torch.randn(100, 3, dtype=torch.float64), torch.randint(0, 2, (100,))
    plane = InformationPlane(net, x, y, layers=["1", "3"], estimators="binning", max_bytes=8000)
    assert plane._groups() == [["1"], ["3"]]
    assert len(plane.record(0)) == 2
