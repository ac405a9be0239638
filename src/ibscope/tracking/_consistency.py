"""Information-theoretic consistency checks on information-plane tables.

T is computed from X, so Y -> X -> T is a Markov chain and the data
processing inequality (Cover & Thomas [1]_, thm. 2.8.1) gives
I(T;Y) <= I(X;T) on every row of an information plane; the layers of a
feed-forward stack form a longer chain X -> T_1 -> T_2 -> ... so that
I(X;T_1) >= I(X;T_2) >= ... and I(T_1;Y) >= I(T_2;Y) >= ... (Tishby &
Zaslavsky [2]_, Shwartz-Ziv & Tishby [3]_). Two ceilings hold for any
estimate from n samples with labels Y: I(T;Y) <= H(Y) and, X being uniform
over the n (distinct) evaluation inputs, I(X;T) <= H(X) = log n.

An estimate that breaks one of these laws is an estimator artefact, never a
property of the network: the I(X;T) of a wide layer after PCA compression
misses the directions that carry the label, KSG underestimates large MI
(Gao et al. [4]_), the binned or noisy versions of two layers are different
variables (the binned later layer is no function of the binned earlier one:
Saxe et al. [5]_), a random projection or too few samples bias each estimate
differently. :func:`check_consistency` adds a flag to each such row (the
``flags`` column of the table contract, ``';'``-joined), with a text in
:data:`ibscope.estimators.FLAG_DESCRIPTIONS`, and warns once per (estimator,
flag) through :func:`ibscope.estimators.warn_flags`.

Flags
-----
``dpi_violation``
    I(T;Y) > I(X;T) on the same row.
``above_label_entropy``
    I(T;Y) > H(Y), the plug-in entropy of the evaluation labels.
``above_log_n``
    I(X;T) > log n (n = the row's ``n``, the number of samples).
``dpi_chain``
    A later layer of the chain has a larger I(X;T), or a larger I(T;Y),
    than an earlier one (same estimator, same epoch, same seed). The later
    layer's row carries the flag.

When is a value "larger"
------------------------
With confidence intervals on both sides (the ``*_lo`` / ``*_hi`` columns
finite) a > b only when the intervals are disjoint: ``a_lo > b_hi`` (for a
ceiling c: ``a_lo > c``). Without (NaN bounds: no ``ci`` asked, or a value
at an estimator ceiling, which gets no interval), a > b when
``a > b + max(CONSISTENCY_RTOL * max(|a|, |b|), CONSISTENCY_ATOL_NATS)``,
i.e. by more than 2% of the larger value or 0.01 nats (0.0144 bits) --
the tolerance of the saturation flags of :mod:`ibscope.estimators`, so that
an estimate at a ceiling (flagged ``saturated_*``) is not also flagged as
above it. ``CONSISTENCY_EPS`` (1e-9 in the table's unit) absorbs float
rounding in the interval comparisons.

References
----------
.. [1] T. M. Cover and J. A. Thomas, "Elements of Information Theory", 2nd
   ed., Wiley, 2006.
.. [2] N. Tishby and N. Zaslavsky, "Deep learning and the information
   bottleneck principle", IEEE ITW 2015.
.. [3] R. Shwartz-Ziv and N. Tishby, "Opening the black box of deep neural
   networks via information", arXiv:1703.00810, 2017.
.. [4] W. Gao, G. Kannan, S. Oh and P. Viswanath, "Efficient estimation of
   mutual information for strongly dependent variables", AISTATS 2015.
.. [5] A. M. Saxe et al., "On the information bottleneck theory of deep
   learning", ICLR 2018.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._units import from_nats
from ..estimators._diagnostics import format_flags, parse_flags, warn_flags

__all__ = ["check_consistency", "consistency_chain", "CONSISTENCY_FLAGS", "CONSISTENCY_RTOL",
           "CONSISTENCY_ATOL_NATS", "CONSISTENCY_EPS"]

CONSISTENCY_FLAGS = ("dpi_violation", "above_label_entropy", "above_log_n", "dpi_chain")
CONSISTENCY_RTOL = 0.02
CONSISTENCY_ATOL_NATS = 0.01
CONSISTENCY_EPS = 1e-9

_REQUIRED = ("epoch", "layer", "estimator", "i_xt", "i_ty", "unit")
_CI = ("i_xt_lo", "i_xt_hi", "i_ty_lo", "i_ty_hi")


def consistency_chain(chain: Any, layers: Sequence[str] | None = None) -> list[str] | None:
    """Validate a chain of layer names (forward order); None or False -> None.

    Parameters
    ----------
    chain : None, False or sequence of str
        Layer names in forward order, each a function of the one before.
    layers : sequence of str, optional
        The known layer names; a name outside them is a ValueError naming 'chain'.

    Returns
    -------
    list of str or None
    """
    if chain is None or chain is False:
        return None
    if isinstance(chain, (str, bytes)) or not isinstance(chain, Sequence):
        raise TypeError(f"'chain' must be None, False or a list of layer names in forward order; got "
                        f"{chain!r}.")
    names = list(chain)
    bad = [c for c in names if not isinstance(c, str)]
    if bad:
        raise TypeError(f"'chain' must hold layer names (str); got {bad!r}.")
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise ValueError(f"'chain' names the layer(s) {dup} more than once; a chain lists each layer once, "
                         "in forward order.")
    if layers is not None:
        unknown = [c for c in names if c not in layers]
        if unknown:
            raise ValueError(f"'chain' names layer(s) {unknown} that are not recorded; recorded layers: "
                             f"{list(layers)}.")
    return names


def _col(df: pd.DataFrame, name: str) -> np.ndarray:
    if name not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float)


def _exceeds(a: np.ndarray, a_lo: np.ndarray, b: np.ndarray, b_hi: np.ndarray, atol: float) -> np.ndarray:
    """a > b beyond the intervals (a_lo > b_hi) where both bounds are finite, else beyond the tolerance."""
    with np.errstate(invalid="ignore"):
        ci = np.isfinite(a_lo) & np.isfinite(b_hi)
        tol = np.maximum(CONSISTENCY_RTOL * np.maximum(np.abs(a), np.abs(b)), atol)
        by_ci = a_lo > b_hi + CONSISTENCY_EPS
        by_tol = a > b + tol
        out = np.where(ci, by_ci, by_tol)
    return out & np.isfinite(a) & np.isfinite(b)


def check_consistency(rows: pd.DataFrame, label_entropy: float | None, *,
                      chain: Sequence[str] | None = None, warn: bool = True) -> pd.DataFrame:
    """The rows of an information-plane table with the consistency flags added.

    Checks every row against the data processing inequality and the two
    ceilings, and the layers of ``chain`` against each other (see the module
    docstring for the laws, the flags and the tolerance); a violated law
    adds its flag to the row's ``flags`` (existing flags are kept, none is
    repeated). Rows with a NaN coordinate are not checked.

    Parameters
    ----------
    rows : DataFrame
        Tidy plane rows: ``epoch``, ``layer``, ``estimator``, ``i_xt``,
        ``i_ty``, ``unit`` (one unit for all rows: 'bits' or 'nats'), and
        when present ``flags``, ``n`` (samples: the log n ceiling),
        ``i_xt_lo``/``i_xt_hi``/``i_ty_lo``/``i_ty_hi`` (NaN without
        intervals) and ``seed`` (chains are compared within a seed).
    label_entropy : float or None
        H(Y), the plug-in entropy of the labels, in the table's unit (None:
        no H(Y) check).
    chain : sequence of str, optional
        Layer names in forward order forming a Markov chain X -> T_1 -> T_2
        -> ... (each layer a function of the one before); layers of the chain
        absent from ``rows`` are skipped.
    warn : bool, default True
        Issue one :class:`ibscope.estimators.EstimateDiagnosticWarning` per
        (estimator, flag) per run for the flags added.

    Returns
    -------
    DataFrame
        A copy of ``rows`` whose ``flags`` column (added if missing) holds
        the flags.

    References
    ----------
    .. [1] T. M. Cover and J. A. Thomas, "Elements of Information Theory",
       2nd ed., Wiley, 2006 (thm. 2.8.1, the data processing inequality).
    """
    if not isinstance(rows, pd.DataFrame):
        raise TypeError(f"'rows' must be a pandas DataFrame of information-plane rows; got "
                        f"{type(rows).__name__}.")
    missing = [c for c in _REQUIRED if c not in rows.columns]
    if missing:
        raise ValueError(f"'rows' lacks the column(s) {missing}; the consistency checks need {list(_REQUIRED)}.")
    chain = consistency_chain(chain)
    out = rows.copy()
    if "flags" not in out.columns:
        out["flags"] = ""
    if not len(out):
        return out
    units = set(out["unit"].astype(str))
    if len(units) != 1 or not units <= {"bits", "nats"}:
        raise ValueError(f"'rows' must have one unit, 'bits' or 'nats', in its 'unit' column; got {sorted(units)}.")
    unit = units.pop()
    if label_entropy is not None:
        if isinstance(label_entropy, bool) or not isinstance(label_entropy, (int, float, np.floating)) \
                or not math.isfinite(label_entropy) or label_entropy < 0:
            raise ValueError(f"'label_entropy' must be None or a finite H(Y) >= 0 in {unit}; got "
                             f"{label_entropy!r}.")
    atol = from_nats(CONSISTENCY_ATOL_NATS, unit)
    xt, ty = _col(out, "i_xt"), _col(out, "i_ty")
    xt_lo, xt_hi, ty_lo, ty_hi = (_col(out, c) for c in _CI)
    new: list[list[str]] = [[] for _ in range(len(out))]

    def add(mask: np.ndarray, flag: str) -> None:
        for i in np.flatnonzero(mask):
            new[i].append(flag)

    add(_exceeds(ty, ty_lo, xt, xt_hi, atol), "dpi_violation")
    if label_entropy is not None:
        h = np.full(len(out), float(label_entropy))
        add(_exceeds(ty, ty_lo, h, h, atol), "above_label_entropy")
    if "n" in out.columns:
        n = _col(out, "n")
        with np.errstate(divide="ignore", invalid="ignore"):
            log_n = np.where(n >= 1, np.log(np.where(n >= 1, n, 1.0)), np.nan)
        log_n = from_nats(1.0, unit) * log_n
        add(_exceeds(xt, xt_lo, log_n, log_n, atol), "above_log_n")
    if chain:
        pos = out["layer"].astype(str).map({name: i for i, name in enumerate(chain)}).to_numpy(dtype=float)
        keys = [c for c in ("seed", "epoch", "estimator") if c in out.columns]
        frame = out[keys].reset_index(drop=True)  # positional index
        for _, g in frame[np.isfinite(pos)].groupby(keys, sort=False, dropna=False):
            rows_g = g.index.to_numpy()
            for j in rows_g:
                for i in rows_g:
                    if not pos[i] < pos[j]:
                        continue
                    up = (_exceeds(xt[[j]], xt_lo[[j]], xt[[i]], xt_hi[[i]], atol)[0]
                          or _exceeds(ty[[j]], ty_lo[[j]], ty[[i]], ty_hi[[i]], atol)[0])
                    if up:
                        new[j].append("dpi_chain")
                        break
    old = [parse_flags(f) for f in out["flags"].tolist()]
    out["flags"] = [format_flags([*o, *n_]) for o, n_ in zip(old, new)]
    if warn:
        added: dict[str, list[str]] = {}
        for est, o, n_ in zip(out["estimator"].astype(str), old, new):
            added.setdefault(est, []).extend(f for f in n_ if f not in o)
        for est, flags in added.items():
            warn_flags(est, dict.fromkeys(flags), stacklevel=4)
    return out
