"""``auto``: choose an estimator per pair from observable properties of the data.

Rules (the evidence for each, measured on the "Beyond Normal" suite at
N = 5,000, is in docs/estimators.md and benchmarks/RESULTS.md):

1. both variables discrete -> plug-in MI of the symbols with the chosen
   entropy ``correction`` (``discrete``);
2. one discrete -> KSG in Ross's mixed form on the normal scores of the
   continuous variable (``ksg_mixed_copula``); the scores make it invariant to
   monotone maps and tame heavy tails. A continuous variable of more than
   ``max_knn_dim`` dimensions (after step 0) is first projected onto its
   first ``compress_dim`` principal components (PCA as in ``pca_ksg``,
   :func:`ibscope.estimators._compressed.pca_compress`), recorded in
   ``choice_['compressed']``: a kNN search in a wide layer costs O(N^2 d) and
   its bias grows with d (a 2-D three-class mixture embedded in 11-32
   dimensions, N = 3000: full-dimensional KSG 0.80-0.88 bits, PCA to 4
   dimensions 0.90-0.92, truth 0.89; PCA to 8-10 dimensions 0.63-0.73, the
   normal scores give every noise component unit spread);
3. both continuous: every column is replaced by its normal scores (ranks ->
   Phi^{-1}), so heavy tails, bounded supports and any strictly increasing
   coordinate map stop mattering; then

   * the Gaussian-copula MI (``gaussian_copula``), consistent whenever the
     copula is Gaussian and cheap in any dimension;
   * if d_x + d_y <= ``max_knn_dim``, also KSG on the same scores
     (``ksg_copula``, ``k`` neighbours), which sees non-linear dependence (a
     shared scale, spirals) that the Gaussian copula misses;
   * the result is the larger of the two. Both err mostly downward where
     they err: KSG underestimates strongly dependent and higher-dimensional
     pairs, the Gaussian copula misses any non-Gaussian dependence (and for
     1-D X and Y it is a lower bound), so the maximum keeps the better one
     without a test of Gaussianity (which is unreliable at small N).

Real layers (step 0, continuous variables): constant columns (dead units,
border pixels), exact duplicates and linearly dependent columns (LayerNorm
outputs sum to a constant; a layer wider than its input; n <= d) carry no
information beyond the other columns of their variable and are dropped first
(:func:`ibscope.estimators._gaussian.reduce_columns`: 1 - R^2 < 1e-10 of a
column's variance on the kept ones), so both candidates see a variable of
full numerical rank; a constant variable (rank 0) gives 0. What was dropped
is recorded in ``choice_['columns']`` and flagged (``dropped_columns``,
``rank_deficient``, ``constant_variable``). The dimensions in the rules are
those after dropping.

Self-check (``self_check=True``, off by default: it costs 8 estimates per
candidate): in the both-continuous low-dimensional case each candidate also
runs :func:`ibscope.estimators._selfcheck.self_consistency` (invariance,
data processing, additivity, convergence) on the pair; when exactly one
candidate passes every check it is chosen, otherwise the rule above decides.
The outcome is recorded in ``choice_['self_check']``. Not recommended as it
stands: an estimate stuck near 0 passes every one of these checks vacuously,
so on bmi's bend-and-mix and Student-t tasks (N = 5000, 2 seeds,
benchmarks/beyond_normal.py ``--suite bmi-hard``) it switched to a Gaussian
copula reading ~0 on five of eleven tasks and raised the mean absolute error
from 0.183 to 0.558 bits (benchmarks/RESULTS.md).

Columns with ties (fewer distinct values than rows) get jitter of
1e-10 x their spread before the kNN search, as Kraskov et al. advise.
The choice is recorded in ``choice_`` after every ``estimate`` or
``estimate_ci`` (the candidate values, in bits, and the rule that decided),
for the call on all rows (not the subsamples of a confidence interval).

References
----------
.. [1] R. A. A. Ince et al., Human Brain Mapping 38(3), 2017 (Gaussian copula).
.. [2] A. Kraskov, H. Stoegbauer and P. Grassberger, Phys. Rev. E 69, 066138, 2004.
.. [3] B. C. Ross, PLoS ONE 9(2), e87357, 2014 (discrete-continuous KSG).
.. [4] P. Czyz et al., "Beyond normal", NeurIPS 2023 (the benchmark).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._units import nats_to
from .._validation import BOOLEAN, Interval, Options, discrete_symbols
from ._compressed import pca_compress
from ._copula import copula_mi_columns, copula_normal_scores
from ._discrete import CORRECTIONS, discrete_mi
from ._gaussian import compose_columns, reduce_columns, reduction_flags, too_few_samples
from ._knn import ksg_mi, ksg_mi_mixed
from .base import BaseMIEstimator, MIEstimate

__all__ = ["Auto"]


def _jitter_ties(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add 1e-10 x spread of noise to columns with repeated values (kNN distances must be > 0)."""
    out = z
    for j in range(z.shape[1]):
        if np.unique(z[:, j]).size < z.shape[0]:
            if out is z:
                out = z.copy()
            out[:, j] = z[:, j] + 1e-10 * np.ptp(z[:, j]) * rng.standard_normal(z.shape[0])
    return out


class Auto(BaseMIEstimator):
    """Chooses among the ibscope estimators per pair (see the module docstring for the rules).

    Parameters
    ----------
    k : int, default 3
        Neighbours of the KSG candidate.
    max_knn_dim : int, default 10
        KSG never runs in more dimensions than this (beyond it its bias grows
        fast and its cost with it). Both continuous: KSG runs only while
        d_x + d_y <= this, else the Gaussian copula alone is used. One
        discrete: a continuous variable of more dimensions is compressed first
        (``compress_dim``).
    compress_dim : int, default 4
        PCA dimension of a continuous variable wider than ``max_knn_dim``
        whose partner is discrete (capped at ``max(max_knn_dim, 1)``); 4 as in
        ``pca_ksg``, where KSG on the scores measured closest to the truth
        (see the module docstring).
    correction : {'miller_madow', 'chao_shen', 'jackknife', 'none'}, default 'miller_madow'
        Entropy bias correction for two discrete variables.
    seed : int, default 0
        Seed of the tie-breaking jitter (and of the self-checks).
    self_check : bool, default False
        Both continuous, low dimension: run the self-consistency checks on
        both candidates and prefer the one that passes them all (see the
        module docstring); about 8 times the cost. Measured to hurt on hard
        distributions (a near-zero estimate passes the checks vacuously; see
        the module docstring), so off by default.
    unit : {'bits', 'nats'}, default 'bits'

    Attributes
    ----------
    choice_ : dict
        After ``estimate``: ``{'chosen': name, 'rule': text, 'candidates': {name: bits},
        'columns': {'x': record, 'y': record}}`` for the call on all rows; a
        record (continuous variables only) lists the columns dropped as
        'constant', 'duplicate' or 'dependent', the 'kept' ones and the
        'rank' left (see :func:`ibscope.estimators._gaussian.reduce_columns`);
        'copula_columns' too when the Gaussian-copula candidate dropped more
        (kept columns whose normal scores coincide or depend linearly).
        With a discrete partner and a continuous variable wider than
        ``max_knn_dim``: ``'compressed': {'variable': 'x' or 'y', 'from': d,
        'to': k, 'explained_variance_ratio': r}`` (d the dimension after
        dropping columns, k the PCA dimension).

    Notes
    -----
    Bias: that of the chosen candidate; invariant to strictly increasing maps
    of each coordinate (everything is computed on ranks) and to constant,
    duplicate and linearly dependent columns (dropped first). On the Beyond Normal
    suite see benchmarks/RESULTS.md. Cost: O(N d log N) plus one KSG search
    (O(N log N) per query in low dimension).
    """

    name = "auto"
    bound = None
    min_samples = 8
    _constraints = {
        "k": [Interval(int, 1, None)],
        "max_knn_dim": [Interval(int, 0, None)],
        "compress_dim": [Interval(int, 1, None)],
        "correction": [Options(CORRECTIONS)],
        "seed": [Interval(int, 0, None)],
        "self_check": [BOOLEAN],
    }

    def __init__(self, *, k: int = 3, max_knn_dim: int = 10, compress_dim: int = 4,
                 correction: str = "miller_madow", seed: int = 0, self_check: bool = False,
                 unit: str = "bits"):
        self.k = k
        self.max_knn_dim = max_knn_dim
        self.compress_dim = compress_dim
        self.correction = correction
        self.seed = seed
        self.self_check = self_check
        self.unit = unit
        self._check_params()
        self.choice_: dict[str, Any] | None = None

    # record the choice of the call on all rows (estimate_ci's first call)
    def estimate(self, x, y, **kwargs):
        self._calls: list[dict] = []
        out = super().estimate(x, y, **kwargs)
        if self._calls:
            self.choice_ = self._calls[0]
        return out

    def estimate_ci(self, x, y, **kwargs) -> MIEstimate:
        self._calls = []
        res = super().estimate_ci(x, y, **kwargs)
        self.choice_ = self._calls[0]
        return res

    def _record(self, chosen: str, rule: str, columns: dict | None = None,
                copula_columns: dict | None = None, compressed: dict | None = None,
                self_check: dict | None = None, **candidates: float) -> float:
        if not hasattr(self, "_calls"):
            self._calls = []
        columns = columns or {}
        self._flags = tuple(dict.fromkeys(reduction_flags(columns) + reduction_flags(copula_columns or {})))
        call = {"chosen": chosen, "rule": rule, "candidates": {k: nats_to(v, "bits") for k, v in candidates.items()},
                "columns": columns}
        if copula_columns is not None and copula_columns != columns:
            call["copula_columns"] = copula_columns  # the scores of some kept columns coincided
        if compressed is not None:
            call["compressed"] = compressed
        if self_check is not None:
            call["self_check"] = self_check
        self._calls.append(call)
        return candidates[chosen]

    def _extra_flags(self, x, y, discrete_x, discrete_y) -> tuple[str, ...]:
        return getattr(self, "_flags", ())

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        rng = np.random.default_rng(self.seed)
        if discrete_x and discrete_y:
            v = discrete_mi(x, y, correction=self.correction)
            return self._record("discrete", f"both discrete: plug-in with {self.correction}",
                                discrete=v)
        if discrete_x or discrete_y:
            cont, disc = (y, x) if discrete_x else (x, y)
            name = "y" if discrete_x else "x"
            cont, info = reduce_columns(np.asarray(cont, dtype=np.float64))
            columns = {name: info}
            if info["rank"] == 0:
                return self._record("constant", f"'{name}' is constant: no information", columns,
                                    constant=0.0)
            labels = disc[:, 0] if disc.shape[1] == 1 else discrete_symbols(disc)[0]
            _, counts = np.unique(labels, return_counts=True)
            if counts.min() <= self.k:
                raise ValueError(f"auto (KSG, k={self.k}) needs more than k samples in every class "
                                 f"of the discrete variable; the smallest class has {counts.min()}.")
            compressed, rule = None, "one discrete: Ross KSG on normal scores"
            if info["rank"] > self.max_knn_dim:  # never a kNN search in the full width
                to = min(self.compress_dim, max(self.max_knn_dim, 1))
                cont, pca = pca_compress(cont, to, seed=self.seed)
                compressed = {"variable": name, "from": int(info["rank"]), "to": to,
                              "explained_variance_ratio": pca["explained_variance_ratio"]}
                rule = (f"one discrete: '{name}' has {info['rank']} dims > max_knn_dim, PCA to {to}, "
                        f"then Ross KSG on normal scores")
            z = _jitter_ties(copula_normal_scores(cont), rng)
            v = max(ksg_mi_mixed(z, labels, k=self.k), 0.0)
            return self._record("ksg_mixed_copula", rule, columns, compressed=compressed,
                                ksg_mixed_copula=v)
        dims = {"x": x.shape[1], "y": y.shape[1]}
        x, cx = reduce_columns(np.asarray(x, dtype=np.float64))
        y, cy = reduce_columns(np.asarray(y, dtype=np.float64))
        columns = {"x": cx, "y": cy}
        if cx["rank"] == 0 or cy["rank"] == 0:
            const = "'x'" if cx["rank"] == 0 else "'y'"
            return self._record("constant", f"{const} is constant: no information", columns, constant=0.0)
        n, d = x.shape[0], x.shape[1] + y.shape[1]
        if n <= d + 1:
            raise ValueError(too_few_samples("auto", n, columns, dims))
        gc, score_columns = copula_mi_columns(x, y)
        gc = max(gc, 0.0)
        copula_columns = {k: compose_columns(columns[k], score_columns[k]) for k in columns}
        if d > self.max_knn_dim:
            return self._record("gaussian_copula", f"d_x + d_y = {d} > max_knn_dim: Gaussian copula",
                                columns, copula_columns, gaussian_copula=gc)
        zx = _jitter_ties(copula_normal_scores(x), rng)
        zy = _jitter_ties(copula_normal_scores(y), rng)
        kv = max(ksg_mi(zx, zy, k=self.k), 0.0)
        chosen = "ksg_copula" if kv > gc else "gaussian_copula"
        rule = "both continuous, low dimension: max(Gaussian copula, KSG on normal scores)"
        checked = None
        if self.self_check and n >= 32:
            checked = self._self_check(x, y)
            chosen, rule = prefer_passing(chosen, rule, checked)
        return self._record(chosen, rule, columns, copula_columns, self_check=checked,
                            gaussian_copula=gc, ksg_copula=kv)

    def _self_check(self, x: np.ndarray, y: np.ndarray) -> dict[str, dict]:
        """Self-consistency of both candidates on (x, y): {name: {'passed', 'failed'}}."""
        from ._selfcheck import self_consistency

        k, seed = self.k, self.seed

        def copula(a, b):
            return nats_to(max(copula_mi_columns(a, b)[0], 0.0), "bits")

        def ksg(a, b):
            r = np.random.default_rng(seed)
            za = _jitter_ties(copula_normal_scores(a), r)
            zb = _jitter_ties(copula_normal_scores(b), r)
            return nats_to(max(ksg_mi(za, zb, k=k), 0.0), "bits")

        out = {}
        for name, fn in (("gaussian_copula", copula), ("ksg_copula", ksg)):
            res = self_consistency(fn, x, y, seed=seed)
            out[name] = {"passed": res.passed, "failed": list(res.failed)}
        return out


def prefer_passing(chosen: str, rule: str, checked: dict[str, dict]) -> tuple[str, str]:
    """The candidate to report given the self-checks: the only one that passed, else ``chosen``."""
    passing = [name for name, r in checked.items() if r["passed"]]
    if len(passing) == 1:
        return passing[0], f"self-check: only {passing[0]} passes every self-consistency check"
    return chosen, rule + ("; self-check: " + ("both pass" if passing else "neither passes"))
