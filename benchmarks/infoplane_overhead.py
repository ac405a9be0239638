"""Cost of recording + estimating the information plane, relative to training alone.

Runs the 12-bit experiment (paper network, Adam 4e-4, batch 512) twice in one
process with the same seed:

1. training alone (only the two snapshots the runner always takes: epoch 0
   and the last, with the cheapest estimator), and
2. training + recording all layers on all 4096 inputs + binning estimation at
   every one of the ~300 log-spaced snapshots (what the paper does),
   including the atomic checkpoint and results writes at every snapshot.

It prints wall-clock and CPU time of both and the overhead. Target: less than
25% over training alone. CPU time is the robust figure on a busy machine.

    python benchmarks/infoplane_overhead.py                 # 8000 epochs, 300 snapshots (paper)
    python benchmarks/infoplane_overhead.py --epochs 2000   # a quarter of the epochs, same snapshots
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from ibscope.experiments._tishby import Config, run_seed


def timed(cfg: Config, seed: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        w, c = time.perf_counter(), time.process_time()
        run_seed(cfg, seed, d)
        return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=8000)
    p.add_argument("--snapshots", type=int, default=300)
    p.add_argument("--estimators", nargs="+", default=["binning"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    base = dict(epochs=a.epochs, keep_activations=False)
    train_only = Config(n_snapshots=2, estimators={"binning": {}}, **base)
    full = Config(n_snapshots=a.snapshots, estimators={e: {} for e in a.estimators}, **base)
    timed(Config(epochs=5, n_snapshots=2, keep_activations=False), a.seed)  # warm-up (imports, allocator)
    tw, tc = timed(train_only, a.seed)
    fw, fc = timed(full, a.seed)
    n_snap = len(__import__("ibscope.tracking", fromlist=["log_schedule"]).log_schedule(a.epochs, a.snapshots))
    print(f"12-bit task, 12-10-7-5-4-3-2 tanh, Adam 4e-4, batch 512, {a.epochs} epochs, torch threads {a.threads}")
    print(f"{'run':<44} {'wall s':>8} {'cpu s':>8}")
    print(f"{'training alone (2 snapshots)':<44} {tw:8.1f} {tc:8.1f}")
    label = f"training + {n_snap} snapshots x {'+'.join(a.estimators)}"
    print(f"{label:<44} {fw:8.1f} {fc:8.1f}")
    print(f"{'overhead of recording + estimation':<44} {100 * (fw / tw - 1):7.1f}% {100 * (fc / tc - 1):7.1f}%")


if __name__ == "__main__":
    main()
