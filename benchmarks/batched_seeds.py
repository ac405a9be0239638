"""The 12-bit paper run with seeds as a batch dimension vs the one-seed path, side by side.

    PYTHONPATH=src python benchmarks/batched_seeds.py --seeds 50 --epochs 8000 --snapshots 300 --reference-seeds 2

Both paths use the paper's setup (12-10-7-5-4-3-2 tanh, Adam 4e-4, batch 512,
80% training data, binning with 30 bins over (-1, 1), every layer) at the
given epochs and snapshots, the one-seed path on one torch thread (as the sweeps run it), the batched
path on ``--threads``. The
batched path trains all ``--seeds`` seeds as one network; the one-seed path
runs ``--reference-seeds`` seeds one after another and its time is also
scaled to ``--seeds`` seeds (stated as such in the table). The per-seed rows
of the seeds both paths ran are compared (max |difference| in bits).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def both_paths(mod, cfg, seeds: list[int], reference_seeds: int, batched_threads: int | None = None):
    """Time the one-seed path on the first ``reference_seeds`` seeds and ``run_seeds`` on all of them.

    Returns ``(single rows {seed: frame}, seconds, batched rows {seed: frame}, seconds)``;
    ``batched_threads`` (if given) becomes the config's ``torch_threads`` for the batched path.
    """
    import copy

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        single = {s: mod.run_seed(cfg, s, f"{d}/seed_{s}") for s in seeds[:reference_seeds]}
        t_single = time.perf_counter() - t0
        if batched_threads is not None:
            cfg = copy.copy(cfg)
            cfg.torch_threads = batched_threads
        t0 = time.perf_counter()
        batched = mod.run_seeds(cfg, seeds, f"{d}/batch")
        t_batched = time.perf_counter() - t0
    return single, t_single, batched, t_batched


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--epochs", type=int, default=8000)
    p.add_argument("--snapshots", type=int, default=300)
    p.add_argument("--reference-seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the batched path (the one-seed "
                   "path always runs on one thread, its fastest for this tiny network)")
    a = p.parse_args()

    import torch

    from ibscope.experiments import _tishby
    from ibscope.experiments.runner import resolve_config

    torch.set_num_threads(1)
    cfg = resolve_config("tishby", overrides={"epochs": a.epochs, "n_snapshots": a.snapshots,
                                              "estimators": {"binning": {"n_bins": 30}},
                                              "keep_activations": False})
    single, t_single, batched, t_batched = both_paths(_tishby, cfg, list(range(a.seeds)), a.reference_seeds,
                                                      a.threads)
    diff = max(float(np.abs(batched[s][c].to_numpy() - single[s][c].to_numpy()).max())
               for s in single for c in ("i_xt", "i_ty"))
    per_seed = t_single / a.reference_seeds
    rows = [("one-seed path (measured)", a.reference_seeds, t_single),
            ("one-seed path (scaled to all seeds)", a.seeds, per_seed * a.seeds),
            (f"batched seeds (measured, {a.threads} thread{'s' if a.threads > 1 else ''})", a.seeds, t_batched)]
    print(f"12-bit paper setup: {a.epochs} epochs, {len(_tishby.log_schedule(a.epochs, a.snapshots))} snapshots, "
          f"6 layers, binning (30 bins)")
    print(f"{'path':40s} {'seeds':>6s} {'seconds':>9s} {'minutes':>8s}")
    for name, n, t in rows:
        print(f"{name:40s} {n:6d} {t:9.1f} {t / 60:8.2f}")
    print(f"speed-up (scaled one-seed / batched): {per_seed * a.seeds / t_batched:.1f}x")
    print(f"max |batched - one-seed| over the common seeds' rows: {diff:.3g} bits")


if __name__ == "__main__":
    main()
