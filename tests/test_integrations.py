"""Lightning and TensorBoard integrations (extras; skipped when the package is missing)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ibscope.models import MLP
from ibscope.tracking import InformationPlane
from ibscope.tracking._plane import COLUMNS
from ibscope.training import fit


def _data(n=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] - x[:, 2] > 0).long()


def test_core_imports_without_the_extras():
    import os
    import subprocess
    import sys
    from pathlib import Path

    import ibscope

    code = ("import sys; sys.modules['lightning'] = None; sys.modules['tensorboard'] = None\n"
            "import ibscope, ibscope.tracking, ibscope.training\n"
            "assert ibscope.InformationPlane\n"
            "try:\n    import ibscope.integrations.lightning\nexcept ImportError as e:\n"
            "    assert \"ibscope[lightning]\" in str(e)\nelse:\n    raise SystemExit('imported')\n")
    src = str(Path(ibscope.__file__).resolve().parents[1])  # this checkout's src, not an installed copy
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --------------------------------------------------------------------------- lightning
pl = pytest.importorskip("lightning.pytorch", reason="the 'lightning' extra is not installed")


class LitNet(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = MLP(6, (5, 3), 2, seed=0)
        self.layer_names = [f"net.{n}" for n in self.net.layer_names]

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class MemoryLogger(pl.loggers.Logger):
    def __init__(self):
        super().__init__()
        self.logged, self.hparams = [], {}

    @property
    def name(self):
        return "memory"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        self.hparams.update(params if isinstance(params, dict) else vars(params))

    def log_metrics(self, metrics, step=None):
        self.logged.append((step, dict(metrics)))


def _trainer(tmp_path, callbacks, logger):
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    return pl.Trainer(max_epochs=3, callbacks=callbacks, logger=logger, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                      accelerator="cpu", devices=1)


def test_lightning_information_plane_callback(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from ibscope.integrations.lightning import InformationPlaneCallback

    x, y = _data()
    lit = LitNet()
    cb = InformationPlaneCallback(x, y, estimators=["binning", "ksg"], out_dir=tmp_path / "plane")
    logger = MemoryLogger()
    _trainer(tmp_path, [cb], logger).fit(lit, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    df = cb.plane.results()
    assert list(df.columns[:len(COLUMNS)]) == COLUMNS
    # epoch 0 = before any step, then after each of the 3 epochs (default schedule of a 3-epoch run)
    assert sorted(df["epoch"].unique()) == [0, 1, 2, 3]
    assert set(df["layer"]) == {"net.hidden1", "net.hidden2", "net.output"}
    assert "train_loss" in df.columns and df.loc[df["epoch"] == 3, "train_loss"].notna().all()
    assert (tmp_path / "plane" / "information_plane.parquet").is_file()
    ours = [(s, m) for s, m in logger.logged if "ibscope/epoch" in m]
    # at the trainer's step (5 batches of 32 per epoch), not at the epoch; the epoch is a value
    assert [s for s, _ in ours] == [0, 5, 10, 15]
    assert [m["ibscope/epoch"] for _, m in ours] == [0, 1, 2, 3]
    last = ours[-1][1]
    row = df[(df["epoch"] == 3) & (df["estimator"] == "ksg") & (df["layer"] == "net.hidden1")]
    assert last["ibscope/ksg/net.hidden1/i_ty"] == pytest.approx(row["i_ty"].item())
    assert last["ibscope/ksg/net.hidden1/n_flags"] == len([f for f in row["flags"].item().split(";") if f])
    assert logger.hparams["ibscope/unit"] == "bits"
    # the same table as a plain fit of the same network (epoch-0 row: identical weights)
    ref = InformationPlane(LitNet(), x, y, estimators=["binning", "ksg"]).record(0)
    np.testing.assert_allclose(df[df["epoch"] == 0][["i_xt", "i_ty"]].to_numpy(), ref[["i_xt", "i_ty"]].to_numpy(),
                               rtol=1e-6)


def _read_csv_metrics(csv_logger):
    return pd.read_csv(Path(csv_logger.log_dir) / "metrics.csv")


def test_lightning_logs_to_every_logger_at_lightnings_step(tmp_path):
    """CSV, TensorBoard and a custom logger all get the values, intervals and flag counts, at the steps of
    Lightning's own metrics; TensorBoard also gets the figure and the flags as text."""
    pytest.importorskip("tensorboard", reason="the 'tensorboard' extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.data import DataLoader, TensorDataset

    from ibscope.integrations.lightning import InformationPlaneCallback

    class StepNet(LitNet):
        def training_step(self, batch, _):
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            self.log("train_loss", loss, on_epoch=True, on_step=True)
            return loss

    x, y = _data()
    cb = InformationPlaneCallback(x, y, estimators="binning", layers=["net.hidden1", "net.output"], ci=0.9,
                                 n_resamples=4)
    csv = pl.loggers.CSVLogger(tmp_path, name="csv")
    tb = pl.loggers.TensorBoardLogger(tmp_path, name="tb")
    memory = MemoryLogger()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    trainer = pl.Trainer(max_epochs=2, callbacks=[cb, pl.callbacks.LearningRateMonitor(logging_interval="epoch")],
                         logger=[csv, tb, memory], log_every_n_steps=1, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                         accelerator="cpu", devices=1)
    trainer.fit(StepNet(), DataLoader(TensorDataset(x, y), batch_size=32))
    df = cb.plane.results()
    key = "ibscope/binning/net.hidden1/i_xt"
    m = _read_csv_metrics(csv)
    ours = m[m[key].notna()].sort_values("step")
    assert ours["step"].tolist() == [0, 5, 10] and ours["ibscope/epoch"].tolist() == [0, 1, 2]
    # Lightning's own metrics: the learning-rate monitor logs at the same steps, the step metric of the
    # next batch has the same step, the epoch aggregate sits at the epoch's last batch (one step before)
    lr_steps = set(m.loc[m["lr-Adam"].notna(), "step"])
    assert lr_steps and lr_steps <= set(ours["step"])
    assert set(ours["step"][:-1]) <= set(m.loc[m["train_loss_step"].notna(), "step"])
    epoch_rows = m[m["train_loss_epoch"].notna()].sort_values("step")
    assert (epoch_rows["step"] + 1).tolist() == ours["step"].tolist()[1:]
    want = df[df["layer"] == "net.hidden1"].sort_values("epoch")
    np.testing.assert_allclose(ours[key], want["i_xt"], rtol=1e-6)
    out = df[df["layer"] == "net.output"].sort_values("epoch")  # hidden1 saturates: its bounds are NaN
    assert out["i_xt_lo"].notna().any()
    for bound in ("i_xt_lo", "i_xt_hi", "i_ty_lo", "i_ty_hi"):
        np.testing.assert_allclose(ours[f"ibscope/binning/net.output/{bound}"], out[bound], rtol=1e-6)
        if want[bound].isna().all():  # no finite bound, no column (not a NaN metric)
            assert f"ibscope/binning/net.hidden1/{bound}" not in m.columns
    n_flags = [len([f for f in v.split(";") if f]) for v in want["flags"]]
    assert ours["ibscope/binning/net.hidden1/n_flags"].tolist() == n_flags
    assert "ibscope/unit: bits" in (Path(csv.log_dir) / "hparams.yaml").read_text()
    assert [s for s, mm in memory.logged if key in mm] == [0, 5, 10]  # every logger, not only the first
    # TensorBoard: the same scalars at the same steps, the figure at every recorded epoch, flags as text
    acc = EventAccumulator(tb.log_dir, size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars(key)] == [0, 5, 10]
    np.testing.assert_allclose([e.value for e in acc.Scalars(key)], want["i_xt"], rtol=1e-6)
    images = acc.Images("ibscope/information_plane")
    assert [i.step for i in images] == [0, 5, 10] and images[-1].width > 300
    flagged_steps = sorted({5 * int(e) for e in df.loc[df["flags"] != "", "epoch"]})  # any layer flagged
    assert flagged_steps  # binning saturates on 160 points: the text panel is exercised
    assert [e.step for e in acc.Tensors("ibscope/flags/text_summary")] == flagged_steps


def test_lightning_real_fit_with_step_limits_and_the_progress_bar(tmp_path):
    """A tiny default-style fit (progress bar on): max_steps bounds the epochs; no bound is a clear error."""
    from torch.utils.data import DataLoader, TensorDataset

    from ibscope.integrations.lightning import InformationPlaneCallback

    x, y = _data()
    loader = DataLoader(TensorDataset(x, y), batch_size=32)  # 5 steps per epoch
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    kw = dict(accelerator="cpu", devices=1, default_root_dir=tmp_path, enable_checkpointing=False, logger=False)
    cb = InformationPlaneCallback(x, y, estimators="binning", layers=["net.hidden1"])
    pl.Trainer(max_steps=7, callbacks=[cb], **kw).fit(LitNet(), loader)  # max_epochs=-1: 2 epochs by steps
    assert sorted(cb.plane.results()["epoch"].unique()) == [0, 1, 2]
    with pytest.raises(ValueError, match="no end of training.*schedule"):
        pl.Trainer(max_epochs=-1, callbacks=[InformationPlaneCallback(x, y, estimators="binning")], **kw).fit(
            LitNet(), loader)

    class StopAfterTwoEpochs(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = trainer.current_epoch >= 1

    cb = InformationPlaneCallback(x, y, estimators="binning", layers=["net.hidden1"], schedule=[0, 1])
    pl.Trainer(max_epochs=-1, max_steps=-1, callbacks=[cb, StopAfterTwoEpochs()], **kw).fit(LitNet(), loader)
    assert sorted(cb.plane.results()["epoch"].unique()) == [0, 1]  # an explicit schedule needs no end


def test_lightning_errors_before_training(tmp_path):
    from ibscope.integrations.lightning import InformationPlaneCallback

    x, y = _data()
    cb = InformationPlaneCallback(x, y, layers=["nope"])
    with pytest.raises(ValueError, match="'layers'"):
        _trainer(tmp_path, [cb], False).fit(LitNet(), torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=32))
    with pytest.raises(ValueError, match="past the last epoch"):
        _trainer(tmp_path, [InformationPlaneCallback(x, y, schedule=[0, 9])], False).fit(
            LitNet(), torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32))


def test_lightning_weight_information_callback(tmp_path):
    weights = pytest.importorskip("ibscope.weights")
    if not hasattr(weights, "WeightInformation"):
        pytest.skip("ibscope.weights.WeightInformation is not in this branch yet (written by another helper)")
    from torch.utils.data import DataLoader, TensorDataset

    from ibscope.integrations.lightning import InformationPlaneCallback, WeightInformationCallback

    x, y = _data()
    lit = LitNet()
    wcb = WeightInformationCallback(nn.CrossEntropyLoss(reduction="none"), [(x, y)], out_dir=tmp_path / "w")
    pcb = InformationPlaneCallback(x, y, estimators="binning")
    logger = MemoryLogger()
    _trainer(tmp_path, [pcb, wcb], logger).fit(lit, DataLoader(TensorDataset(x, y), batch_size=32))
    w = wcb.tracker.results()
    assert {"epoch", "quantity", "value"} <= set(w.columns) and 0 in set(w["epoch"])
    assert any(k.startswith("ibscope/weights/") for _, m in logger.logged for k in m)
    assert sorted(pcb.plane.results()["epoch"].unique()) == [0, 1, 2, 3]


# --------------------------------------------------------------------------- tensorboard
def test_tensorboard_scalars_and_image(tmp_path):
    pytest.importorskip("tensorboard", reason="the 'tensorboard' extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ibscope.integrations.tensorboard import TensorBoardCallback

    x, y = _data()
    m = MLP(6, (4,), 2, seed=0)
    plane = InformationPlane(m, x, y, estimators="binning", schedule=[0, 2], ci=0.9, n_resamples=4)
    tb = TensorBoardCallback(tmp_path / "tb", [plane])
    fit(m, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(m.parameters(), lr=0.1), epochs=2, batch_size=40,
        callbacks=[plane, tb], progress=False)
    tb.writer.close()
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    df = plane.results()
    # the names of the Lightning callbacks, with the interval bounds and the flag counts
    for layer in ("hidden1", "output"):
        want = df[(df["layer"] == layer)].sort_values("epoch")
        for q in ("i_xt", "i_ty", "i_xt_lo", "i_xt_hi", "i_ty_lo", "i_ty_hi"):
            finite = want[want[q].notna()]  # a saturated estimate has no interval: nothing is logged
            if not len(finite):
                assert f"ibscope/binning/{layer}/{q}" not in tags["scalars"]
                continue
            events = acc.Scalars(f"ibscope/binning/{layer}/{q}")
            assert [e.step for e in events] == finite["epoch"].tolist()
            np.testing.assert_allclose([e.value for e in events], finite[q].to_numpy(), rtol=1e-6)
        n_flags = [len([f for f in v.split(";") if f]) for v in want["flags"]]
        assert [e.value for e in acc.Scalars(f"ibscope/binning/{layer}/n_flags")] == n_flags
    assert "ibscope/binning/output/i_xt_lo" in tags["scalars"]  # the bounds are logged where they exist
    images = acc.Images("ibscope/information_plane")
    assert [i.step for i in images] == [0, 2] and images[-1].width > 300 and images[-1].height > 100
    assert "train/train_loss" in tags["scalars"]
    assert "ibscope/unit/text_summary" in tags["tensors"]


def test_tensorboard_helpers_steps_and_errors(tmp_path):
    pytest.importorskip("tensorboard", reason="the 'tensorboard' extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ibscope.integrations.tensorboard import (
        SummaryWriter,
        log_information_plane,
        log_weight_information,
    )

    table = pd.DataFrame({"epoch": [0, 0, 3, 3], "layer": ["a", "b", "a", "b"], "estimator": "e",
                          "i_xt": [1.0, 2.0, 1.5, 2.5], "i_ty": [0.1, 0.2, 0.3, 0.4], "unit": "bits",
                          "flags": ["", "saturated_xt", "", "saturated_xt;low_n"]})
    w = SummaryWriter(str(tmp_path / "tb"))
    log_information_plane(w, table, step=3, global_step=17, figure=False)
    log_weight_information(w, pd.DataFrame({"epoch": [3], "quantity": ["iiw"], "value": [2.5]}), step=3,
                           global_step=17)
    with pytest.raises(ValueError, match="'global_step' needs 'step'"):
        log_information_plane(w, table, global_step=5)
    with pytest.raises(ValueError, match="'i_ty'"):
        log_information_plane(w, table.drop(columns="i_ty"))
    with pytest.raises(TypeError, match="'writer'"):
        log_information_plane(object(), table)
    with pytest.raises(TypeError, match="'step'"):
        log_information_plane(w, table, step="3")
    w.close()
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("ibscope/e/b/n_flags")] == [(17, 2.0)]
    assert [e.step for e in acc.Scalars("ibscope/e/a/i_xt")] == [17]
    assert [e.value for e in acc.Scalars("ibscope/weights/iiw/total")] == [2.5]
    assert "ibscope/e/a/i_xt_lo" not in acc.Tags()["scalars"]  # no bounds in the table: none logged
    text = acc.Tensors("ibscope/flags/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "saturated_xt, low_n" in text and "| 3 | e | b |" in text
