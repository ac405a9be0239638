"""Bias-corrected discrete entropies on the 12-bit information plane (docs/estimators.md).

A 12-10-7-5-2 tanh network (Shwartz-Ziv & Tishby 2017) is trained on the
12-bit task with full-batch Adam; at a few epochs every layer is binned
(30 bins on (-1, 1)). The 4096 inputs are the whole population and equally
likely, so the binned quantities computed on all 4096 rows are *exact*:
I(X;T) = H(T_b) and I(T_b;Y). Each correction is applied to random
subsets of n rows (n = 256, 512, 1024, 2048; 20 subsets) and compared with
that exact value: mean error (bias) and RMSE in bits over layers x snapshots.

Usage::

    PYTHONPATH=src python benchmarks/entropy_corrections.py
"""

from __future__ import annotations

import numpy as np
import torch

from ibscope._validation import discrete_symbols
from ibscope.data import twelve_bit
from ibscope.estimators._binning import fixed_bin_codes
from ibscope.estimators._discrete import CORRECTIONS, discrete_mi, entropy_of_symbols

LN2 = np.log(2.0)


def snapshots(epochs=(0, 100, 400, 1500), seed=0):
    x, y = twelve_bit()
    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    sizes = [12, 10, 7, 5]
    layers = [torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])] + [torch.nn.Linear(5, 2)]
    params = [p for m in layers for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    out = {}
    for ep in range(max(epochs) + 1):
        h, acts = xt, []
        for m in layers[:-1]:
            h = torch.tanh(m(h))
            acts.append(h.detach().numpy().astype(np.float64))
        if ep in epochs:
            out[ep] = acts
        loss = torch.nn.functional.cross_entropy(layers[-1](h), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return y, out


def main():
    y, snaps = snapshots()
    rng = np.random.default_rng(0)
    rows = []
    for acts in snaps.values():
        for a in acts:
            ids, _ = discrete_symbols(fixed_bin_codes(a, n_bins=30, value_range=(-1.0, 1.0)))
            exact_xt = entropy_of_symbols(ids) / LN2
            exact_ty = discrete_mi(ids, y) / LN2
            for n in (256, 512, 1024, 2048):
                for _ in range(20):
                    s = rng.choice(ids.size, size=n, replace=False)
                    for c in CORRECTIONS:
                        rows.append((n, c, "I(X;T)", entropy_of_symbols(ids[s], correction=c) / LN2 - exact_xt))
                        rows.append((n, c, "I(T;Y)", discrete_mi(ids[s], y[s], correction=c) / LN2 - exact_ty))
    print("| n | quantity | " + " | ".join(CORRECTIONS) + " |")
    print("|---:|---|" + "---:|" * len(CORRECTIONS))
    for n in (256, 512, 1024, 2048):
        for q in ("I(X;T)", "I(T;Y)"):
            cells = []
            for c in CORRECTIONS:
                e = np.array([r[3] for r in rows if r[0] == n and r[1] == c and r[2] == q])
                cells.append(f"{e.mean():+.3f} / {np.sqrt((e ** 2).mean()):.3f}")
            print(f"| {n} | {q} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
