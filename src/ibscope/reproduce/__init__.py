"""Reproductions: the field's headline claims as data, each decided by a fixed rule over seeds.

A claim (``claims/<id>.yaml`` in this package) names the experiments that
test it, the statistic that decides it and the decision rule, fixed before
any run; :func:`reproduce` runs it (resumably, as sweeps) and returns a
verdict -- ``reproduced``, ``not reproduced`` or ``inconclusive`` -- with the
statistic's interval. ``ibscope reproduce --list`` lists the claims;
``ibscope reproduce CLAIM --profile quick`` runs one; ``--all`` runs every
claim and writes the catalogue report (``<out>/index.html``). See
docs/reproductions.md for the measured verdicts.
"""

from ._claims import Claim, RunSpec, catalogue, get_claim, load_claim
from ._run import ClaimResult, build_catalogue_report, reproduce, reproduce_all, run_spec
from ._statistics import STATISTICS, Statistic, compute_statistic, late_compression_per_run
from ._verdict import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    VERDICTS,
    Rule,
    Verdict,
    bootstrap_interval,
    decide,
    t_interval,
)

__all__ = [
    "Claim", "RunSpec", "catalogue", "get_claim", "load_claim",
    "ClaimResult", "build_catalogue_report", "reproduce", "reproduce_all", "run_spec",
    "STATISTICS", "Statistic", "compute_statistic", "late_compression_per_run",
    "Rule", "Verdict", "decide", "t_interval", "bootstrap_interval",
    "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "VERDICTS",
]
