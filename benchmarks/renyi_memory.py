"""Peak memory of the Renyi estimator, in float64 N x N matrices (issue 21: at most 3).

    PYTHONPATH=src python benchmarks/renyi_memory.py --n 1500 3000

Each estimate runs in a fresh process: after a small warm-up estimate (the solvers loaded),
the resident set is read (VmRSS), then one estimate on N samples of a 2+2-dimensional
Gaussian pair (continuous x and y, ``max_samples=None``), then the high-water mark (VmHWM).
The figure is (VmHWM - VmRSS) / (8 N^2): the peak in float64 N x N matrices, printed next to
the target (3) and the layout it replaced (both Gram matrices and a solver copy held at once:
3 matrices plus the float32 copies or the 'median' width's N^2 / 2 values). Alpha 1.01 takes
float64 spectra, alpha 2 float32 ones (``precision='auto'``, N >= 1024).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

_CHILD = """
import sys
from ibscope import tasks
from ibscope.estimators._renyi import Renyi
def kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
n, alpha = int(sys.argv[1]), float(sys.argv[2])
x, y = tasks.get("gaussian_split", dim=2, mi=1.0).sample(n, seed=0)
Renyi(max_samples=None).estimate(x[:200], y[:200])
base = kib("VmRSS:")
est = Renyi(max_samples=None, alpha=alpha)
v = est.estimate(x, y)
print((kib("VmHWM:") - base) * 1024 / (8.0 * n * n), v, est.precisions_[0])
"""


def peak(n: int, alpha: float) -> tuple[float, float, str]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(alpha)], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    mats, value, precision = out.stdout.strip().splitlines()[-1].split()
    return float(mats), float(value), precision


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[1500, 3000])
    a = p.parse_args()
    if not os.path.exists("/proc/self/status"):
        print("renyi_memory: needs /proc (Linux); skipped")
        return
    print("| N | alpha | spectra | peak [float64 N x N] | target | estimate [bits] |")
    print("|---:|---:|---|---:|---:|---:|")
    for n in a.n:
        for alpha in (1.01, 2.0):
            mats, value, precision = peak(n, alpha)
            print(f"| {n:,} | {alpha} | {precision} | {mats:.2f} | <= 3 ({'met' if mats <= 3 else 'NOT met'}) "
                  f"| {value:.4f} |", flush=True)


if __name__ == "__main__":
    main()
