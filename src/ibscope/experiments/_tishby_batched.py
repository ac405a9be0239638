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
rows estimated so far; a crashed run continues from its last snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data import train_test_split
from ..models import BatchedMLP, SeedBatches, batched_cross_entropy
from ..store import TableWriter
from ..tracking import log_schedule
from ..training import Callback, TrainState, fit
from . import check_seeds, torch_threads
from ._tishby_common import logit_metrics, make_net, plane_rows

__all__ = ["run_seeds"]

_SHUFFLE_OFFSET = 1_000_003  # the one-seed path's minibatch generator: seed + 1_000_003


class _Snapshots(Callback):
    """Estimate every seed's plane at the scheduled epochs; rows go to one resumable table."""

    def __init__(self, model: BatchedMLP, seeds: Sequence[int], x_all: torch.Tensor, y_np: np.ndarray,
                 splits: list[Any], ests: dict[tuple[str, str], Any], schedule: Sequence[int], table: TableWriter,
                 unit: str):
        self.model, self.seeds, self.x_all, self.y_np, self.splits = model, list(seeds), x_all, y_np, splits
        self.ests, self.schedule, self.table, self.unit = ests, set(schedule), table, unit
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

    def on_epoch_end(self, state: TrainState) -> None:
        epoch = state.epoch
        if epoch not in self.schedule or epoch in self.done:
            return
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            acts = {k: v.cpu().numpy() for k, v in self.model.layer_outputs(self.x_all).items()}
            logits = self.model(self.x_all)
        self.model.train(was)
        rows = []
        for i, seed in enumerate(self.seeds):
            rows += plane_rows(seed=seed, epoch=epoch, acts={k: v[i] for k, v in acts.items()}, estimators=self.ests,
                               layer_names=self.model.layer_names, labels=self.y_np,
                               metrics=self._metrics(logits, i), unit=self.unit)
        self.table.add(rows)
        self.table.flush()
        self.done.add(epoch)


def run_seeds(config: Any, seeds: Sequence[int], out_dir: str | Path, *, load_data: Callable[[Any], Any],
              layer_estimator: Callable[..., Any], progress: bool = False) -> dict[int, pd.DataFrame]:
    """Train the tishby ``config`` for every seed in ``seeds`` as one batched network.

    Returns ``{seed: rows}`` with the columns and order of
    :func:`ibscope.experiments._tishby.run_seed`. ``out_dir`` holds the
    batch's checkpoint and partial table (resume after a crash).
    ``load_data(config) -> (x, y)`` and ``layer_estimator(name, params,
    activation, unit)`` are the tishby experiment's own (it passes them, so
    this module does not import it).
    """
    config.validate()
    seeds = check_seeds(seeds)
    with torch_threads(config.torch_threads):
        return _run(config, seeds, Path(out_dir), load_data=load_data, layer_estimator=layer_estimator,
                    progress=progress)


def _run(config: Any, seeds: list[int], out: Path, *, load_data: Callable[[Any], Any],
         layer_estimator: Callable[..., Any], progress: bool) -> dict[int, pd.DataFrame]:
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if config.device == "auto" else config.device))
    x_np, y_np = load_data(config)
    splits = [train_test_split(len(y_np), train_fraction=config.train_fraction, seed=s, stratify=y_np)
              for s in seeds]
    x_all = torch.as_tensor(x_np, dtype=torch.float32, device=device)
    y_all = torch.as_tensor(y_np, dtype=torch.int64, device=device)
    xs = torch.stack([x_all[torch.as_tensor(sp.train, device=device)] for sp in splits])
    ys = torch.stack([y_all[torch.as_tensor(sp.train, device=device)] for sp in splits])
    nets = [make_net(config, x_np.shape[1], s) for s in seeds]
    model = BatchedMLP(nets).to(device)
    # foreach: one multi-tensor kernel per Adam operation instead of one per parameter (the
    # same element-wise update; on CPU torch otherwise loops over the 14 parameters)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    schedule = log_schedule(config.epochs, config.n_snapshots)
    ests = {(name, layer): layer_estimator(name, params, model.layer_activations[layer], config.unit)
            for name, params in config.estimators.items() for layer in model.layer_names
            if config.layers is None or layer in config.layers}
    table = TableWriter(out / "infoplane.parquet")
    snaps = _Snapshots(model, seeds, x_all, y_np, splits, ests, schedule, table, config.unit)
    data = SeedBatches(xs, ys, config.batch_size, [s + _SHUFFLE_OFFSET for s in seeds])
    fit(model, batched_cross_entropy, data, opt, epochs=config.epochs, callbacks=[snaps], checkpoint_dir=out,
        checkpoint_every=schedule, progress=progress, desc=f"{len(seeds)} seeds")
    frame = table.frame()
    return {s: frame[frame["seed"] == s].sort_values(["epoch", "estimator", "layer_index"]).reset_index(drop=True)
            for s in seeds}
