"""The information plane of any model: :class:`InformationPlane` and :func:`information_plane`.

For every recorded layer T of a network the information plane is the pair
(I(X;T), I(T;Y)) over training (Shwartz-Ziv & Tishby [1]_). An
:class:`InformationPlane` records the layers on a fixed evaluation set at
scheduled epochs (forward hooks exist only while a snapshot is taken),
estimates both coordinates with one or more estimators and streams tidy rows
to a resumable Parquet store. It is a :class:`ibscope.training.Callback`
(``fit(..., callbacks=[plane])``), and the same object works from any loop
(``plane.record(epoch)``) or, through :mod:`ibscope.integrations.lightning`,
inside PyTorch Lightning.

How each coordinate is computed
-------------------------------
* An estimator with ``plane(t, y)`` (binning, adaptive binning, the KDE
  bounds) gives both coordinates of a deterministic network whose inputs are
  all distinct (I(X;T) = H(T) of the quantized or noisy layer).
* Any other estimator (``ksg``, ``compressed``, the neural bounds, ...):
  I(X;T) = ``estimate(x, t)`` with x the flattened inputs (all model inputs
  side by side) and I(T;Y) = ``estimate(t, y, discrete_y=True)``.
* With ``ci`` both coordinates get subsampling confidence intervals
  (``plane(..., ci=)`` / ``estimate_ci``: the scheme of
  :meth:`ibscope.estimators.BaseMIEstimator.estimate_ci`).

Default estimator (following docs/estimators_guide.md)
------------------------------------------------------
``pca_ksg`` (the registered name of PCA to 4 dimensions and KSG, k = 3; the
same configuration as ``ibscope.mutual_information(..., method="pca_ksg")``
and the label in the tables) for every layer: a
layer (or input) of at most 4 units is left as it is, so narrow layers get
plain ``ksg`` (the guide's choice for low-dimensional continuous variables,
saturated tanh and ReLU layers, and for discrete labels), wide layers and
image inputs PCA + KSG (the guide's choice for high-dimensional layers:
0.96 of 1.00 bit on 256-dim blobs, ~18x faster than raw KSG). The plane
estimators of the papers (``binning``, ``kde_upper``, ...) are opt-in;
a binning estimator named by string gets each layer's activation range as
its ``value_range`` (and adaptive binning its floor) when the model declares
``layer_activations`` (ibscope's MLP / ConvNet).

References
----------
.. [1] R. Shwartz-Ziv and N. Tishby, "Opening the black box of deep neural
   networks via information", arXiv:1703.00810, 2017.
.. [2] A. M. Saxe et al., "On the information bottleneck theory of deep
   learning", ICLR 2018.
"""

from __future__ import annotations

import datetime
import inspect
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import estimators as registry
from .._units import from_nats, to_nats
from .._validation import check_metrics, check_schedule, check_seed, drop_degenerate_columns
from ..estimators._diagnostics import label_entropy_nats
from ..estimators.base import BaseMIEstimator, MIEstimate
from ..store import (
    DamagedFile,
    PartedTable,
    read_json,
)
from ..training import Callback, TrainState
from ._consistency import check_consistency, consistency_chain
from ._recorder import INPUT, ActivationRecorder
from ._schedule import log_schedule

__all__ = ["InformationPlane", "information_plane", "measure_layer", "LayerMeasure", "layer_params", "TABLE_NAME", "META_NAME", "PARTS_DIR", "FORMAT", "COLUMNS",
           "read_plane_table"]

TABLE_NAME = "information_plane.parquet"
META_NAME = "information_plane.json"
PARTS_DIR = "information_plane.parts"  # one Parquet part per snapshot until compacted (store.PartedTable)
_COMPACT_PARTS = 64  # compact the parts into TABLE_NAME once this many have accumulated
FORMAT = "ibscope.information_plane/1"
COLUMNS = ["epoch", "layer", "layer_index", "estimator", "i_xt", "i_ty", "unit", "i_xt_lo", "i_xt_hi",
           "i_ty_lo", "i_ty_hi", "ci_level", "flags", "n", "dim_x", "dim_t", "dropped_x", "dropped_t",
           "dropped_columns", "discrete_input", "seconds"]
_RESERVED = (*COLUMNS, "seed")  # metrics of these names are stored as metric_<name> (check_metrics)
_BYTES = 4  # float32 activations (a layer whose dtype is unknown)


def _default_estimator(unit: str) -> BaseMIEstimator:
    """The default estimator: the registered ``pca_ksg`` (its name is the label in the tables)."""
    return registry.get("pca_ksg", unit=unit)


def _build(spec: Any, unit: str, layer: str, activation: str | None) -> list[tuple[str, BaseMIEstimator]]:
    """(label, estimator) pairs of one layer from a name, an instance or a list of them."""
    if isinstance(spec, (str, BaseMIEstimator)):
        spec = [spec]
    if isinstance(spec, Mapping):  # label -> name or instance
        items = list(spec.items())
    elif isinstance(spec, (list, tuple)):
        items = [(None, s) for s in spec]
    else:
        raise TypeError(f"'estimators' must be a name, an estimator instance, a list of them, a mapping "
                        f"label -> estimator or a mapping layer -> any of these; got {type(spec).__name__}.")
    out = []
    for label, s in items:
        if isinstance(s, str):
            try:
                est = registry.get(s, unit=unit, **layer_params(s, activation))
            except ValueError as e:
                raise ValueError(f"'estimators': {e}") from None
        elif isinstance(s, BaseMIEstimator):
            est = s
            if getattr(est, "unit", unit) != unit:
                raise ValueError(f"'estimators': {type(est).__name__} is in {est.unit!r} but the plane is in "
                                 f"{unit!r}; build it with unit={unit!r}.")
        else:
            raise TypeError(f"'estimators' entries must be registry names or estimator instances; got "
                            f"{type(s).__name__} ({s!r}).")
        out.append((str(label) if label is not None else (est.name or type(est).__name__), est))
    labels = [lab for lab, _ in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"'estimators' gives two estimators the same label {labels} for layer '{layer}'; "
                         "pass a mapping label -> estimator.")
    if not out:
        raise ValueError("'estimators' is empty.")
    return out


def layer_params(name: str, activation: str | None, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameters of estimator ``name`` on a layer with ``activation``: ``params`` plus its fixed bins.

    The one per-layer rule of the library's plane and the 12-bit experiment.
    ``binning`` without ``value_range`` or ``bin_width`` gets fixed edges,
    never the snapshot's own min/max (which stretch with the activations and
    make an unbounded layer look compressed, the artefact Saxe et al. [2]_
    point out): ``n_bins`` bins over the range of a bounded activation (tanh
    (-1, 1), sigmoid and softmax (0, 1)), and on an unbounded one (relu, elu,
    softplus, silu, leaky_relu, linear) unbounded bins of width
    ``2 / n_bins`` anchored at 0, the width of the same ``n_bins`` over a tanh
    layer, so tanh and ReLU layers are quantized at the same resolution.
    ``adaptive_binning`` gets the lower bound of relu / softplus / sigmoid
    as its ``floor``. Explicit parameters are kept as given; a layer of
    unknown activation (``activation=None``: a model without
    ``layer_activations``) gets ``params`` unchanged.

    Parameters
    ----------
    name : str
        Registry name of the estimator.
    activation : str or None
        The layer's activation (a key of :data:`ibscope.models.ACTIVATION_BOUNDS`).
    params : mapping, optional
        Parameters given by the user (win over the rule).

    Returns
    -------
    dict
        The parameters to build the estimator with (``registry.get(name, **p)``).

    References
    ----------
    .. [2] A. M. Saxe et al., "On the information bottleneck theory of deep
       learning", ICLR 2018.
    """
    p = dict(params or {})
    if activation is None:
        return p
    from ..models import ACTIVATION_BOUNDS

    lo, hi = ACTIVATION_BOUNDS.get(activation, (None, None))
    if name == "binning" and "value_range" not in p and "bin_width" not in p:
        if lo is not None and hi is not None:
            p["value_range"] = (lo, hi)
        else:
            p["bin_width"] = 2.0 / p.get("n_bins", registry.get("binning").n_bins)  # n_bins: validated
    if name == "adaptive_binning" and "floor" not in p and lo is not None and activation in (
            "relu", "softplus", "sigmoid"):
        p["floor"] = lo
    return p


def _labels_array(labels: Any) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    try:
        arr = np.asarray(labels)
    except Exception:
        raise TypeError(f"'labels' must be a 1-D array or tensor of class labels; got {type(labels).__name__}.") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] < 2:
        raise ValueError(f"'labels' must be 1-D with at least 2 samples (one class label per input); got shape "
                         f"{arr.shape}.")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("'labels' must be integer class labels (I(T;Y) treats Y as discrete).")
    return arr.astype(np.int64)


def _check_schedule(schedule: Any) -> list[int] | None:
    return check_schedule(schedule, "schedule", "InformationPlane")


def _check_ci(ci: Any) -> float | None:
    if ci is None:
        return None
    if isinstance(ci, bool) or not isinstance(ci, (int, float)) or not 0 < float(ci) < 1:
        raise ValueError(f"'ci' must be None or a level in (0, 1) such as 0.95; got {ci!r}.")
    return float(ci)


def _chain(chain: Any, model: nn.Module, layers: Sequence[str], output: Any) -> list[str] | None:
    """The validated ``chain`` argument, or the default of a plain nn.Sequential (see InformationPlane)."""
    if chain is not None:
        return consistency_chain(chain, layers)
    children = [name for name, _ in model.named_children()]
    if type(model) is not nn.Sequential or output is not None or not set(layers) <= set(children):
        return None
    ordered = [c for c in children if c in layers]
    return ordered if len(ordered) > 1 else None


def _flags(*sources: Any) -> list[str]:
    out: list[str] = []
    for s in sources:
        for f in (getattr(s, "flags", ()) or ()) if not isinstance(s, (tuple, list)) else s:
            if f and f not in out:
                out.append(str(f))
    return out


@dataclass
class LayerMeasure:
    """What :func:`measure_layer` gives for one layer and one estimator.

    Attributes
    ----------
    i_xt, i_ty : float or MIEstimate
        I(X;T) and I(T;Y) in the estimator's unit (:class:`~ibscope.estimators.MIEstimate`
        with ``ci``).
    flags : list of str
        Diagnostic flags of both values (``FLAG_DESCRIPTIONS``).
    dim_x : int
        Columns of X the estimator read (after dropping constant/duplicate
        columns); 0 when X was not read (a plane estimator on distinct inputs).
    dim_t : int
        Columns of T the estimator read (after dropping, for estimators
        without ``plane``; the layer's width for plane estimators).
    dropped_x, dropped_t : int
        Constant and duplicate columns dropped from X and T.
    discrete_input : bool
        True when X was treated as discrete (I(X;T) = H(T), see :func:`measure_layer`).
    seconds : float
        Wall time of the measurement.
    """

    i_xt: Any
    i_ty: Any
    flags: list[str]
    dim_x: int
    dim_t: int
    dropped_x: int
    dropped_t: int
    discrete_input: bool
    seconds: float


def _row_ids(a: Any) -> tuple[np.ndarray, int]:
    """Symbol id of each row of ``a`` (n, d) by exact equality, and the number of distinct rows."""
    if isinstance(a, torch.Tensor):
        _, inv = torch.unique(a.detach().reshape(a.shape[0], -1), dim=0, return_inverse=True)
        inv = inv.cpu().numpy()
    else:
        arr = np.asarray(a).reshape(len(a), -1)
        _, inv = np.unique(arr, axis=0, return_inverse=True)
    inv = np.asarray(inv, dtype=np.int64).reshape(-1)
    return inv, int(inv.max()) + 1 if inv.size else 0


@contextmanager
def _named(layer: str, epoch: int | None, quantity: str, label: str):
    """Re-raise an estimator's error (same type) with the layer, the epoch and the quantity in front."""
    try:
        yield
    except Exception as e:
        at = "" if epoch is None else f" at epoch {epoch}"
        msg = f"{quantity} of layer '{layer}'{at} with estimator '{label}': {e}"
        try:
            new = type(e)(msg)
        except Exception:  # an exception type that needs other arguments: keep it, prefix its message
            e.args = (msg, *e.args[1:]) if e.args else (msg,)
            raise
        raise new.with_traceback(e.__traceback__) from e


def _zero(est: BaseMIEstimator, ci: float | None) -> Any:
    """An exact 0 (a constant layer) as the estimator would give it."""
    if ci is None:
        return 0.0
    return MIEstimate(value=0.0, low=0.0, high=0.0, level=ci, unit=est.unit, method=est.name or type(est).__name__,
                      n_resamples=0)


def _ceiling_flag(value: Any, unit: str, n_distinct: int) -> list[str]:
    """['saturated_xt'] when I(X;T) reaches log(number of distinct inputs), the most it can be."""
    from ..estimators import _diagnostics as diag

    return ["saturated_xt"] if diag.is_saturated(to_nats(float(value), unit), math.log(max(n_distinct, 1))) else []


def measure_layer(t: Any, y: Any, estimator: BaseMIEstimator, *, x: Any = None, discrete_x: bool = False,
                  ci: float | None = None, n_resamples: int = 50, subsample: float = 0.5, seed: Any = 0,
                  layer: str = "layer", epoch: int | None = None, label: str | None = None,
                  x_cache: dict | None = None) -> LayerMeasure:
    """(I(X;T), I(T;Y)) of one layer with one estimator: the one measuring path of every plane.

    Used by :class:`InformationPlane` and by the 12-bit experiment
    (:mod:`ibscope.experiments._tishby_common`), so every plane in ibscope
    is measured the same way.

    * **Plane estimators** (``binning``, ``adaptive_binning``, the KDE
      bounds: those with ``plane``) compute both coordinates from T and Y as
      they are: I(X;T) = H(T) under their quantization or noise model, which
      holds for a deterministic layer whatever X is (T is a function of X;
      repeated inputs only weight the mixture). T is not pruned (dropping a
      duplicate unit would change the KDE distances); with discrete X, binning
      gets the input ids (``plane(t, y, x=ids)``) and I(X;T) is flagged
      ``saturated_xt`` at log(number of distinct inputs).
    * **Other estimators**: constant and duplicate columns of T (and of a
      continuous X) are dropped first (:func:`ibscope._validation.drop_degenerate_columns`:
      no mutual information changes, but kNN / Gaussian / copula estimators
      need per-column variance); a layer with no varying column is constant
      and both values are exactly 0. I(T;Y) = ``estimate(t, y, discrete_y=True)``.
      I(X;T) is, for **discrete X** (token ids, integer inputs), the plug-in
      entropy of the distinct rows of T (``discrete`` estimator on (input
      id, row id); exact float equality decides which rows are equal, exact
      for a deterministic layer), flagged ``saturated_xt`` at its ceiling
      log(number of distinct inputs); for **continuous X**,
      ``estimate(x, t)``.

    Parameters
    ----------
    t : array or tensor of shape (n, d)
        The layer's activations.
    y : array or tensor of shape (n,)
        Integer class labels.
    estimator : BaseMIEstimator
        Any registry estimator (``unit`` decides the unit of the values).
    x : array or tensor of shape (n, p), optional
        The flattened inputs; required by estimators without ``plane`` and
        with ``discrete_x``.
    discrete_x : bool, default False
        Treat the rows of ``x`` as symbols (see above).
    ci : float in (0, 1) or None
        Confidence level of subsampling intervals (``estimate_ci`` / ``plane_ci``).
    n_resamples, subsample, seed
        Subsampling settings of the intervals.
    layer, epoch, label : optional
        Name the layer, the snapshot and the estimator in error messages: an
        estimator's error is re-raised with the same type and a message
        naming them and the quantity (I(X;T) or I(T;Y)).
    x_cache : dict, optional
        Cache of the PCA codes of a fixed ``x`` across calls (``compressed``).

    Returns
    -------
    LayerMeasure

    References
    ----------
    .. [1] R. Shwartz-Ziv and N. Tishby, "Opening the black box of deep neural
       networks via information", arXiv:1703.00810, 2017.
    .. [2] A. M. Saxe et al., "On the information bottleneck theory of deep
       learning", ICLR 2018.
    """
    t0 = time.perf_counter()
    label = label or estimator.name or type(estimator).__name__
    kw = {"n_resamples": n_resamples, "subsample": subsample, "seed": seed}
    if t.ndim != 2:
        raise ValueError(f"'t' of layer '{layer}' must be 2-D (n, d); got shape {tuple(t.shape)}.")
    x_ids = m_x = None
    dim_x = dropped_x = 0
    if discrete_x:
        if x is None:
            raise ValueError("'x' is required with discrete_x=True (the input ids decide I(X;T)).")
        x_ids, m_x = _row_ids(x)
        dim_x = int(x.shape[1]) if x.ndim > 1 else 1
    dim_t, dropped_t = int(t.shape[1]), 0
    if hasattr(estimator, "plane"):
        pkw = {"x": x_ids} if x_ids is not None and _plane_takes_x(estimator) else {}
        with _named(layer, epoch, "I(X;T) and I(T;Y)", label):
            a, b = estimator.plane(t, y, ci=ci, **kw, **pkw) if ci is not None else estimator.plane(t, y, **pkw)
        flags = _flags(a, b, getattr(estimator, "flags_", ()))
        if x_ids is not None:
            flags = _flags(flags, _ceiling_flag(a, estimator.unit, m_x))
    else:
        t_kept, info_t = drop_degenerate_columns(t)
        dim_t, dropped_t = int(t_kept.shape[1]), dim_t - int(t_kept.shape[1])
        constant = dim_t == 1 and bool((t_kept.max() - t_kept.min()) == 0)
        if x_ids is not None:
            t_ids, _ = _row_ids(t)
            disc = registry.get("discrete", unit=estimator.unit)
            with _named(layer, epoch, "I(X;T)", label):
                a = (disc.estimate_ci(x_ids, t_ids, discrete_x=True, discrete_y=True, level=ci, **kw)
                     if ci is not None else disc.estimate(x_ids, t_ids, discrete_x=True, discrete_y=True))
            fa = _ceiling_flag(a, estimator.unit, m_x)
            x_in = t_xt = None
            _, _, t_ty = _pca_codes(estimator, None, t_kept, x_cache)
        else:
            if x is None:
                raise ValueError(f"Estimator '{label}' has no plane(): it needs the inputs 'x' for I(X;T).")
            if isinstance(x, torch.Tensor) and not x.is_floating_point():
                x = x.to(torch.float32)
            elif not isinstance(x, torch.Tensor) and np.asarray(x).dtype.kind in "biu":
                x = np.asarray(x, dtype=np.float32)
            x_kept, _ = drop_degenerate_columns(x)
            dim_x, dropped_x = int(x_kept.shape[1]), int(x.shape[1]) - int(x_kept.shape[1])
            x_in, t_xt, t_ty = _pca_codes(estimator, x_kept, t_kept, x_cache)
            if constant:
                a, fa = _zero(estimator, ci), []
            else:
                with _named(layer, epoch, "I(X;T)", label):
                    a = (estimator.estimate_ci(x_in, t_xt, level=ci, **kw) if ci is not None
                         else estimator.estimate(x_in, t_xt))
                fa = list(getattr(estimator, "flags_", ()))
        if constant:
            b, fb = _zero(estimator, ci), []
        else:
            with _named(layer, epoch, "I(T;Y)", label):
                b = (estimator.estimate_ci(t_ty, y, discrete_y=True, level=ci, **kw) if ci is not None
                     else estimator.estimate(t_ty, y, discrete_y=True))
            fb = list(getattr(estimator, "flags_", ()))
        flags = _flags(a, b, fa, fb)
    return LayerMeasure(i_xt=a, i_ty=b, flags=flags, dim_x=dim_x, dim_t=dim_t, dropped_x=dropped_x,
                        dropped_t=dropped_t, discrete_input=x_ids is not None,
                        seconds=time.perf_counter() - t0)


_TAKES_X: dict[Any, bool] = {}


def _plane_takes_x(estimator: BaseMIEstimator) -> bool:
    """Whether ``estimator.plane`` accepts the input ids ``x`` (its signature, read once per function)."""
    plane = estimator.plane
    func = getattr(plane, "__func__", None)  # a method: its signature is the function's, cached
    if func is None:
        return "x" in inspect.signature(plane).parameters
    got = _TAKES_X.get(func)
    if got is None:
        got = _TAKES_X[func] = "x" in inspect.signature(plane).parameters
    return got


def _pca_codes(est: BaseMIEstimator, x: Any, t: Any, cache: dict | None) -> tuple[Any, Any, Any]:
    """For ``compressed`` with PCA: the codes of x (once per run, in ``cache``) and of t (once per layer).

    The Compressed estimator leaves a variable whose width is at most its
    target dimension as it is, so passing PCA codes gives the same number
    as passing the raw variables (PCA is deterministic; KSG's max-norm and
    per-column standardization ignore the sign of a component), without
    compressing the fixed inputs again for every layer and snapshot, and
    with one PCA of the layer for both of its coordinates (the randomized
    solver's start differs from the estimator's own call on ``t`` as its
    'y' variable by one seed, within the solver's accuracy: the two
    projections agree where the spectrum decays, see :func:`pca_compress`).
    Other estimators get the raw variables.
    """
    from ..estimators._compressed import Compressed, pca_compress

    if not isinstance(est, Compressed) or est.compression != "pca" or est.device is not None:
        return x, t, t
    if any(not isinstance(d, int) for d in (est.dim_x, est.dim_y) if d is not None):
        return x, t, t  # 'auto' dimensions are chosen per call from the data: nothing to cache

    def codes(a: Any, dim: int, which: str) -> Any:  # what Compressed._compress computes for ``which``
        s = None if est.seed is None else est.seed + (0 if which == "x" else 1)
        return pca_compress(a, dim, solver=est.pca_solver, seed=s)[0]

    if x is not None and est.dim_x is not None and x.shape[1] > est.dim_x:
        key = (id(est), est.dim_x, tuple(x.shape))
        if cache is None:
            x = codes(x, est.dim_x, "x")
        else:
            if key not in cache:
                cache[key] = codes(x, est.dim_x, "x")
            x = cache[key]
    # I(X;T) = estimate(x, t): t is the 'y' variable; I(T;Y) = estimate(t, labels): t is the 'x' one.
    # One PCA of t serves both: the leading components of the wider code are the narrower code.
    want = {which: k for which, k in (("y", est.dim_y), ("x", est.dim_x)) if k is not None and t.shape[1] > k}
    if not want:
        return x, t, t
    shared = codes(t, max(want.values()), "x" if "x" in want else "y")
    t_xt = shared[:, :want["y"]] if "y" in want else t
    t_ty = shared[:, :want["x"]] if "x" in want else t
    return x, t_xt, t_ty


class InformationPlane(Callback):
    """Record layers at scheduled epochs and estimate (I(X;T), I(T;Y)) of each; a fit callback.

    Parameters
    ----------
    model : torch.nn.Module
    inputs : torch.Tensor, tuple of tensors, or DataLoader
        The fixed evaluation set. A tuple of tensors feeds a model with
        several inputs (``model(*inputs)``); a DataLoader (or a list of
        batches) must not shuffle.
    labels : array-like or tensor of shape (n,), or None
        Integer class labels of the inputs. With a DataLoader and
        ``labels=None`` they are taken from the batches' **last element**
        (the other elements are the model's inputs); with ``labels`` given,
        each batch holds only the model's inputs.
    layers : sequence of str, optional
        Module names (``model.named_modules()``); default: the model's
        ``layer_names`` (ibscope models), else every leaf module.
    output : None, int, str, callable or mapping layer -> selector
        Selects the tensor of modules returning tuples or dicts (a GRU:
        ``output=0`` for the per-step outputs); see
        :class:`~ibscope.tracking.ActivationRecorder`.
    call : None, 'first', 'last', 'all' or mapping layer -> one of these
        For modules run several times per forward (weight sharing). Default:
        a ValueError naming the module and how many times it ran.
    pool : None, 'last', 'mean', 'cls' or mapping layer -> one of these
        Pooling of token-level ``(batch, seq, hidden)`` layers over the
        non-padded positions of the inputs' ``attention_mask``; see
        :class:`~ibscope.tracking.ActivationRecorder`.
    estimators : name, instance, list, mapping label -> estimator, or mapping layer -> any of these
        Default: ``pca_ksg`` (PCA to 4 dims + KSG) for every layer, see
        the module docstring. A mapping keyed by layer names sets those
        layers' estimators (the others keep the default).
    schedule : iterable of int, optional
        Epochs to record (0 = initialization). Default: as a callback, about
        ``n_snapshots`` log-spaced epochs of [0, epochs] (always 0 and the
        last); :meth:`record` itself records any epoch it is given.
    ci : float in (0, 1) or None
        Confidence level of per-estimate intervals (None: none; the CI
        columns are NaN).
    out_dir : path-like, optional
        Run directory: ``information_plane.json`` (the settings and the
        files of the table), one Parquet part per snapshot in
        ``information_plane.parts/`` (append-only) and, once compacted (end
        of training, every 64 snapshots, :meth:`compact`),
        ``information_plane.parquet``; see docs/information_plane.md. A
        directory that already holds a plane of the same layers and
        estimators is resumed: its epochs are not recomputed.
    unit : {'bits', 'nats'}
    batch_size : int, default 1024
        Forward tensor inputs in batches of this size.
    max_features : int or None, default 4096
        Layers (and the flattened inputs) wider than this are reduced while
        they are recorded by a fixed random projection (see
        :class:`~ibscope.tracking.ActivationRecorder`); the json's
        ``reduction`` and the row's ``flags`` ('random_projection') say so.
    max_bytes : int, default 1 GiB
        Budget of recorded activations held at once: layers are recorded in
        groups (one forward pass per group) whose float32 activations fit in
        it, and each group is estimated and released before the next.
    n_resamples, subsample, seed
        Subsampling settings of the intervals; ``seed`` also seeds the
        random projections.
    n_snapshots : int, default 30
        Size of the default schedule.
    chain : None, False or list of str
        Recorded layer names in forward order forming a Markov chain (each a
        function of the one before): at each epoch a later layer whose
        I(X;T) or I(T;Y) exceeds an earlier one's gets the flag
        ``dpi_chain``. Default (None): when ``model`` is a plain
        ``nn.Sequential``, no ``output`` selector is given and every recorded
        layer is one of its top-level children, those layers in the
        Sequential's order; otherwise no chain. ``False``: no chain. Every
        row is also checked against I(T;Y) <= I(X;T), I(T;Y) <= H(Y) and
        I(X;T) <= log n (see ``ibscope.tracking._consistency``).
    flush_seconds : float >= 0, default 10
        With ``out_dir``, how long the snapshots recorded *as a callback*
        (:meth:`on_epoch_end`, in ``fit`` or Lightning) may wait in memory
        before they are written, together, as one part: a snapshot is
        written at the end of the first epoch that ends ``flush_seconds``
        or more after the last write, before every training checkpoint
        (:meth:`state_dict`, so a checkpoint never runs ahead of the table)
        and at the end of training. A crash (a killed process, or an
        exception out of ``fit``) loses at most the snapshots of the last
        ``flush_seconds`` plus one epoch; resuming from the last checkpoint
        records them again, since training replays those epochs. 0 writes
        every snapshot before the epoch's callbacks return. :meth:`record`
        and :meth:`maybe_record`, called directly, always write the snapshot
        before they return; :meth:`flush` writes the pending ones now.

    Examples
    --------
    >>> plane = InformationPlane(model, x_eval, y_eval, estimators=["binning", "kde_upper"],
    ...                          out_dir="runs/plane")                     # doctest: +SKIP
    >>> fit(model, loss, (x, y), opt, epochs=100, batch_size=64, callbacks=[plane])  # doctest: +SKIP
    >>> plane.results(); plane.plot()                                      # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, inputs: Any, labels: Any = None, *,
                 layers: Sequence[str] | None = None, output: Any = None, call: Any = None,
                 pool: Any = None, estimators: Any = None, schedule: Iterable[int] | None = None, ci: float | None = None,
                 out_dir: str | os.PathLike | None = None, unit: str = "bits", batch_size: int | None = 1024,
                 max_features: int | None = 4096, max_bytes: int = 1 << 30, n_resamples: int = 50,
                 subsample: float = 0.5, seed: int = 0, n_snapshots: int = 30, discrete_x: bool | None = None,
                 overwrite: bool = False, chain: Any = None, flush_seconds: float = 10.0):
        if not isinstance(model, nn.Module):
            raise TypeError(f"'model' must be a torch.nn.Module, got {type(model).__name__}.")
        if unit not in ("bits", "nats"):
            raise ValueError(f"'unit' must be 'bits' or 'nats', got {unit!r}.")
        seed = check_seed(seed, "seed", "InformationPlane")  # before the recorder sees it
        from_batches = labels is None
        if from_batches and (isinstance(inputs, torch.Tensor) or (
                isinstance(inputs, tuple) and inputs and all(isinstance(t, torch.Tensor) for t in inputs))):
            raise ValueError("'labels' is None: pass the class labels of the inputs (labels are only taken "
                             "from the batches when 'inputs' is a DataLoader).")
        self.recorder = ActivationRecorder(model, inputs, layers=layers, batch_size=batch_size, output=output,
                                           call=call, pool=pool, max_features=max_features, seed=seed,
                                           labels_in_batches=from_batches, max_bytes=max_bytes)
        self.labels = None if from_batches else _labels_array(labels)
        n = self.recorder.n_samples
        if self.labels is not None and n is not None and n != self.labels.shape[0]:
            raise ValueError(f"'inputs' and 'labels' have different lengths: {n} inputs, "
                             f"{self.labels.shape[0]} labels.")
        self.model, self.layers, self.unit = model, self.recorder.layers, unit
        self.chain = _chain(chain, model, self.layers, output)
        self.schedule = _check_schedule(schedule)
        self._schedule_given = self.schedule is not None
        self.ci = _check_ci(ci)
        for name, v, lo in (("n_resamples", n_resamples, 2), ("n_snapshots", n_snapshots, 2),
                            ("max_bytes", max_bytes, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"'{name}' must be an int >= {lo}, got {v!r}.")
        if not (isinstance(subsample, float) and 0 < subsample < 1):
            raise ValueError(f"'subsample' must be a float in (0, 1), got {subsample!r}.")
        self.n_resamples, self.subsample, self.seed = n_resamples, subsample, seed
        self.n_snapshots, self.max_bytes = n_snapshots, max_bytes
        if discrete_x is not None and not isinstance(discrete_x, bool):
            raise TypeError(f"'discrete_x' must be None (detect from the inputs' dtype), True or False; got "
                            f"{discrete_x!r}.")
        if not isinstance(overwrite, bool):
            raise TypeError(f"'overwrite' must be True or False, got {overwrite!r}.")
        if isinstance(flush_seconds, bool) or not isinstance(flush_seconds, (int, float)) \
                or not math.isfinite(flush_seconds) or flush_seconds < 0:
            raise ValueError(f"'flush_seconds' must be a finite number of seconds >= 0 (0: write every "
                             f"snapshot at once), got {flush_seconds!r}.")
        self.flush_seconds = float(flush_seconds)
        self._pending: list[tuple[int, pd.DataFrame]] = []  # recorded by the callback, not yet on disk
        self._flushed_at = time.monotonic()
        self.discrete_x = self._integer_inputs() if discrete_x is None else discrete_x
        self.overwrite = overwrite
        self._output, self._call = output, call
        self._fp: str | None = None
        self.plan = self._plan(estimators)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self._store = None if self.out_dir is None else PartedTable(self.out_dir / TABLE_NAME)
        self._table = pd.DataFrame(columns=COLUMNS)
        self._created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        if self.out_dir is not None:
            if self.out_dir.exists() and not self.out_dir.is_dir():
                raise ValueError(f"'out_dir' {str(self.out_dir)!r} exists and is not a directory.")
            self._resume()

    # ----------------------------------------------------------------- set-up
    def _integer_inputs(self) -> bool:
        """True when every tensor the model takes is integer or bool (token ids): X is discrete."""
        batch, _ = self.recorder.batches.first()
        ts = [b for b in batch if isinstance(b, torch.Tensor)]
        return bool(ts) and all(not (b.is_floating_point() or b.is_complex()) for b in ts)

    @property
    def fingerprint(self) -> str:
        """sha256 of what this plane measures (:func:`ibscope._fingerprint.fingerprint`).

        Covers the model's structure, the layers and their output/call
        selectors, every estimator with its parameters, the evaluation inputs
        and labels (bytes, shapes, dtypes), the unit, the interval settings,
        ``discrete_x``, ``max_features`` and the projection seed. A directory
        is resumed only by a plane of the same fingerprint.
        """
        if self._fp is None:
            from .._fingerprint import fingerprint

            data = [[*batch, lab] for batch, lab in self.recorder.batches]
            self._fp = fingerprint(
                format=FORMAT, model=self.model, layers=list(self.layers), output=_selector_key(self._output),
                call=_selector_key(self._call), estimators=self._labels_meta(), inputs=data,
                labels=self.labels, unit=self.unit, ci=self.ci, n_resamples=self.n_resamples,
                subsample=self.subsample, seed=self.seed, discrete_x=self.discrete_x,
                max_features=self.recorder.max_features)
        return self._fp

    def _plan(self, spec: Any) -> dict[str, list[tuple[str, BaseMIEstimator]]]:
        acts = getattr(self.model, "layer_activations", None) or {}
        per_layer = isinstance(spec, Mapping) and spec and all(k in self.layers for k in spec)
        plan = {}
        default = None
        for layer in self.layers:
            s = spec.get(layer) if per_layer else spec
            if s is None:
                default = default or [(e.name, e) for e in [_default_estimator(self.unit)]]
                plan[layer] = default
            else:
                plan[layer] = _build(s, self.unit, layer, acts.get(layer))
        for layer, pairs in plan.items():
            for label, e in pairs:
                need = {("continuous", "discrete")} | (set() if self.discrete_x else {("continuous", "continuous")})
                if not hasattr(e, "plane") and not need <= set(e.supports):
                    raise ValueError(
                        f"'estimators': '{label}' cannot measure layer '{layer}': the plane needs I(T;Y) of a "
                        f"continuous layer and discrete labels" + ("" if self.discrete_x else
                                                                   " and I(X;T) of continuous inputs")
                        + f", and it supports only {sorted(e.supports)}. Use a plane estimator (binning, "
                        f"kde_upper, ...) or one of ksg, compressed, auto, ....")
        return plan

    def _labels_meta(self) -> dict[str, Any]:
        est: dict[str, Any] = {}
        for layer, pairs in self.plan.items():
            for label, e in pairs:
                params = {k: _jsonable(v) for k, v in e.get_params().items()}
                entry = est.setdefault(label, {"name": e.name or type(e).__name__, "params": params})
                if entry["params"] != params:
                    entry.setdefault("per_layer", {})[layer] = params
        return est

    def metadata(self) -> dict[str, Any]:
        """The run's settings, as written to ``information_plane.json``."""
        from .. import __version__

        return {"format": FORMAT, "unit": self.unit, "layers": list(self.layers),
                "estimators": self._labels_meta(), "schedule": self.schedule, "ci": self.ci,
                "n_samples": self.recorder.n_samples, "reduction": dict(self.recorder.reduction_),
                "created": self._created, "ibscope_version": __version__,
                "n_resamples": self.n_resamples if self.ci is not None else None,
                "subsample": self.subsample if self.ci is not None else None, "seed": self.seed,
                "discrete_x": self.discrete_x, "fingerprint": self.fingerprint, "chain": self.chain}

    def _resume(self) -> None:
        """Resume a directory of the same fingerprint; refuse (or, with ``overwrite``, replace) any other."""
        table, meta = self.out_dir / TABLE_NAME, self.out_dir / META_NAME
        if not self._store.exists():  # neither a compacted table nor listed parts
            return
        if self.overwrite:
            self._store.remove()  # the table, its parts and the json
            return
        hint = "Pass overwrite=True to recompute the plane, or use another out_dir."
        old: dict[str, Any] = {}
        if meta.exists():
            old = read_json(meta, what="the information plane's sidecar", hint=hint)
        if old.get("fingerprint") != self.fingerprint:
            mine = self.metadata()
            what = [k for k in ("unit", "layers", "ci") if k in old and old[k] != mine[k]]
            if "estimators" in old and old["estimators"] != mine["estimators"]:
                what.append("estimators" if set(old["estimators"]) == set(mine["estimators"]) else
                            f"estimators ({sorted(old['estimators'])} vs {sorted(mine['estimators'])})")
            why = ("it has no fingerprint (written by an older ibscope)" if "fingerprint" not in old else
                   "its fingerprint differs" + (f" (other {', '.join(what)})" if what else
                                                " (other model, inputs, labels or settings)"))
            raise ValueError(f"'out_dir' {str(self.out_dir)!r} holds an information plane of another measurement: "
                             f"{why}. Pass overwrite=True to replace its table, or use another out_dir.")
        try:  # the compacted table and every listed part, each checked against the sha256 its sidecar records
            df = read_plane_table(self.out_dir)
        except (OSError, ValueError) as e:
            raise DamagedFile(f"The information plane table '{table}' (or one of its parts) does not match its "
                              f"sidecar '{meta.name}': {e} ibscope writes both atomically, so a file was truncated "
                              f"or edited outside ibscope. {hint}") from None
        self._created = old.get("created", self._created)
        if not self._schedule_given and old.get("schedule"):
            self.schedule = list(old["schedule"])
        self._table = df

    # --------------------------------------------------------------- callback
    def on_train_begin(self, state: TrainState) -> None:
        """Check (or choose) the schedule against ``state.epochs``, before any step."""
        self.resolve_schedule(state.epochs)

    def resolve_schedule(self, epochs: int) -> list[int]:
        """The schedule for a run of ``epochs`` epochs (default log-spaced); errors if it goes past them."""
        if self.schedule is None:
            self.schedule = log_schedule(int(epochs), self.n_snapshots)
        late = [e for e in self.schedule if e > epochs]
        if late:
            raise ValueError(f"'schedule' has epoch(s) {late} past the last epoch of training (epochs={epochs}).")
        return self.schedule

    def on_epoch_end(self, state: TrainState) -> None:
        """Record a scheduled epoch; write the pending snapshots once ``flush_seconds`` have passed."""
        epoch = state.epoch
        if self.schedule is None or int(epoch) in self.schedule:
            self._record(epoch, state.metrics, defer=True)
        elif self._pending and time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()

    def on_train_end(self, state: TrainState) -> None:
        """Write the pending snapshots and compact the parts into ``information_plane.parquet`` (:meth:`compact`)."""
        self.compact()

    def _state_key_detail(self) -> str:
        """:attr:`state_key`: the ``out_dir``, or the :attr:`fingerprint` when in memory."""
        return f"out_dir={self.out_dir}" if self.out_dir is not None else f"fingerprint={self.fingerprint[:16]}"

    def state_dict(self) -> dict[str, Any]:
        """The checkpointed state; first writes the pending snapshots, so the table holds every epoch
        the checkpoint has passed."""
        if self.out_dir is not None:  # the rows are on disk
            self.flush()
            return {"epochs": self.epochs_done()}
        return {"rows": {c: self._table[c].tolist() for c in self._table.columns}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        rows = state.get("rows")
        if rows is not None and self.out_dir is None:
            self._table = pd.DataFrame(dict(rows)) if rows else pd.DataFrame(columns=COLUMNS)

    # ----------------------------------------------------------------- record
    @property
    def _table(self) -> pd.DataFrame:
        """Every row so far; the snapshots since the last read are concatenated on first use."""
        if self._new_frames:
            frames = ([self._rows] if len(self._rows) else []) + self._new_frames
            self._rows = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            self._new_frames = []
        return self._rows

    @_table.setter
    def _table(self, df: pd.DataFrame) -> None:
        self._rows, self._new_frames = df, []
        self._epochs = {int(e) for e in df["epoch"].unique()} if len(df) else set()

    def _append(self, new: pd.DataFrame) -> None:
        self._new_frames.append(new)
        self._epochs.update(int(e) for e in new["epoch"].unique())

    def epochs_done(self) -> list[int]:
        """Epochs already in the table (on disk for a resumed run); :meth:`record` skips them."""
        return sorted(self._epochs)

    def maybe_record(self, epoch: int, metrics: Mapping[str, float] | None = None) -> pd.DataFrame | None:
        """:meth:`record` if ``epoch`` is scheduled (every epoch when no schedule is set), else None."""
        if self.schedule is not None and int(epoch) not in self.schedule:
            return None
        return self.record(epoch, metrics=metrics)

    def record(self, epoch: int, metrics: Mapping[str, float] | None = None) -> pd.DataFrame:
        """Record every layer now, estimate, append and persist; returns the new rows.

        ``epoch`` labels the snapshot (0 = initialization). An epoch already
        in the table (e.g. on disk from an interrupted run) is skipped: an
        empty frame comes back. ``metrics`` (e.g. ``{'train_loss': ...}``)
        become columns of the rows (a fit callback passes ``state.metrics``;
        Lightning's ``callback_metrics`` arrive here too). A metric named like
        one of the table's own columns (``epoch``, ``i_xt``, ``seed``, ...)
        never overwrites it: it is stored as ``metric_<name>`` (a UserWarning
        says so); a non-numeric metric is refused with a ValueError naming it.
        With ``out_dir`` the snapshot (and any pending one) is on disk when
        this returns.
        """
        return self._record(epoch, metrics, defer=False)

    def _record(self, epoch: int, metrics: Mapping[str, float] | None, defer: bool) -> pd.DataFrame:
        """:meth:`record`; with ``defer`` the write waits for :meth:`flush` within ``flush_seconds``."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"'epoch' must be an int >= 0, got {epoch!r}.")
        epoch = int(epoch)
        extra = check_metrics(metrics, _RESERVED, "metrics", "InformationPlane.record")
        if epoch in self.epochs_done():
            return self._table.iloc[0:0].copy()
        rows = []
        for group in self._groups():
            need_x = self.discrete_x or any(not hasattr(e, "plane") for layer in group for _, e in self.plan[layer])
            acts, batch_labels = self.recorder.capture(group, inputs=need_x, epoch=epoch)
            y = self._labels(batch_labels, acts)
            h_y = self._label_entropy(y, fixed=batch_labels is None)
            for layer in group:
                rows += self._estimate(epoch, layer, acts[layer], y, acts.get(INPUT))
            del acts
        for r in rows:
            r.update(extra)
        new = pd.DataFrame(rows).sort_values(["estimator", "layer_index"], kind="stable").reset_index(drop=True)
        new = check_consistency(new, h_y, chain=self.chain)
        self._append(new)
        if self.out_dir is not None:  # in memory only: the rows are already in the table
            self._pending.append((epoch, new))
            if not defer or time.monotonic() - self._flushed_at >= self.flush_seconds:
                self.flush()
        return new

    def _label_entropy(self, y: torch.Tensor, fixed: bool) -> float:
        """H(Y) in the plane's unit; computed once when the labels are the fixed ``labels`` argument."""
        if not fixed:  # labels read from the batches: the loader may give others each time
            return from_nats(label_entropy_nats(y), self.unit)
        h = self.__dict__.get("_h_y")
        if h is None:
            h = self._h_y = from_nats(label_entropy_nats(y), self.unit)
        return h

    def _groups(self) -> list[list[str]]:
        widths = self.recorder.widths()
        n = self.recorder.n_samples or 1
        k = self.recorder.max_features
        nbytes = self.recorder.element_sizes()  # the layers' own dtypes (a float64 model: 8 bytes a value)
        size = {layer: n * min(w, k or w) * nbytes.get(layer, _BYTES) for layer, w in widths.items()}
        groups: list[list[str]] = []
        used = 0
        for layer in self.layers:
            if groups and used + size[layer] <= self.max_bytes:
                groups[-1].append(layer)
                used += size[layer]
            else:
                groups.append([layer])
                used = size[layer]
        return groups

    def _labels(self, batch_labels: torch.Tensor | None, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        n = next(iter(acts.values())).shape[0]
        device = next(iter(acts.values())).device
        if batch_labels is not None:
            y = torch.as_tensor(_labels_array(batch_labels), device=device)
        else:
            if self.labels.shape[0] != n:
                raise ValueError(f"'inputs' and 'labels' have different lengths: {n} inputs, "
                                 f"{self.labels.shape[0]} labels.")
            y = torch.as_tensor(self.labels, device=device)
        return y

    def _estimate(self, epoch: int, layer: str, t: torch.Tensor, y: torch.Tensor,
                  x: torch.Tensor | None) -> list[dict[str, Any]]:
        rows = []
        reduced = ["random_projection"] if layer in self.recorder.reduction_ else []
        ci = self.ci
        cache = self.__dict__.setdefault("_x_codes", {})
        for label, est in self.plan[layer]:
            m = measure_layer(t, y, est, x=x, discrete_x=self.discrete_x, ci=ci, n_resamples=self.n_resamples,
                              subsample=self.subsample, seed=self.seed, layer=layer, epoch=epoch, label=label,
                              x_cache=cache)
            a, b = m.i_xt, m.i_ty
            extra = reduced + (["random_projection_input"] if INPUT in self.recorder.reduction_
                               and (m.dim_x or not hasattr(est, "plane")) else [])
            rows.append({
                "epoch": epoch, "layer": layer, "layer_index": self.layers.index(layer) + 1,
                "estimator": label, "i_xt": float(a), "i_ty": float(b), "unit": self.unit,
                "i_xt_lo": float(a.low) if ci is not None else math.nan,
                "i_xt_hi": float(a.high) if ci is not None else math.nan,
                "i_ty_lo": float(b.low) if ci is not None else math.nan,
                "i_ty_hi": float(b.high) if ci is not None else math.nan,
                "ci_level": ci if ci is not None else math.nan,
                "flags": ";".join(_flags(m.flags, extra)), "n": int(t.shape[0]),
                "dim_x": m.dim_x, "dim_t": m.dim_t, "dropped_x": m.dropped_x, "dropped_t": m.dropped_t,
                "dropped_columns": bool(m.dropped_x or m.dropped_t), "discrete_input": m.discrete_input,
                "seconds": m.seconds,
            })
        return rows

    def flush(self) -> None:
        """Write the snapshots not yet on disk as one new part (older rows are never rewritten), then the json.

        The part ``information_plane.parts/epoch_<first>.parquet`` (or
        ``epoch_<first>_<last>.parquet`` for several snapshots, in recording
        order) is written atomically and then listed (rows, bytes, sha256) in
        ``information_plane.json``; a part the json does not list is never
        read (and is deleted by the next compaction), so a crash at any point
        loses only the snapshots not yet written (recomputed on resume) and
        duplicates nothing. Every ``_COMPACT_PARTS`` parts, and at
        the end of training, :meth:`compact` folds them into
        ``information_plane.parquet``. Nothing to do without ``out_dir`` or
        pending snapshots (see ``flush_seconds``).
        """
        if not self._pending:
            return
        if self.out_dir is None:
            self._pending = []
            return
        pending = self._pending
        first, last = pending[0][0], pending[-1][0]
        name = f"epoch_{first:08d}" if len(pending) == 1 else f"epoch_{first:08d}_{last:08d}"
        frame = pending[0][1] if len(pending) == 1 else pd.concat([f for _, f in pending], ignore_index=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        rec = self._store.append(frame, name, meta=self.metadata())
        self._pending = []
        self._flushed_at = time.monotonic()
        if len(rec["parts"]) >= _COMPACT_PARTS:
            self._store.compact(meta=self.metadata())

    def compact(self) -> Path | None:
        """Write the whole table to ``out_dir/information_plane.parquet`` (atomically) and drop the parts.

        Called at the end of training (``on_train_end``, also through the
        Lightning callback) and every 64 snapshots; call it after a hand-written
        loop of :meth:`record` to leave one file. Readers that go through
        :func:`read_plane_table` (resume, :func:`ibscope.reporting.read_tracker_dir`)
        see the same rows before and after. Returns the table's path (None
        without ``out_dir`` or before any snapshot).
        """
        self.flush()
        if self.out_dir is None or not self._store.exists():
            return None
        self._store.compact(meta=self.metadata())
        return self.out_dir / TABLE_NAME

    # ---------------------------------------------------------------- results
    def results(self) -> pd.DataFrame:
        """Every row so far (a copy), sorted by epoch, estimator and layer order."""
        df = self._table
        if not len(df):
            return df.copy()
        return df.sort_values(["epoch", "estimator", "layer_index"], kind="stable").reset_index(drop=True)

    def plot(self, path: str | os.PathLike | None = None) -> Path:
        """The information-plane figure (:func:`ibscope.plots.plot_information_plane`).

        ``path`` default: ``out_dir/information_plane.png``.
        """
        if path is None:
            if self.out_dir is None:
                raise ValueError("'path' is required when the plane has no out_dir.")
            path = self.out_dir / "information_plane.png"
        if not len(self._table):
            raise ValueError("Nothing to plot yet: no snapshot has been recorded.")
        from .. import plots

        return plots.plot_information_plane(for_plot(self.results()), path)


def for_plot(results: pd.DataFrame) -> pd.DataFrame:
    """The table as the figures read it: a one-run table gets a constant ``seed`` column.

    The contract makes ``seed`` optional (absent or constant for one run);
    figure code written before that contract counted seeds, so a constant 0
    is added when the column is absent.
    """
    return results if "seed" in results.columns else results.assign(seed=0)


def read_plane_table(out_dir: str | os.PathLike) -> pd.DataFrame:
    """The rows of an :class:`InformationPlane` run directory, wherever they are on disk.

    ``information_plane.parquet`` (the compacted rows) plus the per-snapshot
    parts that ``information_plane.json`` lists, in recording order, each
    checked against the sha256 the json records (a ValueError names a
    damaged or missing file). An empty frame with the plane's columns when
    nothing was recorded.

    Parameters
    ----------
    out_dir : path-like
        The ``out_dir`` of the plane.
    """
    df = PartedTable(Path(out_dir) / TABLE_NAME).read()
    return df if len(df.columns) else pd.DataFrame(columns=COLUMNS)


def _selector_key(v: Any) -> Any:
    """A stable description of an output/call selector (a function by its qualified name, not its address)."""
    if callable(v) and not isinstance(v, (str, int)):
        return f"{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', type(v).__name__)}"
    if isinstance(v, Mapping):
        return {str(k): _selector_key(x) for k, x in v.items()}
    return v


def _jsonable(v: Any) -> Any:
    if isinstance(v, BaseMIEstimator):
        return {"name": v.name, "params": {k: _jsonable(x) for k, x in v.get_params().items()}}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return repr(v)


def information_plane(model: nn.Module, inputs: Any, labels: Any = None, *, epoch: int = 0,
                      metrics: Mapping[str, float] | None = None, **kwargs: Any) -> pd.DataFrame:
    """One snapshot of the information plane of ``model`` now, as a tidy DataFrame.

    Takes the arguments of :class:`InformationPlane` (``layers``, ``output``,
    ``call``, ``estimators``, ``ci``, ``out_dir``, ``chain``, ...); ``epoch`` labels the
    rows (default 0). Equivalent to ``InformationPlane(...).record(epoch)``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    >>> x, y = torch.randn(200, 3), torch.randint(0, 2, (200,))
    >>> df = information_plane(net, x, y, layers=["1"], estimators="ksg")
    >>> df[["layer", "estimator", "unit"]].values.tolist()
    [['1', 'ksg', 'bits']]
    """
    if "schedule" in kwargs:
        raise TypeError("information_plane takes one snapshot; 'schedule' belongs to InformationPlane.")
    plane = InformationPlane(model, inputs, labels, **kwargs)
    rows = plane.record(epoch, metrics=metrics)
    plane.compact()
    return rows
