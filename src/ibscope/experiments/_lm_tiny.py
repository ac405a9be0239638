"""A tiny GPT-2 trained on a synthetic Markov language: the soft-entropy information plane and the
layer-wise prompt entropy over training checkpoints.

The language is :class:`ibscope.lm.MarkovSource` (order ``order`` over
``vocab_size`` tokens, seeded by ``source_seed``, the same for every seed),
so the next-token information I(context; next) and the entropy rate are
known exactly. Per seed: ``n_train`` sequences of ``length`` tokens (the
seed's own sample), a randomly initialised GPT-2 (:func:`ibscope.lm.tiny_gpt`,
seeded) trained ``steps`` AdamW steps on CPU; at ``n_snapshots`` checkpoint
steps (0, the initialisation, to ``steps``, geometrically spaced) the
model is analysed on ``n_eval`` held-out sequences (the same for every seed)
with :func:`ibscope.lm.analyze`:

* the soft-entropy information plane of Conklin & Hosking [1]_ per hidden
  state (``estimator = 'soft'``, ``i_xt`` = H_soft(T), ``i_ty`` = H_soft(T) -
  H_soft(T | next token); :func:`ibscope.lm.soft_information_plane`);
* the prompt entropy of Skean et al. [2]_ per hidden state
  (``quantity = 'prompt_entropy'``);
* the held-out cross-entropy from position ``order`` on
  (``quantity = 'cross_entropy'``) and the source's entropy rate
  (``quantity = 'entropy_rate'``), all in ``unit``.

Rows use ``epoch`` = the training step (so the catalogue's information-plane
statistics apply). A seed is trained from scratch when its result is absent
(a seed takes well under a minute at the default size; no mid-seed resume).

Registry name ``lm_tiny`` (module ``_lm_tiny``); needs transformers.

References
----------
.. [1] H. Conklin and T. Hosking, "Learning is Forgetting: LLM Training as
   Lossy Compression", ICLR 2026, arXiv:2604.07569.
.. [2] O. Skean et al., "Layer by Layer: Uncovering Hidden Representations in
   Language Models", ICML 2025, arXiv:2502.02013.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._validation import Interval, Options
from . import as_config, orchestrated, validate_config

NAME = "lm_tiny"


@dataclass
class Config:
    """Settings of the tiny-GPT experiment (defaults: about 30-60 s per seed on one CPU core)."""

    vocab_size: int = 8
    order: int = 2
    support: int = 3
    concentration: float = 0.5
    source_seed: int = 0
    n_train: int = 2000
    length: int = 32
    n_layer: int = 4
    n_embd: int = 32
    n_head: int = 2
    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-2
    warmup: int = 10
    n_snapshots: int = 8
    n_eval: int = 64
    soft_bins: int = 32
    soft_temperature: float = 0.1
    soft_draws: int = 4
    unit: str = "bits"
    torch_threads: int = 1  # execution only (not in the config hash); set by the runner

    def validate(self) -> None:
        validate_config(self, _CONSTRAINTS, "lm_tiny")
        if self.support > self.vocab_size:
            raise ValueError(f"lm_tiny: 'support' ({self.support}) must be <= 'vocab_size' ({self.vocab_size}).")
        if self.length <= self.order:
            raise ValueError(f"lm_tiny: 'length' ({self.length}) must exceed 'order' ({self.order}).")
        if self.n_embd % self.n_head:
            raise ValueError(f"lm_tiny: 'n_embd' ({self.n_embd}) must be a multiple of 'n_head' ({self.n_head}).")
        if self.n_snapshots > self.steps + 1:
            raise ValueError(f"lm_tiny: 'n_snapshots' ({self.n_snapshots}) must be <= steps + 1.")


# the shared declarative rules (ibscope._validation): ints integral (no bool, float or str), floats finite
_CONSTRAINTS: dict[str, list] = {
    **{k: [Interval(int, lo, None)] for k, lo in {
        "vocab_size": 2, "order": 1, "support": 1, "source_seed": 0, "n_train": 1, "length": 2, "n_layer": 1,
        "n_embd": 1, "n_head": 1, "steps": 1, "batch_size": 1, "warmup": 0, "n_snapshots": 2, "n_eval": 1,
        "soft_bins": 2, "soft_draws": 1, "torch_threads": 0}.items()},
    **{k: [Interval(float, 0, None, closed="neither")] for k in ("concentration", "lr", "soft_temperature")},
    "unit": [Options(("bits", "nats"))],
}

PROFILES = {
    "test": {"n_train": 64, "length": 12, "n_layer": 2, "n_embd": 16, "steps": 6, "n_snapshots": 3,
             "n_eval": 8, "soft_draws": 1, "batch_size": 16},
    "tiny": {"n_train": 128, "length": 16, "n_layer": 3, "n_embd": 16, "steps": 20, "n_snapshots": 3,
             "n_eval": 8, "soft_draws": 1, "batch_size": 16},
    "demo": {"steps": 300, "n_snapshots": 6},
}


def snapshot_steps(steps: int, n: int) -> list[int]:
    """``n`` distinct checkpoint steps from 0 to ``steps``: 0, then geometrically spaced up to ``steps``."""
    if n <= 1:
        return [0]
    out = [0] + sorted({int(round(x)) for x in np.geomspace(1, steps, n - 1)})
    k = 1
    while len(out) < n:  # rounding merged some: fill with the first unused steps
        if k not in out:
            out.append(k)
        k += 1
    return sorted(out)


@orchestrated
def run_seed(config: Config | dict[str, Any], seed: int, out_dir: str | Path, *,
             progress: bool = False) -> pd.DataFrame:
    """Train one seed's tiny GPT and measure it at every checkpoint (rows: see the module notes)."""
    from .. import lm

    cfg = as_config(config, Config, NAME)
    src = lm.MarkovSource(cfg.vocab_size, cfg.order, support=cfg.support, concentration=cfg.concentration,
                          seed=cfg.source_seed)
    rate = src.entropy_rate(cfg.unit)
    train = src.sample(cfg.n_train, cfg.length, seed=1000 + int(seed))
    held = src.sample(cfg.n_eval, cfg.length, seed=10 ** 6 + cfg.source_seed)
    rows: list[dict[str, Any]] = []

    def measure(step: int, model: Any) -> None:
        df = lm.analyze([(step, model)], held, measures=("prompt_entropy", "soft_plane"), unit=cfg.unit,
                        soft_bins=cfg.soft_bins, soft_temperature=cfg.soft_temperature,
                        soft_draws=cfg.soft_draws, seed=0)
        base = {"seed": int(seed), "epoch": int(step), "step": int(step), "unit": cfg.unit}
        for (layer, idx), g in df.groupby(["layer", "layer_index"], sort=True):
            v = g.set_index("measure")["value"]
            rows.append({**base, "layer": layer, "layer_index": int(idx), "estimator": "soft",
                         "i_xt": float(v["soft_i_xt"]), "i_ty": float(v["soft_i_ty"]),
                         "n_tokens": int(g["n_tokens"].iloc[0])})
            rows.append({**base, "layer": layer, "layer_index": int(idx), "quantity": "prompt_entropy",
                         "value": float(v["prompt_entropy"])})
        ce = lm.next_token_cross_entropy(model, held, start=cfg.order, unit=cfg.unit)
        rows.append({**base, "layer": "model", "layer_index": -1, "quantity": "cross_entropy", "value": ce})
        rows.append({**base, "layer": "model", "layer_index": -1, "quantity": "entropy_rate", "value": rate})

    model = lm.tiny_gpt(cfg.vocab_size, n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head,
                        n_positions=cfg.length, seed=int(seed))
    lm.train_tiny_gpt(model, train, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=cfg.warmup,
                      checkpoint_steps=snapshot_steps(cfg.steps, cfg.n_snapshots), seed=int(seed),
                      on_checkpoint=measure)
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """At the last step, per layer: mean over seeds (Student-t 95% interval) of I(X;T), I(T;Y) and the
    prompt entropy; and the held-out cross-entropy against the entropy rate."""
    from .._intervals import mean_interval

    last = results[results["epoch"] == results["epoch"].max()]
    plane = last[last["estimator"].eq("soft")] if "estimator" in last.columns else last.iloc[:0]
    out = []
    if len(plane):
        out.append(mean_interval(plane, ["layer_index", "layer", "unit"], ["i_xt", "i_ty"]))
    q = last[last["quantity"].notna()] if "quantity" in last.columns else last.iloc[:0]
    if len(q):
        out.append(mean_interval(q, ["quantity", "layer_index", "layer", "unit"], ["value"]))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def plot(results: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """The soft information plane (seed means, one line per layer over steps) and prompt entropy by layer."""
    from ..plots import pyplot, save_figure

    plt = pyplot()
    out = Path(out_dir)
    figs = []
    plane = results[results["estimator"].eq("soft")] if "estimator" in results.columns else results.iloc[:0]
    if len(plane):
        m = plane.groupby(["layer_index", "epoch"], sort=True)[["i_xt", "i_ty"]].mean().reset_index()
        unit = str(plane["unit"].iloc[0])
        fig, ax = plt.subplots(figsize=(5, 4))
        for idx, g in m.groupby("layer_index"):
            ax.plot(g["i_xt"], g["i_ty"], "-o", ms=3, label=f"hidden state {idx}")
            ax.annotate("start", (g["i_xt"].iloc[0], g["i_ty"].iloc[0]), fontsize=6)
        ax.set_xlabel(f"I(X;T) = H_soft(T) [{unit}]")
        ax.set_ylabel(f"I(T;Y) [{unit}] (Y = next token)")
        ax.set_title(f"soft-entropy plane, mean of {plane['seed'].nunique()} seed(s)")
        ax.legend(fontsize=7)
        figs.append(save_figure(fig, out / "lm_tiny_plane.png", dpi=120))
    pe = results[results["quantity"].eq("prompt_entropy")] if "quantity" in results.columns else results.iloc[:0]
    if len(pe):
        m = pe.groupby(["epoch", "layer_index"], sort=True)["value"].mean().reset_index()
        fig, ax = plt.subplots(figsize=(5, 4))
        for step, g in m.groupby("epoch"):
            ax.plot(g["layer_index"], g["value"], "-o", ms=3, label=f"step {step}")
        ax.set_xlabel("hidden state (0 = embeddings)")
        ax.set_ylabel(f"prompt entropy [{pe['unit'].iloc[0]}]")
        ax.legend(fontsize=7)
        figs.append(save_figure(fig, out / "lm_tiny_prompt_entropy.png", dpi=120))
    return figs
