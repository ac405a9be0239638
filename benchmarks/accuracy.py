"""Accuracy of every registered estimator on every ground-truth task.

For each estimator x task x sample size the estimate (bits) is compared with
the task's true MI and timed. Combinations an estimator does not support
(e.g. KDE bounds on two continuous variables, KSG on two discrete ones) are
shown as ``n/a``; errors and timeouts are recorded in the table instead of
stopping the run. Each cell runs in a forked child process with a time limit.

Results go to a CSV (``--out``, rewritten atomically after every cell); a
rerun with the same file skips the cells already there (resumable), so the
table can be built in several sessions. The Markdown tables are printed at
the end (``--table-only`` prints them from the CSV without running).

Usage::

    PYTHONPATH=src python benchmarks/accuracy.py            # full grid, n = 1k, 5k, 10k
    PYTHONPATH=src python benchmarks/accuracy.py --quick    # n = 1k, fewer tasks
    PYTHONPATH=src python benchmarks/accuracy.py --estimators ksg,renyi --sizes 1000

Estimator settings are the library defaults except those in ``SETTINGS``
(printed with the tables).
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from ibscope import estimators, tasks
from ibscope.estimators.base import CONTINUOUS, DISCRETE


# --------------------------------------------------------------------------- #
# Two layer-like tasks kept local to the benchmark
# --------------------------------------------------------------------------- #
class _LayerTask:
    """Base of the two layer-like tasks below (same interface as ibscope.tasks)."""

    discrete_x = discrete_y = False

    def sample(self, n: int, seed=None):
        return self._sample(n, np.random.default_rng(seed))


class SaturatedTanh(_LayerTask):
    """x -> tanh(gain * x) per coordinate of a gaussian_split pair (a saturating tanh layer).

    tanh is strictly increasing, so the MI is that of the base task; with
    gain 4 most values lie within 1e-3 of +-1 (they pile up near saturation).
    """

    def __init__(self, dim: int = 2, mi: float = 1.0, gain: float = 4.0):
        self.base = tasks.get("gaussian_split", dim=dim, mi=mi)
        self.gain = gain
        self.name = f"tanh({self.gain:g} * {self.base.name})"
        self.mutual_information = self.base.mutual_information

    def _sample(self, n, rng):
        x, y = self.base.sample(n, seed=int(rng.integers(2**31)))
        return np.tanh(self.gain * x), y


class ReLUGaussian(_LayerTask):
    """x -> max(x, 0) of a standard bivariate normal pair with correlation rho (a ReLU unit).

    Half of the x values are exactly 0 (a point mass), the way ReLU layers
    look. Ground truth by quadrature, in nats:
    I = int_0^inf phi(x) KL(N(rho x, 1 - rho^2) || N(0, 1)) dx
        + 1/2 KL(p(y | X <= 0) || N(0, 1)),
    with p(y | X <= 0) = 2 phi(y) Phi(-rho y / sqrt(1 - rho^2)) (skew normal).
    """

    def __init__(self, rho: float = 0.8):
        from scipy import integrate, special, stats

        self.rho = rho
        s2 = 1 - rho**2
        kl_cont = integrate.quad(
            lambda x: stats.norm.pdf(x) * 0.5 * (s2 + rho**2 * x**2 - 1 - np.log(s2)), 0, np.inf)[0]
        a = -rho / np.sqrt(s2)
        def integrand(y):
            log_cdf = special.log_ndtr(a * y)
            return 2 * np.exp(stats.norm.logpdf(y) + log_cdf) * (np.log(2) + log_cdf)

        kl_zero = integrate.quad(integrand, -np.inf, np.inf)[0]
        self.mutual_information = (kl_cont + 0.5 * kl_zero) / np.log(2)
        self.name = f"relu(bivariate normal, rho={rho:g})"

    def _sample(self, n, rng):
        x = rng.standard_normal(n)
        y = self.rho * x + np.sqrt(1 - self.rho**2) * rng.standard_normal(n)
        return np.maximum(x, 0.0)[:, None], y[:, None]


_LOCAL = {"tanh_saturated": SaturatedTanh, "relu_gaussian": ReLUGaussian}


def get_task(name: str, **params):
    return _LOCAL[name](**params) if name in _LOCAL else tasks.get(name, **params)


# (label, task name, params): continuous pairs, labelled (continuous x, discrete y), discrete pair
TASKS = [
    ("gs-1d", "gaussian_split", dict(dim=1, mi=1.0)),
    ("gs-5d", "gaussian_split", dict(dim=5, mi=2.0)),
    ("sparse-3d", "gaussian_sparse", dict(dim_x=3, dim_y=3, rho=0.8, n_interacting=1)),
    ("student-2d", "student_t", dict(dim=2, dof=3.0, rho=0.5)),
    ("asinh-2d", "asinh", dict(base="gaussian_split", dim=2, mi=1.0)),
    ("halfcube-2d", "half_cube", dict(base="gaussian_split", dim=2, mi=1.0)),
    ("spiral-2d", "spiral", dict(base="gaussian_split", dim=2, mi=1.0)),
    ("tanh-2d", "tanh_saturated", dict(dim=2, mi=1.0, gain=4.0)),
    ("relu-1d", "relu_gaussian", dict(rho=0.8)),
    ("blobs-256d", "blobs_image", dict(latent_dim=2, mi=1.0)),
    ("labels-3c-2d", "mixture_labels", dict(n_classes=3, dim=2, separation=2.0)),
    ("labels-10c-8d", "mixture_labels", dict(n_classes=10, dim=8, separation=2.0)),
    ("channel-4", "symmetric_channel", dict(n_symbols=4, error=0.2)),
]
QUICK_TASKS = ("gs-1d", "gs-5d", "student-2d", "tanh-2d", "relu-1d", "blobs-256d", "labels-3c-2d",
               "channel-4")

# Non-default settings (chosen so that the 10k column finishes in minutes on 2 cores)
_NEURAL = {"max_epochs": 50, "patience": 5}
SETTINGS: dict[str, dict] = {
    "mine": _NEURAL,
    "nwj": _NEURAL,
    "infonce": _NEURAL,
    "compressed": {"estimator": "ksg", "dim_x": 4, "dim_y": 4},
}

FIELDS = ["estimator", "task", "n", "truth", "estimate", "seconds", "status", "error"]


def _kind(discrete: bool) -> str:
    return DISCRETE if discrete else CONTINUOUS


def _run_cell(name: str, x, y, dx: bool, dy: bool, conn) -> None:
    """Child process: estimate, send (estimate, seconds, status, error)."""
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("IBSCOPE_BENCH_THREADS", "2")))
        est = estimators.get(name, **SETTINGS.get(name, {}))
        t0 = time.perf_counter()
        value = est.estimate(x, y, discrete_x=dx, discrete_y=dy)
        conn.send((float(value), time.perf_counter() - t0, "ok", ""))
    except ValueError as e:
        if "does not support" in str(e):  # e.g. the inner estimator of 'compressed'
            conn.send((float("nan"), float("nan"), "n/a", str(e)[:200]))
        else:
            conn.send((float("nan"), float("nan"), "error", f"ValueError: {e}"[:200]))
    except Exception as e:  # recorded, not raised: one failure must not stop the table
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        conn.send((float("nan"), float("nan"), "error", last[:200]))
    finally:
        conn.close()


def run_cell(name: str, task, x, y, timeout: float) -> dict:
    dx, dy = task.discrete_x, task.discrete_y
    cls = estimators.get_class(name)
    row = {"estimator": name, "task": task.name, "n": len(x), "truth": task.mutual_information,
           "estimate": float("nan"), "seconds": float("nan"), "status": "", "error": ""}
    if (_kind(dx), _kind(dy)) not in cls.supports:
        row["status"] = "n/a"
        return row
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_run_cell, args=(name, x, y, dx, dy, child))
    t0 = time.perf_counter()
    proc.start()
    child.close()
    if parent.poll(timeout):
        value, secs, status, err = parent.recv()
        row.update(estimate=value, seconds=secs, status=status, error=err)
    else:
        row.update(status="timeout", seconds=time.perf_counter() - t0, error=f"> {timeout:.0f} s")
    proc.join(5)
    if proc.is_alive():
        proc.terminate()
        proc.join()
    return row


def load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("truth", "estimate", "seconds"):
            r[k] = float(r[k]) if r[k] not in ("", "nan") else float("nan")
        r["n"] = int(r["n"])
    return rows


def save(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _cell(r: dict) -> str:
    if r["status"] == "ok":
        return f"{r['estimate']:.2f} ({r['seconds']:.1f}s)" if r["seconds"] >= 0.05 else f"{r['estimate']:.2f}"
    if r["status"] == "n/a":
        return "n/a"
    return r["status"]


def tables(rows: list[dict], task_specs: list[tuple], names: list[str], sizes: list[int]) -> str:
    """One Markdown table per n: rows estimators, columns tasks, cells 'estimate (time)'."""
    built = [(lab, get_task(t, **p)) for lab, t, p in task_specs]
    labels = {task.name: lab for lab, task in built}
    truth = {task.name: task.mutual_information for _, task in built}
    order = [task.name for _, task in built]
    index = {(r["estimator"], r["task"], r["n"]): r for r in rows}
    out = []
    for n in sizes:
        out.append(f"\n**n = {n}** (estimate in bits; wall time in parentheses when >= 0.05 s)\n")
        out.append("| estimator | " + " | ".join(labels[t] for t in order) + " |")
        out.append("|---|" + "---|" * len(order))
        out.append("| **truth** | " + " | ".join(f"**{truth[t]:.2f}**" for t in order) + " |")
        for name in names:
            cells = [_cell(index[(name, t, n)]) if (name, t, n) in index else "" for t in order]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    errors = [r for r in rows if r["status"] in ("error", "timeout") and r["n"] in sizes]
    if errors:
        out.append("\nFailures:\n")
        for r in errors:
            out.append(f"- {r['estimator']} on {labels.get(r['task'], r['task'])}, n={r['n']}: "
                       f"{r['status']} {r['error']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="n = 1000 only, 7 tasks")
    p.add_argument("--sizes", default=None, help="comma-separated sample sizes (default 1000,5000,10000)")
    p.add_argument("--estimators", default=None, help="comma-separated names (default: all registered)")
    p.add_argument("--tasks", default=None, help="comma-separated task labels (see TASKS)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per cell (default 600; quick 120)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of every task")
    p.add_argument("--out", default="benchmarks/accuracy_results.csv", help="results CSV (resumable)")
    p.add_argument("--table-only", action="store_true", help="print the tables from --out, run nothing")
    args = p.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([1000] if args.quick else [1000, 5000, 10000])
    names = args.estimators.split(",") if args.estimators else estimators.available()
    unknown = [n for n in names if n not in estimators.available()]
    if unknown:
        p.error(f"unknown estimators {unknown}; available: {estimators.available()}")
    wanted = args.tasks.split(",") if args.tasks else (list(QUICK_TASKS) if args.quick else [t[0] for t in TASKS])
    task_specs = [t for t in TASKS if t[0] in wanted]
    timeout = args.timeout or (120.0 if args.quick else 600.0)
    out = Path(args.out)
    rows = load(out)

    if not args.table_only:
        done = {(r["estimator"], r["task"], r["n"]) for r in rows}
        todo = [(n, spec, name) for n in sizes for spec in task_specs for name in names]
        try:
            from tqdm import tqdm
            bar = tqdm(todo, file=sys.stderr, desc="accuracy")
        except ImportError:  # pragma: no cover
            bar = todo
        cache: dict = {}
        for n, (_, tname, tparams), name in bar:
            task = get_task(tname, **tparams)
            if (name, task.name, n) in done:
                continue
            key = (task.name, n)
            if key not in cache:
                cache.clear()
                cache[key] = task.sample(n, seed=args.seed)
            x, y = cache[key]
            rows.append(run_cell(name, task, np.asarray(x), np.asarray(y), timeout))
            save(out, rows)

    print(f"Settings different from the defaults: {SETTINGS}")
    print(tables(rows, task_specs, names, sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
