"""Every estimator on the 40 tasks of the "Beyond Normal" benchmark (Czyz et al. 2023).

The tasks come from ``ibscope.tasks.beyond_normal_suite()`` (benchmark-mi v1's
task list, truths in closed form). As in bmi's v1 workflow, every variable is
standardized (each column centred and scaled to unit variance) before it is
given to an estimator; that affine map leaves MI unchanged. For every
estimator x task x seed the absolute error |estimate - truth| (bits) and the
wall time are recorded; the table reports the mean absolute error (MAE)
overall and by dimension group (the larger of dim_x, dim_y: 1-2, 3, 5,
25-50), mean and maximum seconds per task, and the number of failed or
timed-out cells (excluded from the MAE and listed).

Each cell runs in a forked child with a time limit (``--timeout``); results
go to a CSV (``--out``) that is appended after every cell, and a rerun skips
the cells already there (resumable). Estimators are given as registry names,
optionally with parameters: ``auto:k=1`` or ``ksg:k=5,metric=euclidean``.

Second table (``--suite hard``): Gaussian mixtures in the style of Czyz et
al. 2023b ("The mixtures and the neural critics", arXiv:2310.10240; truth by
Monte Carlo of the pointwise MI, ``ibscope.tasks.GaussianMixture`` /
``XMixture``), the 1-D X-shaped mixture, 50-dimensional embeddings of a 2-D
Gaussian pair (``embedded_gaussian``) and multivariate Student-t pairs
(closed-form MI), grouped as 'mixture', 'embedded' and 'student_t'; default
estimators auto, ksg, flow, latent_ksg; CSV ``benchmarks/hard_results.csv``.

Third table (``--suite bmi-hard``, needs the ``bmi`` package of benchmark-mi,
installed in the separate environment of ``benchmarks/setup_bench_env.sh``):
bmi's own tasks of the bend-and-mix family of Czyz et al. 2023b (the
distributions of ``bmi.benchmark.tasks.mixtures`` at their default parameters:
X, AI, Waves, Galaxy, concentric Gaussians 5 x 1, sparse Gaussians 5 x 5 with
20% inliers) and Student-t pairs of ``bmi.benchmark.tasks.student`` (identity
dispersion 2 x 2 dof 1, 3 x 3 dof 2, 5 x 5 dof 3; dense and sparse 5 x 5 dof 3),
grouped as 'mixture' and 'student_t'. The samples come from bmi's own sampler
and seed, the truth from ``task.mutual_information`` (bmi's Monte Carlo
estimate for the mixtures, closed form for Student-t; nats, converted to bits
by ``ibscope._units.from_nats``). Each (task, seed) is sampled once and every
estimator sees the same standardized sample, bmi's KSG
(``KSGEnsembleFirstEstimator(neighborhoods=(5,))``, spec ``bmi_ksg``, run in
the main process) included. Default estimators auto, ksg, gaussian_copula,
bmi_ksg; ``--neural`` adds flow and latent_ksg. Without bmi the suite stops
with exit code 2. CSV ``benchmarks/bmi_hard_results.csv``.

Usage::

    PYTHONPATH=src python benchmarks/beyond_normal.py                    # defaults below
    PYTHONPATH=src python benchmarks/beyond_normal.py --seeds 0,1,2 --estimators auto,ksg
    PYTHONPATH=src python benchmarks/beyond_normal.py --table-only       # table from the CSV
    PYTHONPATH=src python benchmarks/beyond_normal.py --suite hard --n 2000 --seeds 0 --timeout 300
    OMP_NUM_THREADS=1 BN_THREADS=1 PYTHONPATH=src .bench-env/bin/python benchmarks/beyond_normal.py \
        --suite bmi-hard --seeds 0,1 --n 5000 --timeout 120
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ibscope import estimators, tasks
from ibscope._units import from_nats

DEFAULT_ESTIMATORS = ("auto,auto:k=1,gaussian_copula,gaussian,ksg,kl,wkl,binning,adaptive_binning")
HARD_ESTIMATORS = "auto,ksg,flow,latent_ksg"
FIELDS = ("estimator", "task_id", "group", "seed", "n", "truth_bits", "estimate_bits", "abs_error",
          "seconds", "status", "choice")
GROUPS = ("1-2", "3", "5", "25-50")
HARD_GROUPS = ("mixture", "embedded", "student_t")
BMI_GROUPS = ("mixture", "student_t")
BMI_KSG = "bmi_ksg"
BMI_ESTIMATORS = f"auto,ksg,gaussian_copula,{BMI_KSG}"
NEURAL_ESTIMATORS = "flow,latent_ksg"
BMI_MISSING = ("--suite bmi-hard needs the 'bmi' package (benchmark-mi), which is not importable "
               "in this Python; create its environment with benchmarks/setup_bench_env.sh and run "
               "the script with .bench-env/bin/python")

# bmi-hard: (group, module of bmi.benchmark.tasks, factory, keyword arguments), in table order.
# The mixtures at their default parameters (the concentric and inlier tasks need dimensions:
# 5 x 1 and 5 x 5 as in Czyz et al. 2023b), then Student-t pairs.
BMI_HARD_TASKS: tuple[tuple[str, str, str, dict], ...] = (
    ("mixture", "mixtures", "task_x", {}),
    ("mixture", "mixtures", "task_ai", {}),
    ("mixture", "mixtures", "task_waves", {}),
    ("mixture", "mixtures", "task_galaxy", {}),
    ("mixture", "mixtures", "task_concentric_multinormal", {"dim_x": 5}),
    ("mixture", "mixtures", "task_multinormal_sparse_w_inliers", {"dim_x": 5, "dim_y": 5}),
    ("student_t", "student", "task_student_identity", {"dim_x": 2, "dim_y": 2, "df": 1}),
    ("student_t", "student", "task_student_identity", {"dim_x": 3, "dim_y": 3, "df": 2}),
    ("student_t", "student", "task_student_identity", {"dim_x": 5, "dim_y": 5, "df": 3}),
    ("student_t", "student", "task_student_dense", {"dim_x": 5, "dim_y": 5, "df": 3}),
    ("student_t", "student", "task_student_sparse", {"dim_x": 5, "dim_y": 5, "df": 3}),
)


@dataclass(frozen=True)
class HardTask:
    """One task of the second table: an id, its group and the ibscope task."""

    task_id: str
    dim_group: str
    task: tasks.BaseTask

    @property
    def mutual_information(self) -> float:
        return self.task.mutual_information


def hard_suite() -> list[HardTask]:
    """The second table's tasks: Gaussian mixtures (Monte Carlo truth), embeddings, Student-t."""
    g = tasks.get
    return [
        HardTask("mix-x-rho0.9", "mixture", g("mixture_x", rho=0.9)),
        HardTask("mix-1x1-k3", "mixture", g("gaussian_mixture")),
        HardTask("mix-2x2-k3", "mixture", g("gaussian_mixture", dim_x=2, dim_y=2)),
        HardTask("mix-5x5-k3", "mixture", g("gaussian_mixture", dim_x=5, dim_y=5, rho=0.6)),
        HardTask("embedded-2in50", "embedded", g("embedded_gaussian", latent_dim=2, mi=1.0)),
        HardTask("student-1x1-dof1", "student_t", g("student_t", dim=1, dof=1.0, rho=0.0)),
        HardTask("student-2x2-dof2-rho0.5", "student_t", g("student_t", dim=2, dof=2.0, rho=0.5)),
        HardTask("student-5x5-dof3-rho0.5", "student_t", g("student_t", dim=5, dof=3.0, rho=0.5)),
    ]


def bmi_available() -> bool:
    """Whether the ``bmi`` package (benchmark-mi) can be imported here."""
    try:
        importlib.import_module("bmi")
    except Exception:  # ImportError, or jax failing to initialise
        return False
    return True


@dataclass(frozen=True)
class BmiTask:
    """One task of the bmi-hard table: bmi's task id, its group and the bmi task.

    ``mutual_information`` is bmi's value (nats) in bits.
    """

    task_id: str
    dim_group: str
    task: object

    @property
    def mutual_information(self) -> float:
        return truth_bits(self.task)


def truth_bits(task) -> float:
    """A bmi task's mutual information, which bmi gives in nats, in bits."""
    return from_nats(float(task.mutual_information), "bits")


def bmi_hard_suite() -> list[BmiTask]:
    """The bmi-hard tasks, built by bmi itself (needs ``bmi``; see ``BMI_HARD_TASKS``)."""
    out = []
    for group, module, factory, kwargs in BMI_HARD_TASKS:
        mod = importlib.import_module(f"bmi.benchmark.tasks.{module}")
        task = getattr(mod, factory)(**kwargs)
        out.append(BmiTask(task.id, group, task))
    return out


SUITES = {"beyond_normal": (tasks.beyond_normal_suite, GROUPS),
          "hard": (hard_suite, HARD_GROUPS),
          "bmi-hard": (bmi_hard_suite, BMI_GROUPS)}


def _parse_spec(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    params: dict = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return name, params


def _split_specs(text: str) -> list[str]:
    """Split 'a,b:k=1,c' into specs; a comma followed by key=value belongs to the previous spec."""
    out: list[str] = []
    for part in text.split(","):
        if "=" in part and out and ":" in out[-1] and ":" not in part:
            out[-1] += "," + part
        else:
            out.append(part)
    return [s for s in out if s]


def _standardize(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(axis=0)) / a.std(axis=0)


def _child_threads() -> None:
    """Thread settings of a forked estimator child (one BLAS thread, ``BN_THREADS`` torch threads)."""
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ.get("BN_THREADS", "2")))


def _error(e: Exception) -> tuple:
    return ("error", float("nan"), 0.0, f"{type(e).__name__}: {str(e)[:120]}")


def _estimate_into(spec: str, x: np.ndarray, y: np.ndarray, queue) -> None:
    """One ibscope estimator on a given (standardized) sample; its outcome goes to ``queue``."""
    try:
        name, params = _parse_spec(spec)
        est = estimators.get(name, **params)
        t0 = time.perf_counter()
        value = float(est.estimate(x, y))
        dt = time.perf_counter() - t0
        choice = getattr(est, "choice_", None)
        queue.put(("ok", value, dt, "" if choice is None else choice["chosen"]))
    except Exception as e:  # recorded in the table instead of stopping the run
        queue.put(_error(e))


def _cell(spec: str, index: int, seed: int, n: int, suite: str, queue) -> None:
    """Sample task ``index`` of ``suite`` in the child, then estimate (:func:`_estimate_into`)."""
    try:
        _child_threads()
        entry = SUITES[suite][0]()[index]
        x, y = entry.task.sample(n, seed=seed)
        x, y = _standardize(x), _standardize(y)
    except Exception as e:  # recorded in the table instead of stopping the run
        queue.put(_error(e))
        return
    _estimate_into(spec, x, y, queue)


def _cell_on(spec: str, x: np.ndarray, y: np.ndarray, queue) -> None:
    """One ibscope estimator on a given (standardized) sample, in a forked child."""
    try:
        _child_threads()
    except Exception as e:
        queue.put(_error(e))
        return
    _estimate_into(spec, x, y, queue)


def _in_child(target, args: tuple, timeout: float) -> tuple:
    """Run ``target(*args, queue)`` in a forked child with a time limit; its (status, value, s, choice)."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    t0 = time.perf_counter()
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return ("timeout", float("nan"), time.perf_counter() - t0, "")
    try:
        return queue.get(timeout=5)
    except Exception:
        return ("error", float("nan"), 0.0, f"child exited with code {proc.exitcode}")


def run_cell(spec: str, index: int, seed: int, n: int, timeout: float,
             suite: str = "beyond_normal") -> tuple:
    """:func:`_cell` in a forked child with a time limit."""
    return _in_child(_cell, (spec, index, seed, n, suite), timeout)


def run_cell_on(spec: str, x: np.ndarray, y: np.ndarray, timeout: float) -> tuple:
    """``_cell_on`` in a forked child with a time limit; the arrays are inherited, not copied."""
    return _in_child(_cell_on, (spec, x, y), timeout)


def bmi_ksg_cell(x: np.ndarray, y: np.ndarray) -> tuple:
    """bmi's KSG (k = 5, its other defaults) on the sample, in this process; the value in bits."""
    try:
        import bmi

        est = bmi.estimators.KSGEnsembleFirstEstimator(neighborhoods=(5,))
        t0 = time.perf_counter()
        value = from_nats(float(est.estimate(x, y)), "bits")
        return ("ok", value, time.perf_counter() - t0, "")
    except Exception as e:
        return ("error", float("nan"), 0.0, f"{type(e).__name__}: {str(e)[:120]}")


def run_bmi(specs: list[str], seeds: list[int], n: int, timeout: float, out: Path) -> None:
    """The bmi-hard table: one bmi sample per (task, seed), every estimator on it."""
    import torch  # noqa: F401  (imported once here, so that forked cells do not pay for it)

    for spec in specs:
        if spec != BMI_KSG:
            estimators.get_class(_parse_spec(spec)[0])
    suite = bmi_hard_suite()
    done = _done(out)
    new = not out.exists()
    with out.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for seed in seeds:
            for entry in suite:
                todo = [s for s in specs if (s, entry.task_id, seed, n) not in done]
                if not todo:
                    continue
                t_task = time.perf_counter()
                x, y = entry.task.sample(n, seed=seed)
                x = _standardize(np.asarray(x, dtype=np.float64))
                y = _standardize(np.asarray(y, dtype=np.float64))
                truth = entry.mutual_information
                for spec in todo:
                    if spec == BMI_KSG:
                        status, value, dt, choice = bmi_ksg_cell(x, y)
                    else:
                        status, value, dt, choice = run_cell_on(spec, x, y, timeout)
                    w.writerow(dict(estimator=spec, task_id=entry.task_id, group=entry.dim_group,
                                    seed=seed, n=n, truth_bits=f"{truth:.6f}",
                                    estimate_bits=f"{value:.6f}",
                                    abs_error=f"{abs(value - truth):.6f}", seconds=f"{dt:.3f}",
                                    status=status, choice=choice))
                    f.flush()
                print(f"[{entry.task_id} seed {seed}] {time.perf_counter() - t_task:.0f} s",
                      file=sys.stderr, flush=True)


def estimates_table(out: Path, n: int) -> str:
    """Per task: the truth and every estimator's mean estimate over seeds (bits), then MAE rows."""
    with out.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["n"]) == n]
    specs = list(dict.fromkeys(r["estimator"] for r in rows))
    lines = ["| task (bits) | truth | " + " | ".join(specs) + " |",
             "|---|---:|" + "---:|" * len(specs)]
    for tid in dict.fromkeys(r["task_id"] for r in rows):
        rs = [r for r in rows if r["task_id"] == tid]
        cells = []
        for spec in specs:
            v = [float(r["estimate_bits"]) for r in rs if r["estimator"] == spec and r["status"] == "ok"]
            cells.append(f"{np.mean(v):.2f}" if v else "-")
        lines.append(f"| {tid} | {float(rs[0]['truth_bits']):.2f} | " + " | ".join(cells) + " |")
    groups = list(dict.fromkeys(r["group"] for r in rows))
    for label, keep in [("MAE all", None)] + [(f"MAE {g}", g) for g in groups]:
        cells = []
        for spec in specs:
            e = [float(r["abs_error"]) for r in rows if r["estimator"] == spec and r["status"] == "ok"
                 and (keep is None or r["group"] == keep)]
            cells.append(f"{np.mean(e):.3f}" if e else "-")
        lines.append(f"| **{label}** | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _done(path: Path) -> set[tuple[str, str, int, int]]:
    if not path.exists():
        return set()
    with path.open() as f:
        return {(r["estimator"], r["task_id"], int(r["seed"]), int(r["n"])) for r in csv.DictReader(f)}


def run(specs: list[str], seeds: list[int], n: int, timeout: float, out: Path,
        suite_name: str = "beyond_normal") -> None:
    import torch  # noqa: F401  (imported once here, so that forked cells do not pay for it)

    for spec in specs:
        estimators.get_class(_parse_spec(spec)[0])  # loads the estimator modules before forking
    suite = SUITES[suite_name][0]()
    done = _done(out)
    new = not out.exists()
    with out.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for spec in specs:
            t_spec = time.perf_counter()
            for seed in seeds:
                for i, entry in enumerate(suite):
                    if (spec, entry.task_id, seed, n) in done:
                        continue
                    status, value, dt, choice = run_cell(spec, i, seed, n, timeout, suite_name)
                    truth = entry.mutual_information
                    w.writerow(dict(estimator=spec, task_id=entry.task_id, group=entry.dim_group,
                                    seed=seed, n=n, truth_bits=f"{truth:.6f}",
                                    estimate_bits=f"{value:.6f}",
                                    abs_error=f"{abs(value - truth):.6f}", seconds=f"{dt:.3f}",
                                    status=status, choice=choice))
                    f.flush()
            print(f"[{spec}] {time.perf_counter() - t_spec:.0f} s", file=sys.stderr, flush=True)


def table(out: Path, n: int, groups: tuple[str, ...] = GROUPS) -> str:
    with out.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["n"]) == n]
    specs = list(dict.fromkeys(r["estimator"] for r in rows))
    lines = ["| estimator | MAE all | " + " | ".join(f"MAE {g}" for g in groups)
             + " | mean s | max s | cells | failed |",
             "|---|---:|" + "---:|" * len(groups) + "---:|---:|---:|---:|"]
    failed_notes = []
    for spec in specs:
        rs = [r for r in rows if r["estimator"] == spec]
        ok = [r for r in rs if r["status"] == "ok"]
        err = np.array([float(r["abs_error"]) for r in ok])
        by = []
        for g in groups:
            e = [float(r["abs_error"]) for r in ok if r["group"] == g]
            by.append(f"{np.mean(e):.3f}" if e else "-")
        secs = np.array([float(r["seconds"]) for r in ok]) if ok else np.array([np.nan])
        bad = [r for r in rs if r["status"] != "ok"]
        lines.append(f"| {spec} | {err.mean() if err.size else float('nan'):.3f} | " + " | ".join(by)
                     + f" | {np.nanmean(secs):.2f} | {np.nanmax(secs):.1f} | {len(rs)} | {len(bad)} |")
        if bad:
            kinds = sorted({r["task_id"] + " (" + r["status"] + ")" for r in bad})
            failed_notes.append(f"- {spec}: " + ", ".join(kinds[:8]) + (" ..." if len(kinds) > 8 else ""))
    text = "\n".join(lines)
    if failed_notes:
        text += "\n\nFailed or timed-out cells (excluded from the MAE):\n" + "\n".join(failed_notes)
    return text


def per_task(out: Path, n: int, spec: str) -> str:
    """Mean signed error per task of one estimator (and its choices)."""
    with out.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["n"]) == n and r["estimator"] == spec
                and r["status"] == "ok"]
    lines = [f"| task ({spec}) | truth (bits) | mean error | choices |", "|---|---:|---:|---|"]
    for tid in dict.fromkeys(r["task_id"] for r in rows):
        rs = [r for r in rows if r["task_id"] == tid]
        err = np.mean([float(r["estimate_bits"]) - float(r["truth_bits"]) for r in rs])
        ch = ", ".join(sorted({r["choice"] for r in rs if r["choice"]}))
        lines.append(f"| {tid} | {float(rs[0]['truth_bits']):.3f} | {err:+.3f} | {ch} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=tuple(SUITES), default="beyond_normal",
                    help="'hard': the second table (mixtures, embedded, Student-t); 'bmi-hard': "
                         "bmi's own mixture and Student-t tasks, with bmi's KSG (needs bmi)")
    ap.add_argument("--estimators", default=None,
                    help=f"default: {DEFAULT_ESTIMATORS} ('hard': {HARD_ESTIMATORS}; "
                         f"'bmi-hard': {BMI_ESTIMATORS})")
    ap.add_argument("--neural", action="store_true",
                    help=f"bmi-hard: add the expensive {NEURAL_ESTIMATORS} to the default estimators")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per cell")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: benchmarks/beyond_normal_results.csv ('hard': hard_results.csv)")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--per-task", default="auto", help="estimator whose per-task errors are printed")
    args = ap.parse_args()
    if args.suite == "bmi-hard":
        main_bmi(args)
        return
    hard = args.suite == "hard"
    if args.estimators is None:
        args.estimators = HARD_ESTIMATORS if hard else DEFAULT_ESTIMATORS
    if args.out is None:
        args.out = Path("benchmarks/hard_results.csv" if hard else "benchmarks/beyond_normal_results.csv")
    if not args.table_only:
        run(_split_specs(args.estimators), [int(s) for s in args.seeds.split(",")], args.n,
            args.timeout, args.out, args.suite)
    print(table(args.out, args.n, SUITES[args.suite][1]))
    if args.per_task:
        print()
        print(per_task(args.out, args.n, args.per_task))


def main_bmi(args) -> None:
    """``--suite bmi-hard``: exit code 2 with a message when bmi is not importable."""
    if args.estimators is None:
        args.estimators = BMI_ESTIMATORS + ("," + NEURAL_ESTIMATORS if args.neural else "")
    if args.out is None:
        args.out = Path("benchmarks/bmi_hard_results.csv")
    if not args.table_only:
        if not bmi_available():
            print(f"error: {BMI_MISSING}", file=sys.stderr)
            sys.exit(2)
        run_bmi(_split_specs(args.estimators), [int(s) for s in args.seeds.split(",")], args.n,
                args.timeout, args.out)
    print("All values in bits; truth from bmi (Monte Carlo for the mixtures).")
    print(table(args.out, args.n, BMI_GROUPS))
    print()
    print(estimates_table(args.out, args.n))


if __name__ == "__main__":
    main()
