"""Shared pieces of the weight-information family: parameter selection, data
iteration, per-example losses and the prior-mean helpers.

``data`` everywhere in :mod:`ibscope.weights` is an iterable of ``(x, y)``
minibatches: a :class:`torch.utils.data.DataLoader`, or a list of
``(x, y)`` tensor (or array) pairs. Batches are moved to the model's device.
An iterable that yields nothing is an error.
"""

from __future__ import annotations

import copy
import fnmatch
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "select_parameters", "snapshot_parameters", "init_prior", "heldout_prior", "bootstrap_prior",
    "resolve_prior_mean", "iter_batches", "dataset_size", "group_of", "tidy_rows",
]


def tidy_rows(total: float, per_layer: Mapping[str, float], quantity: str, unit: str,
              method: str) -> list[dict[str, Any]]:
    """Rows (layer, quantity, value, unit, method): 'total' first, then one per layer."""
    items = [("total", total), *per_layer.items()]
    return [{"layer": k, "quantity": quantity, "value": float(v), "unit": unit, "method": method}
            for k, v in items]


# --------------------------------------------------------------------------- #
# parameters
# --------------------------------------------------------------------------- #
def _check_model(model: Any, owner: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter of {owner} must be a torch.nn.Module. Got {type(model).__name__} instead.")
    return model


def select_parameters(model: nn.Module, *, include_bias: bool = True,
                      exclude: Sequence[str] | str | None = None,
                      owner: str = "iiw") -> dict[str, torch.Tensor]:
    """The named parameters that are measured: ``requires_grad`` ones, minus exclusions.

    ``exclude`` holds exact names or shell patterns (``"fc1.*"``, ``"*.bias"``);
    ``include_bias=False`` drops every parameter whose name ends in ``bias``.
    Biases are measured unless excluded explicitly.
    """
    _check_model(model, owner)
    if isinstance(exclude, str):
        exclude = [exclude]
    patterns = list(exclude or [])
    if not isinstance(include_bias, (bool, np.bool_)):
        raise TypeError(f"The 'include_bias' parameter of {owner} must be a bool. Got {include_bias!r} instead.")
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not include_bias and name.split(".")[-1] == "bias":
            continue
        if any(fnmatch.fnmatchcase(name, pat) for pat in patterns):
            continue
        out[name] = p
    if not out:
        raise ValueError(
            f"{owner}: the model has no parameters to measure (none requires grad"
            + (", or all were excluded" if patterns or not include_bias else "")
            + "). Set requires_grad=True on the weights to analyse."
        )
    return out


def group_of(name: str, groups: str) -> str:
    """Group key of a parameter: the owning module's name ('module') or the name itself."""
    if groups == "parameter":
        return name
    head, _, _ = name.rpartition(".")
    return head or name


def snapshot_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of every named parameter (e.g. the initialization, before training)."""
    _check_model(model, "snapshot_parameters")
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def resolve_prior_mean(prior_mean: Any, params: Mapping[str, torch.Tensor], *,
                       owner: str = "iiw") -> dict[str, torch.Tensor]:
    """Turn ``prior_mean`` (a Module of the same architecture or a name -> tensor mapping)
    into detached tensors matching ``params`` in shape, device and dtype."""
    if isinstance(prior_mean, nn.Module):
        source = dict(prior_mean.named_parameters())
    elif isinstance(prior_mean, Mapping):
        source = dict(prior_mean)
    else:
        raise TypeError(
            f"The 'prior_mean' parameter of {owner} must be a torch.nn.Module or a mapping "
            f"name -> tensor (see init_prior / heldout_prior / bootstrap_prior). Got {type(prior_mean).__name__} instead."
        )
    out = {}
    for name, p in params.items():
        if name not in source:
            raise ValueError(f"'prior_mean' has no entry for parameter '{name}' (it has: {', '.join(list(source)[:8])}...).")
        v = torch.as_tensor(source[name])
        if tuple(v.shape) != tuple(p.shape):
            raise ValueError(
                f"'prior_mean' entry '{name}' has shape {tuple(v.shape)} but the model's parameter has "
                f"shape {tuple(p.shape)}; the prior must come from the same architecture."
            )
        v = v.detach().to(device=p.device, dtype=p.dtype)
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"'prior_mean' entry '{name}' contains NaN or infinite values.")
        out[name] = v
    return out


# --------------------------------------------------------------------------- #
# data
# --------------------------------------------------------------------------- #
def _as_tensor(a: Any, device: torch.device, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(device)
    try:
        return torch.as_tensor(np.asarray(a), device=device)
    except (TypeError, ValueError) as e:
        raise TypeError(f"a batch's '{name}' could not be converted to a tensor ({e}).") from None


def check_data(data: Any, owner: str) -> None:
    if isinstance(data, (torch.Tensor, np.ndarray)) or not isinstance(data, Iterable):
        raise TypeError(
            f"The 'data' parameter of {owner} must be an iterable of (x, y) minibatches "
            f"(a DataLoader or a list of tensor pairs). Got {type(data).__name__} instead."
        )
    if isinstance(data, (tuple, list)) and data and all(isinstance(d, (torch.Tensor, np.ndarray)) for d in data):
        raise TypeError(
            f"The 'data' parameter of {owner} is a {type(data).__name__} of {len(data)} arrays: pass minibatches, "
            f"e.g. [(x, y)] for one batch or a DataLoader (an (x, y) pair itself would be read as "
            f"{len(data)} batches)."
        )


def iter_batches(data: Any, device: torch.device, *, max_batches: int | None = None,
                 owner: str = "iiw") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` tensors on ``device``; at most ``max_batches``; error if none."""
    check_data(data, owner)
    count = 0
    for batch in data:
        if max_batches is not None and count >= max_batches:
            break
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"{owner}: every item of 'data' must be an (x, y) pair; got {type(batch).__name__}"
                             + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "") + ".")
        if isinstance(batch[0], Mapping):  # named inputs, e.g. {"input_ids": ..., "attention_mask": ...}
            x = {k: _as_tensor(v, device, f"x[{k!r}]") for k, v in batch[0].items()}
        else:  # integer inputs (token ids) keep their dtype
            x = _as_tensor(batch[0], device, "x")
        y = _as_tensor(batch[1], device, "y")
        n = _batch_rows(x)
        if n == 0:
            continue
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(f"{owner}: a batch has {n} inputs but {y.shape[0] if y.ndim else 0} targets.")
        count += 1
        yield x, y
    if count == 0:
        raise ValueError(f"{owner}: 'data' yielded no (non-empty) batches; pass a non-empty DataLoader or list.")


def _batch_rows(x: Any) -> int:
    """Examples in an input batch: rows of a tensor or of the first tensor of a mapping."""
    if isinstance(x, Mapping):
        rows = {int(v.shape[0]) for v in x.values() if isinstance(v, torch.Tensor) and v.ndim}
        if len(rows) > 1:
            raise ValueError(f"the named inputs of a batch have different numbers of rows {sorted(rows)}.")
        return rows.pop() if rows else 0
    return int(x.shape[0]) if x.ndim else 0


def dataset_size(data: Any) -> int | None:
    """Number of training examples behind ``data`` if it can be known without iterating."""
    ds = getattr(data, "dataset", None)
    if ds is not None:
        try:
            return len(ds)
        except TypeError:
            return None
    if isinstance(data, Sequence):
        try:
            return int(sum(_batch_rows(b[0]) if isinstance(b[0], Mapping) else len(b[0]) for b in data))
        except (TypeError, IndexError):
            return None
    return None


def check_positive_int(value: Any, name: str, owner: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        extra = " or None" if allow_none else ""
        raise ValueError(f"The '{name}' parameter of {owner} must be an int in [1, inf){extra}. Got {value!r} instead.")
    return int(value)


def check_positive_float(value: Any, name: str, owner: str, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        extra = " or None" if allow_none else ""
        raise ValueError(f"The '{name}' parameter of {owner} must be a float in (0, inf){extra}. Got {value!r} instead.")
    return float(value)


def check_finite_loss(loss: torch.Tensor, owner: str) -> None:
    if not bool(torch.isfinite(loss).all()):
        raise ValueError(
            f"{owner}: the loss is NaN or infinite on a batch; check the model's outputs, the targets "
            f"and loss_fn (a diverged model has no meaningful information in its weights)."
        )


# --------------------------------------------------------------------------- #
# prior means
# --------------------------------------------------------------------------- #
def init_prior(model: nn.Module) -> dict[str, torch.Tensor]:
    """Prior mean = the weights as they are now (call it right after initialization).

    Cheapest option and always available, but the initialization is far from
    the *oracle* prior E_S[theta_S]: IIW then measures the whole distance
    travelled by training, including the data-independent drift every run
    makes, and so overestimates I(w;S).
    """
    return snapshot_parameters(model)


class _ShuffledBatches:
    """A fixed list of batches in a fresh seeded order every epoch (checkpointable)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]], seed: int):
        self.batches = batches
        self.generator = torch.Generator().manual_seed(int(seed))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in torch.randperm(len(self.batches), generator=self.generator).tolist():
            yield self.batches[i]

    def __len__(self) -> int:
        return len(self.batches)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def _train_copy(model: nn.Module, loss_fn: Callable, batches: list[tuple[torch.Tensor, torch.Tensor]],
                *, epochs: int, lr: float, optimizer: str, seed: int) -> nn.Module:
    """A deep copy of ``model`` trained by :func:`ibscope.training.fit` (batches in seeded order)."""
    from ..training import BatchLoss, fit

    net = copy.deepcopy(model)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr, momentum=0.9))

    def objective(m: nn.Module, batch: tuple) -> torch.Tensor:
        loss = loss_fn(m(batch[0]), batch[1])
        return loss.mean() if loss.ndim else loss

    fit(net, BatchLoss(objective), _ShuffledBatches(batches, seed), opt, epochs=epochs, progress=False,
        desc="prior training")
    return net


def _check_train_args(epochs: Any, lr: Any, optimizer: Any, owner: str) -> None:
    check_positive_int(epochs, "epochs", owner)
    check_positive_float(lr, "lr", owner)
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"The 'optimizer' parameter of {owner} must be 'sgd' or 'adam'. Got {optimizer!r} instead.")


def heldout_prior(model: nn.Module, loss_fn: Callable, heldout_data: Any, *, epochs: int = 5,
                  lr: float = 0.01, optimizer: str = "sgd", seed: int = 0) -> dict[str, torch.Tensor]:
    """Prior mean = weights trained from ``model``'s current (initial) weights on held-out data.

    This is the PAC-Bayes IB choice [1]_: a data-dependent prior that does
    not see the training set S, so it approximates the oracle prior
    E_S[theta_S] (where independent training sets lead) far better than the
    initialization; the price is a held-out split and one extra training
    run. Pass the *untrained* model (same initialization as the analysed
    run); it is deep-copied, never modified, and the copy is trained with
    :func:`ibscope.training.fit` (the batches of each epoch in a seeded
    random order). Train it for as long as the
    analysed run (similar ``epochs``) so that the two share the
    data-independent drift.

    References
    ----------
    .. [1] Z. Wang et al., "PAC-Bayes Information Bottleneck", ICLR 2022.
    """
    _check_model(model, "heldout_prior")
    _check_train_args(epochs, lr, optimizer, "heldout_prior")
    device = next(model.parameters()).device
    batches = list(iter_batches(heldout_data, device, owner="heldout_prior"))
    net = _train_copy(model, loss_fn, batches, epochs=epochs, lr=lr, optimizer=optimizer, seed=seed)
    return snapshot_parameters(net)


def bootstrap_prior(model: nn.Module, loss_fn: Callable, x: Any, y: Any, *, n_bootstrap: int = 5,
                    batch_size: int = 64, epochs: int = 5, lr: float = 0.01, optimizer: str = "sgd",
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """Prior mean = average of weights trained (from the same initialization) on bootstrap resamples.

    Approximates the oracle prior E_S[theta_S] by the average over resampled
    training sets S* of the same size. Needs no held-out split but costs
    ``n_bootstrap`` trainings, and the resamples overlap S (about 63 % of
    the examples each), so Delta theta and the estimated IIW are biased low.
    Averaging only makes sense because every run starts from the same
    initialization (the runs stay in one basin, no permutation symmetry to
    undo): pass the untrained model (deep-copied, not modified).
    """
    _check_model(model, "bootstrap_prior")
    check_positive_int(n_bootstrap, "n_bootstrap", "bootstrap_prior")
    check_positive_int(batch_size, "batch_size", "bootstrap_prior")
    _check_train_args(epochs, lr, optimizer, "bootstrap_prior")
    device = next(model.parameters()).device
    xt, yt = _as_tensor(x, device, "x"), _as_tensor(y, device, "y")
    if xt.shape[0] < 2 or yt.shape[0] != xt.shape[0]:
        raise ValueError(f"bootstrap_prior: 'x' and 'y' need the same number (>= 2) of rows; got {xt.shape[0]} and {yt.shape[0]}.")
    rng = np.random.default_rng(seed)
    total: dict[str, torch.Tensor] | None = None
    for b in range(n_bootstrap):
        idx = torch.as_tensor(rng.integers(0, xt.shape[0], size=xt.shape[0]), device=device)
        xb, yb = xt[idx], yt[idx]
        batches = [(xb[i:i + batch_size], yb[i:i + batch_size]) for i in range(0, xb.shape[0], batch_size)]
        net = _train_copy(model, loss_fn, batches, epochs=epochs, lr=lr, optimizer=optimizer, seed=seed + b)
        snap = snapshot_parameters(net)
        total = snap if total is None else {k: total[k] + snap[k] for k in total}
    assert total is not None
    return {k: v / n_bootstrap for k, v in total.items()}
