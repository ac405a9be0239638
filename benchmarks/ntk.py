"""Benchmark: closed-form NNGP + NTK of an infinitely wide fully connected network.

Times ``ibscope.ntk.kernels`` (torch, float64, chunked) on n inputs of dimension
784 (MNIST test images when the IDX files are found, else Gaussian inputs) and
compares it, in the same run, with a naive reference: an unchunked numpy
implementation of the same recursion (full n x n temporaries, arccos form).
Every measurement runs in a fresh subprocess so its peak resident memory
(``ru_maxrss``) is its own; the table reports the increase over the process's
footprint just before the call (inputs loaded, libraries imported), which
includes the two n x n float64 outputs (2 * 8 n**2 bytes).

Usage::

    PYTHONPATH=src python benchmarks/ntk.py \
        --n 5000 --depth 3 --naive-n 5000
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


def _inputs(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, str]:
    try:
        from ibscope.data._mnist import load_mnist_idx

        images, _ = load_mnist_idx()
        if d == 784 and n <= len(images):
            return images[:n].reshape(n, -1).astype(np.float64) / 255.0, "mnist"
    except (FileNotFoundError, ImportError):
        pass
    return np.random.default_rng(seed).normal(size=(n, d)), "gaussian"


def naive_kernels(x: np.ndarray, depth: int, activation: str, w_std: float, b_std: float):
    """Reference: the layer recursion on full n x n numpy arrays (no chunking)."""
    w2, b2 = w_std**2, b_std**2
    k = w2 * (x @ x.T) / x.shape[1] + b2
    th = k.copy()
    for _ in range(depth):
        diag = np.diag(k).copy()
        norms = np.sqrt(np.outer(diag, diag))
        if activation == "relu":
            cos = np.clip(k / norms, -1.0, 1.0)
            ang = np.arccos(cos)
            t = norms * (np.sin(ang) + (np.pi - ang) * cos) / (2 * np.pi)
            tdot = (np.pi - ang) / (2 * np.pi)
        else:
            prod = np.outer(1 + 2 * diag, 1 + 2 * diag)
            t = 2 / np.pi * np.arcsin(np.clip(2 * k / np.sqrt(prod), -1, 1))
            tdot = 4 / np.pi / np.sqrt(prod - 4 * k * k)
        k = w2 * t + b2
        th = w2 * th * tdot + k
    return k, th


def _worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    x, source = _inputs(args.n, args.d)
    kw = dict(depth=args.depth, activation=args.activation, weight_std=args.weight_std, bias_std=args.bias_std)
    if args.impl == "ibscope":
        from ibscope.ntk import kernels

        kernels(x[:64], **kw)  # warm-up (lazy torch initialisation)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if args.impl == "ibscope":
        out = kernels(x, chunk_size=args.chunk, **kw)
        nngp, ntk = out.nngp, out.ntk
    else:
        nngp, ntk = naive_kernels(x, args.depth, args.activation, args.weight_std, args.bias_std)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"impl": args.impl, "n": args.n, "seconds": seconds, "peak_mib": (peak - base) / 1024.0,
              "source": source, "checksum": [float(nngp[:200, :200].sum()), float(ntk[:200, :200].sum())]}
    if args.save:
        np.save(args.save, ntk[:500, :500])
    print(json.dumps(result))


def _measure(args: argparse.Namespace, impl: str, n: int, save: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--n", str(n), "--d", str(args.d),
           "--depth", str(args.depth), "--activation", args.activation, "--weight-std", str(args.weight_std),
           "--bias-std", str(args.bias_std), "--chunk", str(args.chunk), "--threads", str(args.threads)]
    if save:
        cmd += ["--save", save]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--d", type=int, default=784)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--activation", default="relu", choices=["relu", "erf"])
    p.add_argument("--weight-std", type=float, default=1.4)
    p.add_argument("--bias-std", type=float, default=0.1)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--naive-n", type=int, default=5000, help="size for the naive reference (0: skip)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", default="ibscope", help=argparse.SUPPRESS)
    p.add_argument("--save", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        _worker(args)
        return

    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sizes = sorted({args.n, args.naive_n} - {0})
        for _ in range(args.repeats):
            for n in sizes:
                save = os.path.join(tmp, f"ib{n}.npy") if n == args.naive_n else None
                rows.append(_measure(args, "ibscope", n, save))
                if n == args.naive_n:
                    rows.append(_measure(args, "naive-numpy", n, os.path.join(tmp, f"nv{n}.npy")))
        agree = None
        if args.naive_n:
            a, b = np.load(os.path.join(tmp, f"ib{args.naive_n}.npy")), np.load(os.path.join(tmp, f"nv{args.naive_n}.npy"))
            agree = float(np.abs(a - b).max() / np.abs(b).max())
    print(f"NNGP + NTK, d={args.d}, depth={args.depth}, {args.activation}, weight_std={args.weight_std}, "
          f"bias_std={args.bias_std}, inputs: {rows[0]['source']}, threads={args.threads}, chunk={args.chunk}")
    print("| implementation | n | time (s) | peak extra RSS (MiB) | outputs (MiB) |")
    print("|---|---:|---:|---:|---:|")
    best: dict = {}
    for r in rows:
        key = (r["impl"], r["n"])
        best[key] = min(best.get(key, (np.inf, 0)), (r["seconds"], r["peak_mib"]))
    for (impl, n), (sec, mib) in sorted(best.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"| {impl} | {n} | {sec:.2f} | {mib:.0f} | {2 * 8 * n * n / 2**20:.0f} |")
    if args.naive_n:
        s = best[("naive-numpy", args.naive_n)][0] / best[("ibscope", args.naive_n)][0]
        m = best[("naive-numpy", args.naive_n)][1] / max(best[("ibscope", args.naive_n)][1], 1e-9)
        print(f"\nspeed-up at n={args.naive_n}: {s:.1f}x; peak-memory ratio (naive / ibscope): {m:.1f}x; "
              f"max relative difference of the NTK (first 500 x 500): {agree:.1e}")


if __name__ == "__main__":
    main()
