"""Run an objectives experiment config (ib_compare, csib_regression) over seeds; print the tables.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/run_objectives.py configs/ib_compare.yaml --seeds 0-4

The YAML has ``experiment``, optional ``profile`` (a key of the module's
PROFILES), ``config`` (overrides) and ``grid`` (lists to cross). Results of
every (grid point, seed) are written atomically under ``--out`` (default
``runs/<yaml stem>``) and skipped when present (resume). A stand-in until the
project's runner/CLI takes these configs.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import sys
import time
from dataclasses import fields
from pathlib import Path

import pandas as pd
import yaml

_MODULES = {"ib_compare": "ibscope.experiments._ib_compare",
            "csib_regression": "ibscope.experiments._csib_regression"}


def _seeds(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--seeds", default="0-4")
    ap.add_argument("--out", default=None)
    ap.add_argument("--profile", default=None, help="override the YAML's profile")
    args = ap.parse_args(argv)
    spec = yaml.safe_load(Path(args.config).read_text())
    name = spec["experiment"]
    mod = importlib.import_module(_MODULES[name])
    profile = args.profile or spec.get("profile")
    base = dict(mod.PROFILES.get(profile, {})) if profile else {}
    base.update(spec.get("config") or {})
    grid = spec.get("grid") or {}
    keys = list(grid)
    allowed = {f.name for f in fields(mod.Config)}
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    frames = []
    for values in itertools.product(*(grid[k] for k in keys)):
        overrides = {**base, **dict(zip(keys, values, strict=False))}
        unknown = set(overrides) - allowed
        if unknown:
            raise SystemExit(f"Unknown config keys for {name}: {sorted(unknown)}")
        cfg = mod.Config(**overrides)
        for seed in _seeds(args.seeds):
            t0 = time.time()
            frames.append(mod.run_seed(cfg, seed, out))
            print(f"{name} {dict(zip(keys, values, strict=False))} seed {seed}: {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    results = pd.concat(frames, ignore_index=True)
    from ibscope.store import atomic_write_parquet

    atomic_write_parquet(out / "results.parquet", results)
    summary = mod.summarize(results)
    print(summary.to_markdown(index=False, floatfmt=".4f") if _has_tabulate() else summary.to_string(index=False))
    for p in mod.plot(results, out):
        print(f"figure: {p}", file=sys.stderr)
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
