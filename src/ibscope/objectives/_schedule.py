"""Annealing schedules for loss weights (beta of VIB / dual IB, gamma, ...).

The dual-IB reference code annealed beta with a hard-coded number of steps
per epoch, so the schedule ended at the wrong place whenever the data set or
batch size changed. Here a schedule is a pure function of the optimizer step
``t`` with its length given in steps (compute it as
``epochs * len(loader)``), clamped at both ends, so
``schedule(0) == start`` and ``schedule(t) == end`` for every t >= n_steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._validation import InstanceOf, Interval, Options, validate_params

__all__ = ["AnnealingSchedule", "check_weight", "resolve_weight"]


@dataclass(frozen=True)
class AnnealingSchedule:
    """A weight that moves from ``start`` to ``end`` over ``n_steps`` optimizer steps.

    Parameters
    ----------
    start, end : float
        Values at step ``warmup`` (and before) and at step ``warmup + n_steps`` (and after).
    n_steps : int
        Length of the ramp in optimizer steps (>= 1).
    kind : {'linear', 'log', 'cosine', 'step'}
        'linear': straight line; 'log': geometric interpolation (``start`` and
        ``end`` must be > 0; the usual choice for beta sweeps spanning decades);
        'cosine': half-cosine ease; 'step': ``start`` until the end of the
        ramp, then ``end``.
    warmup : int
        Steps held at ``start`` before the ramp begins.

    Examples
    --------
    >>> s = AnnealingSchedule(1e-4, 1e-1, n_steps=100, kind="log")
    >>> s(0), round(s(50), 6), s(100), s(10**6)
    (0.0001, 0.003162, 0.1, 0.1)
    """

    start: float
    end: float
    n_steps: int
    kind: str = "linear"
    warmup: int = 0

    def __post_init__(self) -> None:
        validate_params("AnnealingSchedule", {"start": self.start, "end": self.end, "n_steps": self.n_steps,
                                              "kind": self.kind, "warmup": self.warmup}, {
            "start": [Interval(float, None, None)],
            "end": [Interval(float, None, None)],
            "n_steps": [Interval(int, 1, None)],
            "kind": [Options(("linear", "log", "cosine", "step"))],
            "warmup": [Interval(int, 0, None)],
        })
        if self.kind == "log" and (self.start <= 0 or self.end <= 0):
            raise ValueError(f"A 'log' AnnealingSchedule needs start > 0 and end > 0; got {self.start!r}, {self.end!r}.")

    def fraction(self, step: int) -> float:
        """Progress in [0, 1] of the ramp at optimizer step ``step``."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"'step' must be an int >= 0, got {step!r}.")
        return min(max(step - self.warmup, 0) / self.n_steps, 1.0)

    def __call__(self, step: int) -> float:
        f = self.fraction(step)
        a, b = float(self.start), float(self.end)
        if f >= 1.0:
            return b
        if self.kind == "linear":
            return a + (b - a) * f
        if self.kind == "log":
            return math.exp(math.log(a) + (math.log(b) - math.log(a)) * f)
        if self.kind == "cosine":
            return a + (b - a) * 0.5 * (1.0 - math.cos(math.pi * f))
        return a  # 'step'


def resolve_weight(weight: float | AnnealingSchedule, step: int, name: str) -> float:
    """The value of a constant or scheduled loss weight at ``step``."""
    if isinstance(weight, AnnealingSchedule):
        value = weight(step)
    else:
        value = float(weight)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"The '{name}' weight must be a finite float >= 0. Got {value!r} at step {step}.")
    return value


def check_weight(weight: object, name: str, owner: str) -> None:
    """Validate a loss weight: a float >= 0 or an :class:`AnnealingSchedule` that never goes negative."""
    if isinstance(weight, AnnealingSchedule):
        if min(weight.start, weight.end) < 0:
            raise ValueError(f"The '{name}' schedule of {owner} must stay >= 0; got start={weight.start!r}, end={weight.end!r}.")
        return
    validate_params(owner, {name: weight}, {
        name: [Interval(float, 0, None), InstanceOf((AnnealingSchedule,), "an AnnealingSchedule")]})
