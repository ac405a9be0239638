"""Seeds of several fits in sequence through the runner (issue 22): ``build`` returns phases.

A phase is a :class:`~ibscope.experiments.Setup`, or a callable ``(setups, states) -> Setup`` built
once the phases before it are trained; each phase has its own checkpoint folder, so a seed killed in
phase 2 resumes there without a training step of phase 1. ``ib_compare`` (both recipes) and ``iiw``
(one-seed path) declare their seeds so; their rows through the runner equal a hand-written sequence of
plain :func:`ibscope.training.fit` calls of the same builds (same process, same threads: exact).
"""

from __future__ import annotations

import copy
import dataclasses
import types
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from ibscope.experiments import Setup, execution, get, has_build, runner, settings_hash, train_seed
from ibscope.training import CHECKPOINT_NAME, Callback, fit


# --------------------------------------------------------------------------- a toy two-phase experiment
@dataclasses.dataclass
class ToyConfig:
    epochs: int = 3
    second_checkpoint: object = True
    device: str = "cpu"

    def validate(self) -> None:
        pass


class _Steps(Callback):
    """Counts the training steps of a phase (across runs: the counter is the test's)."""

    def __init__(self, counter: list, state_key: str):
        self.counter = counter
        self.state_key = state_key

    def on_train_batch_end(self, state) -> None:
        self.counter.append(state.step)


class _Kill(Callback):
    def __init__(self, at: int):
        self.at = at

    def on_epoch_end(self, state) -> None:
        if self.at and state.epoch == self.at:
            raise KeyboardInterrupt


def _toy_module() -> types.ModuleType:
    mod = types.ModuleType("toy_phases_experiment")
    mod.NAME = "toy_phases"
    mod.Config = ToyConfig
    mod.kill_at = 0  # KeyboardInterrupt after this epoch of phase 2 (0: never)
    mod.steps = {"first": [], "second": []}
    mod.seen = []  # what phase 2's builder saw of phase 1

    def build(config, seed, out_dir):
        torch.manual_seed(seed)
        model = nn.Linear(2, 1)
        x = torch.linspace(-1, 1, 64).reshape(32, 2)
        y = x.sum(1, keepdim=True) + 0.1 * torch.randn(32, 1)
        first = Setup(model=model, loss_fn=nn.MSELoss(), train_data=(x, y),
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.05), epochs=config.epochs,
                      callbacks=[_Steps(mod.steps["first"], "steps")], batch_size=8, desc="first",
                      context={"init": copy.deepcopy(model.state_dict())})

        def second(setups, states):
            trained = setups["first"].model
            mod.seen.append({"names": list(setups), "epoch": states["first"].epoch,
                             "weight": trained.weight.detach().clone()})
            model2 = copy.deepcopy(trained)  # starts from the trained model ...
            with torch.no_grad():  # ... plus a draw of torch's global RNG (restored on a resume)
                model2.weight.add_(0.01 * torch.randn_like(model2.weight))
            return Setup(model=model2, loss_fn=nn.MSELoss(), train_data=(x, 2 * y),
                         optimizer=torch.optim.SGD(model2.parameters(), lr=0.05), epochs=config.epochs,
                         callbacks=[_Steps(mod.steps["second"], "steps"), _Kill(mod.kill_at)], batch_size=8,
                         shuffle_stream=11, checkpoint=config.second_checkpoint, desc="second")

        return {"first": first, "second": second}

    def rows(config, seed, setups, states):
        assert list(setups) == list(states) == ["first", "second"]
        w1 = setups["first"].model.weight.detach().numpy().ravel()
        w2 = setups["second"].model.weight.detach().numpy().ravel()
        return pd.DataFrame({"seed": seed, "phase": ["first"] * len(w1) + ["second"] * len(w2),
                             "w": [*w1, *w2], "epochs": states["second"].epoch, "unit": "bits"})

    def run_seed(config, seed, out_dir, *, progress=False):
        return train_seed(mod, config, seed, out_dir, progress=progress)

    mod.build, mod.rows, mod.run_seed = build, rows, run_seed
    mod.plot = lambda results, out_dir: []
    return mod


def test_a_later_phase_starts_from_the_trained_earlier_one_in_its_own_folder(tmp_path):
    mod = _toy_module()
    assert has_build(mod)
    out = runner.run(mod, seeds=[2], out_dir=tmp_path / "run", progress=False, report=False)
    seed_dir = out / "seed_2"
    (seen,) = mod.seen
    assert seen["names"] == ["first"] and seen["epoch"] == 3  # built once phase 1 is trained
    init = mod.build(ToyConfig(), 2, tmp_path / "x")["first"].context["init"]["weight"]
    assert not torch.equal(seen["weight"], init)  # ... from its trained weights
    assert len(mod.steps["first"]) == len(mod.steps["second"]) == 3 * 4
    for phase in ("first", "second"):  # one checkpoint folder per phase, named by it
        assert torch.load(seed_dir / phase / CHECKPOINT_NAME, weights_only=True)["epoch"] == 3
    assert not (seed_dir / CHECKPOINT_NAME).exists()
    got = pd.read_parquet(seed_dir / "result.parquet")
    assert list(got["phase"]) == ["first", "first", "second", "second"]
    # a named folder, or none
    mod.run_seed(ToyConfig(second_checkpoint="legacy.ckpt"), 0, tmp_path / "named")
    assert sorted(p.parent.name for p in (tmp_path / "named").rglob(CHECKPOINT_NAME)) == ["first", "legacy.ckpt"]
    mod.run_seed(ToyConfig(second_checkpoint=False), 0, tmp_path / "none")
    assert [p.parent.name for p in (tmp_path / "none").rglob(CHECKPOINT_NAME)] == ["first"]


def test_phases_are_checked(tmp_path):
    mod = _toy_module()
    with pytest.raises(ValueError, match="share the checkpoint folder"):
        mod.run_seed(ToyConfig(second_checkpoint="first"), 0, tmp_path / "a")
    real = mod.build
    mod.build = lambda c, s, o: {}
    with pytest.raises(ValueError, match="no phase"):
        train_seed(mod, ToyConfig(), 0, tmp_path / "b")
    mod.build = lambda c, s, o: {"first": real(c, s, o)["first"], "second": lambda setups, states: 3}
    with pytest.raises(TypeError, match="Phase 'second'.*must give an ibscope.experiments.Setup"):
        train_seed(mod, ToyConfig(), 0, tmp_path / "c")
    mod.build = lambda c, s, o: {"first": "model"}
    with pytest.raises(TypeError, match="must return an ibscope.experiments.Setup or a dict.*phase 'first'"):
        train_seed(mod, ToyConfig(), 0, tmp_path / "d")
    mod.build = lambda c, s, o: [real(c, s, o)["first"]]
    with pytest.raises(TypeError, match="must return an ibscope.experiments.Setup or a dict of phases"):
        train_seed(mod, ToyConfig(), 0, tmp_path / "e")


def test_a_seed_killed_in_phase_two_resumes_there_without_a_step_of_phase_one(tmp_path):
    mod = _toy_module()
    whole = runner.run(mod, seeds=[0], out_dir=tmp_path / "whole", progress=False, report=False)
    mod.kill_at = 2
    for counter in mod.steps.values():
        counter.clear()
    with pytest.raises(KeyboardInterrupt):
        runner.run(mod, seeds=[0], out_dir=tmp_path / "cut", progress=False, report=False)
    assert len(mod.steps["first"]) == 12 and len(mod.steps["second"]) == 8
    assert torch.load(tmp_path / "cut" / "seed_0" / "second" / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1
    mod.kill_at = 0
    for counter in mod.steps.values():
        counter.clear()
    runner.run(mod, seeds=[0], out_dir=tmp_path / "cut", progress=False, report=False)
    assert mod.steps["first"] == []  # phase 1 resumed from its final checkpoint: no step
    assert len(mod.steps["second"]) == 8  # phase 2 from its epoch 1: epochs 2 and 3
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cut" / "seed_0" / "result.parquet"),
                                  pd.read_parquet(whole / "seed_0" / "result.parquet"), check_exact=True)


# --------------------------------------------------------------------------- ib_compare and iiw
def _plain_phases(mod, cfg, seed: int, folder: Path) -> pd.DataFrame:
    """The same builds trained by a hand-written sequence of fit calls (in memory, no checkpoint)."""
    with execution(cfg) as c:
        setups, states = {}, {}
        for name, phase in mod.build(c, seed, folder).items():
            setup = phase if isinstance(phase, Setup) else phase(dict(setups), dict(states))
            states[name] = fit(setup.model, setup.loss_fn, setup.train_data, setup.optimizer,
                               epochs=setup.epochs, callbacks=setup.callbacks, eval_data=setup.eval_data,
                               device=getattr(c, "device", None), progress=False, batch_size=setup.batch_size,
                               shuffle=setup.shuffle, seed=seed + setup.shuffle_stream,
                               checkpoint_every=setup.checkpoint_every, check_weights=setup.check_weights,
                               eval_every=setup.eval_every, desc=setup.desc)
            setups[name] = setup
        return mod.rows(c, seed, setups, states)


CASES = {
    "ibc_dropout": ("ib_compare", {"method": "dropout"}, ["train-{key}"]),
    "ibc_vib": ("ib_compare", {"method": "vib"}, ["train-{key}"]),
    "ibc_pib": ("ib_compare", {"method": "pib"}, ["train-{key}"]),
    "ibc_reference_l2": ("ib_compare", {"method": "l2", "pib_recipe": "reference"},
                         ["pretrain-{key}", "train-{key}"]),
    "ibc_reference_pib": ("ib_compare", {"method": "pib", "pib_recipe": "reference"},
                          ["pretrain-{key}", "prior-{key}", "train-{key}"]),
    "ibc_reference_pib_mean_gradient": ("ib_compare", {"method": "pib", "pib_recipe": "reference",
                                                       "pib_fisher": "mean_gradient"},
                                        ["pretrain-{key}", "prior-{key}", "train-{key}"]),
    "iiw_both": ("iiw", {"prior": "both"}, ["iiw_seed1_prior-{key}", "iiw_seed1.ckpt"]),
    "iiw_init": ("iiw", {"prior": "init"}, ["iiw_seed1.ckpt"]),
}


# covered in kind by the others (make test-slow runs them; the reference recipe's 10-20 s each)
SLOW_CASES = ("ibc_reference_l2", "ibc_vib", "ibc_reference_pib", "ibc_reference_pib_mean_gradient")


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c
                                  for c in sorted(CASES)])
def test_runner_rows_equal_a_plain_sequence_of_fits_of_the_same_build(case, tmp_path):
    name, overrides, folders = CASES[case]
    mod = get(name)
    assert has_build(mod)
    seed = 1
    out = runner.run(name, seeds=[seed], out_dir=tmp_path / "run", profile="test", overrides=overrides,
                     progress=False, report=False, batched=False)
    seed_dir = out / f"seed_{seed}"
    cfg = runner.resolve_config(name, profile="test", overrides=overrides)
    key = settings_hash(cfg, **({"seed": seed} if name == "ib_compare" else {}))[:12]
    want = sorted(f.format(key=key) for f in folders)
    assert sorted(p.parent.name for p in seed_dir.rglob(CHECKPOINT_NAME)) == want
    got = pd.read_parquet(seed_dir / "result.parquet")
    pd.testing.assert_frame_equal(got, _plain_phases(mod, cfg, seed, tmp_path / "hand"), check_exact=True)


def test_ib_compare_pib_chain_is_train_gibbs(tmp_path):
    """The default recipe's PIB phase is the chain of train_gibbs (the call run_seed made before)."""
    from ibscope.objectives import train_gibbs
    from ibscope.weights import iiw, init_prior

    ibc = get("ib_compare")
    cfg = ibc.Config(method="pib", **ibc.PROFILES["test"])
    got = ibc.run_seed(cfg, 3, tmp_path / "seed")
    torch.manual_seed(3)
    d = ibc._data(cfg)
    xtr, ytr = torch.as_tensor(d["x_train"]), torch.as_tensor(d["y_train"])
    xte, yte = torch.as_tensor(d["x_test"]), torch.as_tensor(d["y_test"])
    n = xtr.shape[0]
    model = ibc._build(cfg, 3, xtr.shape[1], 10)
    prior = init_prior(model)
    res = train_gibbs(model, nn.functional.cross_entropy, xtr, ytr, epochs=cfg.epochs, batch_size=cfg.batch_size,
                      lr=cfg.lr, temperature=cfg.temperature_scale / n, beta=cfg.pib_beta,
                      pib_interval=cfg.pib_interval, pib_examples=cfg.pib_examples, prior_mean=prior,
                      thin=cfg.thin, seed=3)
    with torch.no_grad():
        acc = float((res.ensemble.predict_proba(xte).argmax(-1) == yte).double().mean())
    model.eval()
    batches = [(xtr[i:i + 256], ytr[i:i + 256]) for i in range(0, min(cfg.iiw_examples, n), 256)]
    info = iiw(model, nn.CrossEntropyLoss(reduction="none"), batches, prior_mean=prior, n_train=n, unit="bits")
    value = got.set_index("quantity")["value"]
    assert value["test_accuracy"] == acc and value["iiw"] == info.total
    assert value["n_posterior_samples"] == len(res.ensemble) > 0


class _KillIn(Callback):
    state_key = "test_kill"

    def __init__(self, at: int):
        self.at = at

    def on_epoch_end(self, state) -> None:
        if self.at and state.epoch == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("name, overrides, first, at", [
    pytest.param("ib_compare", {"method": "pib", "pib_recipe": "reference", "pib_fisher": "mean_gradient"},
                 "pretrain", 2, marks=pytest.mark.slow),  # ~20 s; iiw's case runs in make test
    ("iiw", {"prior": "heldout"}, "prior", 3),
])
def test_killed_in_the_last_phase_resumes_there_to_the_uninterrupted_rows(name, overrides, first, at, tmp_path,
                                                                         monkeypatch):
    """Killed after epoch ``at`` of phase ``train`` (its checkpoint: epoch ``at - 1``); ib_compare's
    pre-training stops early (patience 3), and its resume must not train on."""
    mod = get(name)
    real = mod.build
    kill = {"at": 0}
    steps: list = []

    def build(config, seed, out_dir):
        phases = real(config, seed, out_dir)
        phases[first].callbacks.append(_Steps(steps, "test_steps"))
        inner = phases["train"]

        def train(setups, states):
            setup = inner(setups, states)
            setup.callbacks.append(_KillIn(kill["at"]))
            return setup

        phases["train"] = train
        return phases

    monkeypatch.setattr(mod, "build", build)
    kw = dict(seeds=[0], profile="test", overrides=overrides, progress=False, report=False, batched=False)
    whole = runner.run(name, out_dir=tmp_path / "whole", **kw)
    assert steps
    kill["at"] = at
    with pytest.raises(KeyboardInterrupt):
        runner.run(name, out_dir=tmp_path / "cut", **kw)
    folder = next(p for p in (tmp_path / "cut" / "seed_0").iterdir() if p.name.startswith(("train-", "iiw_seed0.")))
    assert torch.load(folder / CHECKPOINT_NAME, weights_only=True)["epoch"] == at - 1
    kill["at"], steps[:] = 0, []
    runner.run(name, out_dir=tmp_path / "cut", **kw)
    assert steps == []  # the first phase came back from its checkpoint
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cut" / "seed_0" / "result.parquet"),
                                  pd.read_parquet(whole / "seed_0" / "result.parquet"), check_exact=True)


def test_ib_compare_run_seed_keeps_configs_and_seeds_apart_in_one_folder(tmp_path):
    """run_seed was given one folder for several configs and seeds when it kept nothing there; its phase
    folders are named by the settings hash of the config and the seed, so none resumes another's."""
    ibc = get("ib_compare")
    vanilla, l2 = (ibc.Config(method=m, **ibc.PROFILES["test"]) for m in ("vanilla", "l2"))
    shared = [ibc.run_seed(c, s, tmp_path / "shared") for c, s in ((vanilla, 0), (vanilla, 1), (l2, 1))]
    alone = [ibc.run_seed(c, s, tmp_path / f"alone{i}") for i, (c, s) in enumerate(((vanilla, 0), (vanilla, 1),
                                                                                    (l2, 1)))]
    for a, b in zip(shared, alone, strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert len(list((tmp_path / "shared").rglob(CHECKPOINT_NAME))) == 3
