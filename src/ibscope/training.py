"""The one training loop of ibscope: :func:`fit` and the :class:`Callback` base.

Every experiment, the Gibbs-posterior sampler and a user's own analysis train
through :func:`fit`; everything else (information-plane snapshots, weight
information, posterior ensembles, schedulers) hooks in as a callback, in the
style of PyTorch Lightning's callbacks: hooks that do nothing by default, and
``state_dict`` / ``load_state_dict`` so a resumed run continues exactly where
it stopped.

Epoch convention (the same everywhere in ibscope)
-------------------------------------------------
*Epoch 0 is the initialization* (before any optimizer step); epoch ``e`` is
the state after ``e`` passes over the training data. :func:`fit` calls
``on_epoch_end(state)`` with ``state.epoch == 0`` once, right after
``on_train_begin``, on a fresh start; then after every epoch ``1..epochs``.
A callback that records at scheduled epochs therefore only needs
``on_epoch_end``, and the same callback driven by hand from a plain loop
(``cb.on_epoch_end`` or, for the trackers, ``record(epoch)``) sees the same
epochs.

Checkpoints
-----------
With ``checkpoint_dir``, one file ``checkpoint.pt`` is written atomically
(temporary file, fsync, rename) after the epochs selected by
``checkpoint_every`` and after the last one. It holds only tensors and plain
containers (model and optimizer state, the epoch and step counters, the
shuffling generator, torch's global RNG state, the per-epoch history and each
callback's ``state_dict``) and is read back with ``torch.load(...,
weights_only=True)`` onto the CPU (``load_state_dict`` moves the model's and
the optimizer's tensors to their parameters' device; generator states must
stay on the CPU): a planted file holding pickled objects is refused, never
executed. A damaged (truncated) checkpoint is reported, moved aside to
``checkpoint.pt.damaged`` and the run starts over from epoch 0.

Each callback's state is stored under its :attr:`Callback.state_key` (the
class's qualified name, plus for the trackers their ``out_dir`` or, in
memory, their fingerprint or quantities), so on resume every callback gets
its own state whatever the order of the list (issue 22). With a
``checkpoint_dir``, two callbacks of one key are refused (ValueError naming
the key) before anything runs: give one an explicit key
(``cb.state_key = "name"``). A key in the checkpoint that no callback has
(its state is dropped), and a callback whose key the checkpoint lacks (it
starts from its initial state), each give a ``UserWarning`` naming the key;
the resume goes on. A checkpoint of an older ibscope (state saved by
position) resumes when it holds as many callbacks as the fit, assuming the
same callbacks in the same order (a ``UserWarning`` says so), and is refused
(:class:`CheckpointError`) otherwise; the next checkpoint is keyed.

Non-finite guard
----------------
A NaN or infinite training loss stops the run *before* the offending update
(the model still holds the last good weights), writes that state (model and
optimizer) to ``checkpoint_dir/last_good.pt`` when ``checkpoint_dir`` is set
(``checkpoint.pt`` keeps the last finished epoch, so a resume stays
consistent), and raises :class:`NonFiniteLossError`.
With ``check_weights=True`` the weights are also checked after every update;
the state before the update is then kept in memory (a copy per step) and
restored on failure.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .store import atomic_write_bytes

__all__ = [
    "Callback", "TrainState", "fit", "NonFiniteLossError", "CheckpointError", "BatchLoss",
    "TensorBatches", "LRSchedulerCallback", "load_checkpoint", "CHECKPOINT_NAME",
]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
FAILED_NAME = "last_good.pt"
_FORMAT = "ibscope.fit/1"


class NonFiniteLossError(FloatingPointError):
    """Training stopped on a NaN/inf loss (or weight); the model holds the last good state.

    Attributes
    ----------
    epoch : int
        The epoch being trained (1-based) when it happened.
    step : int
        The optimizer step that would have been taken (0-based count of steps so far).
    checkpoint : pathlib.Path or None
        Where the last good state was written.
    """

    def __init__(self, message: str, *, epoch: int, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.epoch, self.step, self.checkpoint = epoch, step, checkpoint


class CheckpointError(ValueError):
    """A checkpoint file cannot be used (refused as unsafe, or of another run)."""


# --------------------------------------------------------------------------- #
# state and callbacks
# --------------------------------------------------------------------------- #
@dataclass
class TrainState:
    """What :func:`fit` passes to every callback hook.

    Attributes
    ----------
    model, optimizer
        The objects being trained.
    epoch : int
        0 at the initialization; e after e epochs (see the module docstring).
    epochs : int
        The total number of epochs of this fit.
    step : int
        Optimizer steps taken so far.
    batch : tuple or None
        In ``on_train_batch_end``: the batch just used (on the device).
    loss : float or None
        In ``on_train_batch_end``: its loss (before the update).
    terms : dict
        In ``on_train_batch_end``: the named loss terms the loss function returned.
    metrics : dict
        In ``on_epoch_end``: ``train_loss`` (mean over the epoch's examples;
        absent at epoch 0), the means of the loss terms, and with ``eval_data``
        ``eval_loss`` and (for class labels) ``eval_acc``.
    history : list of dict
        One record per finished epoch (``epoch`` plus its metrics).
    device : torch.device
    checkpoint_dir : pathlib.Path or None
    resumed : bool
        True when this fit continued from a checkpoint.
    stop_training : bool
        A callback may set it to end the fit after the current epoch.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    device: torch.device
    checkpoint_dir: Path | None = None
    epoch: int = 0
    step: int = 0
    batch: tuple | None = None
    loss: float | None = None
    terms: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    resumed: bool = False
    stop_training: bool = False


class Callback:
    """Base class of everything that hooks into :func:`fit` (every hook is a no-op).

    Hooks are called in the order the callbacks were given. ``state_dict``
    must return tensors and plain containers only (it is stored in the
    checkpoint, which is read with ``weights_only=True``).
    """

    def on_train_begin(self, state: TrainState) -> None:
        """Before the first step (also on resume, with ``state.resumed`` True)."""

    def on_train_batch_end(self, state: TrainState) -> None:
        """After every optimizer step (``state.batch``, ``state.loss``, ``state.terms``)."""

    def on_epoch_end(self, state: TrainState) -> None:
        """At epoch 0 (initialization, fresh start only) and after every epoch."""

    def on_train_end(self, state: TrainState) -> None:
        """After the last epoch (not called when training fails)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    @property
    def state_key(self) -> str:
        """The key of this callback's state in :func:`fit`'s checkpoint.

        The class's qualified name (module and class), followed for the
        trackers by what they measure in brackets (the ``out_dir``, or the
        fingerprint of an in-memory tracker), so a resume gives every
        callback its own state whatever the order of the callbacks. Set an
        explicit key (``cb.state_key = "plane_hidden"``, any non-empty
        string) when two callbacks of one fit would otherwise share a key.
        The same idea as PyTorch Lightning's ``Callback.state_key``.
        """
        key = self.__dict__.get("_state_key")
        if key is not None:
            return key
        cls = type(self)
        detail = self._state_key_detail()
        return f"{cls.__module__}.{cls.__qualname__}" + ("" if detail is None else f"[{detail}]")

    @state_key.setter
    def state_key(self, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise TypeError(f"'state_key' must be a non-empty string; got {key!r}.")
        self.__dict__["_state_key"] = key

    def _state_key_detail(self) -> str | None:
        """What tells two callbacks of this class apart in :attr:`state_key` (None: nothing)."""
        return None


class LRSchedulerCallback(Callback):
    """Step a ``torch.optim.lr_scheduler`` (or anything with ``step`` / ``state_dict``).

    Parameters
    ----------
    scheduler
    interval : {'step', 'epoch'}
        Step after every optimizer step, or after every epoch.
    """

    def __init__(self, scheduler: Any, interval: str = "step"):
        if interval not in ("step", "epoch"):
            raise ValueError(f"'interval' must be 'step' or 'epoch', got {interval!r}.")
        self.scheduler, self.interval = scheduler, interval

    def on_train_batch_end(self, state: TrainState) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def on_epoch_end(self, state: TrainState) -> None:
        if self.interval == "epoch" and state.epoch > 0:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])


# --------------------------------------------------------------------------- #
# data
# --------------------------------------------------------------------------- #
class TensorBatches:
    """Shuffled minibatches of in-memory tensors, with a checkpointable generator.

    Each epoch draws ``torch.randperm(n, generator=g)`` on the CPU and cuts it
    into consecutive slices of ``batch_size`` (the last one may be shorter;
    slices with fewer than ``min_batch_size`` rows are skipped).

    Parameters
    ----------
    tensors : sequence of torch.Tensor
        Same first dimension; the last one is the target, the others the
        model's inputs.
    batch_size : int
    shuffle : bool, default True
    seed : int, default 0
        Seed of the shuffling generator.
    min_batch_size : int, default 1
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, *, shuffle: bool = True,
                 seed: int = 0, min_batch_size: int = 1):
        tensors = tuple(tensors)
        if len(tensors) < 2 or not all(isinstance(t, torch.Tensor) for t in tensors):
            raise TypeError("'train_data' as a tuple must hold at least two tensors (inputs..., target).")
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise ValueError(f"'train_data' tensors have different lengths: {[t.shape[0] for t in tensors]}.")
        if n < 1:
            raise ValueError("'train_data' is empty.")
        _check_int(batch_size, "batch_size", 1)
        _check_int(min_batch_size, "min_batch_size", 1)
        self.tensors, self.n = tensors, n
        self.batch_size = min(int(batch_size), n)
        self.shuffle, self.min_batch_size = bool(shuffle), int(min_batch_size)
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        dev = self.tensors[0].device
        order = (torch.randperm(self.n, generator=self.generator) if self.shuffle
                 else torch.arange(self.n)).to(dev)
        for idx in torch.split(order, self.batch_size):
            if idx.numel() >= self.min_batch_size:
                yield tuple(t[idx] for t in self.tensors)

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest >= self.min_batch_size and rest > 0 else 0)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())  # a CPU generator, whatever the map_location


class BatchLoss:
    """Mark a loss computed from the model and the whole batch: ``fn(model, batch)``.

    The default contract of :func:`fit` is ``loss_fn(model(*inputs), target)``
    (any ``nn.CrossEntropyLoss``-like callable). Objectives that need more
    (the inputs, intermediate outputs, a penalty on the weights) are wrapped:
    ``fit(model, BatchLoss(lambda m, b: my_loss(m, *b)), ...)``. Either form
    returns a scalar tensor or ``(loss, terms)`` with ``terms`` a dict of
    named scalars (logged per epoch as their means).
    """

    def __init__(self, fn: Callable[[nn.Module, tuple], Any]):
        if not callable(fn):
            raise TypeError(f"BatchLoss needs a callable fn(model, batch), got {type(fn).__name__}.")
        self.fn = fn

    def __call__(self, model: nn.Module, batch: tuple) -> Any:
        return self.fn(model, batch)


def _as_batch(item: Any) -> tuple:
    if isinstance(item, torch.Tensor) or not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError("Every batch of 'train_data' / 'eval_data' must be a tuple (inputs..., target); "
                        f"got {type(item).__name__}.")
    return tuple(item)


def _to(batch: tuple, device: torch.device) -> tuple:
    return tuple(b.to(device, non_blocking=True) if isinstance(b, torch.Tensor) else b for b in batch)


def _batches(data: Any, name: str, *, batch_size: int | None, shuffle: bool, seed: int) -> Any:
    """``data`` as a re-iterable of batches (tensor tuples become :class:`TensorBatches`)."""
    if isinstance(data, tuple) and data and all(isinstance(t, torch.Tensor) for t in data):
        if batch_size is None:
            raise ValueError(f"'{name}' is a tuple of tensors: pass 'batch_size' to cut it into minibatches.")
        return TensorBatches(data, batch_size, shuffle=shuffle, seed=seed)
    if isinstance(data, torch.Tensor) or isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(f"'{name}' must be a tuple of tensors (inputs..., target), a DataLoader or a "
                        f"re-iterable of such batches; got {type(data).__name__}.")
    if iter(data) is data:
        raise TypeError(f"'{name}' is a one-shot iterator; pass a DataLoader, a list or a TensorBatches "
                        "(fit iterates over it once per epoch).")
    return data


# --------------------------------------------------------------------------- #
# checkpoints
# --------------------------------------------------------------------------- #
def load_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` (``weights_only=True``).

    Raises
    ------
    CheckpointError
        The file holds objects other than tensors and plain containers (it
        is refused, nothing in it is executed), or it is not a fit checkpoint.
    EOFError, RuntimeError
        The file is truncated or not a torch file (see :func:`fit`, which
        moves such a file aside).
    """
    from .store import UnsafeTensorFile, load_tensor_file

    path = Path(path)
    try:
        payload = load_tensor_file(path, what="checkpoint", map_location=map_location)
    except UnsafeTensorFile as e:
        raise CheckpointError(
            f"Refusing to load checkpoint '{path}': {e} Delete it (the run then starts over) if you do not "
            "know where it came from."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise CheckpointError(f"'{path}' is not an ibscope fit checkpoint (format {_FORMAT!r}); "
                              "delete it or use another checkpoint_dir.")
    return payload


def _save_checkpoint(path: Path, state: TrainState, data: Any, callbacks: Sequence[Callback],
                     fingerprint: dict[str, Any]) -> None:
    payload = {
        "format": _FORMAT,
        "fingerprint": fingerprint,
        "epoch": state.epoch,
        "step": state.step,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "data": data.state_dict() if hasattr(data, "state_dict") else None,
        "torch_rng": torch.get_rng_state(),
        "history": state.history,
        "callbacks": {key: cb.state_dict() for key, cb in _keyed(callbacks).items()},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def _restore(path: Path, state: TrainState, data: Any, callbacks: Sequence[Callback],
             fingerprint: dict[str, Any]) -> bool:
    """Load ``path`` into the objects; False (file moved aside) when the file is damaged."""
    try:
        # on the CPU: the generator states must stay there (a CUDA copy is refused by set_state);
        # load_state_dict moves the model's and the optimizer's tensors to the parameters' device
        payload = load_checkpoint(path, map_location="cpu")
    except CheckpointError:
        raise
    except (EOFError, RuntimeError, OSError, ValueError) as e:
        damaged = path.with_name(path.name + ".damaged")
        os.replace(path, damaged)
        log.warning("Checkpoint '%s' is damaged (%s); moved it to '%s' and starting over from epoch 0.",
                    path, str(e).splitlines()[0] if str(e) else type(e).__name__, damaged)
        return False
    if payload.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"Checkpoint '{path}' belongs to another run ({payload.get('fingerprint')} vs {fingerprint}); "
            "use another checkpoint_dir or delete it to start over."
        )
    saved = payload["callbacks"]
    if isinstance(saved, (list, tuple)):  # written before the state was keyed: by position
        if len(saved) != len(callbacks):
            raise CheckpointError(f"Checkpoint '{path}' was written with {len(saved)} callback(s) (state saved "
                                  f"by position, an older ibscope), this fit has {len(callbacks)}; resume it "
                                  "with the same callbacks in the same order, or delete it to start over.")
        if callbacks:
            warnings.warn(f"Checkpoint '{path}' holds the callbacks' state by position (written by an older "
                          "ibscope): it is restored assuming the same callbacks in the same order "
                          f"({', '.join(type(c).__name__ for c in callbacks)}); the next checkpoint keys it "
                          "by state_key.", UserWarning, stacklevel=3)
        pairs = list(zip(callbacks, saved, strict=True))
    elif isinstance(saved, Mapping):
        keyed = _keyed(callbacks)
        lost = [k for k in saved if k not in keyed]
        fresh = [k for k in keyed if k not in saved]
        if lost:
            warnings.warn(f"Checkpoint '{path}' holds the state of callback(s) {lost} that no callback of this "
                          "fit has as its state_key; that state is dropped.", UserWarning, stacklevel=3)
        if fresh:
            warnings.warn(f"Checkpoint '{path}' has no state for callback(s) {fresh}; they start from their "
                          "initial state (and miss the epochs before the resume).", UserWarning, stacklevel=3)
        pairs = [(cb, saved[k]) for k, cb in keyed.items() if k in saved]
    else:
        raise CheckpointError(f"Checkpoint '{path}' has malformed callback state "
                              f"({type(saved).__name__}); delete it to start over.")
    state.model.load_state_dict(payload["model"])
    state.optimizer.load_state_dict(payload["optimizer"])
    if payload["data"] is not None and hasattr(data, "load_state_dict"):
        data.load_state_dict(payload["data"])
    torch.set_rng_state(payload["torch_rng"].cpu())
    state.epoch, state.step = int(payload["epoch"]), int(payload["step"])
    state.history = list(payload["history"])
    for cb, s in pairs:
        cb.load_state_dict(s)
    return True


def _keyed(callbacks: Sequence[Callback]) -> dict[str, Callback]:
    """The callbacks by :attr:`Callback.state_key`; two with one key are refused."""
    out: dict[str, Callback] = {}
    for cb in callbacks:
        key = cb.state_key
        if not isinstance(key, str) or not key:
            raise TypeError(f"The state_key of callback {type(cb).__name__} must be a non-empty string; "
                            f"got {key!r}.")
        if key in out:
            raise ValueError(f"'callbacks': {type(out[key]).__name__} and {type(cb).__name__} have the same "
                             f"state_key {key!r}, so their checkpointed state cannot be told apart; give "
                             "one an explicit key (cb.state_key = 'a name').")
        out[key] = cb
    return out


# --------------------------------------------------------------------------- #
# fit
# --------------------------------------------------------------------------- #
def _check_int(v: Any, name: str, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"'{name}' must be an int >= {lo}, got {v!r}.")


def _resolve_device(device: Any, model: nn.Module) -> torch.device:
    if device is None:
        p = next(iter(model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"'device' must be None, 'auto', 'cpu', 'cuda[:i]' or a torch.device; got {device!r}.") from None


def _split_loss(out: Any, where: str) -> tuple[torch.Tensor, dict[str, float]]:
    terms: dict[str, float] = {}
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], Mapping):
            raise TypeError(f"{where}: the loss function must return a scalar tensor or (loss, dict of terms).")
        out, raw = out
        terms = {str(k): float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in raw.items()}
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        raise TypeError(f"{where}: the loss must be a scalar tensor, got "
                        f"{type(out).__name__}{'' if not isinstance(out, torch.Tensor) else tuple(out.shape)}.")
    return out.reshape(()), terms


def _compute_loss(model: nn.Module, loss_fn: Any, batch: tuple) -> tuple[torch.Tensor, dict[str, float]]:
    if isinstance(loss_fn, BatchLoss):
        return _split_loss(loss_fn(model, batch), "fit")
    return _split_loss(loss_fn(model(*batch[:-1]), batch[-1]), "fit")


@torch.no_grad()
def _evaluate(model: nn.Module, loss_fn: Any, data: Any, device: torch.device) -> dict[str, float]:
    was = model.training
    model.eval()
    total, count, correct, classify = 0.0, 0, 0, not isinstance(loss_fn, BatchLoss)
    try:
        for item in data:
            batch = _to(_as_batch(item), device)
            target = batch[-1]
            if isinstance(loss_fn, BatchLoss):
                loss, _ = _split_loss(loss_fn(model, batch), "fit (eval_data)")
            else:
                out = model(*batch[:-1])
                loss, _ = _split_loss(loss_fn(out, target), "fit (eval_data)")
                classify = (classify and isinstance(out, torch.Tensor) and out.ndim == 2
                            and isinstance(target, torch.Tensor) and target.ndim == 1
                            and not target.is_floating_point())
                if classify:
                    correct += int((out.argmax(1) == target).sum())
            k = int(target.shape[0]) if isinstance(target, torch.Tensor) and target.ndim else 1
            total += float(loss) * k
            count += k
    finally:
        model.train(was)
    if count == 0:
        raise ValueError("'eval_data' yielded no batch.")
    metrics = {"eval_loss": total / count}
    if classify:
        metrics["eval_acc"] = correct / count
    return metrics


def _checkpoint_epochs(checkpoint_every: Any, epochs: int) -> Callable[[int], bool]:
    if isinstance(checkpoint_every, bool):
        raise ValueError(f"'checkpoint_every' must be an int >= 1 or a collection of epochs; got {checkpoint_every!r}.")
    if isinstance(checkpoint_every, int):
        _check_int(checkpoint_every, "checkpoint_every", 1)
        return lambda e: e % checkpoint_every == 0 or e == epochs
    try:
        chosen = {int(e) for e in checkpoint_every}
    except (TypeError, ValueError):
        raise ValueError(f"'checkpoint_every' must be an int >= 1 or a collection of epochs; got {checkpoint_every!r}.") from None
    return lambda e: e in chosen or e == epochs


def _fingerprint(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    shapes = [list(p.shape) for p in model.parameters()]
    return {"model": type(model).__name__, "n_parameters": int(sum(math.prod(s) for s in shapes)),
            "optimizer": type(optimizer).__name__}


def fit(
    model: nn.Module,
    loss_fn: Callable[..., Any],
    train_data: Any,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    callbacks: Iterable[Callback] = (),
    checkpoint_dir: str | os.PathLike | None = None,
    eval_data: Any = None,
    device: Any = None,
    progress: bool = True,
    batch_size: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    checkpoint_every: int | Iterable[int] = 1,
    check_weights: bool = False,
    eval_every: int = 1,
    desc: str = "fit",
) -> TrainState:
    """Train ``model`` for ``epochs`` epochs; the one training loop of ibscope.

    Parameters
    ----------
    model : torch.nn.Module
    loss_fn : callable
        ``loss_fn(model(*inputs), target)`` (e.g. ``nn.CrossEntropyLoss()``),
        or a :class:`BatchLoss` for objectives that need the model and the
        batch. It returns a scalar tensor or ``(loss, terms)``.
    train_data
        A tuple of tensors ``(inputs..., target)`` (cut into shuffled
        minibatches of ``batch_size`` by :class:`TensorBatches` with
        ``seed``), a ``DataLoader``, or any re-iterable of such tuples. An
        object with ``state_dict`` / ``load_state_dict`` (TensorBatches, a
        custom sampler) is checkpointed, so a resumed run draws the same
        batches; a DataLoader's shuffling follows torch's global RNG, which
        is checkpointed too.
    optimizer : torch.optim.Optimizer
        Built on ``model.parameters()`` (SGLD included: it is an optimizer).
    epochs : int >= 1
    callbacks : iterable of Callback
        Their checkpointed state is keyed by :attr:`Callback.state_key`;
        with ``checkpoint_dir``, two of one key are a ValueError.
    checkpoint_dir : path-like, optional
        Where ``checkpoint.pt`` goes; if it holds one, training resumes from
        it (see the module docstring).
    eval_data : optional
        Same forms as ``train_data``; its mean loss (and accuracy for
        integer class targets with 2-D outputs) enter ``state.metrics`` at
        epoch 0 and every ``eval_every`` epochs.
    device : None, 'auto', str or torch.device
        Default: the device of the model's parameters. The model is moved
        there and every batch follows.
    progress : bool
        A progress bar over epochs (tqdm).
    batch_size, shuffle, seed
        For tensor-tuple data (see :class:`TensorBatches`).
    checkpoint_every : int or collection of int
        Checkpoint after every k-th epoch, or after the listed epochs; the
        last epoch is always checkpointed.
    check_weights : bool
        Also stop on non-finite weights after an update (costs a copy of the
        model and optimizer state per step).
    eval_every : int
    desc : str
        Label of the progress bar.

    Returns
    -------
    TrainState
        The final state (``history`` holds one record per epoch).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    >>> x, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
    >>> state = fit(net, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(net.parameters(), lr=0.1),
    ...             epochs=2, batch_size=8, progress=False)
    >>> [h["epoch"] for h in state.history]
    [1, 2]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module, got {type(model).__name__}.")
    if not callable(loss_fn):
        raise TypeError(f"'loss_fn' must be callable, got {type(loss_fn).__name__}.")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"'optimizer' must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
    _check_int(epochs, "epochs", 1)
    _check_int(eval_every, "eval_every", 1)
    callbacks = list(callbacks)
    bad = [type(c).__name__ for c in callbacks if not isinstance(c, Callback)]
    if bad:
        raise TypeError(f"'callbacks' must be ibscope.training.Callback instances; got {bad}.")
    owned = {id(p) for p in model.parameters()}
    if not any(id(p) in owned for g in optimizer.param_groups for p in g["params"]):
        raise ValueError("'optimizer' does not hold any parameter of 'model'.")
    dev = _resolve_device(device, model)
    model.to(dev)
    data = _batches(train_data, "train_data", batch_size=batch_size, shuffle=shuffle, seed=seed)
    evals = None if eval_data is None else _batches(eval_data, "eval_data", batch_size=batch_size or 1024,
                                                    shuffle=False, seed=0)
    wants_ckpt = _checkpoint_epochs(checkpoint_every, epochs)
    ckpt_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
    if ckpt_dir is not None:
        if ckpt_dir.exists() and not ckpt_dir.is_dir():
            raise ValueError(f"'checkpoint_dir' {str(ckpt_dir)!r} exists and is not a directory.")
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = None if ckpt_dir is None else ckpt_dir / CHECKPOINT_NAME
    fingerprint = _fingerprint(model, optimizer)

    if ckpt is not None:
        _keyed(callbacks)  # refuse two callbacks of one state_key before anything runs
    state = TrainState(model=model, optimizer=optimizer, epochs=epochs, device=dev, checkpoint_dir=ckpt_dir)
    if ckpt is not None and ckpt.exists():
        state.resumed = _restore(ckpt, state, data, callbacks, fingerprint)
    if state.epoch > epochs:
        raise CheckpointError(f"Checkpoint '{ckpt}' is at epoch {state.epoch}, past epochs={epochs}.")

    def save() -> None:
        if ckpt is not None:
            _save_checkpoint(ckpt, state, data, callbacks, fingerprint)

    def save_failed() -> Path | None:
        if ckpt_dir is None:
            return None
        path = ckpt_dir / FAILED_NAME
        buf = io.BytesIO()
        torch.save({"format": _FORMAT + ":failed", "epoch": state.epoch, "step": state.step,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict()}, buf)
        return atomic_write_bytes(path, buf.getvalue())

    def eval_metrics(epoch: int) -> dict[str, float]:
        if evals is None or (epoch % eval_every and epoch != epochs):
            return {}
        return _evaluate(model, loss_fn, evals, dev)

    for cb in callbacks:
        cb.on_train_begin(state)
    if not state.resumed:
        state.epoch, state.metrics = 0, eval_metrics(0)
        for cb in callbacks:
            cb.on_epoch_end(state)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=state.epoch, desc=desc, unit="epoch", leave=False, dynamic_ncols=True)
    try:
        while state.epoch < epochs and not state.stop_training:
            epoch = state.epoch + 1
            model.train()
            loss_sum, count, term_sums = 0.0, 0, {}
            for item in data:
                batch = _to(_as_batch(item), dev)
                good = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())) \
                    if check_weights else None
                loss, terms = _compute_loss(model, loss_fn, batch)
                if not bool(torch.isfinite(loss.detach())):
                    _fail(state, epoch, f"the training loss is {float(loss.detach())}", save_failed)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if good is not None and not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                    model.load_state_dict(good[0])
                    optimizer.load_state_dict(good[1])
                    _fail(state, epoch, "a weight became non-finite after the update", save_failed)
                k = int(batch[-1].shape[0]) if isinstance(batch[-1], torch.Tensor) and batch[-1].ndim else 1
                value = float(loss.detach())
                loss_sum += value * k
                count += k
                for name, v in terms.items():
                    term_sums[name] = term_sums.get(name, 0.0) + v * k
                state.step += 1
                state.batch, state.loss, state.terms = batch, value, terms
                for cb in callbacks:
                    cb.on_train_batch_end(state)
            if count == 0:
                raise ValueError("'train_data' yielded no batch in an epoch.")
            state.batch, state.loss, state.terms = None, None, {}
            state.epoch = epoch
            state.metrics = {"train_loss": loss_sum / count, **{k: v / count for k, v in term_sums.items()},
                             **eval_metrics(epoch)}
            state.history.append({"epoch": epoch, **state.metrics})
            for cb in callbacks:
                cb.on_epoch_end(state)
            if wants_ckpt(epoch) or state.stop_training:
                save()
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    for cb in callbacks:
        cb.on_train_end(state)
    return state


def _fail(state: TrainState, epoch: int, what: str, save_failed: Callable[[], Path | None]) -> None:
    # the model holds the state before this update: the last good one
    path = save_failed()
    where = (f"; it was saved to '{path}' (checkpoint.pt still holds the last finished epoch)"
             if path is not None else "")
    lr = state.optimizer.param_groups[0].get("lr", float("nan"))
    raise NonFiniteLossError(
        f"fit stopped: {what} at step {state.step} (epoch {epoch}). The model holds the last good state "
        f"(before that update){where}. Lower the learning rate (now {lr:g}) or check the data and the loss.",
        epoch=epoch, step=state.step, checkpoint=path)
