"""Issue 21: the fast batched 12-bit path (shared-data minibatches, fused Adam, binning of all
seeds at once) gives the same batches and rows as the path before it and as the one-seed path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibscope import estimators as registry
from ibscope.data import train_test_split, twelve_bit
from ibscope.models import MLP, BatchedMLP, SeedBatches

SEEDS = [0, 1, 2]


def _data():
    x, y = twelve_bit()
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    rows = torch.as_tensor(np.stack([train_test_split(len(y), train_fraction=0.5, seed=s, stratify=y.numpy()).train
                                     for s in SEEDS]))
    return x, y, rows


def test_seed_batches_rows_gives_the_stacked_batches():
    x, y, rows = _data()
    shared = SeedBatches(x, y, 300, [7, 8, 9], rows=rows)
    stacked = SeedBatches(x[rows], y[rows], 300, [7, 8, 9])
    assert len(shared) == len(stacked) == -(-rows.shape[1] // 300)
    for _ in range(2):  # two epochs: the generators advance alike
        for (xa, ya), (xb, yb) in zip(shared, stacked, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    state = shared.state_dict()  # resume: the same next epoch
    again = SeedBatches(x, y, 300, [0, 0, 0], rows=rows)
    again.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(again, stacked, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_seed_batches_rows_bad_input():
    x, y, rows = _data()
    with pytest.raises(ValueError, match="'rows'"):
        SeedBatches(x, y, 4, SEEDS[:2], rows=rows)
    with pytest.raises(ValueError, match="'rows'"):
        SeedBatches(x, y, 4, SEEDS, rows=rows.float())
    with pytest.raises(ValueError, match="'rows'"):
        SeedBatches(x, y, 4, SEEDS, rows=rows + len(y))
    with pytest.raises(ValueError, match=r"x \(N, ...\) and y \(N,\)"):
        SeedBatches(x, y[:10], 4, SEEDS, rows=rows)


def test_layer_outputs_with_logits_is_the_forward_pass():
    x, _, _ = _data()
    model = BatchedMLP([MLP(12, (10, 7), 2, seed=s) for s in SEEDS])
    outs = model.layer_outputs(x[:50], logits=True)
    assert set(outs) == {"hidden1", "hidden2", "output", "logits"}
    torch.testing.assert_close(outs["logits"], model(x[:50]), rtol=0, atol=0)
    torch.testing.assert_close(outs["output"], torch.softmax(outs["logits"], -1), rtol=1e-6, atol=1e-7)
    assert "logits" not in model.layer_outputs(x[:50])


@pytest.mark.parametrize("unit", ["bits", "nats"])
@pytest.mark.parametrize("params", [{"n_bins": 30, "value_range": (-1.0, 1.0)}, {"n_bins": 8, "value_range": (0.0, 1.0)},
                                    {"bin_width": 0.25}])
def test_binning_plane_seeds_equals_plane_seed_by_seed(params, unit):
    from ibscope.experiments._tishby_batched import binning_plane_seeds

    rng = np.random.default_rng(0)
    acts = np.tanh(rng.normal(size=(4, 500, 3)) * np.array([0.3, 1.0, 3.0])).astype(np.float32)
    acts[1] = np.where(acts[1] > 0, 0.55, -0.55)  # at most 8 distinct rows: H(T) well below log N
    labels = rng.integers(0, 3, 500)
    labels[:250] = (acts[2, :250, 0] > 0)  # seed 2's layer carries label information
    est = registry.get("binning", unit=unit, **params)
    i_xt, i_ty = binning_plane_seeds(acts, labels, est)
    want = np.array([est.plane(a, labels) for a in acts])
    assert want[:, 1].max() > 0.1 and want[:, 0].min() < want[:, 0].max() - 0.5  # not trivial
    np.testing.assert_allclose(i_xt, want[:, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(i_ty, want[:, 1], rtol=1e-12, atol=1e-12)
    # the features-first buffers of a snapshot, read through (S, n, d) views: the same values
    strided = np.ascontiguousarray(acts.transpose(0, 2, 1)).transpose(0, 2, 1)
    for got, ref in zip(binning_plane_seeds(strided, labels, est), (i_xt, i_ty), strict=True):
        np.testing.assert_array_equal(got, ref)


def test_binning_plane_seeds_declines_what_it_does_not_compute():
    from ibscope.experiments._tishby_batched import binning_plane_seeds

    acts, labels = np.zeros((2, 10, 3), dtype=np.float32), np.arange(10) % 2
    for est in (registry.get("binning", n_bins=30),  # own min/max per array
                registry.get("binning", n_bins=30, value_range=(-1, 1), miller_madow=True),
                registry.get("adaptive_binning", n_bins=30)):
        assert binning_plane_seeds(acts, labels, est) is None
    with pytest.raises(ValueError, match="'labels'"):
        binning_plane_seeds(acts, labels[:5], registry.get("binning", n_bins=30, value_range=(-1, 1)))
    # a packed code beyond 62 bits (30 used bins on 20 units): seed by seed
    wide = np.random.default_rng(1).uniform(-1, 1, (2, 10, 20)).astype(np.float32)
    wide[0, 0], wide[0, 1] = -1, 0.999
    assert binning_plane_seeds(wide, labels,
                               registry.get("binning", n_bins=30, value_range=(-1, 1))) is None


def test_fast_run_seeds_equals_legacy_and_one_seed_rows(tmp_path):
    from ibscope.experiments import _tishby
    from ibscope.experiments._tishby_batched import run_seeds
    from ibscope.experiments.runner import resolve_config

    cfg = resolve_config("tishby", profile="test", overrides={
        "epochs": 12, "n_snapshots": 4, "estimators": {"binning": {"n_bins": 30}}})
    kw = {"load_data": _tishby.load_data, "layer_estimator": _tishby._layer_estimator}
    fast = run_seeds(cfg, [0, 1], tmp_path / "fast", **kw)
    legacy = run_seeds(cfg, [0, 1], tmp_path / "legacy", fast=False, **kw)
    alone = _tishby.run_seed(cfg, 1, tmp_path / "alone")
    for a, b in ((fast[0], legacy[0]), (fast[1], legacy[1]), (fast[1], alone)):
        assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
        assert (a[["epoch", "layer", "estimator", "unit"]].to_numpy()
                == b[["epoch", "layer", "estimator", "unit"]].to_numpy()).all()
        for col in ("train_loss", "test_loss", "train_acc", "test_acc"):
            np.testing.assert_allclose(a[col], b[col], rtol=1e-5, atol=1e-6, err_msg=col)
        for col in ("i_xt", "i_ty"):  # binning: a value within 1e-7 of an edge may change bins
            diff = np.abs(a[col].to_numpy() - b[col].to_numpy())
            assert diff.max() < 4 * np.log2(4096) / 4096 and (diff < 1e-9).mean() >= 0.85, (col, diff)
    assert fast[0]["i_xt"].nunique() > 3  # the plane moved


def test_vectorized_snapshot_names_the_seed_with_nan_activations(tmp_path):
    from types import SimpleNamespace

    from ibscope.experiments import _tishby
    from ibscope.experiments._tishby_batched import _Snapshots
    from ibscope.store import TableWriter

    x, y, _ = _data()
    model = BatchedMLP([MLP(12, (10, 7), 2, seed=s) for s in SEEDS])
    with torch.no_grad():
        model.weights[0][1, 0, 0] = float("nan")  # seed SEEDS[1]
    splits = [train_test_split(len(y), train_fraction=0.5, seed=s, stratify=y.numpy()) for s in SEEDS]
    ests = {("binning", layer): _tishby._layer_estimator("binning", {"n_bins": 30}, model.layer_activations[layer],
                                                          "bits") for layer in model.layer_names}
    snaps = _Snapshots(model, [5, 6, 7], x, y.numpy(), splits, ests, [0], TableWriter(tmp_path / "t.parquet"), "bits")
    with pytest.raises(FloatingPointError, match="seed 6 has NaN"):
        snaps.on_epoch_end(SimpleNamespace(epoch=0))


def test_part_table_resumes_merges_and_never_duplicates(tmp_path):
    import pandas as pd

    from ibscope.experiments._tishby_batched import _PartTable

    def rows(epoch):
        return [{"seed": s, "epoch": epoch, "i_xt": float(s + epoch)} for s in (0, 1)]

    t = _PartTable(tmp_path / "infoplane.parquet")
    for e in (0, 3):
        t.add(rows(e))
        t.flush()
    assert sorted(p.name for p in (tmp_path / "infoplane.parts").iterdir()) == [
        "epoch_000000000.parquet", "epoch_000000003.parquet"]
    resumed = _PartTable(tmp_path / "infoplane.parquet")  # a crash after epoch 3: nothing lost
    pd.testing.assert_frame_equal(resumed.frame(), t.frame())
    # a part written but not yet listed in the sidecar (a crash between the two) is never read
    stray = tmp_path / "infoplane.parts" / "epoch_000000005.parquet"
    pd.DataFrame(rows(5)).to_parquet(stray)
    pd.testing.assert_frame_equal(_PartTable(tmp_path / "infoplane.parquet").frame(), t.frame())
    resumed.add(rows(9))
    resumed.flush()
    resumed.merge()
    assert not (tmp_path / "infoplane.parts").exists()
    merged = pd.read_parquet(tmp_path / "infoplane.parquet")
    assert merged["epoch"].tolist() == [0, 0, 3, 3, 9, 9]
    pd.testing.assert_frame_equal(_PartTable(tmp_path / "infoplane.parquet").frame(), merged)
    # a damaged part is refused, not read
    t2 = _PartTable(tmp_path / "other.parquet")
    t2.add(rows(1))
    t2.flush()
    part = tmp_path / "other.parts" / "epoch_000000001.parquet"
    part.write_bytes(part.read_bytes()[:-8] + b"xxxxxxxx")
    with pytest.raises(ValueError, match="sha256"):
        _PartTable(tmp_path / "other.parquet")
    # an older batch directory: the table alone, no sidecar, read as is
    old = tmp_path / "old" / "infoplane.parquet"
    old.parent.mkdir()
    merged.to_parquet(old)
    pd.testing.assert_frame_equal(_PartTable(old).frame(), merged)
