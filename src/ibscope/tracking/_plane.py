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
``compressed`` with PCA to 4 dimensions and KSG (k = 3) for every layer: a
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
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import estimators as registry
from ..estimators.base import BaseMIEstimator
from ..store import write_checked_parquet
from ..training import Callback, TrainState
from ._recorder import INPUT, ActivationRecorder
from ._schedule import log_schedule

__all__ = ["InformationPlane", "information_plane", "TABLE_NAME", "META_NAME", "FORMAT", "COLUMNS"]

TABLE_NAME = "information_plane.parquet"
META_NAME = "information_plane.json"
FORMAT = "ibscope.information_plane/1"
COLUMNS = ["epoch", "layer", "layer_index", "estimator", "i_xt", "i_ty", "unit", "i_xt_lo", "i_xt_hi",
           "i_ty_lo", "i_ty_hi", "ci_level", "flags", "n", "seconds"]
_BYTES = 4  # float32 activations


def _default_estimator(unit: str) -> BaseMIEstimator:
    return registry.get("compressed", estimator="ksg", compression="pca", dim_x=4, dim_y=4, unit=unit)


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
                est = registry.get(s, unit=unit, **_layer_params(s, activation))
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


def _layer_params(name: str, activation: str | None) -> dict[str, Any]:
    """Binning range / adaptive floor from a layer's activation bounds (as the 12-bit experiment does)."""
    if activation is None:
        return {}
    from ..models import ACTIVATION_BOUNDS

    lo, hi = ACTIVATION_BOUNDS.get(activation, (None, None))
    if name == "binning" and lo is not None and hi is not None:
        return {"value_range": (lo, hi)}
    if name == "adaptive_binning" and lo is not None and activation in ("relu", "softplus", "sigmoid"):
        return {"floor": lo}
    return {}


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
    if schedule is None:
        return None
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Iterable):
        raise TypeError(f"'schedule' must be None or an iterable of epochs (ints >= 0); got {schedule!r}.")
    out = []
    for e in schedule:
        if isinstance(e, bool) or not isinstance(e, (int, np.integer)) or e < 0:
            raise ValueError(f"'schedule' must hold epochs as ints >= 0 (0 = initialization); got {e!r}.")
        out.append(int(e))
    if not out:
        raise ValueError("'schedule' is empty.")
    return sorted(set(out))


def _check_ci(ci: Any) -> float | None:
    if ci is None:
        return None
    if isinstance(ci, bool) or not isinstance(ci, (int, float)) or not 0 < float(ci) < 1:
        raise ValueError(f"'ci' must be None or a level in (0, 1) such as 0.95; got {ci!r}.")
    return float(ci)


def _flags(*sources: Any) -> list[str]:
    out: list[str] = []
    for s in sources:
        for f in (getattr(s, "flags", ()) or ()) if not isinstance(s, (tuple, list)) else s:
            if f and f not in out:
                out.append(str(f))
    return out


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
        Default: ``compressed`` (PCA to 4 dims + KSG) for every layer, see
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
        Run directory: ``information_plane.parquet`` (the table, rewritten
        atomically after every snapshot) and ``information_plane.json`` (the
        settings). A directory that already holds a plane of the same
        layers and estimators is resumed: its epochs are not recomputed.
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
                 subsample: float = 0.5, seed: int = 0, n_snapshots: int = 30):
        if not isinstance(model, nn.Module):
            raise TypeError(f"'model' must be a torch.nn.Module, got {type(model).__name__}.")
        if unit not in ("bits", "nats"):
            raise ValueError(f"'unit' must be 'bits' or 'nats', got {unit!r}.")
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
        self.schedule = _check_schedule(schedule)
        self._schedule_given = self.schedule is not None
        self.ci = _check_ci(ci)
        for name, v, lo in (("n_resamples", n_resamples, 2), ("n_snapshots", n_snapshots, 2),
                            ("max_bytes", max_bytes, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"'{name}' must be an int >= {lo}, got {v!r}.")
        if not (isinstance(subsample, float) and 0 < subsample < 1):
            raise ValueError(f"'subsample' must be a float in (0, 1), got {subsample!r}.")
        self.n_resamples, self.subsample, self.seed = n_resamples, subsample, int(seed)
        self.n_snapshots, self.max_bytes = n_snapshots, max_bytes
        self.plan = self._plan(estimators)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self._table = pd.DataFrame(columns=COLUMNS)
        self._created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        if self.out_dir is not None:
            if self.out_dir.exists() and not self.out_dir.is_dir():
                raise ValueError(f"'out_dir' {str(self.out_dir)!r} exists and is not a directory.")
            self._resume()

    # ----------------------------------------------------------------- set-up
    def _plan(self, spec: Any) -> dict[str, list[tuple[str, BaseMIEstimator]]]:
        acts = getattr(self.model, "layer_activations", None) or {}
        per_layer = isinstance(spec, Mapping) and spec and all(k in self.layers for k in spec)
        plan = {}
        default = None
        for layer in self.layers:
            s = spec.get(layer) if per_layer else spec
            if s is None:
                default = default or [("compressed", _default_estimator(self.unit))]
                plan[layer] = default
            else:
                plan[layer] = _build(s, self.unit, layer, acts.get(layer))
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
                "subsample": self.subsample if self.ci is not None else None, "seed": self.seed}

    def _resume(self) -> None:
        table, meta = self.out_dir / TABLE_NAME, self.out_dir / META_NAME
        if not table.exists():
            return
        try:
            df = pd.read_parquet(table)
        except Exception as e:
            raise ValueError(f"'{table}' is unreadable ({e}); delete it to recompute the plane.") from None
        if meta.exists():
            old = json.loads(meta.read_text())
            mine = self.metadata()
            for key in ("unit", "layers"):
                if old.get(key) != mine[key]:
                    raise ValueError(f"'out_dir' {str(self.out_dir)!r} holds an information plane with another "
                                     f"{key} ({old.get(key)} vs {mine[key]}); use another out_dir or delete it.")
            if set(old.get("estimators", {})) != set(mine["estimators"]):
                raise ValueError(f"'out_dir' {str(self.out_dir)!r} holds an information plane of other estimators "
                                 f"({sorted(old.get('estimators', {}))} vs {sorted(mine['estimators'])}); use "
                                 "another out_dir or delete it.")
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
        self.maybe_record(state.epoch, metrics=state.metrics)

    def state_dict(self) -> dict[str, Any]:
        if self.out_dir is not None:  # the rows are on disk
            return {"epochs": self.epochs_done()}
        return {"rows": {c: self._table[c].tolist() for c in self._table.columns}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        rows = state.get("rows")
        if rows is not None and self.out_dir is None:
            self._table = pd.DataFrame(dict(rows)) if rows else pd.DataFrame(columns=COLUMNS)

    # ----------------------------------------------------------------- record
    def epochs_done(self) -> list[int]:
        """Epochs already in the table (on disk for a resumed run); :meth:`record` skips them."""
        return sorted(int(e) for e in self._table["epoch"].unique()) if len(self._table) else []

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
        become columns of the rows (a fit callback passes ``state.metrics``).
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"'epoch' must be an int >= 0, got {epoch!r}.")
        epoch = int(epoch)
        if epoch in self.epochs_done():
            return self._table.iloc[0:0].copy()
        rows = []
        for group in self._groups():
            need_x = any(not hasattr(e, "plane") for layer in group for _, e in self.plan[layer])
            acts, batch_labels = self.recorder.capture(group, inputs=need_x, epoch=epoch)
            y = self._labels(batch_labels, acts)
            for layer in group:
                rows += self._estimate(epoch, layer, acts[layer], y, acts.get(INPUT))
            del acts
        extra = {str(k): float(v) for k, v in (metrics or {}).items()}
        for r in rows:
            r.update(extra)
        new = pd.DataFrame(rows).sort_values(["estimator", "layer_index"], kind="stable").reset_index(drop=True)
        self._table = new if not len(self._table) else pd.concat([self._table, new], ignore_index=True)
        self._flush()
        return new

    def _groups(self) -> list[list[str]]:
        widths = self.recorder.widths()
        n = self.recorder.n_samples or 1
        k = self.recorder.max_features
        size = {layer: n * min(w, k or w) * _BYTES for layer, w in widths.items()}
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
        kw = {"n_resamples": self.n_resamples, "subsample": self.subsample, "seed": self.seed}
        for label, est in self.plan[layer]:
            t0 = time.perf_counter()
            if hasattr(est, "plane"):
                a, b = est.plane(t, y, ci=ci, **kw) if ci is not None else est.plane(t, y)
                f = _flags(a, b, getattr(est, "flags_", ()))
            else:
                if ci is None:
                    x_in, t_xt, t_ty = self._pca_codes(est, x, t)
                    a = est.estimate(x_in, t_xt)
                    fa = getattr(est, "flags_", ())
                    b = est.estimate(t_ty, y, discrete_y=True)
                elif ci is not None:
                    a = est.estimate_ci(x, t, level=ci, **kw)
                    fa = getattr(est, "flags_", ())
                    b = est.estimate_ci(t, y, discrete_y=True, level=ci, **kw)
                f = _flags(a, b, fa, getattr(est, "flags_", ()))
            if INPUT in self.recorder.reduction_ and not hasattr(est, "plane"):
                reduced = reduced + ["random_projection_input"]
            seconds = time.perf_counter() - t0
            rows.append({
                "epoch": epoch, "layer": layer, "layer_index": self.layers.index(layer) + 1,
                "estimator": label, "i_xt": float(a), "i_ty": float(b), "unit": self.unit,
                "i_xt_lo": float(a.low) if ci is not None else math.nan,
                "i_xt_hi": float(a.high) if ci is not None else math.nan,
                "i_ty_lo": float(b.low) if ci is not None else math.nan,
                "i_ty_hi": float(b.high) if ci is not None else math.nan,
                "ci_level": ci if ci is not None else math.nan,
                "flags": ";".join(_flags(f, reduced)), "n": int(t.shape[0]), "seconds": seconds,
            })
        return rows

    def _pca_codes(self, est: BaseMIEstimator, x: Any, t: torch.Tensor) -> tuple[Any, Any, Any]:
        """For ``compressed`` with PCA: the codes of x (once per run) and of t (once per layer).

        The Compressed estimator leaves a variable whose width is at most its
        target dimension as it is, so passing PCA codes gives the same number
        as passing the raw variables (PCA is deterministic; KSG's max-norm and
        per-column standardization ignore the sign of a component), without
        compressing the fixed inputs again for every layer and snapshot and
        each layer twice. Other estimators get the raw variables.
        """
        from ..estimators._compressed import Compressed, pca_compress

        if not isinstance(est, Compressed) or est.compression != "pca" or est.device is not None:
            return x, t, t
        if any(not isinstance(d, int) for d in (est.dim_x, est.dim_y) if d is not None):
            return x, t, t  # 'auto' dimensions are chosen per call from the data: nothing to cache

        def codes(a: Any, dim: int, which: str) -> Any:  # what Compressed._compress computes for ``which``
            seed = None if est.seed is None else est.seed + (0 if which == "x" else 1)
            return pca_compress(a, dim, solver=est.pca_solver, seed=seed)[0]

        if x is not None and est.dim_x is not None and x.shape[1] > est.dim_x:
            key = (id(est), est.dim_x)
            cache = self.__dict__.setdefault("_x_codes", {})
            if key not in cache:
                cache[key] = codes(x, est.dim_x, "x")
            x = cache[key]
        # I(X;T) = estimate(x, t): t is the 'y' variable; I(T;Y) = estimate(t, labels): t is the 'x' one
        t_xt = codes(t, est.dim_y, "y") if est.dim_y is not None and t.shape[1] > est.dim_y else t
        t_ty = codes(t, est.dim_x, "x") if est.dim_x is not None and t.shape[1] > est.dim_x else t
        return x, t_xt, t_ty

    def _flush(self) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_checked_parquet(self.out_dir / TABLE_NAME, self._table, meta=self.metadata())

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
    ``call``, ``estimators``, ``ci``, ``out_dir``, ...); ``epoch`` labels the
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
    return InformationPlane(model, inputs, labels, **kwargs).record(epoch, metrics=metrics)
