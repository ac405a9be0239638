"""IIW runs of many seeds at once: the seeds' MLPs trained as one batched network.

:func:`run_seeds` trains the seeds of one iiw configuration as one
:class:`~ibscope.models.BatchedMLP` through :func:`ibscope.training.fit`, and
the held-out priors (``prior="heldout"`` or ``"both"``) as a second one. Each
seed keeps what :func:`ibscope.experiments._iiw.run_seed` gives it alone: its
data split, label noise, initialization (``_model(cfg, ..., seed)``), its SGD
minibatch stream (an :class:`~ibscope.experiments._iiw._IterationBatches`
seeded ``seed``, the prior's ``seed + 7``) and its IIW examples. The training
loss is the sum of the seeds' mean cross entropies, so SGD with momentum (an
element-wise update) takes for each seed the step it takes alone. At every
tracked iteration each seed's network is taken out of the batch
(:meth:`~ibscope.models.BatchedMLP.unbatch`) and measured by the same
:func:`ibscope.weights.iiw` call as in the one-seed path, so the rows equal
the one-seed path's up to floating-point reassociation in the batched matrix
products (tested).

The per-seed IIW estimates (per-example gradients) are not batched: they run
seed after seed on the unbatched copies. Batching pays for the training, the
part that a small MLP spends in per-call overhead.

Resume: ``out_dir`` holds fit's checkpoint (written at every tracked
iteration, with the priors and the rows so far); a crashed batch continues
from its last tracked iteration.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..store import config_hash
from ..training import BatchLoss, fit

__all__ = ["run_seeds"]


class _SeedIterationBatches:
    """The seeds' iteration streams drawn together: the k-th batches stacked ``(S, b, ...)``."""

    def __init__(self, streams: Sequence[Any]):
        self.streams = list(streams)
        self.segments = self.streams[0].segments

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batches in zip(*self.streams, strict=True):
            yield torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])

    def state_dict(self) -> dict[str, Any]:
        return {"streams": [s.state_dict() for s in self.streams]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["streams"]) != len(self.streams):
            raise ValueError("The iiw batch checkpoint holds another number of seeds.")
        for s, st in zip(self.streams, state["streams"], strict=True):
            s.load_state_dict(st)


def _batched_sgd(model: nn.Module, data: _SeedIterationBatches, cfg: Any, **kwargs: Any) -> Any:
    from ..models import batched_cross_entropy

    loss = BatchLoss(lambda m, b: batched_cross_entropy(m(b[0]), b[1]))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    return fit(model, loss, data, opt, epochs=len(data.segments), **kwargs)


def run_seeds(config: Any, seeds: Sequence[int], out_dir: str | Path, *, progress: bool = False
              ) -> dict[int, pd.DataFrame]:
    """Train the iiw ``config`` for every seed in ``seeds`` as one batched network.

    Returns ``{seed: rows}`` with the rows of
    :func:`ibscope.experiments._iiw.run_seed`. ``out_dir`` holds the batch's
    checkpoint (resume after a crash). Seeds whose data sets differ in size
    (not the case for digits or MNIST-8k/2k) run one after another instead.
    """
    from . import _iiw, check_seeds, torch_threads

    cfg = _iiw._config(config)
    cfg.validate()
    seeds = check_seeds(seeds)
    with torch_threads(cfg.torch_threads):
        return _run(cfg, seeds, Path(out_dir), progress=progress)


def _run(cfg: Any, seeds: list[int], out: Path, *, progress: bool) -> dict[int, pd.DataFrame]:
    from ..models import BatchedMLP
    from ..weights import snapshot_parameters
    from . import _iiw

    out.mkdir(parents=True, exist_ok=True)
    data = [_iiw._load(cfg, s) for s in seeds]
    keys = [k for k in ("x_train", "x_test", "x_prior") if k in data[0]]
    if any(d[k].shape != data[0][k].shape for d in data for k in keys):
        return {s: _iiw._run_seed(cfg, s, out / f"seed_{s}", progress=progress) for s in seeds}
    chash = _iiw._hash(cfg)
    xs = [torch.as_tensor(d["x_train"]) for d in data]
    ys = [torch.as_tensor(d["y_train"]) for d in data]
    tests = [(torch.as_tensor(d["x_test"]), torch.as_tensor(d["y_test"])) for d in data]
    in_features, n_train = int(xs[0].shape[1]), int(xs[0].shape[0])
    model = BatchedMLP([_iiw._model(cfg, in_features, s) for s in seeds])
    evals = _iiw._eval_points(cfg)
    segments = list(np.diff(evals).astype(int).tolist())
    batches = _SeedIterationBatches([_iiw._IterationBatches(x, y, cfg.batch_size, s, segments)
                                     for x, y, s in zip(xs, ys, seeds, strict=True)])
    iiw_data = [_iiw._iiw_examples(x, y, cfg, s) for x, y, s in zip(xs, ys, seeds, strict=True)]
    rows_of = {s: _iiw._row_maker(cfg, s, n_train, chash) for s in seeds}

    def make_prior() -> dict[str, dict[str, dict[str, torch.Tensor]]]:
        """Per seed (str key), the prior mean per IIW quantity, as the one-seed path's ``make_prior``."""
        priors: dict[str, dict[str, dict[str, torch.Tensor]]] = {str(s): {} for s in seeds}
        if cfg.prior in ("heldout", "both"):
            pm = BatchedMLP([_iiw._model(cfg, in_features, s) for s in seeds])
            streams = [_iiw._IterationBatches(torch.as_tensor(d["x_prior"]), torch.as_tensor(d["y_prior"]),
                                              cfg.batch_size, s + 7, [cfg.iterations])
                       for d, s in zip(data, seeds, strict=True)]
            _batched_sgd(pm, _SeedIterationBatches(streams), cfg, progress=False)
            for i, s in enumerate(seeds):
                priors[str(s)]["iiw"] = snapshot_parameters(pm.unbatch(i))
        if cfg.prior in ("init", "both"):
            for i, s in enumerate(seeds):
                priors[str(s)]["iiw" if cfg.prior == "init" else "iiw_init"] = snapshot_parameters(model.unbatch(i))
        return priors

    def evaluate(it: int, priors: dict[str, dict[str, dict[str, torch.Tensor]]]) -> list[dict[str, Any]]:
        return [r for i, s in enumerate(seeds)
                for r in _iiw.tracked_rows(model.unbatch(i), priors[str(s)], iiw_data[i], (xs[i], ys[i]), tests[i],
                                           rows_of[s], it)]

    # the checkpoint belongs to these seeds of this configuration
    tracker = _iiw._Tracker(evaluate, evals, make_prior, config_hash({"config_hash": chash, "seeds": seeds}))
    _batched_sgd(model, batches, cfg, callbacks=[tracker], checkpoint_dir=out,
                 **({"progress": True, "desc": f"iiw {len(seeds)} seeds"} if progress else {"progress": False}))
    assert tracker.prior is not None
    return {s: _iiw.final_frame([r for r in tracker.rows if r["seed"] == s], list(tracker.prior[str(s)]),
                                rows_of[s], s) for s in seeds}
