"""Seeds as a batch dimension for the iiw and lagrangian sweeps vs the one-seed path, side by side.

    PYTHONPATH=src python benchmarks/batched_sweeps.py --seeds 5 --reference-seeds 2

Each experiment runs at the configuration of a catalogue claim's grid point
at the ``quick`` profile (``wang-iiw-gap-width`` at width 256;
``achille-iw-width`` at width 64), on one torch thread for both paths (as a
sweep worker runs them). The batched path trains all ``--seeds`` seeds as one
network (``run_seeds``); the one-seed path runs ``--reference-seeds`` seeds one
after another and its time is also scaled to ``--seeds`` seeds (stated as
such). The rows of the seeds both paths ran are compared (largest relative
difference of a value; training drift from float reassociation grows with
the number of SGD steps).
"""

from __future__ import annotations

import argparse

import numpy as np

CASES = {
    "iiw": ("wang-iiw-gap-width", {"width": 256}),
    "lagrangian": ("achille-iw-width", {"width": 64}),
}


def _config(claim_id: str, point: dict) -> dict:
    from ibscope.reproduce import get_claim

    claim = get_claim(claim_id)
    (run,) = claim.runs.values()
    return {**run.config, **claim.profiles["quick"].get("config", {}), **point}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--reference-seeds", type=int, default=2)
    a = p.parse_args()

    import torch
    from batched_seeds import (
        both_paths,  # this directory's 12-bit benchmark: one timing of both paths
    )

    from ibscope.experiments import get

    torch.set_num_threads(1)
    print(f"{'experiment':12s} {'path':38s} {'seeds':>6s} {'seconds':>9s}")
    for name, (claim_id, point) in CASES.items():
        mod = get(name)
        cfg = _config(claim_id, point)
        single, t_single, batched, t_batched = both_paths(mod, cfg, list(range(a.seeds)), a.reference_seeds)
        rel = 0.0
        for s, df in single.items():
            x, y = df["value"].to_numpy(float), batched[s]["value"].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            rel = max(rel, float((np.abs(x - y)[ok] / np.maximum(np.abs(x[ok]), 1e-12)).max()))
        per_seed = t_single / a.reference_seeds
        for label, n, t in (("one-seed path (measured)", a.reference_seeds, t_single),
                            ("one-seed path (scaled to all seeds)", a.seeds, per_seed * a.seeds),
                            ("batched seeds (measured)", a.seeds, t_batched)):
            print(f"{name:12s} {label:38s} {n:6d} {t:9.1f}")
        print(f"{name:12s} speed-up {per_seed * a.seeds / t_batched:.1f}x; largest relative difference of a "
              f"common seed's value: {rel:.2g} ({claim_id}, {point})")


if __name__ == "__main__":
    main()
