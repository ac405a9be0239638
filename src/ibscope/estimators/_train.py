"""The one early-stopping training engine of the trained estimators.

The neural bounds (MINE, NWJ, InfoNCE, ``_neural``), the flows (``_flow``)
and latent KSG (``_latent``) all fit a small torch network the same way
(the held-out protocol of Poole et al. [1]_ and Belghazi et al. [2]_): Adam
[3]_ on minibatches of a training split, a held-out objective evaluated after
training epochs, early stopping [4]_ after ``patience`` evaluations without
improvement, the weights of the best held-out evaluation restored, and a
convergence flag. :func:`train_early_stopping` owns that loop; an estimator
passes only what differs: how to build its network, the loss of one
minibatch, the held-out objective, and optionally gradient clipping.

The compressed estimator's autoencoder (``_compressed.fit_autoencoder``, after
Butakov et al. [5]_) trains through the same loop with the options it needs:
a held-out loss to minimize (``minimize``), the relative-plateau stopping
rule (``stopping='relative'``), learning-rate decays on a plateau
(``lr_decays``, ``lr_factor``) and a seeded generator for training-time
augmentation and noise (``batch_rng``).

Determinism: the network is built inside :func:`seeded` (torch's global RNG
seeded with ``seed`` and restored afterwards), then the minibatch order is
drawn from a CPU generator seeded from that RNG (:func:`batch_generator`), so
on CPU a run is a function of ``seed`` and the data.

References
----------
.. [1] B. Poole, S. Ozair, A. van den Oord, A. A. Alemi and G. Tucker, "On
   variational bounds of mutual information", ICML 2019.
.. [2] M. I. Belghazi et al., "Mutual information neural estimation",
   ICML 2018.
.. [3] D. P. Kingma and J. Ba, "Adam: a method for stochastic optimization",
   ICLR 2015.
.. [4] L. Prechelt, "Early stopping -- but when?", in Neural Networks: Tricks
   of the Trade, Springer, 1998.
.. [5] I. Butakov, A. Tolmachev, S. Malanchuk, A. Neopryatnaya, A. Frolov
   and K. Andreev, "Information bottleneck analysis of deep neural networks
   via lossy compression", ICLR 2024.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._units import from_nats
from .._validation import BOOLEAN, NONE, InstanceOf, Interval, Options, validate_params

__all__ = ["TrainResult", "train_early_stopping", "seeded", "batch_generator", "history_in_unit"]


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG inside the block (its state is restored afterwards).

    Build the model inside the block, then call :func:`batch_generator`.

    Parameters
    ----------
    seed : int or None
        Seed of torch's global RNG inside the block; None leaves it as it is.
    device : torch.device
        The device trained on; a CUDA device's RNG is forked as well.
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def batch_generator() -> torch.Generator:
    """A CPU generator for the minibatch order, seeded from torch's global RNG.

    Returns
    -------
    torch.Generator
        A CPU generator; drawing its seed advances torch's global RNG by one draw.
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
    return gen


@dataclass
class TrainResult:
    """What :func:`train_early_stopping` returns.

    Attributes
    ----------
    module : torch.nn.Module
        The trained network with the weights of the best held-out evaluation
        restored, in eval mode.
    history : list of dict
        One entry per held-out evaluation: ``{'epoch', 'train', 'test', ...}``
        with the mean training record of the epoch's minibatches, the held-out
        objective and any extra fields the held-out callable returned, all as
        the callables gave them (no unit conversion).
    best_epoch : int
        Epoch of the best held-out objective (the weights kept).
    best_value : float
        That objective.
    converged : bool
        True when the stopping rule stopped training (after its learning-rate
        decays, if any); False when ``max_epochs`` ran out first (with the
        patience rule: while the objective still improved within the last
        ``patience`` evaluations, the flag ``critic_not_converged``) or when
        ``patience`` is None.
    lrs : list of float
        The learning rate of the training epochs before each history entry
        (constant unless ``lr_decays`` > 0).
    """

    module: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    best_value: float
    converged: bool
    lrs: list[float] = field(default_factory=list)


_RESERVED = ("epoch", "train", "test")

_CONSTRAINTS = {
    "lr": [Interval(float, 0, None, closed="neither")],
    "batch_size": [Interval(int, 1, None)],
    "max_epochs": [Interval(int, 1, None)],
    "patience": [NONE, Interval(int, 1, None)],
    "min_delta": [Interval(float, 0, None)],
    "minimize": [BOOLEAN],
    "stopping": [Options(("patience", "relative"))],
    "lr_decays": [Interval(int, 0, None)],
    "lr_factor": [Interval(float, 1, None, closed="neither")],
    "batch_rng": [BOOLEAN],
    "eval_every": [Interval(int, 1, None)],
    "clip_norm": [NONE, Interval(float, 0, None, closed="neither")],
    "seed": [NONE, Interval(int, 0, None)],
    "x_train": [InstanceOf((torch.Tensor,), "a torch.Tensor")],
    "y_train": [InstanceOf((torch.Tensor,), "a torch.Tensor")],
}


def _check(owner: str, build: Any, batch_loss: Any, held_out: Any, x_train: Any, y_train: Any,
           params: Mapping[str, Any]) -> None:
    for name, fn in (("build", build), ("batch_loss", batch_loss), ("held_out", held_out)):
        if not callable(fn):
            raise TypeError(f"The '{name}' parameter of {owner} must be callable. "
                            f"Got {fn!r} instead.")
    validate_params(owner, {"x_train": x_train, "y_train": y_train, **params}, _CONSTRAINTS)
    for name, t in (("x_train", x_train), ("y_train", y_train)):
        if t.ndim == 0 or t.shape[0] < 1:
            raise ValueError(f"The '{name}' parameter of {owner} must hold at least one row; "
                             f"got shape {tuple(t.shape)}.")
    if x_train.shape[0] != y_train.shape[0]:
        raise ValueError(f"'x_train' and 'y_train' of {owner} must have the same number of rows; "
                         f"got {x_train.shape[0]} and {y_train.shape[0]}.")
    if params["stopping"] == "relative":
        if not params["minimize"]:
            raise ValueError(f"The 'stopping' parameter of {owner} may be 'relative' only with "
                             "minimize=True (a relative improvement of a nonnegative loss).")
        if params["min_delta"] >= 1:
            raise ValueError(f"The 'min_delta' parameter of {owner} is a fraction in [0, 1) with "
                             f"stopping='relative'. Got {params['min_delta']!r} instead.")


def train_early_stopping(
    build: Callable[[], nn.Module],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    batch_loss: Callable[..., tuple[torch.Tensor, Any]],
    held_out: Callable[[nn.Module], float | tuple[float, Mapping[str, float]]],
    *,
    lr: float,
    batch_size: int,
    max_epochs: int,
    patience: int | None,
    seed: int | None,
    device: torch.device | str = "cpu",
    clip_norm: float | None = None,
    min_delta: float = 0.0,
    eval_every: int = 1,
    minimize: bool = False,
    stopping: str = "patience",
    lr_decays: int = 0,
    lr_factor: float = 10.0,
    batch_rng: bool = False,
    owner: str = "train_early_stopping",
    objective: str = "held-out objective",
) -> TrainResult:
    """Train a network by minibatch Adam with early stopping on a held-out objective.

    The loop: inside :func:`seeded` (``seed``) build the network
    (``build()``), then seed the minibatch order (:func:`batch_generator`)
    and, with ``batch_rng``, a second generator for ``batch_loss``'s own
    randomness; each epoch draws a permutation of the training rows, cuts it
    into ``n_train // b`` minibatches of ``b = min(batch_size, n_train)``
    rows (the last partial batch is dropped; one batch when ``n_train <
    batch_size``) and on each takes one Adam step on ``batch_loss`` (after
    clipping the gradient norm at ``clip_norm`` when given). Every
    ``eval_every`` epochs (and after the last one) the network, in eval mode
    and without gradients, is scored by ``held_out`` (higher is better, or
    lower with ``minimize``). A finite score that improves on the best so far
    is kept (its weights are copied), and the stopping rule looks at it:

    * ``stopping='patience'`` (early stopping [1]_ [3]_): an improvement
      must beat the best by more than ``min_delta``; the rule fires after
      ``patience`` evaluations in a row without one.
    * ``stopping='relative'`` (a loss, ``minimize=True``; the autoencoders of
      Butakov et al. [4]_): every strict improvement is kept; the rule fires
      at an evaluation when its window (the evaluations since the start or
      the last learning-rate decay) holds more than ``patience`` values and
      the best value so far is above ``(1 - min_delta)`` times the smallest
      of the window's values before its last ``patience``: the loss fell by
      less than the fraction ``min_delta`` over the last ``patience``
      evaluations.

    When the rule fires with learning-rate decays left (``lr_decays``), the
    learning rate is divided by ``lr_factor``, the kept weights are restored
    (Adam's moment estimates are kept) and the rule starts a new window;
    otherwise training stops (``converged``). Training also ends after
    ``max_epochs`` epochs; the kept weights are restored.

    Parameters
    ----------
    build : callable () -> torch.nn.Module
        Builds the network (on its device); called once, inside the seeded
        block, so its initialization is a function of ``seed``.
    x_train, y_train : torch.Tensor
        Training rows (same number of rows), on the network's device.
    batch_loss : callable (module, x_batch, y_batch[, generator]) -> (loss, record)
        The scalar loss to minimize on one minibatch and the batch's training
        record (a float or a 0-d tensor; its mean over the epoch's batches is
        the history's ``'train'``). With ``batch_rng`` it gets a fourth
        argument, the seeded CPU generator for its augmentation or noise.
    held_out : callable (module) -> float or (float, dict)
        The held-out objective (higher is better, lower with ``minimize``;
        non-finite values never count as improvements), optionally with
        extra fields for the history.
    lr : float > 0
        Adam learning rate (at the start).
    batch_size : int >= 1
        Minibatch size.
    max_epochs : int >= 1
        Most epochs (passes over the training rows).
    patience : int >= 1 or None
        Held-out evaluations the stopping rule looks back (see above); None
        disables it: always ``max_epochs`` epochs (``converged`` False), the
        best evaluation's weights still kept.
    seed : int or None
        Seeds the initialization and the minibatch order (None: torch's
        current global RNG state).
    device : torch.device or str, default 'cpu'
        The device trained on (its RNG is forked by :func:`seeded`).
    clip_norm : float > 0 or None, default None
        Clip the global gradient norm of all parameters at this value.
    min_delta : float >= 0, default 0
        ``stopping='patience'``: the smallest rise (fall with ``minimize``) of
        the held-out objective that counts as an improvement.
        ``stopping='relative'``: the smallest relative fall over
        ``patience`` evaluations, a fraction in [0, 1).
    eval_every : int >= 1, default 1
        Epochs between held-out evaluations.
    minimize : bool, default False
        The held-out objective is a loss: lower is better.
    stopping : {'patience', 'relative'}, default 'patience'
        The stopping rule (see above); 'relative' needs ``minimize``.
    lr_decays : int >= 0, default 0
        How many times a firing rule divides the learning rate (restoring
        the kept weights) before it stops training.
    lr_factor : float > 1, default 10
        The divisor of each decay.
    batch_rng : bool, default False
        Seed a second CPU generator (drawn after the minibatch order's, so
        that training without it is unchanged) and pass it to ``batch_loss``.
    owner : str
        Named in error messages (the estimator's class name).
    objective : str
        What ``held_out`` computes, named in error messages.

    Returns
    -------
    TrainResult
        The network with the best weights restored, the history, the best
        epoch and objective, the convergence flag and the learning rates.

    Raises
    ------
    TypeError
        When ``build``, ``batch_loss`` or ``held_out`` is not callable or the
        training rows are not tensors.
    ValueError
        For a parameter out of range (the message names it).
    FloatingPointError
        When the held-out objective was never finite.

    References
    ----------
    .. [1] B. Poole et al., "On variational bounds of mutual information",
       ICML 2019.
    .. [2] D. P. Kingma and J. Ba, "Adam: a method for stochastic
       optimization", ICLR 2015.
    .. [3] L. Prechelt, "Early stopping -- but when?", Neural Networks:
       Tricks of the Trade, Springer, 1998.
    .. [4] I. Butakov et al., "Information bottleneck analysis of deep neural
       networks via lossy compression", ICLR 2024.
    """
    _check(owner, build, batch_loss, held_out, x_train, y_train,
           {"lr": lr, "batch_size": batch_size, "max_epochs": max_epochs, "patience": patience,
            "min_delta": min_delta, "eval_every": eval_every, "clip_norm": clip_norm,
            "seed": seed, "minimize": minimize, "stopping": stopping, "lr_decays": lr_decays,
            "lr_factor": lr_factor, "batch_rng": batch_rng})
    device = torch.device(device)
    with seeded(seed, device):
        module = build()
        if not isinstance(module, nn.Module):
            raise TypeError(f"The 'build' parameter of {owner} must return a torch.nn.Module. "
                            f"Got {type(module).__name__} instead.")
        gen = batch_generator()
        loss_fn = batch_loss
        if batch_rng:  # drawn after the minibatch order's: runs without it are unchanged
            loss_fn = functools.partial(_with_generator, batch_loss, batch_generator())
        rule = _StoppingRule(stopping, patience, min_delta, minimize)
        return _loop(module, gen, x_train, y_train, loss_fn, held_out, rule, lr=lr,
                     batch_size=batch_size, max_epochs=max_epochs, clip_norm=clip_norm,
                     eval_every=eval_every, lr_decays=lr_decays, lr_factor=lr_factor,
                     owner=owner, objective=objective)


def _with_generator(batch_loss: Callable, gen: torch.Generator, module: nn.Module,
                    xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, Any]:
    return batch_loss(module, xb, yb, gen)


class _StoppingRule:
    """Improvement test and stopping rule of :func:`train_early_stopping` over the current window."""

    def __init__(self, stopping: str, patience: int | None, min_delta: float, minimize: bool):
        self.stopping, self.patience, self.minimize = stopping, patience, minimize
        self.min_delta = min_delta if stopping == "patience" else 0.0  # the bar of an improvement
        self.fraction = min_delta
        self.start = math.inf if minimize else -math.inf
        self.restart()

    def restart(self) -> None:
        """A new window (at the start and after each learning-rate decay)."""
        self.waited, self.window = 0, []

    def improves(self, val: float, best: float) -> bool:
        if not math.isfinite(val):
            return False
        return val < best - self.min_delta if self.minimize else val > best + self.min_delta

    def fires(self, val: float, improved: bool, best: float) -> bool:
        """Record the evaluation ``val``; True when the rule stops (or decays) the training."""
        self.waited = 0 if improved else self.waited + 1
        self.window.append(val)
        p = self.patience
        if p is None:
            return False
        if self.stopping == "patience":
            return self.waited >= p
        return len(self.window) > p and best > (1.0 - self.fraction) * min(self.window[:-p])


def _loop(module: nn.Module, gen: torch.Generator, x_tr: torch.Tensor, y_tr: torch.Tensor,
          batch_loss: Callable, held_out: Callable, rule: _StoppingRule, *, lr: float,
          batch_size: int, max_epochs: int, clip_norm: float | None, eval_every: int,
          lr_decays: int, lr_factor: float, owner: str, objective: str) -> TrainResult:
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    n_tr = x_tr.shape[0]
    b = min(batch_size, n_tr)
    n_batches = max(1, n_tr // b)  # drop the last partial batch
    history: list[dict[str, float]] = []
    lrs: list[float] = []
    best_val, best_state, best_epoch = rule.start, None, 0
    cur_lr, decays, converged = lr, 0, False
    for epoch in range(1, max_epochs + 1):
        module.train()
        order = torch.randperm(n_tr, generator=gen).to(x_tr.device)
        total = 0.0
        for i in range(n_batches):
            idx = order[i * b:(i + 1) * b]
            loss, record = batch_loss(module, x_tr[idx], y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), clip_norm)
            opt.step()
            total += float(record)
        if epoch % eval_every and epoch != max_epochs:
            continue
        module.eval()
        with torch.no_grad():
            out = held_out(module)
        val, extra = (out if isinstance(out, tuple) else (out, {}))
        val = float(val)
        clash = set(extra) & set(_RESERVED)
        if clash:
            raise ValueError(f"{owner}: the held-out callable's extra fields may not be named "
                             f"{sorted(clash)} (the engine writes them).")
        history.append({"epoch": epoch, "train": total / n_batches, "test": val, **extra})
        lrs.append(cur_lr)
        improved = rule.improves(val, best_val)
        if improved:
            best_val, best_epoch = val, epoch
            best_state = copy.deepcopy(module.state_dict())
        if rule.fires(val, improved, best_val):
            if decays >= lr_decays or best_state is None:
                converged = True
                break
            decays, cur_lr = decays + 1, cur_lr / lr_factor
            module.load_state_dict(best_state)
            for group in opt.param_groups:
                group["lr"] = cur_lr
            rule.restart()
    if best_state is None:
        raise FloatingPointError(f"{owner}: the {objective} was never finite; lower 'lr' or check "
                                 "the input scale.")
    module.load_state_dict(best_state)
    module.eval()
    return TrainResult(module=module, history=history, best_epoch=best_epoch,
                       best_value=best_val, converged=converged, lrs=lrs)


def history_in_unit(history: Iterable[Mapping[str, float]], unit: str, keys: Iterable[str]
                    ) -> list[dict[str, float]]:
    """A copy of ``history`` with the fields ``keys`` (in nats) converted to ``unit``.

    Parameters
    ----------
    history : iterable of dict
        Per-evaluation records, e.g. :attr:`TrainResult.history`.
    unit : {'bits', 'nats'}
        The target unit.
    keys : iterable of str
        The fields in nats to convert; the others are copied as they are.

    Returns
    -------
    list of dict
    """
    keys = tuple(keys)
    return [{k: (from_nats(v, unit) if k in keys else v) for k, v in h.items()} for h in history]
