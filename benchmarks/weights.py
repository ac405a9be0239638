"""Cost of one IIW estimate and one Fisher trace, relative to one training epoch.

For each model (an MLP 784-256-256-10 and the small ConvNet on MNIST-8k) one
run measures, side by side:

* one training epoch (SGD, batch 128, 8,000 examples: forward + backward + step);
* one ``iiw(method="fisher_quadratic")`` estimate on ``--iiw-examples``
  examples (per-example projections, all layers);
* one ``fisher(kind="model")`` trace on ``--fisher-examples`` examples
  (per-example gradients, one sampled label each);

and reports each as a multiple of the epoch (median of ``--repeats``), plus
the relative spread of the estimates over different subsets of examples
(the stability that justifies the subset size). Targets: IIW <= 0.5 epoch,
Fisher trace <= 2 epochs.

Usage: python benchmarks/weights.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from ibscope.data import mnist_8k_2k
from ibscope.models import MLP, ConvNet
from ibscope.weights import fisher, iiw, snapshot_parameters


def _batches(x, y, bs):
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, x.shape[0], bs)]


def _epoch(model, opt, batches):
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    for xb, yb in batches:
        loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _time(fn, repeats):
    out, ts = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def bench(name, model, x, y, args):
    train = _batches(x, y, 128)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    prior = snapshot_parameters(model)
    _epoch(model, opt, train)  # warm-up and move away from the prior
    _epoch(model, opt, train)
    t_epoch, _ = _time(lambda: _epoch(model, opt, train), args.repeats)
    loss = nn.CrossEntropyLoss(reduction="none")
    n = x.shape[0]

    def subset(seed, k, bs):
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]
        return _batches(x[idx], y[idx], bs)

    iiw_data = subset(0, args.iiw_examples, 256)
    fis_data = subset(1, args.fisher_examples, 256)
    t_iiw, _ = _time(lambda: iiw(model, loss, iiw_data, prior_mean=prior, n_train=n), args.repeats)
    t_fis, _ = _time(lambda: fisher(model, fis_data, seed=0), args.repeats)
    iiws = [iiw(model, loss, subset(10 + s, args.iiw_examples, 256), prior_mean=prior, n_train=n).total
            for s in range(5)]
    fiss = [fisher(model, subset(20 + s, args.fisher_examples, 256), seed=s).trace for s in range(5)]
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "model": name, "params": n_params, "epoch_s": t_epoch,
        "iiw_s": t_iiw, "iiw_epochs": t_iiw / t_epoch, "iiw_cv": float(np.std(iiws) / np.mean(iiws)),
        "fisher_s": t_fis, "fisher_epochs": t_fis / t_epoch, "fisher_cv": float(np.std(fiss) / np.mean(fiss)),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iiw-examples", type=int, default=2048)
    ap.add_argument("--fisher-examples", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = mnist_8k_2k()
    x, y = torch.as_tensor(d["x_train"]), torch.as_tensor(d["y_train"])
    rows = [
        bench("MLP 784-256-256-10", MLP(784, (256, 256), 10, activation="relu", init="he", seed=0), x, y, args),
        bench("ConvNet (8,16,32)-32", ConvNet(seed=0), x, y, args),
    ]
    print(f"MNIST-8k (8,000 training images), epoch = SGD batch 128; IIW on {args.iiw_examples} examples, "
          f"Fisher trace on {args.fisher_examples} examples (1 sampled label each); median of {args.repeats}; "
          f"torch threads {args.threads}\n")
    print("| model | params | epoch (s) | IIW (s) | IIW / epoch | IIW CV | Fisher (s) | Fisher / epoch | Fisher CV |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params']:,} | {r['epoch_s']:.3f} | {r['iiw_s']:.3f} | {r['iiw_epochs']:.2f} | "
              f"{r['iiw_cv']:.1%} | {r['fisher_s']:.3f} | {r['fisher_epochs']:.2f} | {r['fisher_cv']:.1%} |")
    print("\nCV: std / mean of the estimate over 5 random subsets of that size (different seeds).")


if __name__ == "__main__":
    main()
