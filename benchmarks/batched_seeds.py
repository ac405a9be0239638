"""The 12-bit paper run with seeds as a batch dimension vs the one-seed path, side by side.

    PYTHONPATH=src python benchmarks/batched_seeds.py --seeds 50 --epochs 8000 --snapshots 300 --reference-seeds 2

Both paths use the paper's setup (12-10-7-5-4-3-2 tanh, Adam 4e-4, batch 512,
80% training data, binning with 30 bins over (-1, 1), every layer) at the
given epochs and snapshots, the one-seed path on one torch thread (as the sweeps run it), the batched
path on ``--threads``. The
batched path trains all ``--seeds`` seeds as one network; the one-seed path
runs ``--reference-seeds`` seeds one after another and its time is also
scaled to ``--seeds`` seeds (stated as such in the table). The per-seed rows
of the seeds both paths ran are compared (max |difference| in bits).

``--before`` also runs the batched path as it was before the second issue-21 change
(``run_seeds(..., fast=False)``: ``foreach`` Adam, per-seed copies of the data, seed-by-seed
binning) in the same process, so the two batched rows are timed side by side; the per-seed rows
of all three paths are compared.

    PYTHONPATH=src python benchmarks/batched_seeds.py --seeds 50 --epochs 400 --snapshots 30 --before

``--training-only EPOCHS`` (issue 21) times only the batched training through ``fit`` (no
snapshots), side by side in one process, alternating three times (best of three):
the layout before issue 21 (activations ``(S, B, features)``, Adam's per-parameter loop) as
the reference row, the features-first layout (``(S, features, B)``, ``foreach`` Adam, per-seed
copies of the data), and the current one (features first, fused Adam, minibatches gathered from
the shared data with ``SeedBatches(..., rows=)``); the trained weights are compared.

    PYTHONPATH=src python benchmarks/batched_seeds.py --seeds 50 --training-only 20
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def _clock() -> np.ndarray:
    """(wall, process CPU) seconds: on a shared machine the CPU seconds of a one-thread run are
    the work it did, whatever else the cores were running."""
    return np.array([time.perf_counter(), time.process_time()])


def both_paths(mod, cfg, seeds: list[int], reference_seeds: int, batched_threads: int | None = None,
               before: bool = False):
    """Time the one-seed path on the first ``reference_seeds`` seeds and ``run_seeds`` on all of them.

    Returns ``(single rows {seed: frame}, seconds, batched rows {seed: frame}, seconds, before)``,
    each ``seconds`` an array (wall, process CPU);
    ``batched_threads`` (if given) becomes the config's ``torch_threads`` for the batched path.
    With ``before``, ``before`` is ``(rows, seconds)`` of ``run_seeds(..., fast=False)`` (the
    batched path before the second issue-21 change), run right before the current one; else None.
    """
    import copy

    from ibscope.experiments import execution
    from ibscope.experiments._tishby_batched import run_seeds

    with tempfile.TemporaryDirectory() as d:
        t0 = _clock()
        single = {s: mod.run_seed(cfg, s, f"{d}/seed_{s}") for s in seeds[:reference_seeds]}
        t_single = _clock() - t0
        if batched_threads is not None:
            cfg = copy.copy(cfg)
            cfg.torch_threads = batched_threads
        old = None
        if before:
            t0 = _clock()
            with execution(cfg) as c:
                rows = run_seeds(c, seeds, f"{d}/before", load_data=mod.load_data,
                                 layer_estimator=mod._layer_estimator, fast=False)
            old = (rows, _clock() - t0)
        t0 = _clock()
        batched = mod.run_seeds(cfg, seeds, f"{d}/batch")
        t_batched = _clock() - t0
    return single, t_single, batched, t_batched, old


def max_diff(a: dict, b: dict) -> float:
    """Max |a - b| of i_xt and i_ty over the seeds both ``{seed: rows}`` hold."""
    return max(float(np.abs(a[s][c].to_numpy() - b[s][c].to_numpy()).max())
               for s in set(a) & set(b) for c in ("i_xt", "i_ty"))


def training_rows(n_seeds: int, epochs: int, repeats: int = 3) -> list[tuple[str, float, float]]:
    """Seconds per optimizer step of the batched 12-bit training, reference layout vs current.

    Returns ``[(name, best (wall, CPU) seconds per step, max |weight difference| to the reference), ...]``.
    """
    import torch

    from ibscope.data import train_test_split, twelve_bit
    from ibscope.models import MLP, BatchedMLP, SeedBatches, batched_cross_entropy
    from ibscope.training import fit

    class RowsFirst(BatchedMLP):  # the forward pass before issue 21: (S, B, features)
        def forward(self, x):
            h = self._input(x)
            for w, b, act in zip(self.weights[:-1], self.biases[:-1], self.acts, strict=True):
                h = act(torch.baddbmm(b, h, w))
            return torch.baddbmm(self.biases[-1], h, self.weights[-1])

    def rows_first_ce(logits, target):  # the loss before issue 21 (reshape to (S * B, C))
        s, b, c = logits.shape
        ce = torch.nn.functional.cross_entropy(logits.reshape(s * b, c), target.reshape(s * b),
                                               reduction="none")
        return ce.reshape(s, b).mean(1).sum()

    x, y = twelve_bit()
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    seeds = list(range(n_seeds))
    train = [train_test_split(len(y), train_fraction=0.8, seed=s, stratify=y.numpy()).train for s in seeds]
    xs, ys = torch.stack([x[t] for t in train]), torch.stack([y[t] for t in train])
    nets = [MLP(12, (10, 7, 5, 4, 3), 2, activation="tanh", init="truncated_normal", seed=s) for s in seeds]
    rows = torch.as_tensor(np.stack(train))
    variants = {
        "reference: (S, B, features), Adam loop": (RowsFirst, rows_first_ce, {"foreach": False}, False),
        "(S, features, B), Adam foreach": (BatchedMLP, batched_cross_entropy, {"foreach": True}, False),
        "current: + fused Adam, shared-data batches": (BatchedMLP, batched_cross_entropy, {"fused": True}, True),
    }
    best = {name: np.full(2, np.inf) for name in variants}
    weights = {}
    for _ in range(repeats):
        for name, (cls, loss, kw, shared) in variants.items():
            model = cls(nets)
            opt = torch.optim.Adam(model.parameters(), lr=4e-4, **kw)
            shuffle = [s + 1_000_003 for s in seeds]
            data = SeedBatches(x, y, 512, shuffle, rows=rows) if shared else SeedBatches(xs, ys, 512, shuffle)
            t0 = _clock()
            fit(model, loss, data, opt, epochs=epochs, progress=False)
            best[name] = np.minimum(best[name], (_clock() - t0) / (epochs * len(data)))
            weights[name] = torch.cat([p.detach().flatten() for p in model.parameters()])
    ref = weights[next(iter(variants))]
    return [(name, best[name], float((weights[name] - ref).abs().max())) for name in variants]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--epochs", type=int, default=8000)
    p.add_argument("--snapshots", type=int, default=300)
    p.add_argument("--reference-seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the batched path (the one-seed "
                   "path always runs on one thread, its fastest for this tiny network)")
    p.add_argument("--before", action="store_true", help="also time the batched path before the second "
                   "issue-21 change (run_seeds(fast=False)), side by side")
    p.add_argument("--training-only", type=int, metavar="EPOCHS",
                   help="only the training step rows (reference layout vs current), EPOCHS epochs each")
    a = p.parse_args()

    import torch

    if a.training_only:
        torch.set_num_threads(a.threads)
        rows = training_rows(a.seeds, a.training_only)
        print(f"batched 12-bit training, {a.seeds} seeds, {a.training_only} epochs x 7 steps, "
              f"{a.threads} torch thread(s), best of 3 alternating runs")
        print(f"{'variant':42s} {'ms/step':>8s} {'CPU ms':>8s} {'max |dw| vs reference':>22s}")
        for name, sec, dw in rows:
            print(f"{name:42s} {sec[0] * 1e3:8.2f} {sec[1] * 1e3:8.2f} {dw:22.2e}")
        print("speed-up (reference / current): {:.2f}x wall, {:.2f}x CPU".format(*(rows[0][1] / rows[-1][1])))
        print("speed-up (features first, foreach / current): {:.2f}x wall, {:.2f}x CPU".format(
            *(rows[1][1] / rows[-1][1])))
        return

    from ibscope.experiments import _tishby
    from ibscope.experiments.runner import resolve_config

    torch.set_num_threads(1)
    cfg = resolve_config("tishby", overrides={"epochs": a.epochs, "n_snapshots": a.snapshots,
                                              "estimators": {"binning": {"n_bins": 30}},
                                              "keep_activations": False})
    single, t_single, batched, t_batched, before = both_paths(_tishby, cfg, list(range(a.seeds)),
                                                              a.reference_seeds, a.threads, a.before)
    per_seed = t_single / a.reference_seeds
    th = f"{a.threads} thread{'s' if a.threads > 1 else ''}"
    rows = [("one-seed path (measured)", a.reference_seeds, t_single),
            ("one-seed path (scaled to all seeds)", a.seeds, per_seed * a.seeds)]
    if before is not None:
        rows.append((f"batched, before (fast=False, {th})", a.seeds, before[1]))
    rows.append((f"batched seeds (measured, {th})", a.seeds, t_batched))
    print(f"12-bit paper setup: {a.epochs} epochs, {len(_tishby.log_schedule(a.epochs, a.snapshots))} snapshots, "
          f"6 layers, binning (30 bins)")
    print(f"{'path':40s} {'seeds':>6s} {'wall s':>9s} {'wall min':>8s} {'CPU s':>9s}")
    for name, n, t in rows:
        print(f"{name:40s} {n:6d} {t[0]:9.1f} {t[0] / 60:8.2f} {t[1]:9.1f}")
    print("speed-up (scaled one-seed / batched): {:.1f}x wall, {:.1f}x CPU".format(*(per_seed * a.seeds / t_batched)))
    if before is not None:
        print("speed-up (batched before / batched): {:.2f}x wall, {:.2f}x CPU".format(*(before[1] / t_batched)))
        print(f"max |batched - batched before| over all seeds' rows: {max_diff(batched, before[0]):.3g} bits")
    print(f"max |batched - one-seed| over the common seeds' rows: {max_diff(batched, single):.3g} bits")


if __name__ == "__main__":
    main()
