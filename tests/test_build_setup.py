"""The runner owns training (issue 22): an experiment declares ``build(config, seed, out_dir) -> Setup`` and
``rows(config, seed, setup, state)``; the runner calls fit with its own checkpoint folder, device, progress
bar and minibatch seed.

Each converted experiment's rows through the runner equal those of the same ``build`` trained by a
hand-written plain :func:`ibscope.training.fit` call (same process, same threads: exact equality).
"""

from __future__ import annotations

import dataclasses
import math
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ibscope.data import data_dir
from ibscope.experiments import Setup, execution, get, has_build, runner, train_seed
from ibscope.training import CHECKPOINT_NAME, Callback, fit

HAVE_MNIST = (data_dir() / "mnist").is_dir() and any((data_dir() / "mnist").glob("t10k-images-idx3-ubyte*"))

PROFILES = {
    "tishby": ("test", {"epochs": 12, "n_snapshots": 3, "estimators": {"binning": {"n_bins": 30}}}),
    "csib_regression": ("test", {"method": "csib", "dataset": "heteroscedastic"}),
    "lagrangian": (None, {"width": 8, "epochs": 2, "n_train": 60, "batch_size": 30, "lagrangian_steps": 20,
                          "lagrangian_batch_size": 64}),
    "noisy_convnet": ("test", {"compression": "pca"}),
}


def _plain_fit(mod, cfg, seed: int, folder: Path) -> pd.DataFrame:
    """The same build trained by a hand-written fit call (what each run_seed did before issue 22)."""
    with execution(cfg) as c:
        setup = mod.build(c, seed, folder)
        ckpt = {True: folder, False: None}.get(setup.checkpoint, folder / str(setup.checkpoint))
        state = fit(setup.model, setup.loss_fn, setup.train_data, setup.optimizer, epochs=setup.epochs,
                    callbacks=setup.callbacks, checkpoint_dir=ckpt, eval_data=setup.eval_data,
                    device=getattr(c, "device", None), progress=False, batch_size=setup.batch_size,
                    shuffle=setup.shuffle, seed=seed + setup.shuffle_stream,
                    checkpoint_every=setup.checkpoint_every, desc=setup.desc)
        if setup.close is not None:
            setup.close()
        return mod.rows(c, seed, setup, state)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "noisy_convnet" else n
                                  for n in sorted(PROFILES)])  # noisy_convnet: MNIST-8k, ~30 s a run
def test_runner_rows_equal_a_plain_fit_of_the_same_build(name, tmp_path):
    if name == "noisy_convnet" and not HAVE_MNIST:
        pytest.skip("MNIST test images not found (IBSCOPE_DATA / ../shared/data)")
    mod = get(name)
    assert has_build(mod)
    profile, overrides = PROFILES[name]
    seed = 1
    out = runner.run(name, seeds=[seed], out_dir=tmp_path / "run", profile=profile, overrides=overrides,
                     progress=False, report=False, batched=False)
    got = pd.read_parquet(out / f"seed_{seed}" / "result.parquet")
    cfg = runner.resolve_config(name, profile=profile, overrides=overrides)
    want = _plain_fit(mod, cfg, seed, tmp_path / "hand")
    want = want.drop(columns=[c for c in ("seconds",) if c in want])  # wall-clock seconds per estimate
    pd.testing.assert_frame_equal(got.drop(columns=[c for c in ("seconds",) if c in got]), want,
                                  check_exact=True)


# --------------------------------------------------------------------------- a toy experiment module
@dataclasses.dataclass
class ToyConfig:
    epochs: int = 4
    batch_size: int = 8
    checkpoint: object = True
    device: str = "cpu"

    def validate(self) -> None:
        pass


class _Stop(Callback):
    def __init__(self, at: int):
        self.at = at

    def on_epoch_end(self, state) -> None:
        if self.at and state.epoch == self.at:
            raise KeyboardInterrupt


class _Orders(Callback):
    """Records the first target of every minibatch (the minibatch order)."""

    def __init__(self):
        self.first: list[float] = []

    def on_train_batch_end(self, state) -> None:
        self.first.append(float(state.batch[-1][0]))


def _toy_module(calls: list) -> types.ModuleType:
    mod = types.ModuleType("toy_build_experiment")
    mod.NAME = "toy_build"
    mod.Config = ToyConfig
    mod.stop_at = 0  # raise KeyboardInterrupt after this epoch (0: never)

    def build(config, seed, out_dir):
        calls.append(("build", seed, Path(out_dir)))
        torch.manual_seed(seed)
        model = nn.Linear(2, 1)
        x = torch.linspace(-1, 1, 64).reshape(32, 2)
        y = torch.arange(32, dtype=torch.float32)[:, None]
        return Setup(model=model, loss_fn=nn.MSELoss(), train_data=(x, y),
                     optimizer=torch.optim.SGD(model.parameters(), lr=1e-3), epochs=config.epochs,
                     callbacks=[_Stop(mod.stop_at), _Orders()], batch_size=config.batch_size,
                     shuffle_stream=7, checkpoint=config.checkpoint, desc="toy")

    def rows(config, seed, setup, state):
        calls.append(("rows", seed, state.epoch))
        w = setup.model.weight.detach().numpy().ravel()
        return pd.DataFrame({"seed": seed, "w": w, "epoch": state.epoch, "unit": "bits",
                             "device": str(state.device)})

    def run_seed(config, seed, out_dir, *, progress=False):
        return train_seed(mod, config, seed, out_dir, progress=progress)

    mod.build, mod.rows, mod.run_seed = build, rows, run_seed
    mod.plot = lambda results, out_dir: []
    return mod


def test_runner_trains_a_build_with_its_own_folder_device_and_minibatch_seed(tmp_path, monkeypatch):
    calls: list = []
    mod = _toy_module(calls)
    monkeypatch.setattr(mod, "run_seed", lambda *a, **k: pytest.fail("the runner must train build/rows itself"))
    out = runner.run(mod, seeds=[3], out_dir=tmp_path / "run", progress=False, report=False)
    assert calls[0] == ("build", 3, out / "seed_3") and calls[1] == ("rows", 3, 4)
    assert (out / "seed_3" / CHECKPOINT_NAME).is_file()  # the runner's folder is fit's checkpoint folder
    got = pd.read_parquet(out / "seed_3" / "result.parquet")
    assert list(got["device"].unique()) == ["cpu"]
    # the minibatch order is drawn from the run's seed + the setup's stream (TensorBatches' generator)
    setup = _toy_module([]).build(ToyConfig(), 3, tmp_path / "x")
    order = torch.randperm(32, generator=torch.Generator().manual_seed(3 + 7))
    fit(setup.model, setup.loss_fn, setup.train_data, setup.optimizer, epochs=1, batch_size=8, seed=10,
        callbacks=[setup.callbacks[1]], progress=False)
    assert setup.callbacks[1].first == [float(order[i]) for i in range(0, 32, 8)]
    assert np.allclose(got["w"].to_numpy(), _toy_module([]).run_seed(ToyConfig(), 3, tmp_path / "d")["w"])


def test_setup_checkpoint_names_a_subfolder_or_none(tmp_path):
    mod = _toy_module([])
    mod.run_seed(ToyConfig(checkpoint="sub.ckpt"), 0, tmp_path / "a")
    assert (tmp_path / "a" / "sub.ckpt" / CHECKPOINT_NAME).is_file()
    assert not (tmp_path / "a" / CHECKPOINT_NAME).exists()
    mod.run_seed(ToyConfig(checkpoint=False), 0, tmp_path / "b")
    assert not list((tmp_path / "b").rglob(CHECKPOINT_NAME))
    mod.run_seed(ToyConfig(checkpoint="../escape"), 0, tmp_path / "c")  # a name, never a path
    assert not (tmp_path / "escape").exists() and len(list((tmp_path / "c").rglob(CHECKPOINT_NAME))) == 1
    with pytest.raises(TypeError, match="Setup.checkpoint"):
        mod.run_seed(ToyConfig(checkpoint=3), 0, tmp_path / "d")


def test_build_must_return_a_setup(tmp_path):
    mod = _toy_module([])
    mod.build = lambda config, seed, out_dir: {"model": None}
    with pytest.raises(TypeError, match="must return an ibscope.experiments.Setup"):
        train_seed(mod, ToyConfig(), 0, tmp_path)
    with pytest.raises(TypeError, match="'seed'"):
        train_seed(_toy_module([]), ToyConfig(), 1.5, tmp_path)
    with pytest.raises(TypeError, match="no build/rows"):
        train_seed(types.ModuleType("empty"), ToyConfig(), 0, tmp_path)


def test_killed_build_seed_resumes_to_the_uninterrupted_rows(tmp_path):
    calls: list = []
    mod = _toy_module(calls)
    whole = runner.run(mod, seeds=[0], out_dir=tmp_path / "whole", progress=False, report=False)
    mod.stop_at = 3
    with pytest.raises(KeyboardInterrupt):
        runner.run(mod, seeds=[0], out_dir=tmp_path / "cut", progress=False, report=False)
    assert not (tmp_path / "cut" / "seed_0" / "result.parquet").exists()
    resumed_from = torch.load(tmp_path / "cut" / "seed_0" / CHECKPOINT_NAME, weights_only=True)["epoch"]
    assert 0 < resumed_from < 4
    mod.stop_at, calls[:] = 0, []
    runner.run(mod, seeds=[0], out_dir=tmp_path / "cut", progress=False, report=False)
    assert [c[0] for c in calls] == ["build", "rows"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cut" / "seed_0" / "result.parquet"),
                                  pd.read_parquet(whole / "seed_0" / "result.parquet"))


# --------------------------------------------------------------------------- declarative Config checks
@pytest.mark.parametrize("key, value", [
    ("lr", 0), ("lr", math.nan), ("epochs", 2.5), ("epochs", True), ("batch_size", "8"), ("n_snapshots", 1),
    ("init_scale", -1.0), ("weight_decay", math.inf), ("train_fraction", 1.0), ("unit", "bit"),
    ("keep_activations", "yes"), ("torch_threads", -1), ("activation", "tahn"), ("init", "he_normal"),
    ("data", 3),
])
def test_tishby_config_refuses_bad_values_naming_the_setting(key, value):
    with pytest.raises((ValueError, TypeError), match=f"'{key}' parameter of the tishby Config"):
        runner.resolve_config("tishby", overrides={key: value})


@pytest.mark.parametrize("key, value", [
    ("depth", 0), ("width", 1.5), ("lr_scale", 2.0), ("weight_std", 0.0), ("n_times", True),
    ("activation", "tanh2"), ("t_min", -1.0),
])
def test_ntk_config_refuses_bad_values_naming_the_setting(key, value):
    with pytest.raises(ValueError, match=f"'{key}' parameter of the ntk Config"):
        runner.resolve_config("ntk", overrides={key: value})
