"""The plane as a fit callback writes its snapshots in batches (``flush_seconds``), never behind a checkpoint."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

from ibscope.models import MLP
from ibscope.tracking import InformationPlane
from ibscope.tracking import _plane as plane_module
from ibscope.tracking._plane import PARTS_DIR, read_plane_table
from ibscope.training import Callback, fit


def _data(n=120, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] > 0).long()


def _setup(tmp_path, **kw):
    x, y = _data()
    m = MLP(6, (5, 4), 2, seed=0)
    plane = InformationPlane(m, x, y, estimators="binning", out_dir=tmp_path, **kw)
    return m, x, y, plane


def _fit(m, x, y, callbacks, epochs=6, **kw):
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    return fit(m, nn.CrossEntropyLoss(), (x, y), opt, epochs=epochs, batch_size=40, callbacks=callbacks,
               progress=False, **kw)


class _Disk(Callback):
    """Reads the plane's epochs on disk at the end of every epoch (after the plane's own callback)."""

    def __init__(self, out_dir):
        self.out_dir, self.seen = out_dir, {}

    def on_epoch_end(self, state):
        df = read_plane_table(self.out_dir)
        self.seen[state.epoch] = sorted(int(e) for e in df["epoch"].unique()) if len(df) else []


class _Stop(Callback):
    """Raises at the end of epoch ``at`` (after that epoch's snapshot, before its checkpoint)."""

    def __init__(self, at):
        self.at = at

    def on_epoch_end(self, state):
        if state.epoch == self.at:
            raise KeyboardInterrupt(f"simulated crash at epoch {state.epoch}")


def _values(df):
    return df.drop(columns="seconds").sort_values(["epoch", "layer_index"]).reset_index(drop=True)


def test_fit_snapshots_wait_in_memory_and_end_in_one_table_equal_to_writing_each(tmp_path):
    m, x, y, plane = _setup(tmp_path / "batched", flush_seconds=1e6)
    disk = _Disk(tmp_path / "batched")
    _fit(m, x, y, [plane, disk])
    assert all(v == [] for v in disk.seen.values())  # nothing written during training: all pending
    assert plane._pending == []  # written at the end of training, compacted
    assert not (tmp_path / "batched" / PARTS_DIR).exists()
    got = pd.read_parquet(tmp_path / "batched" / "information_plane.parquet")
    assert sorted(got["epoch"].unique()) == list(range(7))

    m0, x0, y0, each = _setup(tmp_path / "each", flush_seconds=0)
    disk0 = _Disk(tmp_path / "each")
    _fit(m0, x0, y0, [each, disk0])
    assert disk0.seen == {e: list(range(e + 1)) for e in range(7)}  # flush_seconds=0: at once
    want = pd.read_parquet(tmp_path / "each" / "information_plane.parquet")
    pd.testing.assert_frame_equal(_values(got), _values(want), check_exact=True)


def test_pending_snapshots_are_one_part_listed_in_the_json(tmp_path):
    m, x, y, plane = _setup(tmp_path, flush_seconds=1e6)  # no schedule: the callback records every epoch
    for e in (0, 1, 2):
        plane.on_epoch_end(SimpleNamespace(epoch=e, metrics={}))
    assert [e for e, _ in plane._pending] == [0, 1, 2] and not (tmp_path / PARTS_DIR).exists()
    plane.flush()
    assert plane._pending == []
    parts = sorted(p.name for p in (tmp_path / PARTS_DIR).iterdir())
    assert parts == ["epoch_00000000_00000002.parquet"]
    pd.testing.assert_frame_equal(read_plane_table(tmp_path), plane._table, check_dtype=False)
    assert InformationPlane(m, x, y, estimators="binning", out_dir=tmp_path).epochs_done() == [0, 1, 2]


def test_a_snapshot_waits_at_most_flush_seconds_even_when_no_other_is_due(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(plane_module.time, "monotonic", lambda: now[0])
    m, x, y, plane = _setup(tmp_path, flush_seconds=5.0, schedule=[0, 1, 6])

    class Tick(Callback):  # every epoch takes 2 s of the fake clock
        def on_epoch_end(self, state):
            now[0] += 2.0

    disk = _Disk(tmp_path)
    _fit(m, x, y, [Tick(), plane, disk])
    # epoch 0 at t=1002 (5 s not yet passed since construction at 1000): pending; epoch 1 (1004):
    # pending; epoch 2 (1006, no snapshot due): 6 s since the last write, so both are written
    assert disk.seen[0] == [] and disk.seen[1] == [] and disk.seen[2] == [0, 1]
    assert disk.seen[5] == [0, 1]
    assert disk.seen[6] == [0, 1, 6]  # epoch 6, 8 s after the write at 1006: written at once
    assert sorted(read_plane_table(tmp_path)["epoch"].unique()) == [0, 1, 6]


def test_every_checkpoint_has_its_snapshots_on_disk_and_a_resume_records_the_rest(tmp_path):
    ck, out = tmp_path / "ckpt", tmp_path / "plane"
    m, x, y, plane = _setup(out, flush_seconds=1e6)
    with pytest.raises(KeyboardInterrupt):  # crash at epoch 4: its snapshot was pending, lost
        _fit(m, x, y, [plane, _Stop(4)], checkpoint_dir=ck, checkpoint_every=2)
    # the checkpoint at epoch 2 wrote the snapshots up to 2 first (state_dict); 3 and 4 were pending
    assert sorted(read_plane_table(out)["epoch"].unique()) == [0, 1, 2]
    m2, x2, y2, plane2 = _setup(out, flush_seconds=1e6)
    assert plane2.epochs_done() == [0, 1, 2]
    _fit(m2, x2, y2, [plane2], checkpoint_dir=ck, checkpoint_every=2)  # resumes at epoch 2
    got = pd.read_parquet(out / "information_plane.parquet")
    assert got.groupby("epoch").size().to_dict() == {e: 3 for e in range(7)}  # each epoch once

    m3, x3, y3, whole = _setup(tmp_path / "whole", flush_seconds=0)
    _fit(m3, x3, y3, [whole], checkpoint_dir=tmp_path / "ck3", checkpoint_every=2)
    want = pd.read_parquet(tmp_path / "whole" / "information_plane.parquet")
    cols = ["epoch", "layer", "estimator", "i_xt", "i_ty", "unit", "flags", "n", "dim_t"]
    pd.testing.assert_frame_equal(_values(got)[cols], _values(want)[cols], check_exact=True)


def test_record_called_directly_writes_before_it_returns(tmp_path):
    _, _, _, plane = _setup(tmp_path, flush_seconds=1e6)
    plane.record(0)
    plane.maybe_record(3)
    assert plane._pending == []
    assert sorted(read_plane_table(tmp_path)["epoch"].unique()) == [0, 3]


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan, True, "10"])
def test_flush_seconds_is_validated(tmp_path, bad):
    with pytest.raises(ValueError, match="'flush_seconds'"):
        _setup(tmp_path, flush_seconds=bad)
