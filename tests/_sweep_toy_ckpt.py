"""A toy experiment that trains resumably, alone or in batches (for tests/test_resume_batch.py).

"Training" is ``steps`` random-walk steps per seed, each seed with its own
NumPy generator. After every step a checkpoint (JSON: step, walk positions
and every generator's state) is written atomically, and an interrupted run
continues from it, so a resumed seed gives exactly the rows of an
uninterrupted one. Every call appends ``"<seeds> from <step>"`` to
``<out_dir>/calls.txt``.

``run_seeds`` trains several seeds as one batch and adds ``1e-6 * len(batch)
+ 1e-8 * sum(batch seeds)`` to every value: a stand-in for the floating-point reassociation that
makes a real batched network's rows depend (slightly) on which seeds share its
batch. A resume that re-plans a batch therefore changes the table, as it does
for tishby/iiw/lagrangian.

Kill hook: with ``SWEEP_TOY_HOLD=<path>`` in the environment, the run whose
``scale`` equals ``SWEEP_TOY_HOLD_SCALE`` (default 2.0) and whose kind
(``SWEEP_TOY_HOLD_KIND``: 'batch' or 'seed', default 'batch') matches writes
``<path>`` after the checkpoint of step ``steps // 2`` and then sleeps, so a
test can SIGKILL the process at a known point inside training.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

NAME = "sweep_toy_ckpt"
PROFILES: dict = {}


@dataclass
class Config:
    scale: float = 1.0
    steps: int = 6

    def validate(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"'scale' must be > 0, got {self.scale!r}.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 2:
            raise ValueError(f"'steps' must be an int >= 2, got {self.steps!r}.")


def _train(config: Config, seeds: list[int], out: Path, kind: str) -> dict[int, pd.DataFrame]:
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "toy_checkpoint.json"
    if ckpt.is_file():
        state = json.loads(ckpt.read_text())
        if state["seeds"] != seeds:
            raise ValueError(f"The checkpoint in {out} holds the seeds {state['seeds']}, not {seeds}.")
    else:
        gens = [np.random.default_rng(s) for s in seeds]
        state = {"seeds": seeds, "step": 0, "pos": [0.0] * len(seeds), "rows": [],
                 "rng": [g.bit_generator.state for g in gens]}
    with open(out / "calls.txt", "a") as f:  # which seeds, from which step: tests read it
        f.write(f"{' '.join(map(str, seeds))} from {state['step']}\n")
    gens = []
    for st in state["rng"]:
        g = np.random.default_rng()
        g.bit_generator.state = st
        gens.append(g)
    offset = 1e-6 * len(seeds) + 1e-8 * sum(seeds) if kind == "batch" else 0.0
    hold = os.environ.get("SWEEP_TOY_HOLD")
    hold_here = (hold and kind == os.environ.get("SWEEP_TOY_HOLD_KIND", "batch")
                 and config.scale == float(os.environ.get("SWEEP_TOY_HOLD_SCALE", "2.0")))
    while state["step"] < config.steps:
        state["step"] += 1
        for i, (s, g) in enumerate(zip(seeds, gens, strict=True)):
            state["pos"][i] += float(g.normal())
            state["rows"].append({"seed": s, "epoch": state["step"], "value": config.scale * state["pos"][i] + offset})
        state["rng"] = [g.bit_generator.state for g in gens]
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, ckpt)
        if hold_here and state["step"] == config.steps // 2:
            Path(hold).write_text(str(os.getpid()))
            time.sleep(120)  # the test kills us here
    rows = pd.DataFrame(state["rows"]).assign(unit="bits")
    return {s: rows[rows["seed"] == s].reset_index(drop=True) for s in seeds}


def run_seed(config: Config, seed: int, out_dir, *, progress: bool = False) -> pd.DataFrame:
    return _train(config, [int(seed)], Path(out_dir), "seed")[int(seed)]


def run_seeds(config: Config, seeds, out_dir, *, progress: bool = False) -> dict[int, pd.DataFrame]:
    return _train(config, [int(s) for s in seeds], Path(out_dir), "batch")


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    return results.groupby("epoch", as_index=False)["value"].mean()


def plot(results: pd.DataFrame, out_dir) -> list:
    return []
