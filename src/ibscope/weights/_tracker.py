"""Track weight information over a user's own training loop (callback style)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..store import TableWriter, atomic_write_bytes
from ._common import snapshot_parameters
from ._fisher import fisher
from ._iiw import iiw
from ._lagrangian import information_lagrangian

__all__ = ["WeightInformationTracker", "COLUMNS"]

COLUMNS = ["seed", "epoch", "layer", "quantity", "value", "unit", "method"]
_QUANTITIES = ("iiw", "fisher", "lagrangian")


class WeightInformationTracker:
    """Compute IIW / Fisher trace / information-Lagrangian KL at scheduled epochs.

    It hooks into a training loop it does not own::

        tracker = WeightInformationTracker(run_dir, loss_fn=loss, data=train_loader,
                                           schedule=[0, 1, 2, 4, 8, 16], prior_mean="init")
        tracker.on_train_begin(model)          # only needed for prior_mean="init"
        for epoch in range(epochs):
            train_one_epoch(model)
            tracker.on_epoch_end(epoch, model)

    Rows (seed, epoch, layer, quantity, value, unit, method) go to
    ``run_dir/<filename>`` (Parquet, rewritten atomically after every
    scheduled epoch, via :class:`ibscope.store.TableWriter`) next to the
    information-plane table of the same run. A restarted run skips the
    epochs already on disk for its seed.

    Parameters
    ----------
    run_dir : path-like
    loss_fn : callable
        Per-example loss (``reduction="none"``), see :func:`iiw`.
    data : iterable of (x, y)
        Data the quantities are computed on (the training set S).
    schedule : iterable of int
        Epochs at which to compute.
    quantities : iterable of {'iiw', 'fisher', 'lagrangian'}
    prior_mean : Module, mapping, callable(model) -> mapping, or 'init'
        theta_0 for IIW; 'init' snapshots the weights in :meth:`on_train_begin`
        (saved to ``run_dir`` so a resumed run keeps it).
    seed : int
        Recorded in every row (and the seed of the Fisher label sampling).
    iiw_kwargs, fisher_kwargs, lagrangian_kwargs : dict
        Passed on; ``lagrangian_kwargs`` must hold ``beta``.
    filename : str
    """

    def __init__(self, run_dir: str | os.PathLike, *, loss_fn: Callable, data: Any, schedule: Iterable[int],
                 quantities: Iterable[str] = ("iiw",), prior_mean: Any = None, seed: int = 0,
                 iiw_kwargs: Mapping[str, Any] | None = None, fisher_kwargs: Mapping[str, Any] | None = None,
                 lagrangian_kwargs: Mapping[str, Any] | None = None, filename: str = "weights.parquet"):
        self.run_dir = Path(run_dir)
        self.loss_fn = loss_fn
        self.data = data
        self.schedule = sorted({int(e) for e in schedule})
        self.quantities = tuple(quantities)
        bad = [q for q in self.quantities if q not in _QUANTITIES]
        if bad or not self.quantities:
            raise ValueError(f"'quantities' must be a non-empty subset of {_QUANTITIES}; got {list(quantities)!r}.")
        if "iiw" in self.quantities and prior_mean is None:
            raise ValueError("'prior_mean' is needed to track 'iiw' (a Module, a mapping, a callable or 'init').")
        if isinstance(prior_mean, str) and prior_mean != "init":
            raise ValueError(f"'prior_mean' as a string must be 'init'; got {prior_mean!r}.")
        self.lagrangian_kwargs = dict(lagrangian_kwargs or {})
        if "lagrangian" in self.quantities and "beta" not in self.lagrangian_kwargs:
            raise ValueError("lagrangian_kwargs must hold 'beta' to track 'lagrangian'.")
        self.prior_mean = prior_mean
        self.seed = int(seed)
        self.iiw_kwargs = dict(iiw_kwargs or {})
        self.fisher_kwargs = dict(fisher_kwargs or {})
        self.filename = filename
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer_ = TableWriter(self.run_dir / filename)
        frame = self.writer_.frame()
        self.done_epochs_ = (set(frame.loc[frame["seed"] == self.seed, "epoch"].astype(int).tolist())
                             if len(frame) else set())
        self._prior_path = self.run_dir / f"weights_prior_seed{self.seed}.pt"
        self.prior_: dict[str, torch.Tensor] | None = None
        if prior_mean == "init" and self._prior_path.exists():
            self.prior_ = torch.load(self._prior_path, weights_only=True)

    def on_train_begin(self, model: nn.Module) -> None:
        """Snapshot the initial weights when ``prior_mean='init'`` (kept on disk for resume)."""
        if self.prior_mean == "init" and self.prior_ is None:
            self.prior_ = {k: v.cpu() for k, v in snapshot_parameters(model).items()}
            buf = io.BytesIO()
            torch.save(self.prior_, buf)
            atomic_write_bytes(self._prior_path, buf.getvalue())

    def _prior(self, model: nn.Module) -> Any:
        if self.prior_mean == "init":
            if self.prior_ is None:
                raise RuntimeError("prior_mean='init': call tracker.on_train_begin(model) before training.")
            return self.prior_
        if callable(self.prior_mean) and not isinstance(self.prior_mean, nn.Module):
            return self.prior_mean(model)
        return self.prior_mean

    def on_epoch_end(self, epoch: int, model: nn.Module) -> pd.DataFrame | None:
        """Compute and store the scheduled quantities; returns the new rows (None if not scheduled/done)."""
        epoch = int(epoch)
        if epoch not in self.schedule or epoch in self.done_epochs_:
            return None
        rows: list[dict[str, Any]] = []
        if "iiw" in self.quantities:
            rows += iiw(model, self.loss_fn, self.data, prior_mean=self._prior(model), **self.iiw_kwargs).rows()
        if "fisher" in self.quantities:
            rows += fisher(model, self.data, **{"seed": self.seed, **self.fisher_kwargs}).rows()
        if "lagrangian" in self.quantities:
            rows += information_lagrangian(model, self.loss_fn, self.data,
                                           **{"seed": self.seed, **self.lagrangian_kwargs}).rows()
        df = pd.DataFrame(rows)
        df.insert(0, "epoch", epoch)
        df.insert(0, "seed", self.seed)
        df = df[COLUMNS]
        self.writer_.add(df)
        self.writer_.flush()
        self.done_epochs_.add(epoch)
        return df

    def results(self) -> pd.DataFrame:
        """All rows on disk and computed so far (every seed in the file)."""
        return self.writer_.frame().copy()
