"""Cost of recording + estimating the information plane, relative to training alone.

Everything trains through :func:`ibscope.training.fit`; the plane is an
:class:`ibscope.InformationPlane` callback writing its table to a temporary
run directory. Each run is a fresh subprocess (so its peak resident memory,
``ru_maxrss``, is its own); times are measured inside it, after imports and
data loading.

1. **12-bit task** (the paper setup): 12-10-7-5-4-3-2 tanh net, Adam 4e-4,
   batch 512, 80% training split, 8000 epochs. Training alone vs training +
   recording all 6 layers on all 4096 inputs + 30-bin binning (range from
   each layer's activation) at ~300 log-spaced snapshots. Target: < 25%.
2. **MNIST conv net**: ibscope's ConvNet (conv 8-16-32, dense 32, leaky
   ReLU) trained with Adam 1e-3, batch 128 on MNIST-8k (8,000 of the 10,000
   t10k images); the plane records every layer on all 10,000 images at 20
   linearly spaced snapshots with the default estimator (``compressed``:
   PCA to 4 dims + KSG), ``--max-features`` wide layers reduced by the
   random projection.
3. **Token transformer** (``--token-epochs``): ibscope's TokenTransformer
   (embedding + 2-layer ``nn.TransformerEncoder``, d_model 32, 4 heads,
   mean pooling) on ``token_task`` (4,000 distinct sequences of 15 tokens
   over 8 ids, 3,200 for training), Adam 1e-3, batch 128; the plane records
   every layer on all 4,000 sequences (integer inputs: I(X;T) as a discrete
   input) at 10 linearly spaced snapshots with the default estimator.
4. **Residual CNN** (``--resnet-epochs``): ibscope's ResNet (stem + 2
   residual stages with batch norm, width 8) on MNIST-8k, Adam 1e-3, batch
   128; the plane records every layer on the 2,000 held-out images at 6
   linearly spaced snapshots with the default estimator.

    python benchmarks/infoplane_overhead.py                        # all rows
    python benchmarks/infoplane_overhead.py --epochs 2000          # a quarter of the 12-bit epochs
    python benchmarks/infoplane_overhead.py --skip-twelve-bit --mnist-epochs 19
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


def _timed(plane):
    """``plane`` as a fit callback that adds up the CPU time (process_time) spent in its hooks."""
    from ibscope.training import Callback

    class Timed(Callback):
        cpu = 0.0

        def _call(self, name, *a):
            c = time.process_time()
            try:
                return getattr(plane, name)(*a)
            finally:
                self.cpu += time.process_time() - c

        def on_train_begin(self, state):
            self._call("on_train_begin", state)

        def on_train_batch_end(self, state):
            self._call("on_train_batch_end", state)

        def on_epoch_end(self, state):
            self._call("on_epoch_end", state)

        def on_train_end(self, state):
            self._call("on_train_end", state)

        def results(self):
            return plane.results()

    return Timed()


def _case(args: argparse.Namespace) -> dict:
    import torch
    from torch import nn

    from ibscope.data import mnist_8k_2k, token_task, train_test_split, twelve_bit
    from ibscope.models import MLP, ConvNet, ResNet, TokenTransformer
    from ibscope.tracking import InformationPlane, linear_schedule, log_schedule
    from ibscope.training import fit

    torch.set_num_threads(args.threads)
    with_plane = args.case.endswith("plane")
    with tempfile.TemporaryDirectory() as d:
        if args.case.startswith("twelve"):
            x_np, y_np = twelve_bit()
            split = train_test_split(len(y_np), train_fraction=0.8, seed=args.seed, stratify=y_np)
            x_all, y_all = torch.as_tensor(x_np, dtype=torch.float32), torch.as_tensor(y_np)
            model = MLP(12, (10, 7, 5, 4, 3), 2, activation="tanh", init="truncated_normal", seed=args.seed)
            opt = torch.optim.Adam(model.parameters(), lr=4e-4)
            data, epochs, bs = (x_all[split.train], y_all[split.train]), args.epochs, 512
            cbs = [InformationPlane(model, x_all, y_all, estimators="binning", out_dir=d,
                                    schedule=log_schedule(epochs, args.snapshots))] if with_plane else []
        elif args.case.startswith("token"):
            x_np, y_np = token_task(4000, vocab_size=8, length=15, seed=args.seed)
            x_all, y_all = torch.as_tensor(x_np), torch.as_tensor(y_np)
            model = TokenTransformer(8, 15, 2, d_model=32, nhead=4, num_layers=2, dim_feedforward=64,
                                     seed=args.seed)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            data, epochs, bs = (x_all[:3200], y_all[:3200]), args.token_epochs, 128
            cbs = [InformationPlane(model, x_all, y_all, out_dir=d, max_features=args.max_features,
                                    schedule=linear_schedule(epochs, 10))] if with_plane else []
        elif args.case.startswith("resnet"):
            mn = mnist_8k_2k(args.data, seed=args.seed)
            x_tr, y_tr = torch.as_tensor(mn["x_train"]).view(-1, 1, 28, 28), torch.as_tensor(mn["y_train"])
            x_ev, y_ev = torch.as_tensor(mn["x_test"]).view(-1, 1, 28, 28), torch.as_tensor(mn["y_test"])
            model = ResNet(1, 10, width=8, stages=2, seed=args.seed)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            data, epochs, bs = (x_tr, y_tr), args.resnet_epochs, 128
            cbs = [InformationPlane(model, x_ev, y_ev, out_dir=d, max_features=args.max_features,
                                    schedule=linear_schedule(epochs, 6))] if with_plane else []
        else:
            mn = mnist_8k_2k(args.data, seed=args.seed)
            x_tr, y_tr = torch.as_tensor(mn["x_train"]), torch.as_tensor(mn["y_train"])
            x_all = torch.cat([x_tr, torch.as_tensor(mn["x_test"])])
            y_all = torch.cat([y_tr, torch.as_tensor(mn["y_test"])])
            model = ConvNet(seed=args.seed)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            data, epochs, bs = (x_tr, y_tr), args.mnist_epochs, 128
            cbs = [InformationPlane(model, x_all, y_all, out_dir=d, max_features=args.max_features,
                                    schedule=linear_schedule(epochs, 20))] if with_plane else []
        cbs = [_timed(cb) for cb in cbs]
        w, c = time.perf_counter(), time.process_time()
        fit(model, nn.CrossEntropyLoss(), data, opt, epochs=epochs, batch_size=bs, seed=args.seed,
            callbacks=cbs, progress=False)
        wall, cpu = time.perf_counter() - w, time.process_time() - c
        out = {"wall": wall, "cpu": cpu, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if cbs:
            df = cbs[0].results()
            out["plane_cpu"] = cbs[0].cpu  # inside the plane's callbacks (records, writes, per-epoch checks)
            out["snapshots"] = int(df["epoch"].nunique())
            out["estimation_s"] = float(df["seconds"].sum())
            out["layers"] = int(df["layer"].nunique())
            out["reduction"] = json.load(open(os.path.join(d, "information_plane.json")))["reduction"]
            out["final"] = df[df["epoch"] == df["epoch"].max()][["layer", "i_xt", "i_ty"]].round(3).values.tolist()
    return out


def _run(case: str, a: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--case", case, "--epochs", str(a.epochs), "--snapshots", str(a.snapshots),
           "--mnist-epochs", str(a.mnist_epochs), "--token-epochs", str(a.token_epochs),
           "--resnet-epochs", str(a.resnet_epochs), "--max-features", str(a.max_features), "--threads",
           str(a.threads), "--seed", str(a.seed)] + (["--data", a.data] if a.data else [])
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=8000, help="12-bit epochs")
    p.add_argument("--snapshots", type=int, default=300, help="12-bit log-spaced snapshots")
    p.add_argument("--mnist-epochs", type=int, default=19, help="conv-net epochs (>= 19 for 20 snapshots)")
    p.add_argument("--token-epochs", type=int, default=20, help="token-transformer epochs (>= 9)")
    p.add_argument("--resnet-epochs", type=int, default=5, help="residual-CNN epochs (>= 5)")
    p.add_argument("--max-features", type=int, default=4096, help="random-projection width of wide layers")
    p.add_argument("--data", default=None, help="directory holding mnist/ (default: ibscope.data.data_dir())")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-twelve-bit", action="store_true")
    p.add_argument("--skip-mnist", action="store_true")
    p.add_argument("--skip-token", action="store_true")
    p.add_argument("--skip-resnet", action="store_true")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.case:
        print(json.dumps(_case(a)))
        return
    print(f"torch threads {a.threads}; each run in its own process")
    print(f"{'run':<58} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9}")
    rows = []
    if not a.skip_twelve_bit:
        rows.append((f"12-bit: training alone ({a.epochs} epochs)", "twelve_train", None))
        rows.append((f"12-bit: + plane, {a.snapshots} snapshots x binning", "twelve_plane", "twelve_train"))
    if not a.skip_mnist:
        rows.append((f"MNIST conv net: training alone ({a.mnist_epochs} epochs)", "mnist_train", None))
        n = min(20, a.mnist_epochs + 1)
        rows.append((f"MNIST conv net: + plane, {n} snapshots x compressed", "mnist_plane", "mnist_train"))
    if not a.skip_token:
        rows.append((f"token transformer: training alone ({a.token_epochs} epochs)", "token_train", None))
        rows.append(("token transformer: + plane, 10 snapshots x default", "token_plane", "token_train"))
    if not a.skip_resnet:
        rows.append((f"residual CNN: training alone ({a.resnet_epochs} epochs)", "resnet_train", None))
        rows.append(("residual CNN: + plane, 6 snapshots x default", "resnet_plane", "resnet_train"))
    got: dict[str, dict] = {}
    for label, case, base in rows:
        r = got[case] = _run(case, a)
        print(f"{label:<58} {r['wall']:8.1f} {r['cpu']:8.1f} {r['maxrss_mib']:9.0f}")
        if base:
            b = got[base]
            print(f"{'  overhead of recording + estimation':<58} {100 * (r['wall'] / b['wall'] - 1):7.1f}% "
                  f"{100 * (r['cpu'] / b['cpu'] - 1):7.1f}%")
            pc = r["plane_cpu"]
            print(f"  cpu inside the plane's callbacks {pc:.1f} s = {100 * pc / (r['cpu'] - pc):.1f}% of this "
                  f"run's training cpu ({r['cpu'] - pc:.1f} s)")
            print(f"  {r['snapshots']} snapshots x {r['layers']} layers, estimation {r['estimation_s']:.1f} s; "
                  f"reduction {r['reduction'] or 'none'}")
            print(f"  last snapshot (layer, I(X;T), I(T;Y)) bits: {r['final']}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
