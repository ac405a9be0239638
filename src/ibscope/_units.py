"""Information units. ibscope computes in nats internally and reports bits by default."""

from __future__ import annotations

import math

UNITS = ("bits", "nats")
LN2 = math.log(2.0)


def check_unit(unit: str, *, name: str = "unit") -> str:
    if not isinstance(unit, str) or unit not in UNITS:
        raise ValueError(f"The '{name}' parameter must be one of {UNITS}. Got {unit!r} instead.")
    return unit


def from_nats(value: float, unit: str) -> float:
    """Convert a value in nats to ``unit`` ('bits' or 'nats')."""
    check_unit(unit)
    return float(value) / LN2 if unit == "bits" else float(value)


def to_nats(value: float, unit: str) -> float:
    """Convert a value in ``unit`` to nats."""
    check_unit(unit)
    return float(value) * LN2 if unit == "bits" else float(value)
