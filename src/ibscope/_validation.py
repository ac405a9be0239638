"""The one place that checks and converts inputs.

Every public entry point calls these helpers first, so bad input fails early
with a message of one shape that names the argument and how to fix it
(modelled on scikit-learn's ``check_array`` / ``_param_validation``).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # torch is a core dependency, but keep validation importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- #
# Parameter constraints
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Interval:
    """A numeric range constraint: ``Interval(int, 1, None)`` means an int in [1, inf)."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"  # "both", "left", "right", "neither"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if self.kind is float and not isinstance(value, numbers.Real):
            return False
        v = float(value)
        if not np.isfinite(v):
            return False
        if self.low is not None:
            if v < self.low or (v == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if v > self.high or (v == self.high and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self) -> str:
        lb = "[" if self.closed in ("both", "left") and self.low is not None else "("
        rb = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        word = "an int" if self.kind is int else "a float"
        return f"{word} in {lb}{lo}, {hi}{rb}"


@dataclass(frozen=True)
class Options:
    """The value must be one of a fixed set."""

    values: tuple

    def accepts(self, value: Any) -> bool:
        # True == 1 and False == 0 in Python: a bool passes only where a bool is listed
        if isinstance(value, (bool, np.bool_)) and not any(isinstance(v, bool) for v in self.values):
            return False
        try:
            return bool(value in self.values)
        except (TypeError, ValueError):  # e.g. arrays (ambiguous truth value)
            return False

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class InstanceOf:
    """The value must be an instance of the given type(s)."""

    types: tuple
    label: str

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.types) and not (
            bool not in self.types and isinstance(value, bool)
        )

    def __str__(self) -> str:
        return self.label


BOOLEAN = InstanceOf((bool, np.bool_), "a bool")
NONE = Options((None,))


def validate_params(owner: str, params: Mapping[str, Any], constraints: Mapping[str, list]) -> None:
    """Check ``params`` against ``constraints``; raise one uniform error otherwise.

    ``constraints`` maps a parameter name to a list of accepted constraints
    (any one suffices). Parameters absent from ``constraints`` are not checked.
    """
    for key, value in params.items():
        allowed = constraints.get(key)
        if allowed is None:
            continue
        if any(c.accepts(value) for c in allowed):
            continue
        wanted = " or ".join(str(c) if c is not None else "None" for c in allowed)
        exc = TypeError if all(isinstance(c, InstanceOf) for c in allowed) else ValueError
        raise exc(f"The '{key}' parameter of {owner} must be {wanted}. Got {value!r} instead.")


# --------------------------------------------------------------------------- #
# Arrays
# --------------------------------------------------------------------------- #
def is_torch(a: Any) -> bool:
    return torch is not None and isinstance(a, torch.Tensor)


def to_numpy(a: Any) -> np.ndarray:
    """Return a numpy view/copy of a numpy array, torch tensor or sequence."""
    if is_torch(a):
        t = a.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16; upcasting is exact
            t = t.to(torch.float32)
        return t.numpy()
    return np.asarray(a)


_EXACT_INT = 2**53  # every integer of magnitude <= 2^53 is exact in float64


def _centre_integers(arr: np.ndarray, name: str) -> np.ndarray:
    """Continuous integer data as float64 without losing its differences.

    Integers of magnitude above 2^53 are not exact in float64 (values near
    2^62 round to multiples of 1024, merging distinct samples); each column
    is therefore shifted by its minimum in integer arithmetic first (a shift
    changes no mutual information). A column whose range itself exceeds 2^53
    keeps float64's relative precision, like any float data of that range.
    """
    if arr.size == 0 or arr.dtype.kind not in "iu":
        return arr.astype(np.float64, copy=False)
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    if max(abs(int(v)) for v in (*lo.tolist(), *hi.tolist())) <= _EXACT_INT:
        return arr.astype(np.float64)
    # (x - min) fits in uint64 for any int64/uint64 column: compute it there, without overflow
    shifted = arr.astype(np.uint64) - lo.astype(np.uint64)
    return shifted.astype(np.float64)


def check_array(
    a: Any,
    name: str,
    *,
    discrete: bool = False,
    min_samples: int = 2,
    keep_torch: bool = False,
) -> Any:
    """Validate one sample matrix and return it with shape (n, d).

    Parameters
    ----------
    a : array-like or torch.Tensor of shape (n,) or (n, d)
    name : str
        The argument's name, used in error messages.
    discrete : bool
        If True the values must be integers (any numeric dtype holding integral
        values); they are returned as int64.
    min_samples : int
        Smallest accepted n.
    keep_torch : bool
        If True a torch tensor stays a tensor (on its device, float64 unless
        discrete); otherwise a numpy array is returned.
    """
    if a is None:
        raise TypeError(f"'{name}' must be an array of shape (n,) or (n, d), got None.")
    tensor = is_torch(a)
    if tensor and keep_torch:
        t = a.detach()
        if t.dtype == torch.bool:
            t = t.to(torch.int64)
        if not (t.dtype.is_floating_point or t.dtype in _TORCH_INTS):
            raise TypeError(f"'{name}' must hold numbers, got a tensor of dtype {t.dtype}.")
        if t.ndim == 1:
            t = t[:, None]
        if t.ndim != 2:
            raise ValueError(f"'{name}' must have shape (n,) or (n, d), got shape {tuple(t.shape)}.")
        if t.shape[0] < min_samples:
            raise ValueError(f"'{name}' has {t.shape[0]} samples; at least {min_samples} are needed.")
        if t.shape[1] == 0:
            raise ValueError(f"'{name}' has no columns (shape {tuple(t.shape)}).")
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise ValueError(f"'{name}' contains NaN or infinite values; remove or impute them first.")
        if discrete:
            if t.dtype.is_floating_point:
                if not bool((t == torch.round(t)).all()):
                    raise ValueError(
                        f"'{name}' was declared discrete but holds non-integer values; "
                        f"quantize it first or declare it continuous."
                    )
            return t.to(torch.int64)
        if not t.dtype.is_floating_point and t.numel() and max(-int(t.amin()), int(t.amax())) > _EXACT_INT:
            return torch.as_tensor(_centre_integers(t.cpu().numpy(), name), device=t.device)
        return t.to(torch.float64)

    arr = to_numpy(a)
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"'{name}' must hold numbers; could not convert: {e}") from None
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"'{name}' must hold numbers, got dtype {arr.dtype}.")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"'{name}' must have shape (n,) or (n, d), got shape {arr.shape}.")
    if arr.shape[0] < min_samples:
        raise ValueError(f"'{name}' has {arr.shape[0]} samples; at least {min_samples} are needed.")
    if arr.shape[1] == 0:
        raise ValueError(f"'{name}' has no columns (shape {arr.shape}).")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"'{name}' contains NaN or infinite values; remove or impute them first.")
    if discrete:
        if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
            raise ValueError(
                f"'{name}' was declared discrete but holds non-integer values; "
                f"quantize it first or declare it continuous."
            )
        return arr.astype(np.int64)
    return _centre_integers(arr, name)


_TORCH_INTS = () if torch is None else (
    torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
)


def check_xy(
    x: Any,
    y: Any,
    *,
    discrete_x: bool = False,
    discrete_y: bool = False,
    min_samples: int = 2,
    keep_torch: bool = False,
) -> tuple[Any, Any]:
    """Validate a pair of samples: both 2-D, finite, same number of rows."""
    xa = check_array(x, "x", discrete=discrete_x, min_samples=min_samples, keep_torch=keep_torch)
    ya = check_array(y, "y", discrete=discrete_y, min_samples=min_samples, keep_torch=keep_torch)
    if xa.shape[0] != ya.shape[0]:
        raise ValueError(
            f"'x' and 'y' must have the same number of samples; got {xa.shape[0]} and {ya.shape[0]}."
        )
    return xa, ya


def check_no_constant_columns(a: np.ndarray, name: str) -> None:
    """Raise if a continuous sample has a zero-variance column (kNN/Gaussian methods need variance)."""
    arr = to_numpy(a)
    const = np.flatnonzero(np.ptp(arr, axis=0) == 0)
    if const.size:
        raise ValueError(
            f"'{name}' has zero-variance column(s) {const[:10].tolist()}; drop them or add "
            f"tiny noise (a constant carries no information)."
        )


def drop_degenerate_columns(a: Any) -> tuple[Any, dict[str, list[int]]]:
    """``a`` (n, d) without its constant and duplicate columns, and which were dropped.

    A constant column (a dead ReLU unit, MNIST's border pixels) carries no
    information, and a column equal to an earlier one carries none beyond
    it, so dropping them leaves every mutual information unchanged while
    kNN, Gaussian and copula estimators (which need per-column variance and a
    non-singular covariance) can run. Works on numpy arrays and torch
    tensors (kept on their device). Returns ``(kept, info)`` with
    ``info = {'constant': [...], 'duplicate': [...], 'kept': [...]}`` (column
    indices of the input); when nothing is dropped ``kept is a``. At least
    one column is always kept (a fully constant variable stays one constant
    column, for the caller's estimator to refuse or to give 0).
    """
    if a.ndim != 2:
        raise ValueError(f"drop_degenerate_columns needs a 2-D array (n, d); got shape {tuple(a.shape)}.")
    d = int(a.shape[1])
    if d == 0 or a.shape[0] == 0:
        return a, {"constant": [], "duplicate": [], "kept": list(range(d))}
    if is_torch(a):
        const = ((a.amax(dim=0) - a.amin(dim=0)) == 0).cpu().numpy()
        # exact duplicates: equal columns have equal random projections; candidates are then compared exactly
        g = torch.Generator(device="cpu").manual_seed(0)
        r = torch.randn(a.shape[0], generator=g, dtype=torch.float64).to(a.device)
        keys = (a.to(torch.float64).T @ r).cpu().numpy()
    else:
        arr = np.asarray(a)
        const = np.ptp(arr, axis=0) == 0
        keys = arr.astype(np.float64, copy=False).T @ np.random.default_rng(0).standard_normal(arr.shape[0])
    constant = [int(j) for j in np.flatnonzero(const)]
    # candidates: columns whose keys agree up to rounding (BLAS may sum equal columns in another order)
    live = np.flatnonzero(~const)
    order = live[np.argsort(keys[live], kind="stable")]
    tol = 1e-9 * (np.abs(keys[order]) + 1.0)
    duplicate: list[int] = []
    start = 0
    for stop in range(1, len(order) + 1):
        if stop < len(order) and keys[order[stop]] - keys[order[stop - 1]] <= tol[stop]:
            continue
        group = sorted(int(j) for j in order[start:stop])  # columns with (nearly) one key, in input order
        reps: list[int] = []
        for j in group:
            if any(bool((a[:, i] == a[:, j]).all()) for i in reps):
                duplicate.append(j)
            else:
                reps.append(j)
        start = stop
    duplicate.sort()
    kept = [j for j in range(d) if j not in set(constant) | set(duplicate)]
    if not kept:  # every column constant: keep the first
        kept, constant = [0], constant[1:]
    if len(kept) == d:
        return a, {"constant": [], "duplicate": [], "kept": kept}
    idx = torch.as_tensor(kept, device=a.device) if is_torch(a) else np.asarray(kept)
    return a[:, idx], {"constant": constant, "duplicate": duplicate, "kept": kept}


def discrete_symbols(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Map each row of an integer matrix (n, d) to a symbol id in [0, m).

    Returns ``(ids, m)`` where ``m`` is the number of distinct rows. Uses a
    mixed-radix integer code when it fits in 63 bits (fast), otherwise
    ``np.unique`` over rows.
    """
    arr = np.asarray(a)
    if arr.ndim == 1:
        arr = arr[:, None]
    arr = arr.astype(np.int64, copy=False)
    mins = arr.min(axis=0)
    shifted = arr - mins
    spans = shifted.max(axis=0).astype(np.float64) + 1.0
    if np.sum(np.log2(spans)) < 62:
        radices = np.concatenate([[1], np.cumprod(spans[:-1].astype(np.int64))]).astype(np.int64)
        codes = shifted @ radices
        _, ids = np.unique(codes, return_inverse=True)
    else:
        _, ids = np.unique(shifted, axis=0, return_inverse=True)
    ids = ids.reshape(-1)
    return ids.astype(np.int64), int(ids.max()) + 1


def check_random_state(seed: Any, name: str = "seed") -> np.random.Generator:
    """Turn ``None``, an int >= 0 or a Generator into a ``numpy.random.Generator``.

    ``name`` is the argument's name in error messages.
    """
    if seed is None or isinstance(seed, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(seed, (bool, np.bool_)):
            raise TypeError(f"'{name}' must be None, an int >= 0 or a numpy Generator, got {seed!r}.")
        if isinstance(seed, numbers.Integral) and seed < 0:
            raise ValueError(f"'{name}' must be None, an int >= 0 or a numpy Generator, got {seed!r}.")
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    raise TypeError(f"'{name}' must be None, an int >= 0 or a numpy Generator, got {type(seed).__name__}.")


def check_labels(y: Any, n_classes: int, name: str = "y") -> None:
    """Check class labels (numpy array or torch tensor) before they index anything.

    ``y`` must hold integers (integral floats are refused too: a float label
    is a mistake in a loss) in ``[0, n_classes)``; otherwise a ValueError or
    TypeError names ``name``, the offending range and the number of classes.
    Called at the entry of every function that uses labels as indices
    (losses, information in the weights), where torch would otherwise fail
    inside a kernel (or, on CUDA, with a device-side assert).
    """
    if is_torch(y):
        if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
            raise TypeError(f"'{name}' must hold integer class labels, got a tensor of dtype {y.dtype}.")
        if y.numel() == 0:
            return
        lo, hi = (int(v) for v in torch.aminmax(y.detach()))
    else:
        arr = np.asarray(y)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"'{name}' must hold integer class labels, got dtype {arr.dtype}.")
        if arr.size == 0:
            return
        lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(
            f"'{name}' holds labels outside [0, {n_classes - 1}] (found {lo} to {hi}) but there are "
            f"{n_classes} classes; remap the labels or check the number of classes."
        )


def check_finite(a: Any, name: str) -> None:
    """Raise a ValueError naming ``name`` if the tensor/array holds NaN or inf."""
    if is_torch(a):
        if (a.dtype.is_floating_point or a.dtype.is_complex) and not bool(torch.isfinite(a.detach()).all()):
            raise ValueError(f"'{name}' contains NaN or infinite values.")
        return
    arr = np.asarray(a)
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        raise ValueError(f"'{name}' contains NaN or infinite values.")


def resolve_device(device: Any = None, like: Any = None) -> Any:
    """Pick a torch device: explicit ``device``, else that of tensor ``like``, else CPU."""
    if torch is None:  # pragma: no cover
        raise ImportError("torch is required for this operation")
    if device is not None:
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"The 'device' parameter is not a valid torch device: {device!r} ({e}).") from None
    if is_torch(like):
        return like.device
    return torch.device("cpu")


def check_exclude(model: Any, exclude: Any, owner: str) -> None:
    """Every ``exclude`` pattern (exact name or shell pattern) must match a parameter of ``model``.

    A pattern that matches nothing is almost always a typo (``'fc9.*'`` for a
    model with layers ``hidden1..``), and ignoring it silently measures the
    parameters the caller meant to leave out.
    """
    import fnmatch

    if exclude is None:
        return
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    names = [n for n, _ in model.named_parameters()]
    for pat in patterns:
        if not isinstance(pat, str):
            raise TypeError(f"The 'exclude' parameter of {owner} must hold parameter names or shell "
                            f"patterns (str); got {pat!r}.")
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ValueError(f"The 'exclude' pattern {pat!r} of {owner} matches no parameter of the "
                             f"model (its parameters: {shown}).")


def check_data_labels(model: Any, data: Any, owner: str) -> None:
    """Integer labels of in-memory minibatches must index the model's output classes.

    ``data`` given as a list/tuple of ``(x, y)`` is checked completely (a
    one-example forward pass in eval mode gives the number of classes C);
    other iterables (DataLoaders) are not iterated here, since that would
    consume their shuffling state. Float targets (regression) and non-2-D
    outputs are left alone.
    """
    if torch is None or not isinstance(data, (list, tuple)) or not data:
        return
    first = data[0]
    if not isinstance(first, (list, tuple)) or len(first) < 2 or not is_torch(first[0]):
        return
    if not any(is_torch(b[1]) and not b[1].dtype.is_floating_point for b in data
               if isinstance(b, (list, tuple)) and len(b) >= 2):
        return
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = first[0].device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(first[0][:1].to(device))
    finally:
        model.train(was_training)
    if not is_torch(out) or out.ndim != 2:
        return
    for i, batch in enumerate(data):
        y = batch[1] if isinstance(batch, (list, tuple)) and len(batch) >= 2 else None
        if is_torch(y) and not (y.dtype.is_floating_point or y.dtype.is_complex):
            check_labels(y, out.shape[1], f"y (batch {i} of 'data' of {owner})")


# --------------------------------------------------------------------------- #
# Seeds, schedules, metrics
# --------------------------------------------------------------------------- #
def _is_int(value: Any) -> bool:
    """An integral number that is not a bool (``numbers.Integral`` covers numpy and torch-free ints)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_seed(seed: Any, name: str = "seed", owner: str | None = None) -> int:
    """One seed as an int >= 0; a bool, float (``1.7``), string or negative number is refused.

    Same rule as the seed lists of :func:`ibscope.experiments.check_seeds`
    (integral, never a bool), for one seed: silently truncating ``1.7`` to 1
    would make two different requests share one random stream.

    Parameters
    ----------
    seed : int
        The seed.
    name : str
        The argument's name, used in the error message.
    owner : str, optional
        The class or function taking the argument, used in the error message.

    Returns
    -------
    int
    """
    if not _is_int(seed) or seed < 0:
        where = f" of {owner}" if owner else ""
        exc = TypeError if not isinstance(seed, numbers.Real) or isinstance(seed, (bool, np.bool_)) else ValueError
        raise exc(f"The '{name}' parameter{where} must be an int >= 0, got {seed!r}.")
    return int(seed)


def check_schedule(schedule: Any, name: str = "schedule", owner: str | None = None, *,
                   allow_none: bool = True, allow_empty: bool = False) -> list[int] | None:
    """The epochs of a snapshot schedule as a sorted list of distinct ints >= 0.

    Used by every tracker and callback that takes a ``schedule``
    (:class:`ibscope.tracking.InformationPlane`,
    :class:`ibscope.weights.WeightInformation`,
    :class:`ibscope.tracking.ActivationRecorder`). A string (``"10"`` would
    otherwise iterate to epochs 1 and 0), a bare number, a bool or a float
    epoch (``1.7`` would otherwise be truncated to 1) is refused with a
    ValueError naming the argument; duplicates are merged.

    Parameters
    ----------
    schedule : iterable of int or None
        Epochs (0 = initialization, before any update).
    name : str
        The argument's name, used in the error message.
    owner : str, optional
        The class taking the argument, used in the error message.
    allow_none : bool
        Whether None (the owner's default schedule) is accepted.
    allow_empty : bool
        Whether an empty schedule is accepted.

    Returns
    -------
    list of int or None
    """
    where = f" of {owner}" if owner else ""
    if schedule is None and allow_none:
        return None
    if isinstance(schedule, (str, bytes, Mapping)) or not isinstance(schedule, Iterable) or is_torch(
            schedule) and schedule.ndim == 0:
        raise ValueError(f"The '{name}' parameter{where} must be "
                         f"{'None or ' if allow_none else ''}a list of epochs (ints >= 0, 0 = "
                         f"initialization), e.g. [0, 1, 2, 5, 10]; got {schedule!r}.")
    out = set()
    for e in (schedule.tolist() if is_torch(schedule) or isinstance(schedule, np.ndarray) else schedule):
        if not _is_int(e) or e < 0:
            raise ValueError(f"The '{name}' parameter{where} must hold epochs as ints >= 0 "
                             f"(0 = initialization); got {e!r} in {schedule!r}.")
        out.add(int(e))
    if not out and not allow_empty:
        raise ValueError(f"The '{name}' parameter{where} is empty; give at least one epoch.")
    return sorted(out)


def check_metrics(metrics: Any, reserved: Iterable[str], name: str = "metrics",
                  owner: str | None = None, prefix: str = "metric_") -> dict[str, float]:
    """Extra per-row metrics as ``{column: float}``; names of the table's own columns get ``prefix``.

    A metric named like one of the table's own columns (``epoch``,
    ``i_xt``, ...; Lightning's ``callback_metrics`` may hold such names) is
    stored as ``prefix + name`` (``metric_epoch``), so it can never overwrite
    the table's data; a UserWarning names the renamed keys. A metric whose
    (prefixed) name is still taken, or whose value is not a real number (a
    0-d tensor or numpy scalar is fine), is refused with a ValueError naming
    the key.

    Parameters
    ----------
    metrics : mapping of str to float, or None
        The metrics.
    reserved : iterable of str
        The table's own column names.
    name, owner : str
        Used in error messages.
    prefix : str
        Prepended to a reserved name.

    Returns
    -------
    dict of str to float
        Column name to value.
    """
    import warnings

    where = f" of {owner}" if owner else ""
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise TypeError(f"The '{name}' parameter{where} must be a mapping of names to numbers, "
                        f"got {type(metrics).__name__}.")
    taken = set(reserved)
    out: dict[str, float] = {}
    renamed = []
    for key, value in metrics.items():
        col = str(key)
        if col in taken:
            renamed.append(col)
            col = prefix + col
        if col in taken or col in out:
            raise ValueError(f"The '{name}' parameter{where}: metric {key!r} would be stored as column "
                             f"{col!r}, which is already taken; rename the metric.")
        v = value.detach().cpu() if is_torch(value) else value
        try:
            if isinstance(v, (str, bytes, bool, np.bool_)) or np.ndim(v) != 0:
                raise TypeError
            out[col] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"The '{name}' parameter{where}: metric {key!r} must be a number, "
                             f"got {value!r}.") from None
    if renamed:
        warnings.warn(f"{owner or 'record'}: metric(s) {renamed} share a name with the table's own columns; "
                      f"stored as {[prefix + k for k in renamed]}.", UserWarning, stacklevel=3)
    return out


# --------------------------------------------------------------------------- #
# Plain-data YAML (config, sweep and claim files)
# --------------------------------------------------------------------------- #
MAX_YAML_BYTES = 1_000_000
"""Largest YAML file read (1 MB). Anchors and aliases are refused, so a document
expands to at most about as many values as it has characters."""


def load_yaml(text: str | bytes, where: str) -> Any:
    """Parse plain-data YAML safely: no tags, no anchors or aliases, at most :data:`MAX_YAML_BYTES`.

    ``yaml.safe_load`` builds no objects, but it does expand aliases: a few
    lines of nested aliases (a "billion laughs" document) expand to 9^9
    values and run for minutes. The config files of ibscope are plain data,
    so anchors (``&a``) and aliases (``*a``) are refused outright, and the
    text is capped at :data:`MAX_YAML_BYTES`; the parsed size is then linear
    in the text.

    Parameters
    ----------
    text : str or bytes
        The document.
    where : str
        What the text is (e.g. ``"Sweep config file 'a.yaml'"``), used in
        error messages.

    Returns
    -------
    object
        The parsed data (None for an empty document).

    Raises
    ------
    ValueError
        Too large, not valid YAML, or using anchors/aliases or tags.
    """
    import yaml

    if len(text) > MAX_YAML_BYTES:
        raise ValueError(f"{where} is {len(text)} bytes; at most {MAX_YAML_BYTES} are read (a config "
                         f"file is a few settings).")

    class _PlainLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.events.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not allowed in ibscope config files", event.start_mark)
            event = self.peek_event()
            if getattr(event, "anchor", None) is not None:
                raise yaml.composer.ComposerError(
                    None, None, "anchors (&name) are not allowed in ibscope config files", event.start_mark)
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ValueError(f"{where} is not valid plain YAML (no tags, anchors or aliases): {e}") from None


def check_keys(data: Any, allowed: Iterable[str], where: str, *, required: Iterable[str] = ()) -> dict:
    """``data`` as a dict whose keys are all in ``allowed``; unknown or missing keys are refused.

    The one check of a config file's top-level keys (``ibscope run --config``
    and ``ibscope sweep``): a misspelt key (``confg:``) would otherwise be
    ignored and the defaults would run.

    Parameters
    ----------
    data : mapping
        The parsed file.
    allowed : iterable of str
        Accepted keys.
    where : str
        What the file is, used in error messages.
    required : iterable of str
        Keys that must be present.

    Returns
    -------
    dict
    """
    allowed = tuple(allowed)
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must hold a mapping with the keys {', '.join(allowed)}; "
                         f"got {type(data).__name__}.")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ValueError(f"Unknown top-level key(s) {unknown} in {where}. Allowed: {', '.join(allowed)}.")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{where} must give the top-level key(s) {missing}.")
    return dict(data)


def read_config_file(path: str | os.PathLike, allowed: Iterable[str], *, argument: str,
                     required: Iterable[str] = ()) -> dict[str, Any]:
    """Read a YAML config file (sweep or ``ibscope run --config``) and check its top-level keys.

    The one reader of both files: plain YAML only (no tags, no anchors or
    aliases, at most :data:`MAX_YAML_BYTES` bytes; see
    :func:`load_yaml`), a mapping whose keys are all in
    ``allowed`` (a misspelt ``confg:`` is refused, never ignored) and that
    holds every ``required`` key.

    Parameters
    ----------
    path : path-like
        The file.
    allowed, required : iterable of str
        Accepted and required top-level keys.
    argument : str
        The argument that named the file, used in error messages.

    Returns
    -------
    dict
    """
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Config file '{p}' not found (argument '{argument}').")
    where = f"config file '{p}' (argument '{argument}')"
    data = load_yaml(p.read_bytes(), where) or {}
    return check_keys(data, allowed, where, required=required)
