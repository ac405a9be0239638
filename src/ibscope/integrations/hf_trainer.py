"""A ``transformers.Trainer`` callback that runs :func:`ibscope.lm.analyze` during training.

Install with ``pip install 'ibscope[hf]'``. :class:`IbscopeTrainerCallback`
measures the model being trained (prompt entropy, dataset entropy, effective
rank per layer; Skean et al., ICML 2025, arXiv:2502.02013) on a fixed set of
prompts at chosen global steps: step 0 (the initialization) at
``on_train_begin``, step s at ``on_step_end`` once ``state.global_step == s``,
and, with ``on_evaluate=True``, at every evaluation. The model is put in eval
mode (no dropout) and no gradient is taken; its training mode is restored.

Logging. Each analysis becomes one log record of scalars (loggers take
numbers only, so the unit is part of the key): ``ibscope/<measure>_<unit>/<layer>``
with ``<unit>`` ``bits`` or ``nats`` (the normalisation, e.g. ``logN``, for
normalised entropies; ``dimensions`` for ranks), ``.../lo`` and ``.../hi``
with ``ci``, and ``.../n_flags`` (0 when healthy). With :meth:`IbscopeTrainerCallback.bind` the record goes
through ``trainer.log`` (the Trainer's own logging: ``state.log_history`` and
every ``report_to`` integration); without it the record is appended to
``state.log_history`` with its ``step``. The full tidy table accumulates in
:attr:`IbscopeTrainerCallback.results` and, with ``out_dir``, in
``out_dir/lm_measures.parquet`` (resumable like :func:`ibscope.lm.analyze`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import pandas as pd

try:
    from transformers import TrainerCallback
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("ibscope.integrations.hf_trainer needs transformers: pip install 'ibscope[hf]'.") from e

from ..lm import analyze

__all__ = ["IbscopeTrainerCallback"]


class IbscopeTrainerCallback(TrainerCallback):
    """Run :func:`ibscope.lm.analyze` on the trained model at chosen steps and log the values.

    Parameters
    ----------
    input_ids : tensor or array of int, shape (n_prompts, positions)
        The fixed prompts measured at every analysis.
    attention_mask : tensor or array of 0/1, optional
    steps : iterable of int, optional
        Global steps to analyze at (0 = before the first step). Default: ``(0,)``
        plus every ``every`` steps when ``every`` is given.
    every : int, optional
        Also analyze every ``every`` global steps.
    on_evaluate : bool, default False
        Also analyze at every evaluation (``on_evaluate``), at its global step.
    out_dir : path, optional
        Passed to :func:`ibscope.lm.analyze` (the table, its settings, the figure).
    **analyze_kwargs
        Any other argument of :func:`ibscope.lm.analyze` (``layers``,
        ``measures``, ``alpha``, ``normalization``, ``unit``, ``ci``,
        ``batch_size``, ``max_bytes``, ...).

    Attributes
    ----------
    results : pandas.DataFrame
        Every row measured so far (checkpoint ``step_<s>``).

    References
    ----------
    .. [1] O. Skean et al., "Layer by Layer: Uncovering Hidden Representations
       in Language Models", ICML 2025, arXiv:2502.02013.
    """

    def __init__(self, input_ids: Any, attention_mask: Any = None, *, steps: Iterable[int] | None = None,
                 every: int | None = None, on_evaluate: bool = False,
                 out_dir: str | os.PathLike | None = None, **analyze_kwargs: Any):
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"The 'every' parameter must be a positive integer or None. Got {every!r}.")
        steps = (0,) if steps is None else tuple(steps)
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in steps):
            raise ValueError(f"The 'steps' parameter must hold non-negative integers. Got {steps!r}.")
        bad = {"models_or_checkpoints", "figure"} & set(analyze_kwargs)
        if bad:
            raise TypeError(f"IbscopeTrainerCallback sets {sorted(bad)} itself.")
        self.input_ids, self.attention_mask = input_ids, attention_mask
        self.steps, self.every, self.on_evaluate_ = frozenset(steps), every, bool(on_evaluate)
        self.out_dir, self.analyze_kwargs = out_dir, analyze_kwargs
        self.results = pd.DataFrame()
        self._trainer = None
        self._done: set[int] = set()

    def bind(self, trainer: Any) -> IbscopeTrainerCallback:
        """Log through ``trainer.log`` (reaching every ``report_to`` integration); returns self."""
        if not callable(getattr(trainer, "log", None)):
            raise TypeError("'trainer' must be a transformers.Trainer (it has no log method).")
        self._trainer = trainer
        return self

    def _due(self, step: int) -> bool:
        return step in self.steps or (self.every is not None and step % self.every == 0)

    def _run(self, state, model) -> None:
        step = int(state.global_step)
        if model is None or step in self._done:
            return
        self._done.add(step)
        rows = analyze([(step, model)], self.input_ids, self.attention_mask, out_dir=self.out_dir,
                       figure=self.out_dir is not None, **self.analyze_kwargs)
        self.results = pd.concat([self.results, rows], ignore_index=True) if len(self.results) else rows
        logs: dict[str, float] = {}
        for r in rows.itertuples(index=False):
            unit = r.unit.replace("fraction of ", "") if isinstance(r.unit, str) else "value"
            key = f"ibscope/{r.measure}_{unit}/{r.layer}"
            logs[key] = float(r.value)
            if r.value_lo == r.value_lo:
                logs[f"{key}/lo"], logs[f"{key}/hi"] = float(r.value_lo), float(r.value_hi)
            logs[f"{key}/n_flags"] = float(len([f for f in str(r.flags).split(";") if f]))
        if self._trainer is not None:
            self._trainer.log(logs)
        else:
            state.log_history.append({**logs, "step": step})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self._due(int(state.global_step)):
            self._run(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self._due(int(state.global_step)):
            self._run(state, model)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if self.on_evaluate_:
            self._run(state, model)
