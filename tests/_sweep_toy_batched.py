"""The sweep toy with a ``run_seeds`` (for the seed-batching tests of the sweep executor).

``run_seeds`` appends one line per call to ``<out_dir>/batch_calls.txt`` and
returns, for every seed, exactly the rows ``run_seed`` returns; setting
``fail_batch`` makes it raise (the executor must then retry seed by seed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from _sweep_toy import PROFILES, plot, summarize  # noqa: F401  (re-exported: the experiment contract)
from _sweep_toy import Config as _ToyConfig
from _sweep_toy import run_seed as _toy_run_seed

NAME = "sweep_toy_batched"


@dataclass
class Config(_ToyConfig):
    fail_batch: bool = False


def run_seed(config: Config, seed: int, out_dir, *, progress: bool = False) -> pd.DataFrame:
    return _toy_run_seed(config, seed, out_dir, progress=progress)


def run_seeds(config: Config, seeds, out_dir, *, progress: bool = False) -> dict[int, pd.DataFrame]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "batch_calls.txt", "a") as f:
        f.write(" ".join(str(s) for s in seeds) + "\n")
    if config.fail_batch:
        raise RuntimeError("deliberate batch failure (setting fail_batch=True)")
    return {int(s): _toy_run_seed(config, int(s), out_dir / f"seed_{s}") for s in seeds}
