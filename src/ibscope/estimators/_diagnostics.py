"""Diagnostics stored with every estimate: named flags, one pure check each.

An estimate can look fine and mean nothing: fixed binning of a layer with
2000 distinct inputs returns I(X;T) = log2(2000) = 10.97 bits whatever the
network does, InfoNCE can never exceed log(batch size), a kNN estimator in
50 dimensions on 1000 points measures its own bias. Every estimator call
therefore records the applicable flags (``estimator.flags_``, and
``MIEstimate.flags``) and warns once per run for each (estimator, flag)
pair.

Flags (``FLAG_DESCRIPTIONS`` holds a one-line text of each for reports):

``saturated_xt``
    The value is within tolerance of log N (N = number of samples): every
    sample falls in its own bin / kernel, so the estimate is set by N, not by
    the data (I(X;T) of a deterministic network under binning or KDE).
``saturated_ty``
    The value is within tolerance of the plug-in entropy of a discrete
    variable (labels): I(T;Y) = H(Y), at most log2 of the number of classes.
``saturated_bins``
    The value is within tolerance of the plug-in entropy of a *binned*
    continuous variable (one quantized variable determines the other in the
    sample; finer bins or more samples would give more).
``ceiling_infonce``
    InfoNCE within tolerance of its hard cap log(b) (b = evaluation batch).
``few_samples_for_dim``
    A kNN estimator with fewer than 2^d samples for the joint dimension d of
    its continuous variables (log2 N < d): the neighbour balls cannot resolve
    the space and the bias dominates. Compress first (``compressed``).
``duplicates``
    At least 1% of the rows of a continuous variable repeat another row
    exactly (e.g. ReLU zeros); kNN distances of 0 bias KSG and break
    Kozachenko-Leonenko. Add tiny ``noise`` or declare the variable discrete.
``dropped_columns``
    Constant or exactly duplicated columns of a continuous variable were
    dropped before estimating (dead units, constant pixels); they carry no
    information beyond the kept columns, so the MI is unchanged.
``rank_deficient``
    Columns that are (numerically) linear functions of the other columns of
    their variable were dropped (a LayerNorm output, a layer wider than its
    input, n <= d): the estimate is that of the variable's column space,
    equal in exact arithmetic (see ``estimators._gaussian.reduce_columns``).
``constant_variable``
    A continuous variable is constant: it shares no information, the
    estimate is 0.
``noise_dominated``
    ``kde_upper`` / ``kde_lower`` with a fixed ``noise_variance`` s2 on a
    layer whose total variance tr Cov(T) is below s2 ln N: pairs of samples
    lie within the noise of each other, so I(X; T + noise) is set by s2,
    far below the H(T) of the deterministic layer (an injective layer of N
    inputs: log N). The value is that of the noisy layer; scale
    ``noise_variance`` to the layer or use ``adaptive_kde``.
``critic_not_converged``
    A neural critic stopped at ``max_epochs`` while still improving on the
    held-out split (early stopping never triggered); raise ``max_epochs``.

Consistency flags of an information-plane table (added to its rows by
``ibscope.tracking._consistency.check_consistency``, which
``InformationPlane.record`` calls; see that module for the laws and the
tolerance): a value that breaks a law of information theory is an estimator
artefact, and the text says which artefacts are likely.

``dpi_violation``
    I(T;Y) > I(X;T) on one row (the data processing inequality,
    Y -> X -> T).
``above_label_entropy``
    I(T;Y) > H(Y) (plug-in entropy of the labels).
``above_log_n``
    I(X;T) > log n (n samples).
``dpi_chain``
    A later layer of a Markov chain of layers has a larger I(X;T) or I(T;Y)
    than an earlier one (same estimator and epoch).

Saturation tolerance: a value v with ceiling c (both in the same unit) is
saturated when v >= c - max(SATURATION_RTOL * c, SATURATION_ATOL_NATS), i.e.
within 2% of the ceiling (or 0.01 nats for tiny ceilings). The rule is
relative because ceilings span 1 bit (two classes) to 17 bits (log2 of
10^5 samples). InfoNCE uses 10% (``FLAG_RTOL``): its bound approaches
log b only asymptotically, and at 0.9 log b it already underestimates a
true MI of log b or more (Poole et al. [1]_, fig. 2); trained critics
measured here stop at 0.94-0.96 log b on data with I >> log b.

References
----------
.. [1] B. Poole, S. Ozair, A. van den Oord, A. A. Alemi and G. Tucker, "On
   variational bounds of mutual information", ICML 2019.

Warnings: :func:`warn_flags` issues one :class:`EstimateDiagnosticWarning`
per (estimator name, flag) per run; :func:`reset_warnings` starts a new run
(the test suite resets it before every test), :func:`warned` lists what was
warned.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "FLAG_DESCRIPTIONS", "SATURATION_FLAGS", "SATURATION_RTOL", "SATURATION_ATOL_NATS", "EstimateDiagnosticWarning",
    "saturation_flags", "is_saturated", "few_samples_for_dim", "has_duplicates",
    "critic_not_converged", "knn_flags", "label_entropy_nats", "format_flags", "parse_flags",
    "warn_flags", "reset_warnings", "warned",
]

SATURATION_FLAGS = frozenset({"saturated_xt", "saturated_ty", "saturated_bins", "ceiling_infonce"})
SATURATION_RTOL = 0.02
SATURATION_ATOL_NATS = 0.01
# InfoNCE nears log b only asymptotically (its terms are log b - log(1 + sum_j e^{S_ij - S_ii})):
# at 90% of log b it already underestimates a true MI of log b or more (Poole et al. 2019, fig. 2).
FLAG_RTOL = {"ceiling_infonce": 0.10}
DUPLICATE_FRACTION = 0.01

FLAG_DESCRIPTIONS: dict[str, str] = {
    "saturated_xt": "at the ceiling log2 N (every sample in its own bin or kernel): set by the "
                    "sample size, not the data",
    "saturated_ty": "at the ceiling H(Y) <= log2(number of classes): the layer separates the "
                    "labels in the sample, the estimator cannot show more",
    "saturated_bins": "at the entropy of a binned variable: one quantized variable determines "
                      "the other in the sample; finer bins or more samples would give more",
    "ceiling_infonce": "at the InfoNCE cap log(batch size): the true value may be much higher",
    "few_samples_for_dim": "fewer samples than 2^d for the joint dimension d of a kNN "
                           "estimator: bias dominates (compress first)",
    "duplicates": "1% or more duplicate rows in a continuous variable: zero kNN distances bias "
                  "the estimate (add tiny noise or declare it discrete)",
    "dropped_columns": "constant or duplicate columns were dropped before estimating (no "
                       "information lost)",
    "rank_deficient": "linearly dependent columns were dropped: estimated on the variable's "
                      "column space (MI unchanged in exact arithmetic)",
    "constant_variable": "a variable is constant: it shares no information (estimate 0)",
    "noise_dominated": "the KDE noise variance s2 is not small against the layer's spread "
                       "(tr Cov(T) < s2 ln N): the noisy samples overlap, so I(X;T) measures "
                       "T + noise and lies far below H(T) of the deterministic layer (log N "
                       "for an injective one); scale noise_variance or use adaptive_kde",
    "critic_not_converged": "the neural critic hit max_epochs while still improving: the "
                            "lower bound is loose",
    # consistency of a plane table (ibscope.tracking._consistency): laws, not estimator ceilings
    "dpi_violation": "I(T;Y) > I(X;T) beyond the intervals, impossible for T computed from X (data "
                     "processing inequality): I(X;T) is biased low (PCA compression drops the "
                     "directions that carry the label, KSG underestimates large MI) or too few samples",
    "above_label_entropy": "I(T;Y) > H(Y), the labels' plug-in entropy, beyond the interval: "
                           "estimator bias (kNN or neural bound on discrete labels) or too few "
                           "samples per class",
    "above_log_n": "I(X;T) > log n (n samples, X uniform over them) beyond the interval: estimator "
                   "bias (kNN in high dimension, kernel width) or too few samples",
    "dpi_chain": "a later layer of the chain has more I(X;T) or I(T;Y) than an earlier one beyond "
                 "the intervals, impossible for exact MI: the binned / noisy versions of two "
                 "layers are different quantities, PCA compression or random projection loses "
                 "more of one layer, KSG underestimates large MI, or too few samples",
}


class EstimateDiagnosticWarning(UserWarning):
    """An estimate carries a diagnostic flag (see ``FLAG_DESCRIPTIONS``)."""


# --------------------------------------------------------------------------- #
# Pure checks
# --------------------------------------------------------------------------- #
def is_saturated(value_nats: float, ceiling_nats: float | None, rtol: float = SATURATION_RTOL) -> bool:
    """True when ``value_nats`` lies within the saturation tolerance of ``ceiling_nats``."""
    if ceiling_nats is None or not math.isfinite(ceiling_nats) or not math.isfinite(value_nats):
        return False
    tol = max(rtol * abs(ceiling_nats), SATURATION_ATOL_NATS)
    return value_nats >= ceiling_nats - tol


def saturation_flags(value_nats: float, ceilings_nats: Mapping[str, float | None]) -> tuple[str, ...]:
    """The flags (keys of ``ceilings_nats``) whose ceiling ``value_nats`` has reached."""
    return tuple(flag for flag, c in ceilings_nats.items()
                 if is_saturated(value_nats, c, FLAG_RTOL.get(flag, SATURATION_RTOL)))


def lowest_ceiling(ceilings_nats: Mapping[str, float | None]) -> float | None:
    """The smallest finite ceiling, or None."""
    finite = [c for c in ceilings_nats.values() if c is not None and math.isfinite(c)]
    return min(finite) if finite else None


def few_samples_for_dim(n: int, dim: int) -> bool:
    """True when n < 2^dim (log2 n < dim): too few samples for a kNN estimate in ``dim`` dimensions."""
    return dim > 0 and math.log2(max(n, 1)) < dim


def _numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_HASH_CHUNK = 1 << 20  # elements hashed at a time (bounded temporaries)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer (Steele, Lea & Flood 2014), in place on a uint64 array."""
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= _MIX1
        z ^= z >> np.uint64(27)
        z *= _MIX2
        z ^= z >> np.uint64(31)
    return z


def _row_hashes(b: np.ndarray) -> np.ndarray:
    """A uint64 hash of each row of a C-contiguous (n, d) array of 1/2/4/8-byte items.

    Equal bit patterns give equal hashes (integer arithmetic modulo 2^64 is exact
    and order-free); different rows may collide, which the caller checks.
    """
    n, d = b.shape
    words = b.view(f"u{b.dtype.itemsize}")
    mult = np.random.default_rng(0x1B5C0BE).integers(1, 2**63, size=d, dtype=np.uint64) | np.uint64(1)
    h = np.empty(n, dtype=np.uint64)
    step = max(1, _HASH_CHUNK // max(d, 1))
    with np.errstate(over="ignore"):
        for i in range(0, n, step):
            z = _mix64(words[i:i + step].astype(np.uint64))
            z *= mult
            h[i:i + step] = z.sum(axis=1, dtype=np.uint64)
    return h


def _n_distinct_rows(a: np.ndarray) -> int:
    """Number of distinct rows of a 2-D array, the count of ``np.unique(a, axis=0)``.

    Same equality as ``np.unique`` (``==`` on each entry: -0.0 equals 0.0, NaN
    equals nothing), without its row-wise structured sort: a 1-D sample is
    sorted and neighbours compared; k-D rows are hashed (SplitMix64 of each
    entry's bits, -0.0 first mapped to 0.0), sorted by hash, and the rows
    sharing a hash are compared with the first of their group, so the count is
    exact (a group with a hash collision falls back to ``np.unique``).
    """
    n, d = a.shape
    if d == 0:
        return 1
    if d == 1 and a.dtype.kind in "biufcmM":
        s = np.sort(a[:, 0])
        return 1 + int(np.count_nonzero(s[1:] != s[:-1]))
    if a.dtype.kind not in "biuf" or a.dtype.itemsize not in (1, 2, 4, 8):
        return int(np.unique(a, axis=0).shape[0])
    b = np.ascontiguousarray(a + 0.0 if a.dtype.kind == "f" else a)  # -0.0 + 0.0 = +0.0
    h = _row_hashes(b)
    order = np.argsort(h, kind="stable")
    hs = h[order]
    start = np.flatnonzero(np.r_[True, hs[1:] != hs[:-1]])  # first position of each hash group
    size = np.diff(np.r_[start, n])
    distinct = start.size
    if distinct == n:
        return distinct
    # each row that is not first of its hash group against that group's first row
    member = np.ones(n, dtype=bool)
    member[start] = False
    pos = np.flatnonzero(member)
    group_of = np.searchsorted(start, pos, side="right") - 1
    bad = np.zeros(start.size, dtype=bool)
    step = max(1, _HASH_CHUNK // d)
    for i in range(0, pos.size, step):
        p, g = pos[i:i + step], group_of[i:i + step]
        same = (b[order[p]] == b[order[start[g]]]).all(axis=1)
        bad[g[~same]] = True
    for g in np.flatnonzero(bad):  # a hash collision (or NaN rows): exact count on the group
        rows = order[start[g]:start[g] + size[g]]
        distinct += int(np.unique(a[rows], axis=0).shape[0]) - 1
    return distinct


def duplicate_fraction(a: Any) -> float:
    """Fraction of the rows of ``a`` (n, d) that repeat an earlier row exactly.

    Exact, with the equality of ``np.unique(a, axis=0)`` (entry-wise ``==``),
    in O(n log n + n d): sort and compare neighbours for one column, a hash of
    each row then a comparison within equal hashes for several (see
    :func:`_n_distinct_rows`). A tensor on an accelerator is counted there
    (``torch.unique``), with no copy back.
    """
    n = int(a.shape[0])
    if n < 2:
        return 0.0
    if hasattr(a, "detach") and a.device.type != "cpu":  # count on the device, no copy back
        import torch

        uniq = torch.unique(a.detach().reshape(n, -1), dim=0).shape[0]
    else:
        uniq = _n_distinct_rows(_numpy(a).reshape(n, -1))
    return (n - uniq) / n


def has_duplicates(a: Any, threshold: float = DUPLICATE_FRACTION) -> bool:
    """True when at least ``threshold`` (default 1%) of the rows of ``a`` are exact repeats."""
    return duplicate_fraction(a) >= threshold


def critic_not_converged(history: list[dict], max_epochs: int, patience: int) -> bool:
    """True when training ran ``max_epochs`` epochs without ``patience`` epochs lacking progress.

    ``history`` is the per-epoch record of a neural estimator (``history_``).
    Early stopping after ``patience`` epochs without a better held-out bound
    is the convergence criterion; a run that used every epoch and improved
    within the last ``patience`` of them was cut short.
    """
    if len(history) < max_epochs:
        return False
    tests = [h["test"] for h in history]
    finite = [i for i, v in enumerate(tests) if math.isfinite(v)]
    if not finite:
        return True
    best = max(finite, key=lambda i: tests[i])
    return len(history) - 1 - best < patience


def knn_flags(x: Any, y: Any, discrete_x: bool, discrete_y: bool, *, noise: float = 0.0
              ) -> tuple[str, ...]:
    """``few_samples_for_dim`` and ``duplicates`` for a kNN estimate on (x, y).

    The dimension is that of the continuous variables together (the joint
    space of KSG; the space of T for a discrete partner). Duplicates are not
    checked when the estimator adds tie-breaking ``noise``.
    """
    cont = [a for a, d in ((x, discrete_x), (y, discrete_y)) if not d]
    flags = []
    if few_samples_for_dim(int(x.shape[0]), sum(int(a.shape[1]) for a in cont)):
        flags.append("few_samples_for_dim")
    if noise == 0 and any(has_duplicates(a) for a in cont):
        flags.append("duplicates")
    return tuple(flags)


def label_entropy_nats(a: Any) -> float:
    """Plug-in entropy (nats) of a discrete variable (rows of a 2-D array are joint symbols)."""
    from .._validation import discrete_symbols
    from ._discrete import entropy_of_symbols

    return float(entropy_of_symbols(discrete_symbols(_numpy(a))[0]))


# --------------------------------------------------------------------------- #
# Table contract and warnings
# --------------------------------------------------------------------------- #
def format_flags(flags: Iterable[str]) -> str:
    """The ``flags`` column of a tidy table: names joined by ';', '' when healthy."""
    return ";".join(dict.fromkeys(flags))


def parse_flags(text: str | float | None) -> tuple[str, ...]:
    """Inverse of :func:`format_flags` ('' / None / NaN -> ())."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or text == "":
        return ()
    return tuple(s for s in str(text).split(";") if s)


_WARNED: set[tuple[str, str]] = set()


def warn_flags(owner: str, flags: Iterable[str], stacklevel: int = 3) -> None:
    """Warn about each of ``flags`` not yet warned for ``owner`` in this run."""
    for flag in flags:
        key = (owner, flag)
        if key in _WARNED:
            continue
        _WARNED.add(key)
        text = FLAG_DESCRIPTIONS.get(flag, flag)
        warnings.warn(f"{owner}: estimate flagged {flag!r}: {text}. (Warned once per run; the flag "
                      f"is stored with every value, see the 'flags' column.)",
                      EstimateDiagnosticWarning, stacklevel=stacklevel)


def reset_warnings() -> None:
    """Forget which (estimator, flag) pairs were warned: the next occurrence warns again."""
    _WARNED.clear()


def warned() -> frozenset[tuple[str, str]]:
    """The (estimator, flag) pairs warned since the last :func:`reset_warnings`."""
    return frozenset(_WARNED)
