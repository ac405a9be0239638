"""Information-Lagrangian runs of many seeds at once: the seeds' MLPs trained as one batched network.

:func:`run_seeds` trains the seeds of one lagrangian configuration as one
:class:`~ibscope.models.BatchedMLP` through :func:`ibscope.training.fit`.
Each seed keeps what :func:`ibscope.experiments._lagrangian.run_seed` gives
it alone: its data (split, subset, label noise, nuisance), its
initialization (``_model(cfg, seed)``) and its minibatch order
(:class:`~ibscope.models.SeedBatches` draws what fit's ``TensorBatches``
with ``seed`` draws). The training loss is the sum of the seeds' mean cross
entropies, so SGD with momentum and weight decay (element-wise updates)
takes for each seed the step it takes alone. Each trained seed is then taken
out of the batch (:meth:`~ibscope.models.BatchedMLP.unbatch`) and measured
by the one-seed path's own :func:`~ibscope.experiments._lagrangian.measure`
(the Lagrangian's noise fit, accuracies, nuisance information), so its rows
equal the one-seed path's up to floating-point reassociation in the batched
matrix products (tested).

The noise fits are not batched: they run seed after seed on the unbatched
copies. Resume: ``out_dir`` holds fit's checkpoint and every measured seed's
rows (``seed_<s>.parquet``, written atomically), so a crashed batch neither
retrains nor re-measures what it finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..store import atomic_write_parquet
from ..training import BatchLoss, fit

__all__ = ["run_seeds"]


def run_seeds(config: Any, seeds: Sequence[int], out_dir: str | Path, *, progress: bool = False
              ) -> dict[int, pd.DataFrame]:
    """Train the lagrangian ``config`` for every seed in ``seeds`` as one batched network.

    Returns ``{seed: rows}`` with the rows of
    :func:`ibscope.experiments._lagrangian.run_seed`. ``out_dir`` holds the
    batch's checkpoint and measured seeds (resume after a crash).
    """
    from . import _lagrangian, check_seeds, torch_threads

    cfg = _lagrangian._config(config)
    cfg.validate()
    seeds = check_seeds(seeds)
    with torch_threads(cfg.torch_threads):
        return _run(cfg, seeds, Path(out_dir), progress=progress)


def _run(cfg: Any, seeds: list[int], out: Path, *, progress: bool) -> dict[int, pd.DataFrame]:
    from ..models import BatchedMLP, SeedBatches, batched_cross_entropy
    from . import _lagrangian

    out.mkdir(parents=True, exist_ok=True)
    chash = _lagrangian._hash(cfg)
    done: dict[int, pd.DataFrame] = {}
    for s in seeds:
        path = out / f"seed_{s}.parquet"
        if path.exists():
            df = pd.read_parquet(path)
            if not len(df) or str(df["config_hash"].iloc[0]) != chash:
                raise ValueError(f"'{path}' belongs to another configuration; delete it or use another out_dir.")
            done[s] = df
    if len(done) == len(seeds):
        return done
    data = [_lagrangian._load(cfg, s) for s in seeds]
    if any(d["x_train"].shape != data[0]["x_train"].shape for d in data):  # not for digits: equal splits
        return {s: _lagrangian._run_seed(cfg, s, out / f"seed_{s}", progress=progress) for s in seeds}
    xs = torch.stack([torch.as_tensor(d["x_train"]) for d in data])
    ys = torch.stack([torch.as_tensor(d["y_train"]) for d in data])
    model = BatchedMLP([_lagrangian._model(cfg, s) for s in seeds])
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loss = BatchLoss(lambda m, b: batched_cross_entropy(m(b[0]), b[1]))
    fit(model, loss, SeedBatches(xs, ys, cfg.batch_size, seeds), opt, epochs=cfg.epochs, checkpoint_dir=out,
        checkpoint_every=max(1, cfg.epochs // 4), progress=progress, desc=f"lagrangian {len(seeds)} seeds")
    for i, (s, d) in enumerate(zip(seeds, data, strict=True)):
        if s not in done:
            torch.manual_seed(s)  # as the one-seed path seeds torch's global generator for its seed
            done[s] = _lagrangian.measure(cfg, s, model.unbatch(i), d)
            atomic_write_parquet(out / f"seed_{s}.parquet", done[s])
    return {s: done[s] for s in seeds}
