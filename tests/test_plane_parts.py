"""The plane's table on disk: append-only per-snapshot parts, crash safety, compaction; one PCA per layer."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ibscope import estimators
from ibscope.models import MLP
from ibscope.store import PartedTable
from ibscope.tracking import InformationPlane
from ibscope.tracking import _plane as plane_module
from ibscope.tracking._plane import PARTS_DIR, read_plane_table
from ibscope.training import fit


def _data(n=120, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] > 0).long()


def _plane(tmp_path, **kw):
    x, y = _data()
    return InformationPlane(MLP(6, (5,), 2, seed=0), x, y, estimators="binning", out_dir=tmp_path, **kw)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_snapshot_appends_a_part_and_never_rewrites_older_ones(tmp_path):
    p = _plane(tmp_path)
    p.record(0)
    first = tmp_path / PARTS_DIR / "epoch_00000000.parquet"
    stat0, sha0 = first.stat(), _sha(first)
    p.record(1)
    p.record(5)
    assert first.stat().st_ino == stat0.st_ino and first.stat().st_mtime_ns == stat0.st_mtime_ns
    assert _sha(first) == sha0
    meta = json.loads((tmp_path / "information_plane.json").read_text())
    assert [e["file"] for e in meta["parts"]] == [f"{PARTS_DIR}/epoch_{e:08d}.parquet" for e in (0, 1, 5)]
    for e in meta["parts"]:  # the json vouches for each part
        f = tmp_path / e["file"]
        assert e["sha256"] == _sha(f) and e["bytes"] == f.stat().st_size and e["rows"] == 2
    assert not (tmp_path / "information_plane.parquet").exists()  # not compacted yet
    on_disk = read_plane_table(tmp_path)
    pd.testing.assert_frame_equal(on_disk, p._table, check_dtype=False)
    # a fresh plane on the directory resumes from the parts
    assert _plane(tmp_path).epochs_done() == [0, 1, 5]


def test_compaction_writes_one_checked_table_and_drops_the_parts(tmp_path):
    p = _plane(tmp_path)
    for e in (0, 2, 4):
        p.record(e)
    before = read_plane_table(tmp_path)
    path = p.compact()
    assert path == tmp_path / "information_plane.parquet" and not (tmp_path / PARTS_DIR).exists()
    meta = json.loads((tmp_path / "information_plane.json").read_text())
    assert meta["parts"] == [] and meta["rows"] == 6 and meta["sha256"] == _sha(path)
    assert meta["format"] == "ibscope.information_plane/1" and "compacting" not in meta
    pd.testing.assert_frame_equal(pd.read_parquet(path), before)
    p.record(6)  # a later snapshot is a part next to the compacted table
    assert sorted(read_plane_table(tmp_path)["epoch"].unique()) == [0, 2, 4, 6]
    assert _plane(tmp_path).epochs_done() == [0, 2, 4, 6]


def test_compaction_every_few_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(plane_module, "_COMPACT_PARTS", 2)
    p = _plane(tmp_path)
    p.record(0)
    assert not (tmp_path / "information_plane.parquet").exists()
    p.record(1)
    assert (tmp_path / "information_plane.parquet").exists()
    assert json.loads((tmp_path / "information_plane.json").read_text())["parts"] == []
    p.record(2)
    assert sorted(read_plane_table(tmp_path)["epoch"]) == [0, 0, 1, 1, 2, 2]


def test_fit_leaves_one_compacted_table(tmp_path):
    x, y = _data()
    m = MLP(6, (5,), 2, seed=0)
    plane = InformationPlane(m, x, y, estimators="binning", out_dir=tmp_path, schedule=[0, 1, 2])
    fit(m, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(m.parameters(), lr=0.1), epochs=2, batch_size=40,
        callbacks=[plane], progress=False)
    table = pd.read_parquet(tmp_path / "information_plane.parquet")
    assert sorted(table["epoch"].unique()) == [0, 1, 2] and not (tmp_path / PARTS_DIR).exists()


class _Crash(RuntimeError):
    pass


def _crash_on_call(monkeypatch, k):
    """os.replace raises on its k-th call (1-based), once."""
    real, calls = os.replace, []

    def replace(src, dst, *a, **kw):
        calls.append(dst)
        if len(calls) == k:
            raise _Crash(f"simulated crash replacing {dst}")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)
    return calls


@pytest.mark.parametrize("k", [1, 2])  # 1: the part itself, 2: the json listing it
def test_a_crash_while_appending_loses_nothing_and_duplicates_nothing(tmp_path, monkeypatch, k):
    p = _plane(tmp_path)
    p.record(0)
    p.record(1)
    want = read_plane_table(tmp_path)
    with monkeypatch.context() as mp:
        calls = _crash_on_call(mp, k)
        with pytest.raises(_Crash):
            p.record(2)
        assert len(calls) == k
    pd.testing.assert_frame_equal(read_plane_table(tmp_path), want)  # the finished snapshots are intact
    q = _plane(tmp_path)  # resume: epoch 2 was not finished, so it is recorded again, once
    assert q.epochs_done() == [0, 1] and len(q.record(2)) == 2 and len(q.record(1)) == 0
    got = read_plane_table(tmp_path)
    assert got.groupby("epoch").size().to_dict() == {0: 2, 1: 2, 2: 2}
    q.compact()
    assert pd.read_parquet(tmp_path / "information_plane.parquet").groupby("epoch").size().to_dict() == \
        {0: 2, 1: 2, 2: 2}


@pytest.mark.parametrize("k", [1, 2, 3])  # the json saying 'compacting', the table, the final json
def test_a_crash_while_compacting_loses_nothing_and_duplicates_nothing(tmp_path, monkeypatch, k):
    p = _plane(tmp_path)
    for e in (0, 1, 2):
        p.record(e)
    want = read_plane_table(tmp_path)
    with monkeypatch.context() as mp:
        _crash_on_call(mp, k)
        with pytest.raises(_Crash):
            p.compact()
    pd.testing.assert_frame_equal(read_plane_table(tmp_path), want)
    q = _plane(tmp_path)
    assert q.epochs_done() == [0, 1, 2]
    q.record(3)  # appending after the crash settles the interrupted compaction first
    assert read_plane_table(tmp_path).groupby("epoch").size().to_dict() == {0: 2, 1: 2, 2: 2, 3: 2}
    q.compact()
    assert pd.read_parquet(tmp_path / "information_plane.parquet").groupby("epoch").size().to_dict() == \
        {0: 2, 1: 2, 2: 2, 3: 2}
    assert not (tmp_path / PARTS_DIR).exists()


def test_a_damaged_or_missing_part_is_named(tmp_path):
    p = _plane(tmp_path)
    p.record(0)
    p.record(1)
    part = tmp_path / PARTS_DIR / "epoch_00000001.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="epoch_00000001.parquet"):
        read_plane_table(tmp_path)
    with pytest.raises(ValueError, match=r"epoch_00000001\.parquet.*overwrite=True"):
        _plane(tmp_path)
    part.unlink()
    with pytest.raises(ValueError, match="epoch_00000001.parquet"):
        read_plane_table(tmp_path)


def test_overwrite_removes_parts_and_table(tmp_path):
    p = _plane(tmp_path)
    p.record(0)
    p.compact()
    p.record(1)
    q = InformationPlane(MLP(6, (4,), 2, seed=1), *_data(), estimators="binning", out_dir=tmp_path,
                         overwrite=True)
    assert q.epochs_done() == [] and not (tmp_path / PARTS_DIR).exists()
    assert not (tmp_path / "information_plane.parquet").exists()
    q.record(0)
    assert len(read_plane_table(tmp_path)) == 2
    assert json.loads((tmp_path / "information_plane.json").read_text())["fingerprint"] == q.fingerprint


def test_parted_table_rejects_bad_part_names(tmp_path):
    t = PartedTable(tmp_path / "t.parquet")
    for name in ("", "../x", ".hidden"):
        with pytest.raises(ValueError, match="'name'"):
            t.append(pd.DataFrame({"a": [1]}), name)
    assert t.read().empty and not t.exists()


# ------------------------------------------------------------------ one PCA per layer and snapshot
def test_one_pca_per_layer_serves_both_coordinates(monkeypatch):
    from ibscope.estimators import _compressed

    calls = []
    real = _compressed.pca_compress
    monkeypatch.setattr(_compressed, "pca_compress",
                        lambda a, dim, **k: calls.append(tuple(a.shape)) or real(a, dim, **k))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 40, generator=g)
    y = (x[:, 0] > 0).long()
    m = nn.Sequential(nn.Linear(40, 64), nn.Tanh(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 2))
    plane = InformationPlane(m, x, y, layers=["1", "3"])  # default pca_ksg: PCA of x, of '1' and of '3'
    plane.record(0)
    assert sorted(calls) == sorted([(400, 40), (400, 64), (400, 32)])  # each variable once
    calls.clear()
    plane.record(1)
    assert sorted(calls) == [(400, 32), (400, 64)]  # the inputs' codes are cached across snapshots


def _reference_pca(a, dim, seed):
    """The former pca_compress (explicitly centred copy + torch.svd_lowrank), the reference of the values."""
    t = torch.as_tensor(a, dtype=torch.float32)
    c = t - t.mean(dim=0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        _, _, v = torch.svd_lowrank(c, q=dim + 20, niter=2)
    return (c @ v[:, :dim]).double().numpy()


@pytest.mark.parametrize("d", [48, 300])  # 48: exact scatter-matrix path; 300: randomized, no centred copy
def test_pca_codes_and_ksg_values_match_the_reference(d):
    from ibscope.estimators._compressed import pca_compress

    rng = np.random.default_rng(3)
    n = 2000
    latent = rng.normal(size=(n, 3))
    a = np.maximum(latent @ rng.normal(size=(3, d)) + 0.3 * rng.normal(size=(n, d)), 0) + 5.0  # offset mean
    y = (latent[:, 0] > 0).astype(np.int64) + 2 * (latent[:, 1] > 0)
    ref = _reference_pca(a, 4, seed=0)
    codes, info = pca_compress(a, 4, seed=0)
    exact, info_exact = pca_compress(a, 4, solver="full")
    scale = np.abs(exact).max()
    assert np.abs(np.abs(codes) - np.abs(ref)).max() <= 1e-3 * scale
    assert np.abs(np.abs(codes) - np.abs(exact)).max() <= 1e-3 * scale
    assert info["explained_variance_ratio"] == pytest.approx(info_exact["explained_variance_ratio"], rel=1e-4)
    ksg = estimators.get("ksg", k=3)
    v_new, v_ref = ksg.estimate(codes, y, discrete_y=True), ksg.estimate(ref, y, discrete_y=True)
    assert abs(v_new - v_ref) < 1e-3  # bits
    assert np.array_equal(codes, pca_compress(a, 4, seed=0)[0])  # seeded


def test_pca_of_a_far_off_mean_keeps_its_precision():
    from ibscope.estimators._compressed import pca_compress

    rng = np.random.default_rng(4)
    a = rng.normal(size=(2000, 100)) * np.geomspace(10.0, 0.01, 100) + 1e4  # mean ~1e4 x the spread
    codes, _ = pca_compress(a, 4)
    exact, _ = pca_compress(a, 4, solver="full")
    assert np.abs(np.abs(codes) - np.abs(exact)).max() <= 1e-3 * np.abs(exact).max()


def test_report_reads_a_plane_before_compaction(tmp_path):
    from ibscope.reporting import build_report, read_tracker_dir

    p = _plane(tmp_path)
    p.record(0)
    p.record(2)  # a hand-written loop, not compacted: only parts on disk
    assert not (tmp_path / "information_plane.parquet").exists()
    got = read_tracker_dir(tmp_path)
    assert sorted(got["plane"]["epoch"].unique()) == [0, 2] and got["plane_settings"]["layers"] == p.layers
    assert build_report(tmp_path).is_file()
