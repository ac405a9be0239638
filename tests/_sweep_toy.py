"""A tiny experiment module for the sweep tests (no torch training: milliseconds per task).

Every call of run_seed appends a line to ``<out_dir>/calls.txt``, so tests can
count how often a task was really computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

NAME = "sweep_toy"


@dataclass
class Config:
    scale: float = 1.0
    fail: bool = False

    def validate(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"'scale' must be > 0, got {self.scale!r}.")


PROFILES: dict = {}


def run_seed(config: Config, seed: int, out_dir, *, progress: bool = False) -> pd.DataFrame:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "calls.txt", "a") as f:
        f.write("call\n")
    if config.fail:
        raise RuntimeError("deliberate failure (setting fail=True)")
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"seed": seed, "epoch": [0, 1, 2], "value": config.scale * rng.normal(size=3),
                         "unit": "bits"})


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    return results.groupby("epoch", as_index=False)["value"].mean()


def plot(results: pd.DataFrame, out_dir) -> list:
    return []
