"""Estimator speed: ibscope's KSG against scikit-learn and bmi, and bounded-memory runs.

Run (reference packages in their own environment, see setup_bench_env.sh)::

    bash benchmarks/setup_bench_env.sh
    PYTHONPATH=src .bench-env/bin/python benchmarks/speed.py

With the project venv instead of .bench-env, the bmi rows are reported as
unavailable. Every comparison runs in one process on the same samples, so the
ratios hold on a shared machine. Memory rows run in a fresh subprocess each,
so "peak RSS" is that run's own high-water mark (VmHWM, imports included).

Our rows come twice: on one thread (``n_jobs=1``) and on every core
(``n_jobs=-1``; scikit-learn has no way to use more than one core for a
single feature, and bmi/jax uses what jax uses). bmi's time is the best of
two calls after one warm-up call (jax compiles on its first call); the other
times are the best of 3-5 calls.

What is compared:

1. 1-D x and y, n = 10,000, k = 3: scikit-learn's public
   ``mutual_info_regression`` (which scales both variables to unit variance
   and adds 1e-10-relative noise) against ``ksg`` on the same scaled and
   jittered arrays (the noise is reproduced with the same RandomState), and
   against its noise-free core ``_compute_mi_cc`` (``--n 100000 --only-1d``: these rows
   alone at n = 100,000, issue 21's target of 3x; ``estimate`` includes the duplicates check).
2. x and y of 5 dimensions each, n = 10,000, k = 3: bmi's
   ``KSGEnsembleFirstEstimator(neighborhoods=(3,), standardize=False)`` with
   the Chebyshev metric and with its default Euclidean metric, against
   ``ksg(metric=...)`` on the same standardized samples; where CUDA is
   available, also ``ksg`` on CUDA tensors (chunked brute force on the GPU).
3. n = 100,000, d = 10 (x and y of 5 dimensions each): ``ksg`` (tree path), peak RSS.
4. KDE upper bound (``kde_upper``), n = 10,000, d = 1,000, 10 classes: peak RSS.
5. ``--brute [N ...]`` (only this section): KSG algorithm 1 at 10+10 dims, n = 5,000 and
   20,000 by default, one thread each: a textbook scipy cKDTree KSG (cKDTree ball counts,
   the reference), the tree path (``engine='tree'``), the brute-force engine's torch backend
   on CPU and its CPU default (compiled numba kernels, ``engine='brute'``), identical values
   checked; where CUDA is available the torch engine on the GPU.
6. ``--crossover`` (only this section): tree path against brute force from 1+1 to 8+8 dims
   and n = 1,000 to 30,000, with what ``engine='auto'`` picks there (``BRUTE_MIN_DIM``,
   ``BRUTE_N_PER_DIM``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from ibscope import estimators, tasks


def best_time(fn, repeats=3, warmup=False):
    times, out = [], None
    if warmup:
        fn()
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss would include the parent's after fork)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def row(name, ours_s, ref_s, ours_v, ref_v):
    ratio = f"{ref_s / ours_s:8.1f}x" if ref_s else "     n/a"
    diff = f"{abs(ours_v - ref_v):.1e}" if ref_v is not None else "n/a"
    ref_t = f"{ref_s:9.4f}" if ref_s else "      n/a"
    ref_val = f"{ref_v:.9f}" if ref_v is not None else "n/a"
    print(f"| {name:<66} | {ours_s:8.4f} | {ref_t} | {ratio} | {ours_v:.9f} | {ref_val:>11} | {diff:>7} |")


HEADER = ("| comparison (same samples)" + " " * 42 + "| ours [s] | ref [s]   | speedup  "
          "| ours [nats]  | ref [nats]  | abs diff |\n"
          "|" + "-" * 68 + "|----------|-----------|----------"
          "|--------------|-------------|----------|")


def compare_sklearn(n=10_000, k=3):
    from sklearn.feature_selection import mutual_info_regression
    from sklearn.feature_selection._mutual_info import _compute_mi_cc

    x, y = tasks.get("gaussian_split", dim=1, mi=1.0).sample(n, seed=0)
    # reproduce mutual_info_regression's preprocessing exactly (scale, then 1e-10 noise)
    rng = np.random.RandomState(0)
    xs = x / x.std()
    xs = xs + 1e-10 * max(1.0, np.abs(xs).mean()) * rng.standard_normal(size=(n, 1))
    ys = y[:, 0] / y[:, 0].std()
    ys = ys + 1e-10 * max(1.0, np.abs(ys).mean()) * rng.standard_normal(size=n)
    t_ref, v_ref = best_time(lambda: mutual_info_regression(x, y[:, 0], n_neighbors=k, random_state=0)[0],
                             repeats=5)
    x1, y1 = x[:, 0] / x.std(), y[:, 0] / y.std()
    t_core, v_core = best_time(lambda: _compute_mi_cc(x1, y1, k), repeats=5)
    for n_jobs, label in ((1, "1 thread"), (-1, "all cores")):
        ours = estimators.get("ksg", k=k, standardize=False, unit="nats", n_jobs=n_jobs)
        t_ours, v_ours = best_time(lambda ours=ours: ours.estimate(xs, ys), repeats=5)
        row(f"1-D n={n} k={k}: sklearn mutual_info_regression, ours {label}", t_ours, t_ref, v_ours, v_ref)
        t_ours2, v_ours2 = best_time(lambda ours=ours: ours.estimate(x1, y1), repeats=5)
        row(f"1-D n={n} k={k}: sklearn _compute_mi_cc (no noise), ours {label}", t_ours2, t_core, v_ours2, v_core)


def compare_bmi(n=10_000, k=3, dim=5):
    try:
        import bmi
    except Exception as e:  # noqa: BLE001 - any import failure means "not available here"
        print(f"| bmi (benchmark-mi) not importable here ({type(e).__name__}: {str(e)[:60]}); "
              f"run benchmarks/setup_bench_env.sh and use .bench-env/bin/python |")
        return
    x, y = tasks.get("gaussian_split", dim=dim, mi=2.0).sample(n, seed=1)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean(0)) / y.std(0)
    for metric in ("chebyshev", "euclidean"):
        ref = bmi.estimators.KSGEnsembleFirstEstimator(
            neighborhoods=(k,), standardize=False, metric_x=metric, metric_y=metric)
        t_ref, v_ref = best_time(lambda ref=ref: ref.estimate(x, y), repeats=2, warmup=True)
        # the Euclidean convention runs by brute force in torch, on torch's threads
        runs = ((1, "1 thread"), (-1, "all cores")) if metric == "chebyshev" else ((None, "torch threads"),)
        for n_jobs, label in runs:
            ours = estimators.get("ksg", k=k, metric=metric, standardize=False, unit="nats", n_jobs=n_jobs)
            t_ours, v_ours = best_time(lambda ours=ours: ours.estimate(x, y))
            row(f"{dim}+{dim}-D n={n} k={k} {metric}: bmi KSG, ours {label}", t_ours, t_ref, v_ours, v_ref)
        if torch.cuda.is_available():  # brute force on the GPU, inputs already there
            xc, yc = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
            ours = estimators.get("ksg", k=k, metric=metric, standardize=False, unit="nats")

            def on_gpu(ours=ours, xc=xc, yc=yc):
                v = ours.estimate(xc, yc)
                torch.cuda.synchronize()
                return v

            t_ours, v_ours = best_time(on_gpu, warmup=True)
            row(f"{dim}+{dim}-D n={n} k={k} {metric}: bmi KSG (CPU), ours on CUDA", t_ours, t_ref, v_ours, v_ref)


def run_big_ksg(n=100_000, dim=5, k=3):
    x, y = tasks.get("gaussian_split", dim=dim, mi=3.0).sample(n, seed=2)
    t0 = time.perf_counter()
    v = estimators.get("ksg", k=k).estimate(x, y)
    return {"what": f"ksg n={n:,} x {dim}-D + y {dim}-D k={k}", "seconds": time.perf_counter() - t0,
            "value_bits": v, "truth_bits": 3.0, "peak_rss_mib": peak_rss_mib(),
            "n_by_n_float64_mib": n * n * 8 / 2**20}


def run_big_kde(n=10_000, dim=1_000):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, n)
    centers = rng.standard_normal((10, dim)) * 0.3
    t = np.tanh(centers[y] + rng.standard_normal((n, dim)))
    t0 = time.perf_counter()
    v = estimators.get("kde_upper", noise_variance=0.1).estimate(t, y, discrete_y=True)
    return {"what": f"kde_upper I(T;Y) n={n:,} d={dim:,} 10 classes", "seconds": time.perf_counter() - t0,
            "value_bits": v, "peak_rss_mib": peak_rss_mib(), "input_mib": t.nbytes / 2**20,
            "n_by_n_float64_mib": n * n * 8 / 2**20}


# --------------------------------------------------------------------------- #
# High joint dimension: blocked brute force vs trees (issue 21)
# --------------------------------------------------------------------------- #
def textbook_ksg(x, y, k=3, workers=1):
    """A textbook scipy KSG (algorithm 1): cKDTree k-th joint neighbour, cKDTree ball counts."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma

    n = len(x)
    eps = cKDTree(np.hstack([x, y])).query(np.hstack([x, y]), k=[k + 1], p=np.inf, workers=workers)[0][:, 0]
    r = np.nextafter(eps, 0)
    nx = cKDTree(x).query_ball_point(x, r, p=np.inf, return_length=True, workers=workers)
    ny = cKDTree(y).query_ball_point(y, r, p=np.inf, return_length=True, workers=workers)
    return float(digamma(k) + digamma(n) - np.mean(digamma(nx) + digamma(ny)))


#: (d_x = d_y, n) points of the crossover table (tree path vs the brute-force engine on CPU).
CROSSOVER = tuple((d, n) for d in (1, 2, 3, 4, 5, 8) for n in (1_000, 3_000, 10_000, 30_000)
                  if not (d == 8 and n > 10_000))


def compare_brute(ns=(5_000, 20_000), dim=10, k=3):
    """KSG algorithm 1 (Chebyshev), x and y of ``dim`` dimensions, one thread each, same samples:
    a textbook cKDTree KSG (the reference), the tree path (engine='tree'), the brute-force
    engine's torch backend on CPU (the engine before the compiled kernels) and its CPU default
    (numba kernels, what engine='brute' / 'auto' run)."""
    from ibscope.estimators._knn import ksg1_brute, ksg_mi

    ksg1_brute(np.ones((20, 1)) * np.arange(20)[:, None], np.arange(20.0)[:, None], 3)  # compile once
    print(f"KSG alg. 1, Chebyshev, k={k}, 1 thread each; values in nats")
    print("| d_x+d_y | n | textbook cKDTree [s] | tree path [s] | brute, torch [s] | brute, numba [s] "
          "| numba vs textbook | numba vs tree | numba vs torch | identical values |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in ns:
        x, y = tasks.get("gaussian_split", dim=dim, mi=2.0).sample(n, seed=1)
        x = (x - x.mean(0)) / x.std(0)
        y = (y - y.mean(0)) / y.std(0)
        reps = 3 if n <= 5_000 else 1
        t_b, v_b = best_time(lambda x=x, y=y: ksg_mi(x, y, k=k, engine="brute", n_jobs=1), repeats=reps)
        t_o, v_o = best_time(lambda x=x, y=y: ksg1_brute(x, y, k, n_jobs=1, backend="torch"),
                             repeats=reps)
        t_t, v_t = best_time(lambda x=x, y=y: ksg_mi(x, y, k=k, engine="tree", n_jobs=1), repeats=reps)
        t_x, v_x = best_time(lambda x=x, y=y: textbook_ksg(x, y, k), repeats=reps)
        same = v_b == v_o == v_t == v_x
        print(f"| {dim}+{dim} | {n:,} | {t_x:.2f} | {t_t:.2f} | {t_o:.2f} | {t_b:.2f} | {t_x / t_b:.1f}x "
              f"| {t_t / t_b:.1f}x | {t_o / t_b:.1f}x | {same} ({v_b:.12f}) |", flush=True)
        if torch.cuda.is_available():
            xc, yc = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()

            def on_gpu(xc=xc, yc=yc):
                v = ksg_mi_cuda(xc, yc, k)
                torch.cuda.synchronize()
                return v

            t_g, v_g = best_time(on_gpu, warmup=True)
            print(f"| {dim}+{dim} | {n:,} | {t_x:.2f} | {t_t:.2f} | CUDA {t_g:.3f} | | {t_x / t_g:.1f}x "
                  f"| {t_t / t_g:.1f}x | | {v_g == v_t} ({v_g:.12f}) |", flush=True)


def compare_crossover(points=CROSSOVER, k=3):
    """Tree path vs the brute-force engine (CPU default) at each (d_x = d_y, n): where 'auto'
    switches (``BRUTE_MIN_DIM``, ``BRUTE_N_PER_DIM``)."""
    from ibscope.estimators._knn import BRUTE_MIN_DIM, BRUTE_N_PER_DIM, ksg_mi, use_brute

    ksg_mi(np.arange(20.0)[:, None], np.arange(20.0)[:, None], k=k, engine="brute")  # compile once
    print(f"KSG alg. 1, Chebyshev, k={k}, 1 thread each, best of 2; 'auto' picks brute from joint "
          f"dim {BRUTE_MIN_DIM}, or from 4 with n <= {BRUTE_N_PER_DIM} x joint dim")
    print("| d_x+d_y | n | tree path [s] | brute [s] | tree / brute | 'auto' picks | identical |")
    print("|---|---|---|---|---|---|---|")
    for d, n in points:
        x, y = tasks.get("gaussian_split", dim=d, mi=1.0).sample(n, seed=1)
        t_t, v_t = best_time(lambda x=x, y=y: ksg_mi(x, y, k=k, engine="tree", n_jobs=1), repeats=2)
        t_b, v_b = best_time(lambda x=x, y=y: ksg_mi(x, y, k=k, engine="brute", n_jobs=1), repeats=2)
        pick = "brute" if use_brute("auto", 1, "chebyshev", 2 * d, n) else "tree"
        print(f"| {d}+{d} | {n:,} | {t_t:.3f} | {t_b:.3f} | {t_t / t_b:.2f} | {pick} | {v_t == v_b} |",
              flush=True)


def ksg_mi_cuda(xc, yc, k):
    """KSG algorithm 1 on CUDA tensors: the same blocked engine, on the GPU."""
    from ibscope.estimators._knn import ksg1_brute

    return ksg1_brute(xc, yc, k)


def in_subprocess(which: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--only", which], capture_output=True, text=True,
                         env={**os.environ}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["big-ksg", "big-kde"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--skip-memory", action="store_true", help="only the comparisons")
    ap.add_argument("--only-1d", action="store_true",
                    help="only the 1-D rows against scikit-learn (at --n; issue 21's target: n=100000)")
    ap.add_argument("--brute", type=int, nargs="*", metavar="N",
                    help="only the high-dimensional KSG rows (brute force vs trees), at these n")
    ap.add_argument("--crossover", action="store_true",
                    help="only the table of where 'auto' switches from the trees to brute force")
    args = ap.parse_args()
    if args.crossover:
        compare_crossover()
        return
    if args.brute is not None:
        compare_brute(tuple(args.brute) or (5_000, 20_000))
        return
    if args.only:
        baseline = peak_rss_mib()
        r = run_big_ksg() if args.only == "big-ksg" else run_big_kde()
        r["baseline_rss_mib"] = baseline  # after imports, before the data
        print(json.dumps(r))
        return
    import scipy
    import sklearn
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"scikit-learn {sklearn.__version__}, torch {torch.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, cores={os.cpu_count()}")
    try:
        from importlib.metadata import version
        print(f"benchmark-mi {version('benchmark-mi')}, jax {version('jax')}")
    except Exception:  # noqa: BLE001
        print("benchmark-mi: not installed in this environment")
    print()
    print(HEADER)
    compare_sklearn(n=args.n)
    if args.only_1d:
        return
    compare_bmi(n=args.n)
    if args.skip_memory:
        return
    print()
    print("| bounded-memory run (fresh process)                | time [s] | peak RSS [MiB] (after imports) | n x n float64 would be [MiB] | estimate [bits] |")
    print("|---------------------------------------------------|----------|--------------------------------|------------------------------|-----------------|")
    for which in ("big-ksg", "big-kde"):
        r = in_subprocess(which)
        est = f"{r['value_bits']:.3f}" + (f" (truth {r['truth_bits']:.1f})" if "truth_bits" in r else "")
        print(f"| {r['what']:<49} | {r['seconds']:8.1f} | {r['peak_rss_mib']:14.0f} ({r['baseline_rss_mib']:5.0f})        | "
              f"{r['n_by_n_float64_mib']:28.0f} | {est:>15} |")


if __name__ == "__main__":
    main()
