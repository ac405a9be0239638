"""Decision rules and verdicts: a claim's statistic, its interval, and what they say.

A rule is fixed before the run (it is part of the claim's data). With a
statistic's two-sided interval [lo, hi] at the rule's level:

* ``direction: greater`` (the claim says the quantity exceeds ``threshold``):
  ``reproduced`` if lo > threshold, ``not reproduced`` if hi < threshold,
  else ``inconclusive``;
* ``direction: less`` (the claim says the quantity stays below ``threshold``):
  ``reproduced`` if hi < threshold, ``not reproduced`` if lo > threshold,
  else ``inconclusive``.

An interval that cannot be computed (fewer than two replicates, NaN values)
is always ``inconclusive``, with the reason stated. A refuted claim is a
result like any other: the verdict says so plainly, with its interval.

Power. From the interval's half-width (Student t over ``n`` replicates)
:func:`minimum_detectable_effect` gives the smallest distance from the
threshold that the test detects with 80% power at the rule's level (two-sided
t: ``(t_{1-a/2, n-1} + t_{0.8, n-1}) * se``; Cohen 1988, ch. 2). A claim that
states the paper's effect (``paper_effect``, in the statistic's unit) and
whose verdict would be ``inconclusive`` is ``underpowered`` when
``|paper_effect - threshold|`` is below that minimum detectable effect: the
test could not have detected the paper's effect at this seed count, so the
missing decision says nothing about the claim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .._intervals import bootstrap_interval, t_interval, t_ppf

__all__ = ["Rule", "Verdict", "decide", "t_interval", "bootstrap_interval",
           "minimum_detectable_effect", "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "UNDERPOWERED",
           "VERDICTS"]

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
UNDERPOWERED = "underpowered"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, UNDERPOWERED)


@dataclass(frozen=True)
class Rule:
    """The decision rule of a claim.

    Parameters
    ----------
    direction : {'greater', 'less'}
        Whether the claim says the statistic is above or below ``threshold``.
    threshold : float
        In the statistic's unit (bits for information, 1 for correlations...).
    level : float in (0, 1), default 0.95
        Coverage of the interval the decision reads.
    """

    direction: str
    threshold: float
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.direction not in ("greater", "less"):
            raise ValueError(f"A rule's 'direction' must be 'greater' or 'less', got {self.direction!r}.")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not math.isfinite(self.threshold):
            raise ValueError(f"A rule's 'threshold' must be a finite number, got {self.threshold!r}.")
        if isinstance(self.level, bool) or not isinstance(self.level, (int, float)) or not 0 < self.level < 1:
            raise ValueError(f"A rule's 'level' must be in (0, 1), got {self.level!r}.")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rule:
        unknown = sorted(set(d) - {"direction", "threshold", "level"})
        if unknown:
            raise ValueError(f"Unknown rule key(s) {unknown}; a rule has direction, threshold, level.")
        return cls(**dict(d))

    def describe(self, unit: str = "") -> str:
        sign = ">" if self.direction == "greater" else "<"
        return (f"{self.level:.0%} interval entirely {sign} {self.threshold:g}{' ' + unit if unit else ''} "
                f"-> reproduced; entirely on the other side -> not reproduced; else inconclusive")


@dataclass(frozen=True)
class Verdict:
    """A statistic, its interval and the decision.

    Attributes
    ----------
    verdict : str
        'reproduced', 'not reproduced', 'inconclusive' or 'underpowered' (an
        inconclusive test that could not detect the paper's stated effect).
    estimate, low, high : float
        The statistic and its interval (NaN when unknown).
    level : float
    n : int
        Replicates behind the interval (seeds, runs).
    interval : str
        How the interval was computed (e.g. 'Student t over seeds').
    reason : str
        One sentence: why this verdict.
    details : dict
    """

    verdict: str
    estimate: float
    low: float
    high: float
    level: float
    n: int
    interval: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def minimum_detectable_effect(low: float, high: float, n: int, level: float, *, seeds: int | None = None,
                              power: float = 0.8) -> float:
    """The smallest true distance from the threshold that a two-sided t test detects with ``power``.

    Parameters
    ----------
    low, high : float
        The statistic's interval at ``level`` over ``n`` replicates; its
        half-width gives the standard error ``se = (high - low) / 2 /
        t_{(1+level)/2, n-1}`` (exact for a Student-t interval; for a
        Bonferroni or bootstrap interval an approximation that errs towards a
        larger effect).
    n : int
        Replicates behind the interval (>= 2, else NaN is returned).
    level : float in (0, 1)
        The rule's level (two-sided alpha = 1 - level).
    seeds : int, optional
        Project to this many replicates (``se * sqrt(n / seeds)``, with the
        t quantiles at ``seeds - 1`` degrees of freedom); default ``n``.
    power : float in (0, 1), default 0.8

    Returns
    -------
    float
        ``(t_{(1+level)/2, m-1} + t_{power, m-1}) * se_m`` with ``m`` the
        replicate count (in the statistic's unit); NaN when unknown.

    References
    ----------
    .. [1] J. Cohen, *Statistical Power Analysis for the Behavioral Sciences*,
       2nd ed., 1988, ch. 2.
    """
    for name, v in (("level", level), ("power", power)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise ValueError(f"'{name}' must be in (0, 1), got {v!r}.")
    lo, hi = float(low), float(high)
    m = int(n) if seeds is None else int(seeds)
    if seeds is not None and (isinstance(seeds, bool) or m < 1):
        raise ValueError(f"'seeds' must be an int >= 1, got {seeds!r}.")
    if not (math.isfinite(lo) and math.isfinite(hi)) or int(n) < 2 or m < 2:
        return float("nan")
    if lo > hi:
        raise ValueError(f"minimum_detectable_effect: low {lo} > high {hi}.")
    se = (hi - lo) / 2 / float(t_ppf((1 + level) / 2, int(n) - 1)) * math.sqrt(int(n) / m)
    return float((t_ppf((1 + level) / 2, m - 1) + t_ppf(power, m - 1)) * se)


def decide(estimate: float, low: float, high: float, rule: Rule, *, n: int, interval: str,
           unit: str = "", details: Mapping[str, Any] | None = None, paper_effect: float | None = None,
           mde: float | None = None) -> Verdict:
    """Apply ``rule`` to a statistic with interval [low, high] (see the module docstring).

    ``paper_effect`` (the paper's stated value of the statistic) and ``mde``
    (:func:`minimum_detectable_effect`): an ``inconclusive`` verdict becomes
    ``underpowered`` when ``|paper_effect - threshold| < mde``.
    """
    vals = [float(v) for v in (estimate, low, high)]
    t = float(rule.threshold)
    u = f" {unit}" if unit else ""
    if not all(math.isfinite(v) for v in vals[1:]):
        v, why = INCONCLUSIVE, f"the interval could not be computed ({n} replicate(s)); at least 2 are needed"
    elif vals[1] > vals[2]:
        raise ValueError(f"decide: low {vals[1]} > high {vals[2]}.")
    else:
        lo, hi = vals[1], vals[2]
        above, below = lo > t, hi < t
        if rule.direction == "greater":
            v = REPRODUCED if above else NOT_REPRODUCED if below else INCONCLUSIVE
        else:
            v = REPRODUCED if below else NOT_REPRODUCED if above else INCONCLUSIVE
        where = ("entirely above" if above else "entirely below" if below else "contains")
        why = (f"the {rule.level:.0%} interval [{lo:.4g}, {hi:.4g}]{u} is {where} the threshold {t:g}{u}"
               if where != "contains" else
               f"the {rule.level:.0%} interval [{lo:.4g}, {hi:.4g}]{u} contains the threshold {t:g}{u}")
    if paper_effect is not None:
        if isinstance(paper_effect, bool) or not isinstance(paper_effect, (int, float)) \
                or not math.isfinite(paper_effect):
            raise ValueError(f"decide: 'paper_effect' must be a finite number, got {paper_effect!r}.")
        if v == INCONCLUSIVE and mde is not None and math.isfinite(mde) and abs(paper_effect - t) < mde:
            v = UNDERPOWERED
            why += (f"; the paper's effect {paper_effect:g}{u} lies {abs(paper_effect - t):.4g}{u} from the "
                    f"threshold, less than the minimum detectable effect {mde:.4g}{u} at n = {n} (80% power), "
                    "so this test could not detect it")
    return Verdict(v, vals[0], vals[1], vals[2], float(rule.level), int(n), interval, why, dict(details or {}))
