"""Coverage of the subsampling confidence intervals (``estimate(..., ci=0.95)``).

Run::

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/interval_coverage.py            # 200 repetitions
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/interval_coverage.py --reps 40  # quick look

For every case (a task with known MI, an estimator, a sample size n) the
script draws ``--reps`` independent datasets (sampling seeds 0..reps-1) and
computes the interval of each with the library defaults (level 0.95, 50
subsamples of half the rows, interval seed = dataset seed). It also draws
``--extra`` further datasets (seeds 10^6 + i) and estimates on them only, so
that the *expectation of the estimator at that n*, E[theta_n], is the mean
of reps + extra independent estimates (its standard error is printed).

Reported per case:

* ``cover E`` -- fraction of intervals containing E[theta_n] (what the
  interval claims to cover: the sampling variability of theta_n);
* ``cover truth`` -- fraction containing the true MI (also hit by the
  estimator's bias, which the interval does not include);
* ``width/ideal`` -- mean interval width divided by 2 z_{0.975} sd(theta_n),
  the width of an exact normal interval with the empirical standard
  deviation of the estimates over datasets;
* the binomial standard error of a coverage of 0.95 at ``reps`` repetitions
  (0.015 at 200).

The table is printed as markdown (for benchmarks/RESULTS.md) and saved to
``benchmarks/coverage_results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from ibscope import estimators, tasks

# (label, task name, task params, estimator, estimator params, n, discrete_x, discrete_y)
CASES = [
    ("gauss-1+1, 1 bit", "gaussian_split", {"dim": 1, "mi": 1.0}, "ksg", {"n_jobs": 1}, 1000, False, False),
    ("gauss-1+1, 1 bit", "gaussian_split", {"dim": 1, "mi": 1.0}, "gaussian", {}, 1000, False, False),
    ("gauss-2+2, 2 bits", "gaussian_split", {"dim": 2, "mi": 2.0}, "ksg", {"n_jobs": 1}, 1000, False, False),
    ("gauss-2+2, 2 bits", "gaussian_split", {"dim": 2, "mi": 2.0}, "ksg", {"n_jobs": 1}, 2000, False, False),
    ("labels-3c-2d", "mixture_labels", {"n_classes": 3, "dim": 2, "separation": 3.0}, "ksg",
     {"n_jobs": 1}, 1000, False, True),
    ("labels-3c-2d", "mixture_labels", {"n_classes": 3, "dim": 2, "separation": 3.0}, "kde_lower",
     {}, 500, False, True),
    ("labels-3c-2d", "mixture_labels", {"n_classes": 3, "dim": 2, "separation": 3.0}, "binning",
     {"n_bins": 10}, 500, False, True),
    ("channel-4, e=0.2", "symmetric_channel", {"n_symbols": 4, "error": 0.2}, "discrete", {}, 1000,
     True, True),
]


def run_case(case, reps: int, extra: int, level: float = 0.95) -> dict:
    label, tname, tparams, ename, eparams, n, dx, dy = case
    task = tasks.get(tname, **tparams)
    est = estimators.get(ename, **eparams)
    t0 = time.perf_counter()
    values, lows, highs = [], [], []
    for r in range(reps):
        x, y = task.sample(n, seed=r)
        e = est.estimate(x, y, discrete_x=dx, discrete_y=dy, ci=level, seed=r)
        values.append(e.value)
        lows.append(e.low)
        highs.append(e.high)
    more = [est.estimate(*task.sample(n, seed=10**6 + i), discrete_x=dx, discrete_y=dy)
            for i in range(extra)]
    values, lows, highs = map(np.asarray, (values, lows, highs))
    allv = np.concatenate([values, np.asarray(more, dtype=np.float64)])
    expect = float(allv.mean())
    sd = float(allv.std(ddof=1))
    truth = float(task.mutual_information)
    z = 1.959963984540054
    return {
        "task": label, "estimator": ename, "params": eparams, "n": n, "reps": reps,
        "extra": extra, "truth": truth, "expectation": expect,
        "expectation_se": sd / math.sqrt(allv.size), "sd": sd,
        "cover_expectation": float(np.mean((lows <= expect) & (expect <= highs))),
        "cover_truth": float(np.mean((lows <= truth) & (truth <= highs))),
        "miss_low": float(np.mean(highs < expect)), "miss_high": float(np.mean(lows > expect)),
        "width_over_ideal": float(np.mean(highs - lows) / (2 * z * sd)) if sd > 0 else math.nan,
        "seconds": time.perf_counter() - t0,
    }


def table(rows: list[dict]) -> str:
    out = ["| task | estimator | n | truth | E[theta_n] (se) | cover E | (below / above) | "
           "cover truth | width/ideal | s |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(
            f"| {r['task']} | {r['estimator']} | {r['n']} | {r['truth']:.3f} | "
            f"{r['expectation']:.3f} ({r['expectation_se']:.3f}) | {r['cover_expectation']:.3f} | "
            f"{r['miss_low']:.3f} / {r['miss_high']:.3f} | {r['cover_truth']:.3f} | "
            f"{r['width_over_ideal']:.2f} | {r['seconds']:.0f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--extra", type=int, default=300)
    ap.add_argument("--only", default=None, help="comma-separated estimator names to run")
    ap.add_argument("--out", default=str(Path(__file__).with_name("coverage_results.json")))
    args = ap.parse_args()
    cases = [c for c in CASES if args.only is None or c[3] in args.only.split(",")]
    rows = []
    for case in cases:
        rows.append(run_case(case, args.reps, args.extra))
        r = rows[-1]
        print(f"{r['task']:>18} {r['estimator']:>10} n={r['n']:>5}: cover E {r['cover_expectation']:.3f}, "
              f"truth {r['cover_truth']:.3f}, width/ideal {r['width_over_ideal']:.2f} "
              f"({r['seconds']:.0f}s)", flush=True)
    print(f"\nbinomial se of a 0.95 coverage at {args.reps} reps: "
          f"{math.sqrt(0.95 * 0.05 / args.reps):.3f}\n")
    print(table(rows))
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
