"""Sweep benchmark: a process pool vs the same tasks one after another, and driver memory.

1. Speed-up: a sweep of ``--tasks`` tishby tasks (12-bit task, 12-10-7-5-4-3-2
   tanh network, ``--epochs`` epochs, binning) run (a) one after another in
   this process (``workers=0``, torch/BLAS on one thread) and (b) with the
   local executor on ``--workers`` processes (one thread each). Both go
   through the same store, so the ratio is the executor's alone; pool start-up
   (spawning workers, importing torch) is included in (b).
2. Driver memory: sweeps of ``--memory-tasks`` tiny tasks (2 epochs) on the
   local executor, each in a fresh process; the peak RSS of that driver process
   (``ru_maxrss`` of the process itself, workers excluded) must not grow with
   the number of tasks (bounded in-flight submission, streamed compaction).

Usage::

    PYTHONPATH=src python benchmarks/sweep.py                 # 16 tasks, 2 workers
    PYTHONPATH=src python benchmarks/sweep.py --tasks 16 --workers 2 --epochs 400 --memory-tasks 16 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from ibscope.sweep import SweepSpec, run_sweep  # noqa: E402
from ibscope.sweep._task import limit_threads  # noqa: E402


def spec(n_tasks: int, epochs: int, n_snapshots: int) -> SweepSpec:
    # 4 grid points (2 activations x 2 learning rates) x n_tasks/4 seeds
    seeds = max(1, n_tasks // 4)
    return SweepSpec("tishby", config={"epochs": epochs, "n_snapshots": n_snapshots, "batch_size": 256,
                                       "estimators": {"binning": {"n_bins": 30}}, "keep_activations": False},
                     grid={"activation": ["tanh", "relu"], "lr": [0.0004, 0.001]}, seeds=seeds)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def memory_child(n_tasks: int, workers: int, out: str) -> None:
    limit_threads(1)
    before = peak_rss_mib()
    t0 = time.perf_counter()
    res = run_sweep(spec(n_tasks, 2, 2), out, workers=workers, progress=False, report=False)
    assert res.ok and len(res.done) == n_tasks, res
    print(json.dumps({"tasks": n_tasks, "rss_before_mib": before, "rss_peak_mib": peak_rss_mib(),
                      "seconds": time.perf_counter() - t0}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--snapshots", type=int, default=10)
    ap.add_argument("--memory-tasks", type=int, nargs="*", default=[16, 64])
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--_memory-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._memory_child:
        memory_child(args._memory_child, args.workers, args._out)
        return

    print(f"# sweep benchmark: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_speed:
            limit_threads(1)
            s = spec(args.tasks, args.epochs, args.snapshots)
            n = len(s.seeds) * 4
            t0 = time.perf_counter()
            r1 = run_sweep(s, Path(tmp) / "serial", workers=0, progress=False, report=False)
            serial = time.perf_counter() - t0
            t0 = time.perf_counter()
            r2 = run_sweep(s, Path(tmp) / "pool", workers=args.workers, progress=False, report=False)
            pool = time.perf_counter() - t0
            assert r1.ok and r2.ok and len(r1.done) == len(r2.done) == n
            print(f"\n## Speed-up ({n} tasks, {args.epochs} epochs, {args.snapshots} snapshots each)\n")
            print("| executor | workers | wall time (s) | per task (s) | speed-up |")
            print("|---|---|---|---|---|")
            print(f"| one after another, one process | 1 | {serial:.1f} | {serial / n:.2f} | 1.00x |")
            print(f"| local process pool | {args.workers} | {pool:.1f} | {pool / n:.2f} | {serial / pool:.2f}x |")
        if args.memory_tasks:
            print(f"\n## Driver peak memory (local executor, {args.workers} workers, tiny tasks)\n")
            print("| tasks | driver RSS after imports (MiB) | driver peak RSS (MiB) | wall time (s) |")
            print("|---|---|---|---|")
            for k in args.memory_tasks:
                out = subprocess.run([sys.executable, __file__, "--_memory-child", str(k), "--workers",
                                      str(args.workers), "--_out", str(Path(tmp) / f"mem{k}")],
                                     check=True, capture_output=True, text=True)
                rec = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {rec['tasks']} | {rec['rss_before_mib']:.0f} | {rec['rss_peak_mib']:.0f} | "
                      f"{rec['seconds']:.1f} |")
    print(f"\n# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
