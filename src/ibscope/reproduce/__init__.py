"""Reproductions: the field's headline claims as data, each decided by a fixed rule over seeds.

A claim (``claims/<id>.yaml`` in this package) names the experiments that
test it, the statistic that decides it and the decision rule, fixed before
any run; :func:`reproduce` runs it (resumably, as sweeps) and returns a
verdict -- ``reproduced``, ``not reproduced``, ``inconclusive`` or
``underpowered`` (inconclusive, and unable to detect the paper's stated effect
at its seed count) -- with the statistic's interval. Every claim names the
paper setting it ``follows`` and lists its ``deviations`` from it. ``ibscope reproduce --list`` lists the claims;
``ibscope reproduce CLAIM --profile quick`` runs one; ``--all`` runs every
claim and writes the catalogue report (``<out>/index.html``). See
docs/reproductions.md for the measured verdicts.
"""

from ._claims import Claim, RunSpec, catalogue, get_claim, load_claim
from ._run import ClaimResult, build_catalogue_report, reproduce, reproduce_all, run_spec
from ._statistics import (
    COMPRESSION_METHODS,
    LATE_COMPRESSION_STATISTICS,
    STATISTICS,
    Statistic,
    compression_per_run,
    compute_statistic,
    fitting_end_index,
    late_compression_per_run,
    signed_compression,
)
from ._verdict import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    UNDERPOWERED,
    VERDICTS,
    Rule,
    Verdict,
    bootstrap_interval,
    decide,
    minimum_detectable_effect,
    t_interval,
)

__all__ = [
    "Claim", "RunSpec", "catalogue", "get_claim", "load_claim",
    "ClaimResult", "build_catalogue_report", "reproduce", "reproduce_all", "run_spec",
    "STATISTICS", "Statistic", "compute_statistic", "late_compression_per_run",
    "compression_per_run", "signed_compression", "fitting_end_index", "COMPRESSION_METHODS",
    "LATE_COMPRESSION_STATISTICS",
    "Rule", "Verdict", "decide", "t_interval", "bootstrap_interval", "minimum_detectable_effect",
    "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "UNDERPOWERED", "VERDICTS",
]
