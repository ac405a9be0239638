"""The shared early-stopping engine of the trained estimators (``estimators._train``).

Behaviour is pinned with scripted held-out objectives (a known sequence of
values, so the epoch early stopping must pick is known exactly), a
reference loop written out from the documented step order (the engine must
reproduce it to float rounding on the same machine: rel 1e-12), and the
estimators' own attributes. No result is hard-coded.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ibscope import estimators, tasks
from ibscope.estimators import _diagnostics as diag
from ibscope.estimators import _flow, _latent, _neural
from ibscope.estimators._train import (
    TrainResult,
    batch_generator,
    history_in_unit,
    seeded,
    train_early_stopping,
)


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    return x, x @ torch.tensor([[1.0], [-0.5]]) + 0.1 * torch.randn(n, 1, generator=g)


def _build():
    return nn.Linear(2, 1)


def _mse(m, xb, yb):
    loss = ((m(xb) - yb) ** 2).mean()
    return loss, loss.detach()


def _scripted(values, snapshots=None):
    """A held-out callable returning ``values`` in turn (recording the weights it saw)."""
    it = iter(values)

    def held_out(m):
        if snapshots is not None:
            snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(it)
    return held_out


def _fit(values, *, snapshots=None, **kw):
    x, y = _data()
    params = dict(lr=0.05, batch_size=8, max_epochs=len(values), patience=2, seed=0)
    params.update(kw)
    return train_early_stopping(_build, x, y, _mse, _scripted(values, snapshots), **params)


# --------------------------------------------------------------- stopping rule
def test_stops_patience_after_the_best_and_restores_its_weights():
    snaps = []
    fit = _fit([1.0, 3.0, 2.0, 5.0, 4.0, 4.5, 9.0, 9.0], snapshots=snaps, patience=2)
    assert isinstance(fit, TrainResult)
    assert fit.best_epoch == 4 and fit.best_value == 5.0 and fit.converged
    assert [h["epoch"] for h in fit.history] == [1, 2, 3, 4, 5, 6]  # the 9.0s are never reached
    assert [h["test"] for h in fit.history] == [1.0, 3.0, 2.0, 5.0, 4.0, 4.5]
    # the weights of epoch 4 (not those of the last epoch) are restored, in eval mode
    assert not fit.module.training
    for k, v in fit.module.state_dict().items():
        assert torch.equal(v, snaps[3][k])
        assert not torch.equal(v, snaps[-1][k])


def test_not_converged_when_max_epochs_cut_the_patience_rule_short():
    rising = _fit([1.0, 2.0, 3.0, 4.0], patience=2)
    assert not rising.converged and rising.best_epoch == 4 and len(rising.history) == 4
    # the patience rule firing exactly at the last epoch is convergence
    flat_end = _fit([1.0, 2.0, 2.0, 2.0], patience=2)
    assert flat_end.converged and flat_end.best_epoch == 2 and len(flat_end.history) == 4
    one_short = _fit([1.0, 2.0, 3.0, 2.0], patience=2)
    assert not one_short.converged and one_short.best_epoch == 3


@pytest.mark.parametrize("seed", range(6))
def test_converged_agrees_with_the_documented_flag(seed):
    """converged == not critic_not_converged(history) on random objective sequences."""
    rng = np.random.default_rng(seed)
    values = list(np.round(rng.normal(size=12), 1))
    for patience in (1, 2, 3, 5):
        fit = _fit(values, patience=patience)
        assert fit.converged == (not diag.critic_not_converged(fit.history, 12, patience))
        tests = [h["test"] for h in fit.history]
        assert fit.best_epoch == 1 + tests.index(max(tests)) and fit.best_value == max(tests)


def test_min_delta_and_non_finite_values_are_not_improvements():
    fit = _fit([1.0, 1.05, 1.08, 2.0, 2.0], patience=2, min_delta=0.1)
    assert fit.best_epoch == 1 and fit.converged and len(fit.history) == 3
    fit = _fit([math.nan, 1.0, math.inf, -math.inf, 0.5, 0.7], patience=3)
    assert fit.best_epoch == 2 and fit.converged and len(fit.history) == 5
    with pytest.raises(FloatingPointError, match="Owner: the held-out foo was never finite"):
        _fit([math.nan, math.inf, math.nan], owner="Owner", objective="held-out foo")


def test_eval_every_and_extra_history_fields():
    x, y = _data()
    seen = []

    def held_out(m):
        seen.append(1)
        return 1.0 + len(seen), {"extra": -float(len(seen))}

    fit = train_early_stopping(_build, x, y, _mse, held_out, lr=0.01, batch_size=8, max_epochs=7,
                               patience=2, seed=0, eval_every=3)
    assert [h["epoch"] for h in fit.history] == [3, 6, 7]  # and after the last epoch
    assert fit.best_epoch == 7 and [h["extra"] for h in fit.history] == [-1.0, -2.0, -3.0]
    assert set(fit.history[0]) == {"epoch", "train", "test", "extra"}
    with pytest.raises(ValueError, match="test"):
        train_early_stopping(_build, x, y, _mse, lambda m: (1.0, {"test": 2.0}), lr=0.01,
                             batch_size=8, max_epochs=2, patience=1, seed=0)


def test_clip_norm_bounds_the_gradient():
    x, y = _data()

    def steep(m, xb, yb):
        loss = 1e4 * ((m(xb) - yb) ** 2).mean()
        return loss, loss.detach()

    def grad_norm(fit):  # the last step's gradient is left on the parameters
        return float(torch.sqrt(sum((p.grad ** 2).sum() for p in fit.module.parameters())))

    kw = dict(lr=0.01, batch_size=8, max_epochs=2, patience=5, seed=0)
    assert grad_norm(train_early_stopping(_build, x, y, steep, lambda m: 0.0, **kw)) > 1.0
    clipped = train_early_stopping(_build, x, y, steep, lambda m: 0.0, clip_norm=0.5, **kw)
    assert grad_norm(clipped) <= 0.5 * (1 + 1e-5)


# ------------------------------------- loss mode, relative rule, lr decays
def test_minimize_keeps_the_lowest_loss_and_min_delta_is_a_fall():
    fit = _fit([3.0, 1.0, 2.0, 2.0, 0.5], patience=2, minimize=True)
    assert fit.best_epoch == 2 and fit.best_value == 1.0 and fit.converged
    assert len(fit.history) == 4 and fit.history[1]["test"] == 1.0  # the loss as given, not negated
    fit = _fit([3.0, 2.95, 2.0, 2.0, 2.0], patience=2, minimize=True, min_delta=0.1)
    assert fit.best_epoch == 3 and fit.best_value == 2.0 and len(fit.history) == 5
    fit = _fit([math.nan, math.inf, 4.0, math.nan], patience=3, minimize=True)
    assert fit.best_epoch == 3 and fit.best_value == 4.0 and not fit.converged


def test_patience_none_trains_max_epochs_and_keeps_the_best():
    fit = _fit([1.0, 3.0, 2.0, 1.0, 0.5, 0.4], patience=None)
    assert len(fit.history) == 6 and fit.best_epoch == 2 and not fit.converged
    assert fit.lrs == [0.05] * 6


def test_relative_rule_stops_when_the_loss_fell_by_less_than_the_fraction():
    """Documented rule: fire when best > (1 - min_delta) * min(window[:-patience])."""
    # every value is a new best, so the patience rule would never stop; the relative rule:
    # epoch 3: best 7.9 vs 0.95 * min(10) = 9.5 -> go on; epoch 4: 7.85 > 0.95 * min(10, 8) = 7.6: stop
    values = [10.0, 8.0, 7.9, 7.85, 7.8, 7.7]
    rel = _fit(values, patience=2, minimize=True, stopping="relative", min_delta=0.05)
    assert rel.converged and [h["epoch"] for h in rel.history] == [1, 2, 3, 4]
    assert rel.best_epoch == 4 and rel.best_value == 7.85
    pat = _fit(values, patience=2, minimize=True, min_delta=0.0)
    assert not pat.converged and len(pat.history) == 6
    # the best so far is never above the window's earlier values: min_delta=0 never fires
    flat = _fit([5.0, 4.0, 4.0, 4.0, 4.0], patience=2, minimize=True, stopping="relative")
    assert not flat.converged and len(flat.history) == 5 and flat.best_epoch == 2
    # the best value counts from the start, the earlier values only from the window's start
    late = _fit([5.0, 1.0, 4.0, 4.0, 4.0, 4.0], patience=2, minimize=True, stopping="relative",
                min_delta=0.5)
    assert late.converged and len(late.history) == 4 and late.best_epoch == 2


def test_lr_decays_restore_the_best_weights_and_restart_the_window():
    snaps = []
    # relative rule, patience 2, 10%: fires at epoch 3 (best 9.9 at epoch 2 > 0.9 * 10), with a
    # decay left: lr / 1e30, weights of epoch 2 restored, a new window; in it epoch 6 fires
    # (best 9.8 (epoch 4) > 0.9 * 9.8): no decay left, stop
    values = [10.0, 9.9, 9.95, 9.8, 9.85, 9.9, 1.0]
    fit = _fit(values, snapshots=snaps, patience=2, minimize=True, stopping="relative",
               min_delta=0.1, lr_decays=1, lr_factor=1e30)
    assert fit.converged and [h["epoch"] for h in fit.history] == [1, 2, 3, 4, 5, 6]
    assert fit.lrs == [0.05, 0.05, 0.05, 0.05 / 1e30, 0.05 / 1e30, 0.05 / 1e30]
    assert fit.best_epoch == 4 and fit.best_value == 9.8
    for k, v in snaps[3].items():  # epoch 4 trained from epoch 2's weights at a negligible lr
        assert torch.allclose(v, snaps[1][k], rtol=0, atol=1e-20)
        assert not torch.allclose(v, snaps[2][k], rtol=0, atol=1e-6)
    # the patience rule decays too: counter reset after each decay; two decays, then stop
    fit = _fit([1.0, 2.0] + [2.0] * 6 + [5.0], patience=2, lr_decays=2, lr_factor=10.0)
    assert fit.converged and len(fit.history) == 8 and fit.best_epoch == 2
    assert fit.lrs == [0.05] * 4 + [0.05 / 10] * 2 + [0.05 / 10 / 10] * 2
    # decays left when max_epochs runs out: not converged
    assert not _fit([1.0, 2.0, 2.0, 2.0], patience=2, lr_decays=1).converged


def test_batch_rng_is_seeded_and_leaves_the_rest_of_the_run_unchanged():
    x, y = _data()
    draws = []

    def noisy(m, xb, yb, gen):
        draws.append(torch.rand(2, generator=gen))
        return _mse(m, xb, yb)

    kw = dict(lr=0.02, batch_size=8, max_epochs=3, patience=5, seed=2)
    plain = train_early_stopping(_build, x, y, _mse, lambda m: 1.0, **kw)
    rng = train_early_stopping(_build, x, y, noisy, lambda m: 1.0, batch_rng=True, **kw)
    assert rng.history == plain.history  # the generator does not touch the minibatch order
    assert all(isinstance(g, torch.Tensor) for g in draws) and len(draws) == 3 * (40 // 8)
    first = torch.stack(draws)
    draws.clear()
    train_early_stopping(_build, x, y, noisy, lambda m: 1.0, batch_rng=True, **kw)
    assert torch.equal(torch.stack(draws), first)  # seeded
    draws.clear()
    train_early_stopping(_build, x, y, noisy, lambda m: 1.0, batch_rng=True, **{**kw, "seed": 3})
    assert not torch.equal(torch.stack(draws), first)
    assert len(first.unique()) == first.numel()  # fresh draws for every minibatch


# --------------------------------------------------------- order and seeding
def _reference_loop(x, y, *, lr, batch_size, max_epochs, seed):
    """The documented step order written out: seeded build, batch generator, Adam steps."""
    with seeded(seed, torch.device("cpu")):
        m = _build()
        gen = batch_generator()
        opt = torch.optim.Adam(m.parameters(), lr=lr)
        b = min(batch_size, x.shape[0])
        records = []
        for _ in range(max_epochs):
            order = torch.randperm(x.shape[0], generator=gen)
            total = 0.0
            for i in range(max(1, x.shape[0] // b)):
                idx = order[i * b:(i + 1) * b]
                loss = ((m(x[idx]) - y[idx]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach())
            records.append(total / max(1, x.shape[0] // b))
    return m, records


@pytest.mark.parametrize("batch_size", [7, 64])  # a dropped partial batch; one short batch
def test_same_rng_consumption_and_step_order_as_the_reference_loop(batch_size):
    x, y = _data(n=30)
    ref, records = _reference_loop(x, y, lr=0.02, batch_size=batch_size, max_epochs=5, seed=11)
    fit = train_early_stopping(_build, x, y, _mse, lambda m: 1.0 + m.bias.sum().item() * 0,
                               lr=0.02, batch_size=batch_size, max_epochs=5, patience=10, seed=11,
                               min_delta=0.0)
    # a constant objective keeps epoch 1: compare the training records of every epoch instead
    assert [h["train"] for h in fit.history] == pytest.approx(records, rel=1e-12)
    last = train_early_stopping(_build, x, y, _mse, _scripted([1, 2, 3, 4, 5]), lr=0.02,
                                batch_size=batch_size, max_epochs=5, patience=10, seed=11)
    for p, q in zip(last.module.parameters(), ref.parameters()):
        assert torch.allclose(p, q, rtol=1e-6, atol=0)


def test_seed_determines_the_run_and_global_rng_is_left_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = _fit([1.0, 2.0, 1.5, 1.0], seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    b = _fit([1.0, 2.0, 1.5, 1.0], seed=4)
    c = _fit([1.0, 2.0, 1.5, 1.0], seed=5)
    assert a.history == b.history and a.history != c.history


# --------------------------------------------------------------- validation
@pytest.mark.parametrize("name, value", [
    ("lr", 0.0), ("lr", -1.0), ("batch_size", 0), ("max_epochs", 0), ("patience", 0),
    ("min_delta", -0.1), ("eval_every", 0), ("clip_norm", 0.0), ("seed", -1), ("lr", math.nan),
    ("batch_size", 2.5), ("patience", 1.5), ("stopping", "plateau"), ("lr_decays", -1),
    ("lr_decays", 0.5), ("lr_factor", 1.0), ("lr_factor", math.inf),
])
def test_bad_parameters_raise_naming_them(name, value):
    with pytest.raises(ValueError, match=f"'{name}'"):
        _fit([1.0, 2.0], **{name: value})


@pytest.mark.parametrize("name", ["minimize", "batch_rng"])
def test_flags_must_be_bools(name):
    with pytest.raises(TypeError, match=f"'{name}' parameter of train_early_stopping must be a bool"):
        _fit([1.0, 2.0], **{name: 1})


def test_relative_rule_needs_a_loss_and_a_fraction():
    with pytest.raises(ValueError, match="'stopping'.*minimize=True"):
        _fit([1.0, 2.0], stopping="relative")
    with pytest.raises(ValueError, match="'min_delta'.*fraction"):
        _fit([1.0, 2.0], stopping="relative", minimize=True, min_delta=1.0)


def test_bad_callables_and_data_raise_naming_them():
    x, y = _data()
    kw = dict(lr=0.01, batch_size=8, max_epochs=2, patience=1, seed=0)
    for name in ("build", "batch_loss", "held_out"):
        args = {"build": _build, "batch_loss": _mse, "held_out": lambda m: 0.0, name: 3}
        with pytest.raises(TypeError, match=f"'{name}'"):
            train_early_stopping(args["build"], x, y, args["batch_loss"], args["held_out"], **kw)
    with pytest.raises(TypeError, match="'build'"):
        train_early_stopping(lambda: "not a module", x, y, _mse, lambda m: 0.0, **kw)
    with pytest.raises(TypeError, match="'x_train'"):
        train_early_stopping(_build, x.numpy(), y, _mse, lambda m: 0.0, **kw)
    with pytest.raises(ValueError, match="'x_train' and 'y_train'"):
        train_early_stopping(_build, x, y[:-1], _mse, lambda m: 0.0, **kw)
    with pytest.raises(ValueError, match="'y_train'"):
        train_early_stopping(_build, x, y[:0], _mse, lambda m: 0.0, **kw)


def test_history_in_unit_converts_only_the_named_fields():
    h = [{"epoch": 1, "train": math.log(2), "test": 2 * math.log(2), "loss": 5.0}]
    bits = history_in_unit(h, "bits", ("train", "test"))
    assert bits == [{"epoch": 1, "train": pytest.approx(1.0), "test": pytest.approx(2.0),
                     "loss": 5.0}]
    assert history_in_unit(h, "nats", ("train", "test")) == h
    with pytest.raises(ValueError, match="unit"):
        history_in_unit(h, "bans", ("test",))


# ---------------------------------------------- the estimators use the engine
@pytest.mark.parametrize("module, name, params", [
    (_neural, "nwj", dict(hidden=(8,), batch_size=32, max_epochs=6, patience=2, lr=0.02)),
    (_neural, "infonce", dict(hidden=(8,), batch_size=32, max_epochs=6, patience=2, lr=0.02)),
    (_flow, "flow", dict(n_blocks=1, n_terms=2, hidden=(4,), batch_size=64, max_epochs=6,
                         patience=2)),
    (_latent, "latent_ksg", dict(hidden=(8,), latent_dim=1, batch_size=32, max_epochs=6,
                                 patience=2)),
])
def test_estimators_train_through_the_engine(monkeypatch, module, name, params):
    calls = []

    def spy(*args, **kw):
        fit = train_early_stopping(*args, **kw)
        calls.append((kw, fit))
        return fit

    monkeypatch.setattr(module, "train_early_stopping", spy)
    x, y = tasks.get("gaussian_split", dim=1, mi=1.0).sample(200, seed=0)
    est = estimators.get(name, **params)
    est.estimate(x, y)
    (kw, fit), = calls
    assert {k: kw[k] for k in ("lr", "batch_size", "max_epochs", "patience", "seed")} == {
        k: params.get(k, getattr(est, k)) for k in ("lr", "batch_size", "max_epochs", "patience",
                                                    "seed")}
    assert kw.get("clip_norm") == (10.0 if name == "flow" else None)
    assert est.best_epoch_ == fit.best_epoch and est.converged_ == fit.converged
    assert [h["epoch"] for h in est.history_] == [h["epoch"] for h in fit.history]
    assert est.flags_ == (() if fit.converged else ("critic_not_converged",))
