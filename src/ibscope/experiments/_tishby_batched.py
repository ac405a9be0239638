"""The 12-bit information plane for many seeds at once (seeds as a batch dimension).

:func:`run_seeds` trains the seeds of one tishby configuration as one
:class:`~ibscope.models.BatchedMLP` through :func:`ibscope.training.fit`:
each seed keeps its own initialization (``make_net(config, ..., seed=s)``), train/test
split and minibatch order (generator ``seed + 1_000_003``), exactly as
:func:`ibscope.experiments._tishby.run_seed` does for one seed, and the
training loss is the sum of the seeds' mean losses, so each seed takes the
step it would take alone (Adam is element-wise). Per-seed rows equal the
one-seed path up to floating-point reassociation in the batched matrix
products (tested). At every snapshot all seeds' layers come from one
forward pass and are estimated with the same per-layer estimators as the
one-seed path.

Resume: the batch directory holds fit's checkpoint (every snapshot) and the
rows estimated so far (``infoplane.parquet``; during a fast run one part per
snapshot under ``infoplane.parts/``, compacted into it at the end); a crashed
run continues from its last snapshot.

Speed (issue 21): the fused Adam kernel, minibatches gathered from the shared
data (:class:`SeedBatches` ``rows``), one forward pass per snapshot for the
layers and the metrics, and fixed-edge binning estimated for all seeds of a
layer at once (:func:`binning_plane_seeds`); ``run_seeds(..., fast=False)``
runs the path before these changes (for side-by-side timing,
benchmarks/batched_seeds.py ``--before``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data import train_test_split
from ..models import BatchedMLP, SeedBatches, batched_cross_entropy
from ..store import PartedTable, TableWriter
from ..tracking import log_schedule
from ..training import Callback, TrainState, fit
from . import check_seeds, torch_threads
from ._tishby_common import logit_metrics, make_net, plane_rows

__all__ = ["binning_plane_seeds", "run_seeds"]

_SHUFFLE_OFFSET = 1_000_003  # the one-seed path's minibatch generator: seed + 1_000_003


def _fast_binning(est: Any) -> bool:
    """Whether ``est`` is a fixed-edge :class:`~ibscope.estimators.Binning` without correction.

    Those are the estimators :func:`binning_plane_seeds` computes for all seeds at once.
    """
    from ..estimators._binning import Binning

    return type(est) is Binning and getattr(est, "_correction", None) == "none"


def binning_plane_seeds(acts: np.ndarray, labels: np.ndarray, est: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(I(X;T), I(T;Y)) of one layer for every seed at once, in ``est.unit``; None when not applicable.

    The same quantities as ``est.plane(acts[s], labels)`` for a fixed-edge
    :class:`~ibscope.estimators.Binning` (plug-in entropies, no correction),
    the plane of Shwartz-Ziv & Tishby [1]_: each row of a seed's layer is
    quantized with the estimator's own bin codes (the arithmetic of
    :func:`~ibscope.estimators.fixed_bin_codes` in float64: the same codes),
    the codes of a row are packed into one integer (mixed radix), the label
    appended, and one sort per layer over all seeds counts the symbols of T
    and of (T, Y).
    I(X;T) = H(T) (a deterministic layer, every input distinct) and
    I(T;Y) = max(H(T) + H(Y) - H(T, Y), 0), as in the one-seed path; the
    values agree with it up to the summation order of the entropies (float
    rounding). Returns None (the caller measures seed by seed) for another
    estimator, for edges from each array's own min and max
    (``value_range=None`` without ``bin_width``), or when a packed code would
    not fit in 62 bits. The estimator's ``flags_`` are those of the seed with
    the highest values (its diagnostic warning, once per run, as seed by seed).

    Parameters
    ----------
    acts : ndarray (S, n, d)
        The layer of every seed on the same n inputs (finite).
    labels : ndarray (n,)
        Integer class labels.
    est : BaseMIEstimator

    References
    ----------
    .. [1] R. Shwartz-Ziv and N. Tishby, "Opening the black box of deep neural
       networks via information", arXiv:1703.00810, 2017.
    """
    from .._units import from_nats
    from .._validation import discrete_symbols
    from ..estimators._binning import fixed_bin_codes
    from ..estimators._discrete import entropy_of_symbols

    if not _fast_binning(est) or acts.ndim != 3:
        return None
    n_seeds, n, d = acts.shape
    if np.shape(labels) != (n,):
        raise ValueError(f"'labels' must have shape ({n},) like the layer's samples; got {np.shape(labels)}.")
    iy, my = discrete_symbols(np.asarray(labels))
    if est.value_range is None and est.bin_width is None or n == 0:
        return None  # own min/max per array: not one quantization for all seeds
    if est.bin_width is None:
        # fixed_bin_codes' arithmetic, in place and kept in float64: floor((t - lo) * (n_bins /
        # (hi - lo))) clipped to [0, n_bins - 1] -- the same codes, as exact small integers
        lo_v, hi_v = (float(v) for v in est.value_range)
        codes = acts.astype(np.float64)
        codes -= lo_v
        codes *= est.n_bins / (hi_v - lo_v)
        np.floor(codes, out=codes)
        np.clip(codes, 0, est.n_bins - 1, out=codes)
    else:
        codes = fixed_bin_codes(acts, bin_width=est.bin_width).astype(np.float64)
    lo = float(codes.min())
    base = int(codes.max() - lo) + 1
    bits = d * math.log2(max(base, 2)) + math.log2(max(my, 2))
    if bits > 62:
        return None
    if lo:
        codes -= lo
    if bits <= 52:  # mixed radix (Horner) in float64: exact below 2**53, any memory layout of acts
        fkey = codes[:, :, d - 1].copy()
        for j in range(d - 2, -1, -1):
            fkey *= base
            fkey += codes[:, :, j]
        key = fkey.astype(np.int64)
    else:
        icodes = codes.astype(np.int64)
        key = np.zeros((n_seeds, n), dtype=np.int64)
        for j in range(d - 1, -1, -1):  # mixed radix: one integer per row of codes
            key *= base
            key += icodes[:, :, j]
    key *= my
    key += iy[None, :]
    joint = np.sort(key, axis=1)

    def entropies(sorted_keys: np.ndarray) -> np.ndarray:
        new = np.ones(sorted_keys.shape, dtype=bool)
        new[:, 1:] = sorted_keys[:, 1:] != sorted_keys[:, :-1]
        starts = np.flatnonzero(new.ravel())
        counts = np.diff(np.append(starts, sorted_keys.size)).astype(np.float64)
        p = counts / n
        h = np.bincount(starts // n, weights=-(p * np.log(p)), minlength=n_seeds)
        return np.maximum(h, 0.0)

    h_ty = entropies(joint)
    h_t = entropies(joint // my)
    h_y = entropy_of_symbols(iy)
    i_ty = np.maximum(h_t + h_y - h_ty, 0.0)
    # the flags the one-seed path records (warned once per run): those of the highest seed
    est._record_flags(est._plane_flags(float(h_t.max()), float(i_ty.max()), n, labels))
    return (np.array([from_nats(float(v), est.unit) for v in h_t]),
            np.array([from_nats(float(v), est.unit) for v in i_ty]))


class _PartTable:
    """The batch's rows in a :class:`~ibscope.store.PartedTable`: one part per snapshot, compacted at the end.

    :class:`~ibscope.store.TableWriter` rewrites its whole file at every
    flush: for 50 seeds x 6 layers x 300 snapshots that is O(snapshots^2)
    (~0.2 s per flush near the end). Here each snapshot's rows are appended
    as one sha256-checked part before fit's checkpoint of that epoch (a crash
    loses nothing; the sidecar lists only finished parts, so nothing is read
    twice) and :meth:`merge` compacts them into ``path`` once. A batch
    directory of an older version (``path`` alone, no sidecar) is read as is.
    """

    def __init__(self, path: Path):
        self._table = PartedTable(path)
        self._frames = [f for f in self._table.frames() if len(f)]
        self._pending: list[dict[str, Any]] = []

    def frame(self) -> pd.DataFrame:
        if len(self._frames) > 1:
            self._frames = [pd.concat(self._frames, ignore_index=True)]
        return self._frames[0] if self._frames else pd.DataFrame()

    def add(self, rows: list[dict[str, Any]]) -> None:
        self._pending += rows

    def flush(self) -> None:
        """Append the rows added since the last flush as one part (one snapshot's rows)."""
        if not self._pending:
            return
        df = pd.DataFrame(self._pending)
        self._pending = []
        self._table.append(df, f"epoch_{int(df['epoch'].min()):09d}")
        self._frames.append(df)

    def merge(self) -> None:
        """Compact every part into ``path`` (the table's sidecar then describes that file)."""
        if self._frames:
            self._table.compact()


class _Snapshots(Callback):
    """Estimate every seed's plane at the scheduled epochs; rows go to one resumable table.

    With ``vectorized`` (default) fixed-edge binning is estimated for all
    seeds of a layer in one pass (:func:`binning_plane_seeds`) and the
    metrics come from one forward pass; other estimators go seed by seed
    through :func:`plane_rows` (the one-seed path's measuring).
    """

    def __init__(self, model: BatchedMLP, seeds: Sequence[int], x_all: torch.Tensor, y_np: np.ndarray,
                 splits: list[Any], ests: dict[tuple[str, str], Any], schedule: Sequence[int],
                 table: TableWriter | _PartTable, unit: str, vectorized: bool = True):
        self.model, self.seeds, self.x_all, self.y_np, self.splits = model, list(seeds), x_all, y_np, splits
        self.ests, self.schedule, self.table, self.unit = ests, set(schedule), table, unit
        self.vectorized = vectorized
        self.y_all = torch.as_tensor(y_np, dtype=torch.int64, device=x_all.device)
        frame = table.frame()
        self.done = set(frame["epoch"].unique().tolist()) if len(frame) else set()

    def _metrics(self, logits: torch.Tensor, i: int) -> tuple[float, float, float, float]:
        split = self.splits[i]
        out: tuple[float, ...] = ()
        for idx in (split.train, split.test):
            idx_t = torch.as_tensor(idx, dtype=torch.int64, device=logits.device)
            out += logit_metrics(logits[i, idx_t], self.y_all[idx_t])
        return out  # type: ignore[return-value]

    def _all_metrics(self, logits: torch.Tensor) -> list[tuple[float, float, float, float]]:
        """Every seed's (train loss, train acc, test loss, test acc) from the (S, n, C) logits."""
        if not self.vectorized:
            return [self._metrics(logits, i) for i in range(len(self.seeds))]
        cols = []
        for part in ("train", "test"):
            sizes = {len(getattr(sp, part)) for sp in self.splits}
            if len(sizes) != 1 or 0 in sizes:  # ragged or empty: seed by seed
                return [self._metrics(logits, i) for i in range(len(self.seeds))]
            idx = torch.as_tensor(np.stack([getattr(sp, part) for sp in self.splits]), dtype=torch.int64,
                                  device=logits.device)
            sel = torch.gather(logits, 1, idx[:, :, None].expand(-1, -1, logits.shape[2]))  # (S, m, C)
            y = self.y_all[idx]
            ce = torch.nn.functional.cross_entropy(sel.transpose(1, 2), y, reduction="none").mean(1)
            acc = (sel.argmax(2) == y).double().mean(1)
            cols += [ce.tolist(), acc.tolist()]
        return [tuple(float(c[i]) for c in cols) for i in range(len(self.seeds))]  # type: ignore[misc]

    def on_epoch_end(self, state: TrainState) -> None:
        epoch = state.epoch
        if epoch not in self.schedule or epoch in self.done:
            return
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            if self.vectorized:  # features-first (S, width, n) buffers, read through (S, n, width) views
                *hidden, z = self.model._hidden(self.x_all)
                outs = {f"hidden{i}": h for i, h in enumerate(hidden, start=1)}
                outs["output"] = torch.softmax(z, dim=1)
                acts = {k: v.cpu().numpy().transpose(0, 2, 1) for k, v in outs.items()}
                logits = z.transpose(1, 2)
            else:
                outs = self.model.layer_outputs(self.x_all, logits=True)
                logits = outs.pop("logits")
                acts = {k: v.cpu().numpy() for k, v in outs.items()}
        self.model.train(was)
        metrics = self._all_metrics(logits)
        rows = self._rows(epoch, acts, metrics) if self.vectorized else None
        if rows is None:
            rows = []
            for i, seed in enumerate(self.seeds):
                rows += plane_rows(seed=seed, epoch=epoch, acts={k: v[i] for k, v in acts.items()},
                                   estimators=self.ests, layer_names=self.model.layer_names, labels=self.y_np,
                                   metrics=metrics[i], unit=self.unit)
        self.table.add(rows)
        self.table.flush()
        self.done.add(epoch)

    def _rows(self, epoch: int, acts: dict[str, np.ndarray], metrics: list[tuple[float, float, float, float]]
              ) -> list[dict[str, Any]] | None:
        """The rows of :func:`plane_rows` (same columns and order) with binning vectorized over seeds.

        None when an estimator has no vectorized path. ``seconds`` is each
        row's share of its layer's time.
        """
        if not all(_fast_binning(e) for e in self.ests.values()):
            return None
        names = list(self.model.layer_names)
        values = {}
        for (name, layer), est in self.ests.items():
            t0 = time.perf_counter()
            a = acts[layer]
            if not np.isfinite(a).all():
                bad = int(np.flatnonzero(~np.isfinite(a).reshape(a.shape[0], -1).all(1))[0])
                raise FloatingPointError(f"Layer '{layer}' of seed {self.seeds[bad]} has NaN or infinite "
                                         f"activations at epoch {epoch}; lower the learning rate or check the "
                                         f"inputs.")
            res = binning_plane_seeds(a, self.y_np, est)
            if res is None:
                return None
            values[name, layer] = (*res, (time.perf_counter() - t0) / len(self.seeds))
        rows = []
        for i, seed in enumerate(self.seeds):
            tr_loss, tr_acc, te_loss, te_acc = metrics[i]
            for (name, layer), (i_xt, i_ty, sec) in values.items():
                rows.append({"seed": seed, "epoch": epoch, "layer": layer, "layer_index": names.index(layer) + 1,
                             "estimator": name, "i_xt": float(i_xt[i]), "i_ty": float(i_ty[i]), "unit": self.unit,
                             "train_loss": tr_loss, "train_acc": tr_acc, "test_loss": te_loss, "test_acc": te_acc,
                             "seconds": sec})
        return rows


def run_seeds(config: Any, seeds: Sequence[int], out_dir: str | Path, *, load_data: Callable[[Any], Any],
              layer_estimator: Callable[..., Any], progress: bool = False, fast: bool = True
              ) -> dict[int, pd.DataFrame]:
    """Train the tishby ``config`` for every seed in ``seeds`` as one batched network.

    Returns ``{seed: rows}`` with the columns and order of
    :func:`ibscope.experiments._tishby.run_seed`. ``out_dir`` holds the
    batch's checkpoint and partial table (resume after a crash).
    ``load_data(config) -> (x, y)`` and ``layer_estimator(name, params,
    activation, unit)`` are the tishby experiment's own (it passes them, so
    this module does not import it).

    ``fast=True`` (default, issue 21) uses the fused Adam kernel, gathers each
    epoch's minibatches from the shared data (:class:`SeedBatches` ``rows``)
    and estimates fixed-edge binning for all seeds of a layer at once
    (:func:`binning_plane_seeds`); ``fast=False`` is the path before it
    (``foreach`` Adam, per-seed copies of the data, seed-by-seed
    estimation), kept for side-by-side timing. Both give the one-seed
    path's rows up to float rounding.
    """
    config.validate()
    seeds = check_seeds(seeds)
    with torch_threads(config.torch_threads):
        return _run(config, seeds, Path(out_dir), load_data=load_data, layer_estimator=layer_estimator,
                    progress=progress, fast=fast)


def _run(config: Any, seeds: list[int], out: Path, *, load_data: Callable[[Any], Any],
         layer_estimator: Callable[..., Any], progress: bool, fast: bool = True) -> dict[int, pd.DataFrame]:
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if config.device == "auto" else config.device))
    x_np, y_np = load_data(config)
    splits = [train_test_split(len(y_np), train_fraction=config.train_fraction, seed=s, stratify=y_np)
              for s in seeds]
    x_all = torch.as_tensor(x_np, dtype=torch.float32, device=device)
    y_all = torch.as_tensor(y_np, dtype=torch.int64, device=device)
    rows = torch.as_tensor(np.stack([sp.train for sp in splits]), dtype=torch.int64, device=device) \
        if fast and len({len(sp.train) for sp in splits}) == 1 else None
    nets = [make_net(config, x_np.shape[1], s) for s in seeds]
    model = BatchedMLP(nets).to(device)
    # fused: one kernel per parameter for the whole Adam update (~3x faster than foreach on the
    # 12-bit network's 14 small tensors on CPU); foreach: one multi-tensor kernel per Adam
    # operation. Both are the same element-wise update as the one-seed path's Adam.
    kind = {"fused": True} if fast else {"foreach": True}
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, **kind)
    schedule = log_schedule(config.epochs, config.n_snapshots)
    ests = {(name, layer): layer_estimator(name, params, model.layer_activations[layer], config.unit)
            for name, params in config.estimators.items() for layer in model.layer_names
            if config.layers is None or layer in config.layers}
    table = _PartTable(out / "infoplane.parquet") if fast else TableWriter(out / "infoplane.parquet")
    snaps = _Snapshots(model, seeds, x_all, y_np, splits, ests, schedule, table, config.unit, vectorized=fast)
    shuffle = [s + _SHUFFLE_OFFSET for s in seeds]
    if rows is not None:  # each seed's training rows of the shared data, gathered per epoch
        data = SeedBatches(x_all, y_all, config.batch_size, shuffle, rows=rows)
    else:
        xs = torch.stack([x_all[torch.as_tensor(sp.train, device=device)] for sp in splits])
        ys = torch.stack([y_all[torch.as_tensor(sp.train, device=device)] for sp in splits])
        data = SeedBatches(xs, ys, config.batch_size, shuffle)
    fit(model, batched_cross_entropy, data, opt, epochs=config.epochs, callbacks=[snaps], checkpoint_dir=out,
        checkpoint_every=schedule, progress=progress, desc=f"{len(seeds)} seeds")
    if isinstance(table, _PartTable):
        table.merge()
    frame = table.frame()
    return {s: frame[frame["seed"] == s].sort_values(["epoch", "estimator", "layer_index"]).reset_index(drop=True)
            for s in seeds}
