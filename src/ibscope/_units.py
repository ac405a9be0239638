"""Information units. ibscope computes in nats internally and reports bits by default.

The one place that converts between nats and bits (1 bit = ln 2 nats [1]_):
:func:`from_nats` / :func:`to_nats` for Python numbers, :func:`nats_to` for
arrays and tensors (keeps their type and dtype), :func:`unit_scale` for the
factor that multiplies a value in nats. Every other module calls these
instead of dividing by ``log(2)`` by hand; ``log(2)`` in a formula that is
not a unit conversion (the volume of a max-norm ball, ``log(2 pi e)``) stays
where it is.

References
----------
.. [1] T. M. Cover and J. A. Thomas, *Elements of Information Theory*, 2nd ed., Wiley, 2006, sec. 2.1.
"""

from __future__ import annotations

import math
from typing import TypeVar

UNITS = ("bits", "nats")
LN2 = math.log(2.0)

__all__ = ["UNITS", "LN2", "check_unit", "from_nats", "to_nats", "nats_to", "unit_scale"]

_T = TypeVar("_T")


def check_unit(unit: str, *, name: str = "unit") -> str:
    """``unit`` if it is 'bits' or 'nats'; otherwise a ValueError naming the parameter ``name``."""
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


def nats_to(value: _T, unit: str) -> _T:
    """A value in nats (a number, NumPy array or torch tensor) in ``unit``: ``value / ln 2`` for bits.

    Unlike :func:`from_nats` it keeps the value's type (a tensor stays a
    tensor, with its graph, dtype and device).
    """
    check_unit(unit)
    return value / LN2 if unit == "bits" else value


def unit_scale(unit: str) -> float:
    """The factor that turns a value in nats into ``unit``: ``1 / ln 2`` for bits, 1 for nats."""
    check_unit(unit)
    return 1.0 / LN2 if unit == "bits" else 1.0
