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
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._units import from_nats
from .._validation import NONE, InstanceOf, Interval, validate_params

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
        True when the patience rule stopped training; False when
        ``max_epochs`` ran out while the objective still improved within the
        last ``patience`` evaluations (the flag ``critic_not_converged``).
    """

    module: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    best_value: float
    converged: bool


_RESERVED = ("epoch", "train", "test")

_CONSTRAINTS = {
    "lr": [Interval(float, 0, None, closed="neither")],
    "batch_size": [Interval(int, 1, None)],
    "max_epochs": [Interval(int, 1, None)],
    "patience": [Interval(int, 1, None)],
    "min_delta": [Interval(float, 0, None)],
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


def train_early_stopping(
    build: Callable[[], nn.Module],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    batch_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, Any]],
    held_out: Callable[[nn.Module], float | tuple[float, Mapping[str, float]]],
    *,
    lr: float,
    batch_size: int,
    max_epochs: int,
    patience: int,
    seed: int | None,
    device: torch.device | str = "cpu",
    clip_norm: float | None = None,
    min_delta: float = 0.0,
    eval_every: int = 1,
    owner: str = "train_early_stopping",
    objective: str = "held-out objective",
) -> TrainResult:
    """Train a network by minibatch Adam with early stopping on a held-out objective.

    The loop: inside :func:`seeded` (``seed``) build the network
    (``build()``), then seed the minibatch order (:func:`batch_generator`);
    each epoch draws a permutation of the training rows, cuts it into
    ``n_train // b`` minibatches of ``b = min(batch_size, n_train)`` rows (the
    last partial batch is dropped; one batch when ``n_train < batch_size``)
    and on each takes one Adam step on ``batch_loss`` (after clipping the
    gradient norm at ``clip_norm`` when given). Every ``eval_every`` epochs
    (and after the last one) the network, in eval mode and without
    gradients, is scored by ``held_out`` (higher is better). A finite score
    above the best so far by more than ``min_delta`` is an improvement and
    its weights are kept; training stops after ``patience`` evaluations
    without improvement or after ``max_epochs`` epochs, and the kept weights
    are restored.

    Parameters
    ----------
    build : callable () -> torch.nn.Module
        Builds the network (on its device); called once, inside the seeded
        block, so its initialization is a function of ``seed``.
    x_train, y_train : torch.Tensor
        Training rows (same number of rows), on the network's device.
    batch_loss : callable (module, x_batch, y_batch) -> (loss, record)
        The scalar loss to minimize on one minibatch and the batch's training
        record (a float or a 0-d tensor; its mean over the epoch's batches is
        the history's ``'train'``).
    held_out : callable (module) -> float or (float, dict)
        The held-out objective (higher is better; non-finite values never
        count as improvements), optionally with extra fields for the history.
    lr : float > 0
        Adam learning rate.
    batch_size : int >= 1
        Minibatch size.
    max_epochs : int >= 1
        Most epochs (passes over the training rows).
    patience : int >= 1
        Held-out evaluations without improvement before stopping.
    seed : int or None
        Seeds the initialization and the minibatch order (None: torch's
        current global RNG state).
    device : torch.device or str, default 'cpu'
        The device trained on (its RNG is forked by :func:`seeded`).
    clip_norm : float > 0 or None, default None
        Clip the global gradient norm of all parameters at this value.
    min_delta : float >= 0, default 0
        Smallest rise of the held-out objective that counts as an improvement.
    eval_every : int >= 1, default 1
        Epochs between held-out evaluations.
    owner : str
        Named in error messages (the estimator's class name).
    objective : str
        What ``held_out`` computes, named in error messages.

    Returns
    -------
    TrainResult
        The network with the best weights restored, the history, the best
        epoch and objective, and the convergence flag.

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
    """
    _check(owner, build, batch_loss, held_out, x_train, y_train,
           {"lr": lr, "batch_size": batch_size, "max_epochs": max_epochs, "patience": patience,
            "min_delta": min_delta, "eval_every": eval_every, "clip_norm": clip_norm,
            "seed": seed})
    device = torch.device(device)
    with seeded(seed, device):
        module = build()
        if not isinstance(module, nn.Module):
            raise TypeError(f"The 'build' parameter of {owner} must return a torch.nn.Module. "
                            f"Got {type(module).__name__} instead.")
        gen = batch_generator()
        return _loop(module, gen, x_train, y_train, batch_loss, held_out, lr=lr,
                     batch_size=batch_size, max_epochs=max_epochs, patience=patience,
                     clip_norm=clip_norm, min_delta=min_delta, eval_every=eval_every,
                     owner=owner, objective=objective)


def _loop(module: nn.Module, gen: torch.Generator, x_tr: torch.Tensor, y_tr: torch.Tensor,
          batch_loss: Callable, held_out: Callable, *, lr: float, batch_size: int,
          max_epochs: int, patience: int, clip_norm: float | None, min_delta: float,
          eval_every: int, owner: str, objective: str) -> TrainResult:
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    n_tr = x_tr.shape[0]
    b = min(batch_size, n_tr)
    n_batches = max(1, n_tr // b)  # drop the last partial batch
    history: list[dict[str, float]] = []
    best_val, best_state, best_epoch, waited = -math.inf, None, 0, 0
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
        if math.isfinite(val) and val > best_val + min_delta:
            best_val, best_epoch, waited = val, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            waited += 1
            if waited >= patience:
                break
    if best_state is None:
        raise FloatingPointError(f"{owner}: the {objective} was never finite; lower 'lr' or check "
                                 "the input scale.")
    module.load_state_dict(best_state)
    module.eval()
    return TrainResult(module=module, history=history, best_epoch=best_epoch,
                       best_value=best_val, converged=waited >= patience)


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
