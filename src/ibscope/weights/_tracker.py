"""Weight information over training: :class:`WeightInformation`, a :class:`~ibscope.training.Callback`.

The same object works three ways, with the epoch convention of
:mod:`ibscope.training` (epoch 0 = the initialization):

* inside :func:`ibscope.training.fit` (``callbacks=[wi]``): it records at the
  scheduled epochs, and its state (the prior mean, the epochs done) goes into
  fit's checkpoint, so a resumed run continues with the same prior;
* from a user's own loop: ``wi.record(0, model)`` before training, then
  ``wi.record(epoch, model)`` after each epoch;
* inside Lightning, through the thin adapters that drive the same hooks.

Rows follow the weight-information table contract: ``seed, epoch, layer,
quantity, value, unit, method`` with ``layer == 'total'`` for the sum and
``quantity`` in {'iiw', 'fisher', 'lagrangian'}. With ``out_dir`` they are
written to ``out_dir/weight_information.parquet`` (atomically, after every
recorded epoch) with ``out_dir/weight_information.json`` describing the run.

A directory is never silently reused: the tracker fingerprints what it
measures (:func:`ibscope._fingerprint.fingerprint` of the model's structure,
the quantities and their settings, the loss, the prior mean and the data the
estimates use) and stores it in the JSON sidecar. A tracker with the same
fingerprint resumes (recorded epochs are skipped); another one is refused
with a ValueError naming the directory, what differs, and ``overwrite=True``
(which discards the directory's weight-information files). The seed and the
schedule are not part of it: several seeds share one table (rows carry their
seed), and a longer schedule continues a run.
"""

from __future__ import annotations

import datetime as _dt
import functools
import io
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .._fingerprint import fingerprint
from .._validation import check_schedule, check_seed
from ..store import TableWriter, atomic_write_bytes, atomic_write_json, load_tensor_file, read_json
from ..training import Callback, TrainState
from ._common import snapshot_parameters
from ._fisher import fisher
from ._iiw import iiw
from ._lagrangian import information_lagrangian

__all__ = ["WeightInformation", "measure_weights", "COLUMNS", "TABLE_NAME", "META_NAME", "FORMAT"]

COLUMNS = ["seed", "epoch", "layer", "quantity", "value", "unit", "method"]
TABLE_NAME = "weight_information.parquet"
META_NAME = "weight_information.json"
FORMAT = "ibscope.weight_information/1"
_QUANTITIES = ("iiw", "fisher", "lagrangian")


def _prior_kind(prior_mean: Any) -> str:
    if isinstance(prior_mean, str):
        return prior_mean
    if isinstance(prior_mean, nn.Module):
        return "module"
    if isinstance(prior_mean, Mapping):
        return "mapping"
    return "callable"


def measure_weights(model: nn.Module, loss_fn: Callable, data: Any, *, quantities: Iterable[str] = ("iiw",),
                    prior_mean: Any = None, seed: int = 0, iiw_kwargs: Mapping[str, Any] | None = None,
                    fisher_kwargs: Mapping[str, Any] | None = None,
                    lagrangian_kwargs: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The weight-information quantities of one model at one point of training, as tidy rows.

    The one measuring path of :class:`WeightInformation` (each recorded epoch)
    and of the ``iiw`` experiment (each tracked iteration, each seed of a
    batched run): :func:`~ibscope.weights.iiw`,
    :func:`~ibscope.weights.fisher` and
    :func:`~ibscope.weights.information_lagrangian`, in that order.

    Parameters
    ----------
    model : torch.nn.Module
        The network at this point (theta_S); not modified.
    loss_fn : callable
        Per-example loss ``loss_fn(model(x), y)`` in nats (``reduction="none"``);
        used by IIW and the Lagrangian.
    data : iterable of (x, y)
        The examples the quantities are computed on.
    quantities : iterable of {'iiw', 'fisher', 'lagrangian'}
        Non-empty, without repeats.
    prior_mean : Module, mapping name -> tensor, optional
        theta_0 of IIW (required when 'iiw' is measured).
    seed : int
        Seed of the Fisher label sampling and of the Lagrangian noise (a
        ``seed`` in ``fisher_kwargs`` / ``lagrangian_kwargs`` wins).
    iiw_kwargs, fisher_kwargs, lagrangian_kwargs : mapping, optional
        Passed on to :func:`~ibscope.weights.iiw` (e.g. ``n_train``, ``unit``),
        :func:`~ibscope.weights.fisher`, :func:`~ibscope.weights.information_lagrangian`
        (``lagrangian_kwargs`` must hold ``beta``).

    Returns
    -------
    list of dict
        One row per (quantity, layer) with keys ``layer`` ('total' for the
        whole network), ``quantity``, ``value``, ``unit`` (IIW and the
        Lagrangian in bits unless ``unit='nats'`` is passed; Fisher in nats^2)
        and ``method``.

    References
    ----------
    .. [1] Z. Wang et al., "PAC-Bayes Information Bottleneck", ICLR 2022 (IIW).
    .. [2] A. Achille, G. Paolini, S. Soatto, "Where is the information in a deep
       neural network?", arXiv:1905.12213, 2019 (Fisher, information Lagrangian).
    """
    quantities = (quantities,) if isinstance(quantities, str) else tuple(quantities)
    if (not quantities or len(set(quantities)) != len(quantities)
            or any(q not in _QUANTITIES for q in quantities)):
        raise ValueError(f"'quantities' must be a non-empty subset of {_QUANTITIES}; got {list(quantities)!r}.")
    if "iiw" in quantities and prior_mean is None:
        raise ValueError("'prior_mean' is required to measure 'iiw' (theta_0: a Module or a mapping "
                         "name -> tensor).")
    lagrangian_kwargs = dict(lagrangian_kwargs or {})
    if "lagrangian" in quantities and "beta" not in lagrangian_kwargs:
        raise ValueError("lagrangian_kwargs must hold 'beta' to measure 'lagrangian'.")
    rows: list[dict[str, Any]] = []
    if "iiw" in quantities:
        rows += iiw(model, loss_fn, data, prior_mean=prior_mean, **dict(iiw_kwargs or {})).rows()
    if "fisher" in quantities:
        rows += [{**r, "quantity": "fisher"} for r in
                 fisher(model, data, **{"seed": seed, **dict(fisher_kwargs or {})}).rows()]
    if "lagrangian" in quantities:
        rows += [{**r, "quantity": "lagrangian"} for r in
                 information_lagrangian(model, loss_fn, data, **{"seed": seed, **lagrangian_kwargs}).rows()]
    return rows


def _describe(f: Any) -> Any:
    """A stable description of a callable for the fingerprint (never its memory address)."""
    if isinstance(f, functools.partial):
        return {"partial": _describe(f.func), "args": [_describe(a) for a in f.args],
                "keywords": {k: _describe(v) for k, v in f.keywords.items()}}
    if isinstance(f, nn.Module):  # a loss module: its class and its settings (reduction, weights, ...)
        attrs = {k: v for k, v in vars(f).items() if not k.startswith("_") and k != "training"
                 and isinstance(v, (str, int, float, bool, type(None)))}
        tensors = {k: v for k, v in f.state_dict().items()}
        return {"class": f"{type(f).__module__}.{type(f).__qualname__}", "attrs": attrs, "tensors": tensors}
    if isinstance(f, (str, int, float, bool, type(None), torch.Tensor)):
        return f
    if isinstance(f, (list, tuple)):
        return [_describe(v) for v in f]
    if isinstance(f, Mapping):
        return {str(k): _describe(v) for k, v in f.items()}
    if callable(f):
        target = f if hasattr(f, "__qualname__") else type(f)
        name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', type(f).__name__)}"
        if target is f:  # a function or a class
            return name
        # a callable object (e.g. a loss class with a noise variance): its class and simple settings
        attrs = {k: _describe(v) for k, v in sorted(getattr(f, "__dict__", {}).items())
                 if not k.startswith("_") and isinstance(v, (str, int, float, bool, type(None), torch.Tensor))}
        return {"class": name, "attrs": attrs}
    return repr(f)


def _settings(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): (dict(v.named_parameters()) if isinstance(v, nn.Module) else _describe(v))
            for k, v in kwargs.items()}


def _describe_data(data: Any) -> Any:
    """The data the estimates use, for the fingerprint: the batches themselves (in memory), or a
    DataLoader's dataset (the tensors of a TensorDataset; class and length otherwise) and batching."""
    if isinstance(data, (list, tuple)):
        return [_describe(b) if not isinstance(b, (list, tuple)) else
                [dict(x) if isinstance(x, Mapping) else x for x in b] for b in data]
    ds = getattr(data, "dataset", None)
    if ds is not None:
        tensors = getattr(ds, "tensors", None)
        try:
            length = len(ds)
        except TypeError:
            length = None
        return {"loader": type(data).__qualname__, "batch_size": getattr(data, "batch_size", None),
                "drop_last": getattr(data, "drop_last", None),
                "sampler": type(getattr(data, "sampler", None)).__qualname__,
                "dataset": list(tensors) if tensors is not None else {"class": type(ds).__qualname__, "len": length}}
    return {"iterable": type(data).__qualname__}


class WeightInformation(Callback):
    """IIW / Fisher trace / information-Lagrangian KL at scheduled epochs of a training run.

    Parameters
    ----------
    loss_fn : callable
        Per-example loss ``loss_fn(model(x), y)`` (``reduction="none"``, nats),
        see :func:`ibscope.weights.iiw`; also used by the Lagrangian.
    data : iterable of (x, y)
        The examples the quantities are computed on (the training set S or a
        fixed subset of it).
    quantities : iterable of {'iiw', 'fisher', 'lagrangian'}
    schedule : iterable of int, optional
        Epochs to record (0 = initialization); None: every epoch.
    prior_mean : 'init', Module, mapping name -> tensor, or callable(model) -> mapping
        theta_0 of IIW. 'init' (default) is the weights at epoch 0: taken when
        epoch 0 is recorded (or at ``on_train_begin`` of a fresh fit), kept in
        fit's checkpoint and, with ``out_dir``, in
        ``out_dir/weight_information_prior.pt`` for a restarted loop.
    out_dir : path-like, optional
        Where the table and its description go; None keeps the rows in
        memory (see :meth:`results`).
    seed : int
        Recorded in every row; the seed of the Fisher label sampling and of
        the Lagrangian noise.
    iiw_kwargs, fisher_kwargs, lagrangian_kwargs : dict, optional
        Passed on to :func:`iiw`, :func:`fisher`, :func:`information_lagrangian`
        (``lagrangian_kwargs`` must hold ``beta``).
    model : torch.nn.Module, optional
        The model :meth:`record` measures when called without one (inside
        :func:`~ibscope.training.fit` it is the model being trained).
    overwrite : bool
        With ``out_dir``: False (default) resumes a directory written by a
        tracker with the same fingerprint and refuses (ValueError) one written
        for another model, other quantities, settings or data; True first
        deletes the directory's weight-information files (table, sidecar and
        priors of every seed).

    Notes
    -----
    Attention models need no workaround (the computations select PyTorch's
    math attention path themselves); for a model whose output is not a
    tensor, pass the selector to each quantity, e.g.
    ``iiw_kwargs={"output": "logits"}``, ``fisher_kwargs={"output": "logits"}``.

    Examples
    --------
    >>> wi = WeightInformation(nn.CrossEntropyLoss(reduction="none"), train_subset,  # doctest: +SKIP
    ...                        quantities=("iiw", "fisher"), schedule=[0, 1, 2, 4, 8], out_dir=run_dir)
    >>> fit(model, nn.CrossEntropyLoss(), (x, y), opt, epochs=8, batch_size=64,      # doctest: +SKIP
    ...     callbacks=[wi], checkpoint_dir=run_dir)
    >>> wi.plot()                                                                     # doctest: +SKIP
    """

    def __init__(self, loss_fn: Callable, data: Any, *, quantities: Iterable[str] = ("iiw",),
                 schedule: Iterable[int] | None = None, prior_mean: Any = "init",
                 out_dir: str | os.PathLike | None = None, seed: int = 0,
                 iiw_kwargs: Mapping[str, Any] | None = None, fisher_kwargs: Mapping[str, Any] | None = None,
                 lagrangian_kwargs: Mapping[str, Any] | None = None, model: nn.Module | None = None,
                 overwrite: bool = False):
        if not callable(loss_fn):
            raise TypeError(f"'loss_fn' must be callable, got {type(loss_fn).__name__}.")
        if isinstance(quantities, str):
            quantities = (quantities,)
        self.quantities = tuple(quantities)
        bad = [q for q in self.quantities if q not in _QUANTITIES]
        if bad or not self.quantities or len(set(self.quantities)) != len(self.quantities):
            raise ValueError(f"'quantities' must be a non-empty subset of {_QUANTITIES}; got {list(self.quantities)!r}.")
        self.schedule = check_schedule(schedule, "schedule", "WeightInformation")
        if isinstance(prior_mean, str) and prior_mean != "init":
            raise ValueError(f"'prior_mean' as a string must be 'init'; got {prior_mean!r}.")
        if prior_mean is None or not (isinstance(prior_mean, (str, nn.Module, Mapping)) or callable(prior_mean)):
            raise TypeError("'prior_mean' must be 'init', a torch.nn.Module, a mapping name -> tensor or a "
                            f"callable(model) -> mapping; got {type(prior_mean).__name__}.")
        self.lagrangian_kwargs = dict(lagrangian_kwargs or {})
        if "lagrangian" in self.quantities and "beta" not in self.lagrangian_kwargs:
            raise ValueError("lagrangian_kwargs must hold 'beta' to track 'lagrangian'.")
        seed = check_seed(seed, "seed", "WeightInformation")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"'model' must be a torch.nn.Module or None, got {type(model).__name__}.")
        if not isinstance(overwrite, bool):
            raise TypeError(f"'overwrite' must be a bool, got {overwrite!r}.")
        self.loss_fn, self.data, self.prior_mean, self.seed, self.model = loss_fn, data, prior_mean, seed, model
        self.iiw_kwargs = dict(iiw_kwargs or {})
        self.fisher_kwargs = dict(fisher_kwargs or {})
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.prior_: dict[str, torch.Tensor] | None = None
        self._memory: list[pd.DataFrame] = []
        self.writer_: TableWriter | None = None
        self.done_epochs_: set[int] = set()
        self.fingerprint_: str | None = None
        self._parts: dict[str, str] = {}
        self._stored: dict[str, Any] | None = None  # fingerprint found in out_dir (None: a fresh directory)
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if overwrite:
                for f in (self.out_dir / TABLE_NAME, self.out_dir / META_NAME,
                          *self.out_dir.glob("weight_information_prior_seed*.pt")):
                    f.unlink(missing_ok=True)
            self.writer_ = TableWriter(self.out_dir / TABLE_NAME)
            frame = self.writer_.frame()
            meta_path = self.out_dir / META_NAME
            if meta_path.exists():
                meta = read_json(meta_path, what="the weight-information description",
                                 hint="pass overwrite=True to start the directory afresh")
                self._stored = {"fingerprint": meta.get("fingerprint"), "parts": meta.get("fingerprint_parts", {})}
            elif len(frame):
                self._stored = {"fingerprint": None, "parts": {}}
            if len(frame):
                mine = frame["seed"] == self.seed if "seed" in frame else slice(None)
                self.done_epochs_ = set(frame.loc[mine, "epoch"].astype(int).tolist())
            path = self._prior_path()
            if prior_mean == "init" and path.exists():
                self.prior_ = load_tensor_file(path, what="the weight-information prior",
                                               hint="Pass overwrite=True to start the directory afresh.")

    # ------------------------------------------------------------ fingerprint
    def _fingerprint_parts(self, model: nn.Module) -> dict[str, str]:
        """One sha256 per part of what is measured (the fingerprint is the sha256 of them all)."""
        parts = {
            "model": model,
            "quantities": list(self.quantities),
            "loss_fn": _describe(self.loss_fn),
            "prior_mean": (self.prior_mean if isinstance(self.prior_mean, str) else
                           {"module": dict(self.prior_mean.named_parameters())}
                           if isinstance(self.prior_mean, nn.Module) else
                           dict(self.prior_mean) if isinstance(self.prior_mean, Mapping) else
                           _describe(self.prior_mean)),
            "settings": {q: _settings(kw) for q, kw in (("iiw", self.iiw_kwargs), ("fisher", self.fisher_kwargs),
                                                         ("lagrangian", self.lagrangian_kwargs))
                         if q in self.quantities},
            "data": _describe_data(self.data),
        }
        return {k: fingerprint(**{k: v}) for k, v in parts.items()}

    def _check_directory(self, model: nn.Module) -> None:
        """Compute the fingerprint once; refuse a directory written for another measurement."""
        if self.out_dir is None or self.fingerprint_ is not None:
            return
        parts = self._fingerprint_parts(model)
        fp = fingerprint(**parts)
        stored = self._stored
        if stored is not None and stored["fingerprint"] != fp:
            if stored["fingerprint"] is None:
                why = "it was written without a fingerprint (by an older ibscope, or the sidecar is missing)"
            else:
                diff = sorted(k for k in parts if stored["parts"].get(k) != parts[k]) or ["the fingerprint"]
                why = f"it holds weight information of another measurement (different: {', '.join(diff)})"
            raise ValueError(
                f"WeightInformation: the directory '{self.out_dir}' cannot be resumed: {why}. Use another "
                f"out_dir, or pass overwrite=True to delete its weight-information files and start afresh.")
        self.fingerprint_, self._parts = fp, parts

    # ------------------------------------------------------------------ prior
    def _prior_path(self) -> Path:
        assert self.out_dir is not None
        return self.out_dir / f"weight_information_prior_seed{self.seed}.pt"

    def _snapshot_prior(self, model: nn.Module) -> None:
        self.prior_ = {k: v.detach().cpu().clone() for k, v in snapshot_parameters(model).items()}
        if self.out_dir is not None:
            buf = io.BytesIO()
            torch.save(self.prior_, buf)
            atomic_write_bytes(self._prior_path(), buf.getvalue())

    def _prior(self, model: nn.Module) -> Any:
        if self.prior_mean == "init":
            if self.prior_ is None:
                raise RuntimeError("WeightInformation(prior_mean='init'): record epoch 0 (the initialization) "
                                   "first, e.g. wi.record(0, model) before training, or pass a prior_mean.")
            return self.prior_
        if callable(self.prior_mean) and not isinstance(self.prior_mean, (nn.Module, Mapping)):
            return self.prior_mean(model)
        return self.prior_mean

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, state: TrainState) -> None:
        if self.model is None:
            self.model = state.model
        self._check_directory(state.model)
        if self.prior_mean == "init" and self.prior_ is None and not state.resumed and state.epoch == 0:
            self._snapshot_prior(state.model)

    def on_epoch_end(self, state: TrainState) -> None:
        if self.schedule is None or state.epoch in self.schedule:
            self.record(state.epoch, state.model)

    def _state_key_detail(self) -> str:
        """:attr:`state_key`: the ``out_dir``, or the quantities when in memory."""
        return (f"out_dir={self.out_dir}" if self.out_dir is not None
                else "quantities=" + ",".join(self.quantities))

    def state_dict(self) -> dict[str, Any]:
        return {"prior": self.prior_, "done": sorted(self.done_epochs_),
                "rows": None if self.out_dir is not None else self._rows_as_lists()}

    def load_state_dict(self, s: Mapping[str, Any]) -> None:
        if s.get("prior") is not None:
            self.prior_ = dict(s["prior"])
        self.done_epochs_ |= {int(e) for e in s.get("done", [])}
        if self.out_dir is None and s.get("rows") is not None:
            rows = s["rows"]
            self._memory = [pd.DataFrame({c: rows[c] for c in COLUMNS})] if rows["epoch"] else []

    def _rows_as_lists(self) -> dict[str, list]:
        df = self.results()
        return {c: (df[c].tolist() if c in df else []) for c in COLUMNS}

    # ---------------------------------------------------------------- record
    def record(self, epoch: int, model: nn.Module | None = None) -> pd.DataFrame:
        """Compute the quantities for ``epoch`` and store them; returns the new rows.

        An epoch already recorded (in memory or on disk, for this seed) is
        skipped (empty frame). With ``prior_mean='init'``, recording epoch 0
        takes the prior from the model if none is known yet.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"'epoch' must be an int >= 0 (0 = initialization); got {epoch!r}.")
        model = model if model is not None else self.model
        if not isinstance(model, nn.Module):
            raise TypeError("WeightInformation.record needs a model: pass record(epoch, model) or "
                            "WeightInformation(..., model=model).")
        self._check_directory(model)
        if epoch in self.done_epochs_:
            return pd.DataFrame(columns=COLUMNS)
        if self.prior_mean == "init" and self.prior_ is None and epoch == 0:
            self._snapshot_prior(model)
        rows = measure_weights(model, self.loss_fn, self.data, quantities=self.quantities,
                               prior_mean=self._prior(model) if "iiw" in self.quantities else None,
                               seed=self.seed, iiw_kwargs=self.iiw_kwargs, fisher_kwargs=self.fisher_kwargs,
                               lagrangian_kwargs=self.lagrangian_kwargs)
        df = pd.DataFrame(rows)
        df.insert(0, "epoch", int(epoch))
        df.insert(0, "seed", self.seed)
        df = df[COLUMNS]
        if self.writer_ is not None:
            self.writer_.add(df)
            self.writer_.flush()
        else:
            self._memory.append(df)
        self.done_epochs_.add(int(epoch))
        self._write_meta()
        return df

    def _write_meta(self) -> None:
        if self.out_dir is None:
            return
        from .. import __version__

        units = {"iiw": self.iiw_kwargs.get("unit", "bits"), "fisher": "nats^2",
                 "lagrangian": self.lagrangian_kwargs.get("unit", "bits")}
        atomic_write_json(self.out_dir / META_NAME, {
            "format": FORMAT, "quantities": list(self.quantities), "schedule": self.schedule,
            "prior_mean": _prior_kind(self.prior_mean), "unit": units[self.quantities[0]],
            "units": {q: units[q] for q in self.quantities}, "seed": self.seed,
            "epochs_done": sorted(self.done_epochs_),
            "fingerprint": self.fingerprint_, "fingerprint_parts": self._parts,
            "iiw_kwargs": {k: v for k, v in self.iiw_kwargs.items() if isinstance(v, (str, int, float, bool))},
            "fisher_kwargs": {k: v for k, v in self.fisher_kwargs.items() if isinstance(v, (str, int, float, bool))},
            "lagrangian_kwargs": {k: v for k, v in self.lagrangian_kwargs.items()
                                  if isinstance(v, (str, int, float, bool))},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "ibscope_version": __version__,
        })

    # --------------------------------------------------------------- results
    def results(self) -> pd.DataFrame:
        """Every row so far (on disk: every seed in the file), in the table's column order."""
        if self.writer_ is not None:
            return self.writer_.frame().copy()
        if not self._memory:
            return pd.DataFrame(columns=COLUMNS)
        return pd.concat(self._memory, ignore_index=True)

    def plot(self, path: str | os.PathLike | None = None) -> Path:
        """IIW / Fisher / ... over epochs (:func:`ibscope.plots.plot_weight_information`).

        Default path: ``out_dir/weight_information.png``.
        """
        from .. import plots

        if path is None:
            if self.out_dir is None:
                raise ValueError("WeightInformation.plot: pass a path (no out_dir was given).")
            path = self.out_dir / "weight_information.png"
        fn = getattr(plots, "plot_weight_information", None)
        if fn is None:  # pragma: no cover - until the figure lands in ibscope.plots
            raise NotImplementedError("ibscope.plots.plot_weight_information is not available in this version.")
        return fn(self.results(), path)
