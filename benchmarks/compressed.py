"""The `compressed` estimator: speed on wide layers and accuracy on images.

Run::

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/compressed.py --speed
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/compressed.py --accuracy [--n 2000]

``--speed``: a 1024-wide tanh layer of a 16-dim latent (n = 10,000, 10 labels
from the latent), I(T;Y) by PCA to 4 dims + KSG (Ross). Side by side in one
process, best of 3: the previous implementation (scikit-learn
``PCA(svd_solver="full")``, exactly the old code path for numpy input) and
``compressed`` today (randomized torch SVD, ``pca_solver='randomized'``),
plus the 95% interval of today's value (20 subsamples) to check that the old
value lies within it.

``--accuracy``: ``blobs_image`` with a 4-D latent, 16x16 and 32x32 images,
1, 2, 4 and 8 bits, n rows (sampling seed 0). Columns: KSG on the latents
themselves (what a perfect compression could give the inner KSG), raw KSG
on the images (16x16 only; 30+ s each at 32x32), PCA to 4 and 8 dims, PCA
and the autoencoder with ``dim='auto'`` (TwoNN), the autoencoder to 4 dims.
Results are printed as markdown and saved to benchmarks/compressed_results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ibscope import estimators, tasks


def best_time(fn, repeats=3):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def wide_layer(n=10_000, width=1024, latent=16, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, latent))
    w = rng.standard_normal((latent, width)) / np.sqrt(latent)
    t = np.tanh(z @ w + 0.1 * rng.standard_normal((n, width)))
    y = np.argmax(z[:, :10], axis=1)
    return t, y


def speed() -> list[dict]:
    from sklearn.decomposition import PCA

    t, y = wide_layer()
    ksg = estimators.get("ksg")

    def old_pca():
        return PCA(n_components=4, svd_solver="full").fit_transform(t)

    def old():
        return ksg.estimate(old_pca(), y, discrete_y=True)

    new_est = estimators.get("compressed", dim_x=4)
    full_est = estimators.get("compressed", dim_x=4, pca_solver="full")
    from ibscope.estimators._compressed import pca_compress

    rows = []
    t_old_pca, _ = best_time(old_pca)
    t_old, v_old = best_time(old)
    t_new_pca, _ = best_time(lambda: pca_compress(t, 4))
    t_new, v_new = best_time(lambda: new_est.estimate(t, y, discrete_y=True))
    t_full, v_full = best_time(lambda: full_est.estimate(t, y, discrete_y=True))
    ci = new_est.estimate(t, y, discrete_y=True, ci=0.95, n_resamples=20)
    rows.append({"what": "sklearn PCA(svd_solver='full') + KSG (before)", "pca_s": t_old_pca,
                 "total_s": t_old, "value_bits": v_old})
    rows.append({"what": "compressed, pca_solver='full' (torch SVD)", "pca_s": None,
                 "total_s": t_full, "value_bits": v_full})
    rows.append({"what": "compressed, pca_solver='randomized' (default)", "pca_s": t_new_pca,
                 "total_s": t_new, "value_bits": v_new,
                 "ci95": [ci.low, ci.high], "old_value_in_ci": bool(ci.low <= v_old <= ci.high),
                 "speedup_total": t_old / t_new, "speedup_pca": t_old_pca / t_new_pca})
    for r in rows:
        print(r, flush=True)
    return rows


METHODS = {
    "pca4": {"dim_x": 4, "dim_y": 4},
    "pca8": {"dim_x": 8, "dim_y": 8},
    "pca-auto": {"dim_x": "auto", "dim_y": "auto"},
    "ae4": {"compression": "autoencoder", "dim_x": 4, "dim_y": 4},
    "ae-auto": {"compression": "autoencoder", "dim_x": "auto", "dim_y": "auto"},
}


def accuracy(n: int) -> list[dict]:
    rows = []
    for size in (16, 32):
        for mi in (1.0, 2.0, 4.0, 8.0):
            task = tasks.get("blobs_image", latent_dim=4, mi=mi, size=size)
            x, y = task.sample(n, seed=0)
            u, v = task.sample_latents(n, seed=0)
            row = {"size": size, "mi": mi, "n": n, "latent_ksg": estimators.get("ksg").estimate(u, v)}
            if size == 16:
                t0 = time.perf_counter()
                row["raw_ksg"] = estimators.get("ksg").estimate(x, y)
                row["raw_ksg_s"] = time.perf_counter() - t0
            for name, params in METHODS.items():
                est = estimators.get("compressed", **params)
                t0 = time.perf_counter()
                row[name] = est.estimate(x, y)
                row[name + "_s"] = time.perf_counter() - t0
                if "auto" in name:
                    row[name + "_dims"] = [est.compression_[k]["dim"] for k in ("x", "y")]
                    row[name + "_twonn"] = [est.compression_[k].get("intrinsic_dimension")
                                            for k in ("x", "y")]
            rows.append(row)
            print({k: (round(val, 3) if isinstance(val, float) else val) for k, val in row.items()},
                  flush=True)
    return rows


def accuracy_table(rows: list[dict]) -> str:
    cols = ["latent_ksg", "raw_ksg", *METHODS]
    out = ["| image | MI (bits) | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            if c not in r:
                cells.append("n/a")
                continue
            text = f"{r[c]:.2f}"
            if c + "_dims" in r:
                text += f" (d={r[c + '_dims'][0]})"
            cells.append(text)
        out.append(f"| {r['size']}x{r['size']} | {r['mi']:g} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--out", default=str(Path(__file__).with_name("compressed_results.json")))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    if args.speed:
        results["speed"] = speed()
    if args.accuracy:
        results["accuracy"] = accuracy(args.n)
        print(accuracy_table(results["accuracy"]))
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
