"""Nearest-neighbour estimators: KSG, Kozachenko-Leonenko (KL) and weighted KL.

* **KSG** (Kraskov, Stoegbauer & Grassberger [1]_): algorithm 1

      I = psi(k) + psi(N) - < psi(n_x + 1) + psi(n_y + 1) >

  with eps_i the distance of point i to its k-th neighbour in the joint space
  (maximum of the x- and y-distances) and n_x the number of other points
  with ||x_j - x_i|| < eps_i; algorithm 2

      I = psi(k) - 1/k + psi(N) - < psi(n_x) + psi(n_y) >

  with eps_x,i the largest x-distance among the k joint neighbours and n_x
  the number of other points with ||x_j - x_i|| <= eps_x,i.
  For continuous x and discrete y the Ross variant [2]_ is used.
* **KL**: Kozachenko-Leonenko entropies [3]_ in the form of [1]_,
  H = psi(N) - psi(k) + log V_d + (d/N) sum_i log rho_k,i, and
  I = H(X) + H(Y) - H(X,Y); with a discrete y,
  I(T;Y) = H(T) - sum_y p(y) H(T | Y=y).
* **WKL**: the weighted KL entropy of Berrett, Samworth & Yuan [4]_,
  H_w = sum_j w_j [log(N-1) - psi(j) + log V_d + (d/N) sum_i log rho_j,i]
  with weights of minimum Euclidean norm subject to sum_j w_j = 1 and
  sum_j w_j Gamma(j + 2l/d)/Gamma(j) = 0 for l = 1..floor(d/4), supported on
  j = 1..k (for d < 4 this is the plain KL estimator with k neighbours).

Computation: on CPU, scipy's cKDTree for the k-th neighbour distances and
scikit-learn's KDTree (count_only) for the neighbour counts, both on
``n_jobs`` threads (default: as many as torch uses); the 1-D marginals of KSG
use sorting + searchsorted, exact to the same floating-point comparisons as
the tree; memory O(N k), never N x N. KSG algorithm 1 (Chebyshev) in joint
dimension >= ``BRUTE_MIN_DIM`` (from 4 at small n, see there), and on any torch ``device`` (CUDA), runs on a
blocked brute-force engine (:func:`ksg1_brute`): on CPU compiled (numba)
kernels with vectorized float64 distances over cache-sized blocks; on a torch
device float32 distance blocks, one pass for the joint search and both marginal
counts, exact float64 checks at the boundary. Either way the values are those of
the trees. Other torch paths use chunked float64 brute-force distances, memory
O(chunk * N).

References
----------
.. [1] A. Kraskov, H. Stoegbauer and P. Grassberger, "Estimating mutual
   information", Phys. Rev. E 69, 066138, 2004.
.. [2] B. C. Ross, "Mutual information between discrete and continuous data
   sets", PLoS ONE 9(2), e87357, 2014.
.. [3] L. F. Kozachenko and N. N. Leonenko, "Sample estimate of the entropy of
   a random vector", Problems Inform. Transmission 23, 1987.
.. [4] T. B. Berrett, R. J. Samworth and M. Yuan, "Efficient multivariate
   entropy estimation via k-nearest neighbour distances", Annals of
   Statistics 47(1), 2019.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln
from sklearn.neighbors import KDTree

from .._validation import (
    BOOLEAN,
    NONE,
    InstanceOf,
    Interval,
    Options,
    check_no_constant_columns,
    check_random_state,
    discrete_symbols,
    is_torch,
    resolve_device,
)
from .base import CONTINUOUS, DISCRETE, BaseMIEstimator

__all__ = [
    "KSG", "KL", "WKL", "ksg_mi", "ksg_mi_mixed", "ksg1_brute", "kl_entropy", "wkl_weights",
    "whiten_for_entropy",
    "count_within", "knn_distances", "BRUTE_MIN_DIM", "BRUTE_N_PER_DIM",
]

_METRICS = ("chebyshev", "euclidean")
_P = {"chebyshev": math.inf, "euclidean": 2.0}


# --------------------------------------------------------------------------- #
# Neighbour searches: numpy (cKDTree / sorting) and torch (chunked brute force)
# --------------------------------------------------------------------------- #
def resolve_n_jobs(n_jobs: int | None) -> int:
    """Number of threads for the neighbour searches.

    None: as many as torch uses (``torch.get_num_threads()``, set by
    ``OMP_NUM_THREADS`` or ``torch.set_num_threads``; the sweep runner sets 1
    per worker process); -1: every core this process may run on; else n_jobs >= 1.
    """
    if n_jobs is None:
        return max(1, torch.get_num_threads())
    if n_jobs == -1:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)
    if not isinstance(n_jobs, (int, np.integer)) or isinstance(n_jobs, bool) or n_jobs < 1:
        raise ValueError(f"'n_jobs' must be None, -1 or a positive int; got {n_jobs!r}.")
    return int(n_jobs)


def knn_distances(a: np.ndarray, k: int, metric: str = "chebyshev", n_jobs: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of the k+1 nearest points of every row (self included), cKDTree."""
    tree = cKDTree(a)
    dist, idx = tree.query(a, k=k + 1, p=_P[metric], workers=resolve_n_jobs(n_jobs))
    return np.asarray(dist).reshape(len(a), k + 1), np.asarray(idx).reshape(len(a), k + 1)


def _count_sorted_1d(a: np.ndarray, r: np.ndarray) -> np.ndarray:
    """#{j : |a_j - a_i| <= r_i} (self included) for 1-D ``a``, by sorting."""
    order = np.argsort(a)
    out = np.empty(a.size, dtype=np.int64)
    out[order] = _count_in_sorted(a[order], r[order])  # queries in sorted order: memory in order
    return out


def _count_in_sorted(s: np.ndarray, r: np.ndarray) -> np.ndarray:
    """#{j : |s_j - s_i| <= r_i} (self included) for sorted 1-D ``s`` and radii ``r >= 0``.

    The float comparison is the same as the tree's (abs(s_j - s_i) <= r_i).
    Rounded subtraction is monotone, so the points within r_i form one run
    around i; searchsorted on s_i +- r_i (rounded sums) finds its ends up to a
    few positions, which are then corrected by the exact comparison, only
    for the entries that still need it.
    """
    n = s.size
    hi = np.searchsorted(s, s + r, side="right")  # >= i + 1
    lo = np.searchsorted(s, s - r, side="left")  # <= i
    # hi = first j with s_j - s_i > r_i: move right while s_hi is still within r_i ...
    idx = np.flatnonzero(hi < n)
    idx = idx[s[hi[idx]] - s[idx] <= r[idx]]
    while idx.size:
        hi[idx] += 1
        idx = idx[hi[idx] < n]
        idx = idx[s[hi[idx]] - s[idx] <= r[idx]]
    # ... or left while s_(hi-1) is beyond it (stops at hi = i + 1 at the latest)
    idx = np.flatnonzero(s[hi - 1] - s > r)
    while idx.size:
        hi[idx] -= 1
        idx = idx[s[hi[idx] - 1] - s[idx] > r[idx]]
    # lo = first j with s_i - s_j <= r_i, the same way
    idx = np.flatnonzero(lo > 0)
    idx = idx[s[idx] - s[lo[idx] - 1] <= r[idx]]
    while idx.size:
        lo[idx] -= 1
        idx = idx[lo[idx] > 0]
        idx = idx[s[idx] - s[lo[idx] - 1] <= r[idx]]
    idx = np.flatnonzero(s - s[lo] > r)  # stops at lo = i at the latest
    while idx.size:
        lo[idx] += 1
        idx = idx[s[idx] - s[lo[idx]] > r[idx]]
    return (hi - lo).astype(np.int64, copy=False)


def count_within(a: np.ndarray, r: np.ndarray, metric: str = "chebyshev", n_jobs: int | None = None
                 ) -> np.ndarray:
    """#{j : ||a_j - a_i|| <= r_i} for every row i (self included); no n x n matrix."""
    if a.shape[1] == 1:
        return _count_sorted_1d(a[:, 0], r)
    # scikit-learn's KDTree adds whole nodes that lie inside the ball (about 4x faster
    # than cKDTree's return_length on KSG's radii in 5-D, same counts). Its queries
    # release the GIL, so blocks of queries run on threads; each thread builds its
    # own tree (the tree object counts its calls: threads sharing one tree run
    # slower together than one thread alone).
    def block(start: int, stop: int) -> np.ndarray:
        tree = KDTree(a, metric=metric)
        return tree.query_radius(a[start:stop], r[start:stop], count_only=True)

    jobs = min(resolve_n_jobs(n_jobs), max(1, a.shape[0] // 1024))
    if jobs == 1:
        return block(0, a.shape[0]).astype(np.int64)
    bounds = np.linspace(0, a.shape[0], jobs + 1).astype(int)
    with ThreadPoolExecutor(jobs) as pool:
        parts = list(pool.map(block, bounds[:-1], bounds[1:]))
    return np.concatenate(parts).astype(np.int64)


def _chunk_rows(n: int, device: torch.device, chunk_size: int | None, parts: int = 1) -> int:
    if chunk_size is not None:
        return chunk_size
    budget = (1 << 24) if device.type == "cuda" else (1 << 22)
    return max(1, min(n, budget // max(n * parts, 1)))


def _cdist(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    return torch.cdist(a, b, p=_P[metric], compute_mode="donot_use_mm_for_euclid_dist")


def _torch_knn(parts: list[torch.Tensor], k: int, metric: str, chunk: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """k+1 smallest joint distances (max over ``parts`` of per-part distances) and indices."""
    n = parts[0].shape[0]
    vals, idxs = [], []
    for s in range(0, n, chunk):
        d = None
        for p in parts:
            dp = _cdist(p[s:s + chunk], p, metric)
            d = dp if d is None else torch.maximum(d, dp)
        v, i = torch.topk(d, k + 1, dim=1, largest=False, sorted=True)
        vals.append(v)
        idxs.append(i)
    return torch.cat(vals), torch.cat(idxs)


def _torch_count(a: torch.Tensor, r: torch.Tensor, metric: str, chunk: int) -> torch.Tensor:
    """#{j : ||a_j - a_i|| <= r_i} (self included), chunked."""
    n = a.shape[0]
    out = []
    for s in range(0, n, chunk):
        out.append((_cdist(a[s:s + chunk], a, metric) <= r[s:s + chunk, None]).sum(dim=1))
    return torch.cat(out)


# --------------------------------------------------------------------------- #
# Blocked brute-force engine for KSG algorithm 1 (Chebyshev), torch on any device
# --------------------------------------------------------------------------- #
#: When ``engine='auto'`` picks the blocked brute-force engine (numba on CPU) over the
#: trees for KSG algorithm 1 (Chebyshev): from joint dimension (d_x + d_y)
#: ``BRUTE_MIN_DIM`` at every n, and from joint dimension 4 while
#: n <= ``BRUTE_N_PER_DIM`` x the joint dimension. Measured (benchmarks/speed.py
#: ``--crossover``, one thread, tree time / brute time at n = 1k / 3k / 10k / 30k,
#: identical values): 2+2 dims 2.9 / 1.5 / 0.7 / 0.3; 3+3 6.1 / 1.5 / 0.9 / 0.6;
#: 4+4 4.5 / 3.0 / 1.4 / 1.3; 5+5 2.2 / 2.9 / 2.5 / 2.0; 1+1 (sorting path) 0.3 at 1k.
BRUTE_MIN_DIM = 10
BRUTE_N_PER_DIM = 1250
#: Bytes of distance blocks held at once by the brute-force engine, per device type.
_BRUTE_BYTES = {"cuda": 1 << 28}
_BRUTE_BYTES_DEFAULT = 1 << 20  # CPU: blocks of about the L2 cache
_ENGINES = ("auto", "tree", "brute")
# float32 Chebyshev distances of float64 data with |values| <= M are within 2^-22 M
# of the float64 ones (two input roundings and one subtraction rounding, each
# 2^-24 relative); the engine uses a 4x wider band, 2^-20 M.
_F32_MARGIN = 2.0 ** -20


def _brute_rows(n: int, device: torch.device, chunk_size: int | None) -> int:
    """Query rows per block: (rows, n) float32 blocks of about the cache (CPU) or byte budget."""
    if chunk_size is not None:
        return chunk_size
    budget = _BRUTE_BYTES.get(device.type, _BRUTE_BYTES_DEFAULT)
    return max(1, min(n, budget // (4 * max(n, 1))))


class _TorchThreads:
    """Run with ``n`` torch threads (CPU only), restoring the previous setting."""

    def __init__(self, n: int | None, device: torch.device):
        self.n = n if device.type == "cpu" else None
        self.old = None

    def __enter__(self) -> None:
        if self.n is not None and self.n != torch.get_num_threads():
            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc) -> None:
        if self.old is not None:
            torch.set_num_threads(self.old)


def _cheb_into(q: torch.Tensor, at: torch.Tensor, out: torch.Tensor, tmp: torch.Tensor
               ) -> torch.Tensor:
    """out[i, j] = max_f |q[i, f] - at[f, j]| (Chebyshev distances; ``at`` is the transposed data).

    One feature at a time over the whole (rows, n) block, vectorized along n
    (about twice torch.cdist's speed for p=inf in 10-D on CPU); every step is
    exact in floating point apart from the subtraction's rounding, so float64
    results equal the trees' distances.
    """
    torch.sub(q[:, :1], at[:1], out=out).abs_()
    for f in range(1, q.shape[1]):
        torch.maximum(out, torch.sub(q[:, f:f + 1], at[f:f + 1], out=tmp).abs_(), out=out)
    return out


def _cheb(q: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    out = torch.empty((q.shape[0], at.shape[1]), dtype=q.dtype, device=q.device)
    return _cheb_into(q, at, out, torch.empty_like(out))


def _ksg1_brute_block(data, s, e, k, bufs):
    """Marginal counts of KSG algorithm 1 for the query rows s:e (one pass over their pairs).

    ``data``: (x64, y64, xt64, yt64, xt32, yt32, x_margin, y_margin), the
    ``t`` arrays transposed, the float32 ones None for an all-float64 pass.
    Float32 pass: the joint candidates within 2 margins of the float32 k-th
    distance are checked in float64 (exact k-th distance eps_i); a row's
    marginal count is taken from the float32 distances unless one of them
    lies within 2 margins of the radius, else that row is recounted in
    float64. Counts: #{j : d(a_j, a_i) <= nextafter(eps_i, 0)} (self
    included), the tree path's comparison.
    """
    x64, y64, xt64, yt64, xt32, yt32, mx, my = data
    dev = x64.device
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    if xt32 is None:
        dx, dy = _cheb(x64[s:e], xt64), _cheb(y64[s:e], yt64)
        eps = torch.topk(torch.maximum(dx, dy), k + 1, dim=1, largest=False).values[:, k]
        r = torch.nextafter(eps, zero)[:, None]
        return (dx <= r).sum(1, dtype=torch.int32), (dy <= r).sum(1, dtype=torch.int32)
    rows = e - s
    dx, dy, dz = (b[:rows] for b in bufs[:3])
    _cheb_into(xt32[:, s:e].T, xt32, dx, dz)
    _cheb_into(yt32[:, s:e].T, yt32, dy, dz)
    torch.maximum(dx, dy, out=dz)
    n = dz.shape[1]
    n_top = min(n, 2 * k + 10)
    top = torch.topk(dz, n_top, dim=1, largest=False)  # sorted
    # every j whose exact joint distance is <= the exact k-th one lies below eps32 + 2 margins
    thr = (top.values[:, k].double() + 2 * max(mx, my)).float()[:, None]
    n_cand = (top.values <= thr).sum(1, dtype=torch.int32)
    cand = top.indices
    if n_top < n and bool((n_cand == n_top).any()):  # candidates beyond the top rows
        n_cand = (dz <= thr).sum(1, dtype=torch.int32)
        c_max = int(n_cand.max())
        if c_max > 4 * (k + 1) + 64:  # many ties at the boundary (duplicates): exact block
            return _ksg1_brute_block(data[:4] + (None, None, mx, my), s, e, k, bufs)
        cand = torch.topk(dz, c_max, dim=1, largest=False).indices
    xq, yq = x64[s:e, None, :], y64[s:e, None, :]
    dz64 = torch.maximum((x64[cand] - xq).abs().amax(2), (y64[cand] - yq).abs().amax(2))
    valid = torch.arange(cand.shape[1], device=dev)[None, :] < n_cand[:, None]
    eps = torch.topk(torch.where(valid, dz64, torch.inf), k + 1, dim=1, largest=False).values[:, k]
    r = torch.nextafter(eps, zero)
    counts = []
    for d32, a64, at64, m in ((dx, x64, xt64, mx), (dy, y64, yt64, my)):
        c_lo = (d32 < (r - 2 * m).float()[:, None]).sum(1, dtype=torch.int32)
        c_hi = (d32 <= (r + 2 * m).float()[:, None]).sum(1, dtype=torch.int32)
        amb = torch.nonzero(c_lo != c_hi).reshape(-1)
        if amb.numel():  # a distance within the margin of the radius: count this row exactly
            c_lo[amb] = (_cheb(a64[amb + s], at64) <= r[amb, None]).sum(1, dtype=torch.int32)
        counts.append(c_lo)
    return counts[0], counts[1]


def ksg1_brute(x: Any, y: Any, k: int = 3, *, chunk_size: int | None = None,
               n_jobs: int | None = None, precision: str = "auto", backend: str = "auto") -> float:
    """KSG algorithm 1 (Chebyshev) in nats by blocked brute force, on CPU or any torch device.

    On CPU (``backend='numba'``, the default there) compiled kernels scan the
    pairs in cache-sized blocks with vectorized float64 distances (see
    :mod:`ibscope.estimators._knn_kernels`); the counts are exact, so the
    estimate is identical to the tree path's. On other devices
    (``backend='torch'``, the default for CUDA tensors; also usable on CPU):
    for each block of query rows the x- and y-distances to all rows are
    computed once (max-norm, float32), their maximum gives the k-th joint
    neighbour distance eps_i, and the marginal counts n_x, n_y (distances
    < eps_i) are taken from the same two blocks: one pass over the pairs,
    memory O(rows * N) within a byte budget (``chunk_size`` overrides the
    rows per block). Float32 distances may misorder pairs within a margin
    (2^-20 times the largest absolute value) of the radius; those are checked
    again in float64, so the estimate is identical to the float64 tree path
    (cKDTree + KDTree, :func:`ksg_mi`), ties and duplicates included. With
    ``precision='float64'``, or when the values would lose range in float32,
    every distance is computed in float64. Costs O(N^2 (d_x + d_y)); beats
    the trees on CPU from joint dimension ``BRUTE_MIN_DIM`` (and in joint
    dimension 4 to 9 at small n, see ``BRUTE_N_PER_DIM``).

    Parameters
    ----------
    x, y : numpy arrays or torch tensors (n, d_x), (n, d_y)
        Continuous samples; tensors are computed on their device.
    k : int
        Number of neighbours.
    chunk_size : int or None
        Query rows per block of the torch backend (None: from the byte budget).
    n_jobs : int or None
        Threads on CPU (None: as many as torch uses; -1: every core).
    precision : {'auto', 'float64'}
        Torch backend: 'auto' uses float32 distances with exact float64 checks
        at the boundary. The numba backend always computes in float64.
    backend : {'auto', 'numba', 'torch'}
        'auto': numba for CPU data, torch for tensors on another device.

    References
    ----------
    .. [1] A. Kraskov, H. Stoegbauer and P. Grassberger, "Estimating mutual
       information", Phys. Rev. E 69, 066138, 2004.
    """
    if precision not in ("auto", "float64"):
        raise ValueError(f"'precision' must be 'auto' or 'float64'; got {precision!r}.")
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"'backend' must be 'auto', 'numba' or 'torch'; got {backend!r}.")
    xt = x if is_torch(x) else torch.from_numpy(np.ascontiguousarray(x))
    yt = y if is_torch(y) else torch.from_numpy(np.ascontiguousarray(y))
    x64 = xt.detach().to(torch.float64).reshape(xt.shape[0], -1).contiguous()
    y64 = yt.detach().to(device=x64.device, dtype=torch.float64).reshape(yt.shape[0], -1).contiguous()
    n = x64.shape[0]
    if y64.shape[0] != n:
        raise ValueError(f"'x' and 'y' need the same number of rows; got {n} and {y64.shape[0]}.")
    if n <= k:
        raise ValueError(f"KSG with k={k} needs more than k samples; got n={n}.")
    mx, my = float(x64.abs().max()), float(y64.abs().max())
    if not (math.isfinite(mx) and math.isfinite(my)):
        raise ValueError("'x' and 'y' must be finite (no NaN or inf).")
    threads = None if n_jobs is None else resolve_n_jobs(n_jobs)
    if backend == "auto":
        backend = "numba" if x64.device.type == "cpu" else "torch"
    if backend == "numba":
        if x64.device.type != "cpu":
            raise ValueError(f"backend='numba' runs on CPU data; got tensors on {x64.device}.")
        from ._knn_kernels import ksg1_counts

        cx, cy = ksg1_counts(x64.numpy(), y64.numpy(), k, resolve_n_jobs(n_jobs))
        return float(digamma(k) + digamma(n) - np.mean(digamma(cx) + digamma(cy)))
    use32 = precision == "auto" and all(1e-30 < m < 1e30 for m in (mx, my))
    xt64, yt64 = x64.T.contiguous(), y64.T.contiguous()
    xt32 = xt64.float() if use32 else None
    yt32 = yt64.float() if use32 else None
    data = (x64, y64, xt64, yt64, xt32, yt32, _F32_MARGIN * mx, _F32_MARGIN * my)
    rows = _brute_rows(n, x64.device, chunk_size)
    nx = torch.empty(n, dtype=torch.int32, device=x64.device)
    ny = torch.empty_like(nx)
    bufs = [torch.empty((min(rows, n), n), dtype=torch.float32, device=x64.device) for _ in range(3)]
    with _TorchThreads(threads, x64.device), torch.no_grad():
        for s in range(0, n, rows):
            e = min(n, s + rows)
            nx[s:e], ny[s:e] = _ksg1_brute_block(data, s, e, k, bufs)
    # the tree path's arithmetic (numpy), so the estimates are identical, not only the counts
    cx, cy = nx.cpu().numpy().astype(np.int64), ny.cpu().numpy().astype(np.int64)
    return float(digamma(k) + digamma(n) - np.mean(digamma(cx) + digamma(cy)))


def safe_scale(a: Any, *, per_column: bool, max_abs: Any = None) -> Any:
    """Rescale a continuous sample without overflow or underflow (numpy or torch).

    kNN estimates of I(X;Y) do not change when a variable is multiplied by a
    constant, but the arithmetic does: squares of values beyond ~1e154
    overflow (the standard deviation becomes inf, every scaled point 0) and
    below ~1e-154 underflow (std 0, points inf). So each column (or, with
    ``per_column=False``, the whole array) is first divided by the power of
    two nearest above its largest absolute value, which is exact in floating
    point and maps it into [-1, 1]. With ``per_column`` the columns are then
    divided by their standard deviation computed about the mean of the
    rescaled values (the scaling of scikit-learn's ``mutual_info_regression``;
    no centring of the result). Without it, one power-of-two factor leaves
    every distance comparison exactly as it was, so raw-scale results are
    unchanged; ``max_abs`` then gives the largest absolute value of every
    variable of the estimate (x and y share the factor: their distances are
    compared in the joint space).
    """
    if is_torch(a):
        m = a.abs().amax(dim=0) if per_column else a.abs().amax()
        if max_abs is not None:
            m = torch.as_tensor(float(max_abs), dtype=a.dtype, device=a.device)
        m = torch.where(m > 0, m, torch.ones_like(m))
        _, e = torch.frexp(m)
        t = torch.ldexp(a, -e.to(a.dtype))
        if per_column:
            t = t / t.std(dim=0, unbiased=False)
        return t
    m = np.abs(a).max(axis=0) if per_column else np.abs(a).max()
    if max_abs is not None:
        m = float(max_abs)
    _, e = np.frexp(np.where(m > 0, m, 1.0))
    out = np.ldexp(a, -e)
    if per_column:
        out = out / out.std(axis=0)
    return out


def _drop_self(idx: np.ndarray | torch.Tensor, k: int):
    """Mask of the k neighbours among k+1 returned indices: drop self (or the last if self was tied out)."""
    rows = (torch.arange(idx.shape[0], device=idx.device)[:, None] if is_torch(idx)
            else np.arange(idx.shape[0])[:, None])
    is_self = idx == rows
    no_self = ~is_self.any(1)
    keep = ~is_self
    keep[no_self, k] = False
    return keep


# --------------------------------------------------------------------------- #
# KSG
# --------------------------------------------------------------------------- #
def _ksg1_1d(x: np.ndarray, y: np.ndarray, k: int, n_jobs: int) -> float:
    """KSG algorithm 1 for 1-D x and y, everything in x-sorted order.

    Same values as the general path (the joint k-th neighbour distance does
    not depend on the query order); the x-sorted order makes the tree queries
    and the x-count walk memory in order and saves one argsort.
    """
    n = x.size
    ox = np.argsort(x)  # (numpy's default sort is several times faster than 'stable')
    xs, ys = x[ox], y[ox]
    pts = np.column_stack([xs, ys])
    # sliding-midpoint tree: faster to build, equally fast to query in 2-D
    tree = cKDTree(pts, balanced_tree=False)
    dist, _ = tree.query(pts, k=[k + 1], p=math.inf, workers=n_jobs)
    r = np.nextafter(dist[:, 0], 0)

    def count_y() -> np.ndarray:
        oy = np.argsort(ys)
        return _count_in_sorted(ys[oy], r[oy])

    if n_jobs > 1:  # the two marginal counts side by side (numpy releases the GIL)
        with ThreadPoolExecutor(1) as pool:
            fut = pool.submit(count_y)
            nx = _count_in_sorted(xs, r)
            ny = fut.result()
    else:
        nx = _count_in_sorted(xs, r)  # self included: n_x + 1
        ny = count_y()
    return float(digamma(k) + digamma(n) - (digamma(nx).sum() + digamma(ny).sum()) / n)


def use_brute(engine: str, algorithm: int, metric: str, joint_dim: int, n: int) -> bool:
    """Whether KSG runs on the blocked brute-force engine (:func:`ksg1_brute`) on CPU.

    'brute' always; 'tree' never; 'auto' for algorithm 1 with the Chebyshev
    metric from joint dimension ``BRUTE_MIN_DIM``, or from joint dimension 4
    with at most ``BRUTE_N_PER_DIM`` x joint dimension samples (where it beats
    the trees on CPU, benchmarks/speed.py ``--crossover``).
    """
    if engine not in _ENGINES:
        raise ValueError(f"'engine' must be one of {_ENGINES}; got {engine!r}.")
    if engine == "auto":
        return (algorithm == 1 and metric == "chebyshev"
                and (joint_dim >= BRUTE_MIN_DIM or (joint_dim >= 4 and n <= BRUTE_N_PER_DIM * joint_dim)))
    return engine == "brute"


def ksg_mi(x: np.ndarray, y: np.ndarray, *, k: int = 3, algorithm: int = 1,
           metric: str = "chebyshev", n_jobs: int | None = None, engine: str = "auto",
           chunk_size: int | None = None) -> float:
    """KSG estimate of I(X;Y) in nats (not clipped) for continuous numpy x (n, dx), y (n, dy).

    ``metric`` is the norm in each marginal space; the joint distance is the
    maximum of the two marginal distances (with 'chebyshev' that is the
    max-norm of the joint vector, the paper's choice; 'euclidean' is the
    convention of the bmi package and is computed by brute force in torch).
    ``n_jobs``: threads of the neighbour searches (see ``resolve_n_jobs``).
    ``engine``: 'tree' (cKDTree / KDTree), 'brute' (torch brute force:
    :func:`ksg1_brute` for algorithm 1 with 'chebyshev', else float64 chunks)
    or 'auto' (see :func:`use_brute`); the values are identical.
    ``chunk_size``: rows per block of the brute-force engine.
    """
    n = x.shape[0]
    if use_brute(engine, algorithm, metric, x.shape[1] + y.shape[1], n):
        if algorithm == 1 and metric == "chebyshev":
            return ksg1_brute(x, y, k, chunk_size=chunk_size, n_jobs=n_jobs)
        with _TorchThreads(None if n_jobs is None else resolve_n_jobs(n_jobs), torch.device("cpu")):
            return _ksg_torch(torch.from_numpy(x), torch.from_numpy(y), k=k, algorithm=algorithm,
                              metric=metric, chunk_size=chunk_size)
    n_jobs = resolve_n_jobs(n_jobs)
    if metric == "euclidean" and (x.shape[1] > 1 or y.shape[1] > 1):
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        return _ksg_torch(xt, yt, k=k, algorithm=algorithm, metric=metric, chunk_size=None)
    if algorithm == 1 and x.shape[1] == 1 and y.shape[1] == 1:
        return _ksg1_1d(x[:, 0], y[:, 0], k, n_jobs)
    dist, idx = knn_distances(np.hstack([x, y]), k, "chebyshev", n_jobs)
    if algorithm == 1:
        r = np.nextafter(dist[:, k], 0)
        nx = count_within(x, r, metric, n_jobs) - 1
        ny = count_within(y, r, metric, n_jobs) - 1
        return float(digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1)))
    keep = _drop_self(idx, k)
    eps = []
    for a in (x, y):
        diff = a[idx] - a[:, None, :]
        da = np.abs(diff).max(axis=2) if metric == "chebyshev" else np.sqrt((diff ** 2).sum(axis=2))
        eps.append(np.where(keep, da, -np.inf).max(axis=1))
    nx = count_within(x, eps[0], metric, n_jobs) - 1
    ny = count_within(y, eps[1], metric, n_jobs) - 1
    return float(digamma(k) - 1.0 / k + digamma(n) - np.mean(digamma(nx) + digamma(ny)))


def _ksg_torch(x: torch.Tensor, y: torch.Tensor, *, k: int, algorithm: int, metric: str,
               chunk_size: int | None) -> float:
    if algorithm == 1 and metric == "chebyshev":  # the blocked engine, on the tensors' device
        return ksg1_brute(x, y, k, chunk_size=chunk_size)
    n = x.shape[0]
    chunk = _chunk_rows(n, x.device, chunk_size, parts=3)
    vals, idx = _torch_knn([x, y], k, metric, chunk)
    dig = torch.special.digamma
    if algorithm == 1:
        r = torch.nextafter(vals[:, k], torch.zeros((), dtype=vals.dtype, device=vals.device))
        nx = _torch_count(x, r, metric, chunk) - 1
        ny = _torch_count(y, r, metric, chunk) - 1
        return float(digamma(k) + digamma(n)
                     - (dig((nx + 1).double()) + dig((ny + 1).double())).mean())
    keep = _drop_self(idx, k)
    nx = torch.empty(n, dtype=torch.int64, device=x.device)
    ny = torch.empty_like(nx)
    for s in range(0, n, chunk):
        for a, out in ((x, nx), (y, ny)):
            # eps_x from the same distance matrix that is counted (identical rounding)
            da = _cdist(a[s:s + chunk], a, metric)
            eps = torch.where(keep[s:s + chunk], torch.gather(da, 1, idx[s:s + chunk]), -torch.inf)
            out[s:s + chunk] = (da <= eps.amax(dim=1, keepdim=True)).sum(dim=1) - 1
    return float(digamma(k) - 1.0 / k + digamma(n) - (dig(nx.double()) + dig(ny.double())).mean())


def ksg_mi_mixed(c: Any, labels: Any, *, k: int = 3, metric: str = "chebyshev",
                 n_jobs: int | None = None, chunk_size: int | None = None) -> float:
    """Ross (2014) kNN estimate of I(C;L) in nats for continuous c (n, d) and integer labels (n,).

    For every point, eps_i is the distance to its k-th neighbour among the
    points of the same label (k_i = min(k, N_label - 1)); m_i counts all
    points within distance < eps_i (self included); then
    I = psi(N) + <psi(k_i)> - <psi(N_label_i)> - <psi(m_i)>. Points whose
    label occurs once are left out (as in scikit-learn's mutual_info_classif).
    Works on numpy arrays (cKDTree) or torch tensors (brute force on their device).
    """
    torch_mode = is_torch(c)
    lab = labels.cpu().numpy() if is_torch(labels) else np.asarray(labels)
    lab = lab.reshape(-1)
    classes, inv, counts = np.unique(lab, return_inverse=True, return_counts=True)
    n_lab = counts[inv]
    use = n_lab > 1
    if use.sum() < 2:
        raise ValueError("Every label of 'y' occurs only once; the Ross estimator needs repeated labels.")
    radius = np.zeros(lab.size)
    k_all = np.zeros(lab.size)
    cn = None if torch_mode else c
    for ci in np.flatnonzero(counts > 1):
        mask = inv == ci
        kc = int(min(k, counts[ci] - 1))
        if torch_mode:
            sub = c[torch.from_numpy(mask).to(c.device)]
            vals, _ = _torch_knn([sub], kc, metric, _chunk_rows(sub.shape[0], c.device, chunk_size))
            kd = vals[:, kc].cpu().numpy()
        else:
            kd = knn_distances(cn[mask], kc, metric, n_jobs)[0][:, kc]
        radius[mask] = np.nextafter(kd, 0)
        k_all[mask] = kc
    if torch_mode:
        keep = torch.from_numpy(use).to(c.device)
        cc = c[keep]
        r = torch.as_tensor(radius[use], dtype=cc.dtype, device=cc.device)
        m_all = _torch_count(cc, r, metric, _chunk_rows(cc.shape[0], cc.device, chunk_size)).cpu().numpy()
    else:
        m_all = count_within(cn[use], radius[use], metric, n_jobs)
    n = int(use.sum())
    return float(digamma(n) + np.mean(digamma(k_all[use])) - np.mean(digamma(n_lab[use]))
                 - np.mean(digamma(m_all)))


# --------------------------------------------------------------------------- #
# Kozachenko-Leonenko entropies
# --------------------------------------------------------------------------- #
def _log_unit_ball(d: int, metric: str) -> float:
    if metric == "chebyshev":
        return d * math.log(2.0)
    return 0.5 * d * math.log(math.pi) - float(gammaln(0.5 * d + 1.0))


def _kth_distances(a: Any, k: int, metric: str, n_jobs: int | None, chunk_size: int | None) -> np.ndarray:
    """(n, k) distances to the 1st..k-th neighbours (self excluded)."""
    if is_torch(a):
        vals, _ = _torch_knn([a], k, metric, _chunk_rows(a.shape[0], a.device, chunk_size))
        return vals[:, 1:].cpu().numpy()
    return knn_distances(a, k, metric, n_jobs)[0][:, 1:]


def _check_positive_distances(rho: np.ndarray, what: str) -> np.ndarray:
    if (rho <= 0).any():
        raise ValueError(
            f"{what}: some points have k or more exact duplicates (zero nearest-neighbour "
            f"distance), so the Kozachenko-Leonenko log-distance is -inf. Add tiny noise "
            f"(the 'noise' parameter) or declare the variable discrete."
        )
    return np.log(rho)


def kl_entropy(a: Any, *, k: int = 3, metric: str = "euclidean", n_jobs: int | None = None,
               chunk_size: int | None = None) -> float:
    """Kozachenko-Leonenko differential entropy of the rows of ``a`` (n, d), in nats."""
    n, d = a.shape
    logr = _check_positive_distances(_kth_distances(a, k, metric, n_jobs, chunk_size)[:, k - 1],
                                     "KL entropy")
    return float(digamma(n) - digamma(k) + _log_unit_ball(d, metric) + d * logr.mean())


def centred_eigh(a: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rows of ``a`` (n, d) centred in float64, and the eigenvalues and eigenvectors of their sample covariance.

    The one whitening engine (:func:`whiten_for_entropy` here, ``whiten_codes`` of the
    compressed estimator): a tensor on the input's device (numpy input: CPU).
    ``torch.linalg.eigh`` reads one triangle of the covariance, so it is treated as
    symmetric by construction.
    """
    t = a.detach().to(torch.float64) if is_torch(a) else torch.as_tensor(np.asarray(a), dtype=torch.float64)
    c = t - t.mean(dim=0)
    evals, evecs = torch.linalg.eigh(c.T @ c / (c.shape[0] - 1))
    return c, evals, evecs


def whiten_for_entropy(a: Any, *, what: str = "the entropy's input") -> tuple[Any, float]:
    """The rows of ``a`` (n, d) centred and whitened, and 0.5 log det of their sample covariance (nats).

    H(a) = H(a Sigma^{-1/2}) + 0.5 log det Sigma for any invertible linear map, so a
    kNN entropy may be estimated on the whitened rows and corrected by the
    returned term. The isotropic kNN balls then fit a strongly correlated
    joint law (a thin sheet in the joint space), where on the raw rows they
    overestimate the joint entropy and so underestimate MI. This is what
    Butakov et al.'s entropy estimator does for every entropy (the joint's
    included) before its KL / WKL estimate. Eigendecomposition in float64
    (:func:`centred_eigh`); a covariance whose smallest eigenvalue is below
    1e-12 times its largest is refused (its log-determinant would be
    meaningless). Returns float64 rows (numpy for numpy input, a tensor on
    the input's device otherwise).
    """
    shape = tuple(a.shape) if is_torch(a) else np.shape(a)
    if len(shape) != 2 or shape[0] <= shape[1]:
        raise ValueError(f"Whitening {what} needs a 2-D array with more rows than columns. Got shape "
                         f"{tuple(shape)} instead.")
    c, evals, evecs = centred_eigh(a)
    top = float(evals.max())
    if not (top > 0 and float(evals.min()) > 1e-12 * top):
        raise ValueError(f"whiten=True needs {what} to have a non-singular sample covariance (its eigenvalues "
                         f"range from {float(evals.min()):.3g} to {top:.3g}): a column is constant or a linear "
                         f"combination of others. Drop it, add 'noise', or use whiten=False.")
    out = c @ (evecs * evals.rsqrt()) @ evecs.T
    half_logdet = 0.5 * float(torch.log(evals).sum())
    return (out if is_torch(a) else out.cpu().numpy()), half_logdet


def wkl_weights(k: int, d: int) -> np.ndarray:
    """Berrett-Samworth-Yuan weights on j = 1..k of minimum Euclidean norm.

    Constraints: sum_j w_j = 1 and sum_j w_j Gamma(j + 2l/d) / Gamma(j) = 0
    for l = 1..floor(d/4). For d < 4 (no linear constraint) the estimator is
    the plain KL estimator with k neighbours (w = e_k), as in the authors' code.
    """
    n_con = d // 4
    if n_con == 0 or k == 1:
        w = np.zeros(k)
        w[-1] = 1.0
        return w
    if k <= n_con:
        raise ValueError(
            f"The weighted KL estimator in dimension {d} needs k > floor(d/4) = {n_con} "
            f"neighbours to satisfy its {n_con} bias-cancelling constraints; got k={k}."
        )
    j = np.arange(1, k + 1, dtype=np.float64)
    g = np.vstack([np.ones(k)] + [np.exp(gammaln(j + 2.0 * ell / d) - gammaln(j)) for ell in range(1, n_con + 1)])
    e1 = np.zeros(n_con + 1)
    e1[0] = 1.0
    return g.T @ np.linalg.solve(g @ g.T, e1)


MAX_WEIGHT_NORM = 40.0


def check_wkl_weights(k: int, d: int, n: int, max_weight_norm: float = MAX_WEIGHT_NORM) -> np.ndarray:
    """The weights of :func:`wkl_weights`, refused when they are too large to be stable.

    Berrett, Samworth & Yuan (2019) prove efficiency of the weighted estimator
    for weight vectors whose norm stays bounded as n grows; the estimate's
    error is the weighted sum of the errors of the per-order KL estimates, so
    it is amplified up to ``||w||_1`` times. The minimum-norm weights on
    j = 1..k grow explosively with d at small k (floor(d/4) nearly collinear
    constraints): ``||w||_1`` is 3 for d = 4, 33 for d = 8 and 3e4 for d = 16
    at k = 5, where 8+8-dimensional Gaussians with 2-5 bits gave anything
    from -370 to +300 bits. Above ``max_weight_norm`` this raises a
    ValueError that gives the smallest k (if any, below n) that would do.
    """
    def l1(kk: int) -> float:  # inf when the constraints are numerically collinear (singular Gram matrix)
        try:
            w_ = wkl_weights(kk, d)
        except np.linalg.LinAlgError:
            return math.inf
        norm_ = float(np.abs(w_).sum())
        return norm_ if math.isfinite(norm_) else math.inf

    norm = l1(k)
    if norm <= max_weight_norm:
        return wkl_weights(k, d)
    k_ok = None
    kk = k
    while kk < min(n - 1, 4096):
        kk = min(2 * kk, n - 1, 4096)
        if l1(kk) <= max_weight_norm:
            lo, hi = kk // 2, kk  # bisect for the smallest such k
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if l1(mid) <= max_weight_norm:
                    hi = mid
                else:
                    lo = mid
            k_ok = hi
            break
    hint = (f"use k >= {k_ok}" if k_ok is not None else
            f"no k below n={n} brings them under the limit")
    raise ValueError(
        f"The weighted KL (wkl) estimator in dimension d={d} with k={k} needs bias-cancelling "
        f"weights of L1 norm {norm:.3g} > max_weight_norm={max_weight_norm:g}: they amplify the "
        f"noise of the per-order estimates that much and the result is unreliable "
        f"(Berrett, Samworth & Yuan 2019 require weights of bounded norm). Either {hint}, "
        f"or use 'ksg' or 'kl', or reduce the dimension first (estimator 'compressed')."
    )


def wkl_entropy(a: Any, *, k: int = 5, metric: str = "euclidean", n_jobs: int | None = None,
                chunk_size: int | None = None, max_weight_norm: float = MAX_WEIGHT_NORM) -> float:
    """Weighted Kozachenko-Leonenko entropy (Berrett, Samworth & Yuan 2019) in nats.

    Raises ValueError when the weights are unstable (see :func:`check_wkl_weights`).
    """
    n, d = a.shape
    w = check_wkl_weights(k, d, n, max_weight_norm)
    rho = _kth_distances(a, k, metric, n_jobs, chunk_size)
    support = np.flatnonzero(w != 0)
    logr = _check_positive_distances(rho[:, support], "Weighted KL entropy")
    j = support + 1.0
    terms = math.log(n - 1) - digamma(j) + _log_unit_ball(d, metric) + d * logr.mean(axis=0)
    return float(np.dot(w[support], terms))


# --------------------------------------------------------------------------- #
# Estimator classes
# --------------------------------------------------------------------------- #
class _KNNBase(BaseMIEstimator):
    """Shared preprocessing: device choice, zero-variance check, scaling, tie-breaking noise."""

    keep_torch = True
    supports = frozenset({(CONTINUOUS, CONTINUOUS), (CONTINUOUS, DISCRETE), (DISCRETE, CONTINUOUS)})
    diagnostics = frozenset({"labels", "knn"})  # saturated_ty, few_samples_for_dim, duplicates
    _common_constraints = {
        "k": [Interval(int, 1, None)],
        "metric": [Options(_METRICS)],
        "standardize": [BOOLEAN],
        "noise": [Interval(float, 0, None)],
        "seed": [NONE, Interval(int, 0, None), InstanceOf((np.random.Generator,), "a numpy Generator")],
        "clip": [BOOLEAN],
        "n_jobs": [NONE, Options((-1,)), Interval(int, 1, None)],
        "chunk_size": [NONE, Interval(int, 1, None)],
        "device": [NONE, InstanceOf((str, torch.device), "a device name or torch.device")],
    }

    def _store(self, **params: Any) -> None:
        """Constructor body: store the arguments, then validate them."""
        for key, value in params.items():
            setattr(self, key, value)
        self._check_params()

    def _use_torch(self, *arrays) -> torch.device | None:
        """The torch device to compute on, or None for the numpy/cKDTree path."""
        if self.device is not None:
            return resolve_device(self.device)
        for a in arrays:
            if is_torch(a) and a.device.type != "cpu":
                return a.device
        return None

    def _prep_pair(self, x: Any, y: Any, device: torch.device | None, rng: np.random.Generator
                   ) -> tuple[Any, Any]:
        """Both continuous variables through :meth:`_prep`, sharing the raw-scale factor."""
        m = None
        if not self.standardize:
            m = max(float(x.abs().max() if is_torch(x) else np.abs(x).max()),
                    float(y.abs().max() if is_torch(y) else np.abs(y).max()))
        return self._prep(x, "x", device, rng, m), self._prep(y, "y", device, rng, m)

    def _prep(self, a: Any, name: str, device: torch.device | None, rng: np.random.Generator,
              max_abs: float | None = None) -> Any:
        """Continuous variable -> float64 numpy array, or torch tensor on ``device``; scaled, jittered.

        Scaled by :func:`safe_scale` (per column with ``standardize``, else by
        one exact power of two), so no scale of the data over- or underflows.
        """
        if device is None:
            arr = a.detach().cpu().numpy() if is_torch(a) else np.asarray(a)
            arr = arr.astype(np.float64, copy=False)
            check_no_constant_columns(arr, name)
            arr = safe_scale(arr, per_column=self.standardize, max_abs=max_abs)
            if self.noise > 0:
                arr = arr + self.noise * arr.std(axis=0) * rng.standard_normal(arr.shape)
            return np.ascontiguousarray(arr)
        t = a.detach() if is_torch(a) else torch.as_tensor(np.asarray(a))
        t = t.to(device=device, dtype=torch.float64)
        const = torch.nonzero(t.amax(0) == t.amin(0)).reshape(-1)
        if const.numel():
            check_no_constant_columns(t[:, const[:1]].cpu().numpy(), name)  # raises the usual error
        t = safe_scale(t, per_column=self.standardize, max_abs=max_abs)
        if self.noise > 0:
            z = torch.as_tensor(rng.standard_normal(tuple(t.shape)), device=device)
            t = t + self.noise * t.std(dim=0, unbiased=False) * z
        return t.contiguous()

    @staticmethod
    def _labels(a: Any) -> np.ndarray:
        arr = a.cpu().numpy() if is_torch(a) else np.asarray(a)
        return arr[:, 0] if arr.shape[1] == 1 else discrete_symbols(arr)[0]

    def _check_n(self, n: int, what: str = "") -> None:
        if n <= self.k:
            raise ValueError(
                f"{type(self).__name__} with k={self.k} needs more than k samples{what}; got n={n}. "
                f"Lower 'k' or pass more samples."
            )


_KNN_PARAMS_DOC = """
    metric : {'chebyshev', 'euclidean'}
        Norm used in each space.
    standardize : bool, default True
        Divide every continuous column by its standard deviation first (no
        centring; the scaling of scikit-learn's ``mutual_info_regression``).
    noise : float, default 0.0
        Tie breaking: add ``noise * std`` times standard normal noise to every
        continuous column (Kraskov et al. advise ~1e-10 for data with ties);
        0 adds nothing.
    seed : int, numpy Generator or None, default 0
        Seed of that noise.
    clip : bool, default True
        Return max(estimate, 0) (I(X;Y) >= 0); False returns the raw value,
        which scatters around 0 for independent variables.
    n_jobs : int or None, default None
        Threads of the neighbour searches on CPU: None uses as many as torch
        (``torch.get_num_threads()``, which ``OMP_NUM_THREADS`` and
        ``torch.set_num_threads`` set; the sweep runner sets 1 per worker),
        -1 every core this process may use. Results do not depend on it.
    chunk_size : int or None
        Rows per distance block on the torch path (None: automatic).
    device : str, torch.device or None
        None: CUDA tensors are computed on their device by chunked brute force
        in torch, everything else on CPU with cKDTree. A device forces the
        torch path there (``'cpu'`` included).
    unit : {'bits', 'nats'}, default 'bits'
"""


class KSG(_KNNBase):
    __doc__ = (
        """Kraskov-Stoegbauer-Grassberger kNN estimator of I(X;Y).

    Algorithms 1 and 2 of [1]_ with the joint distance max(d_x, d_y); for a
    continuous x and a discrete y (or the reverse) the variant of Ross [2]_.
    Discrete-discrete pairs are not supported (use 'discrete').

    Parameters
    ----------
    k : int, default 3
        Number of neighbours (scikit-learn's default is 3, Kraskov et al.
        suggest 2-4 for small bias, larger k for smaller variance).
    algorithm : {1, 2}, default 1
    engine : {'auto', 'tree', 'brute'}, default 'auto'
        Neighbour search on CPU. 'tree': cKDTree for the joint k-th neighbour,
        KDTree counts, O(N log N) per query in low dimension but near O(N^2)
        in high dimension. 'brute': blocked brute force (:func:`ksg1_brute` for
        algorithm 1 with 'chebyshev': compiled float64 kernels on CPU, float32
        distance blocks with exact float64 checks on a torch device; otherwise
        float64 chunks in torch). 'auto': 'brute' for algorithm 1 with
        'chebyshev' from joint dimension ``BRUTE_MIN_DIM`` (10), or from joint
        dimension 4 with n <= ``BRUTE_N_PER_DIM`` (1250) x joint dimension,
        else 'tree'. The estimates are identical; on a torch ``device`` the
        brute-force engine always runs ('tree' is refused).
    """
        + _KNN_PARAMS_DOC.replace(
            "        Norm used in each space.",
            "        Norm in each marginal space, default 'chebyshev' (the paper's max-norm;\n"
            "        scikit-learn). 'euclidean' gives max(||dx||_2, ||dy||_2) in the joint space,\n"
            "        bmi's default; for multivariate x or y it runs by brute force (O(N^2 d)).",
        )
        + """
    Notes
    -----
    Bias: consistent, no bound. Exact for independent variables in
    expectation (up to O(1/N)); underestimates strongly dependent pairs
    (high MI, bias grows with MI and dimension) [1]_, [5]_; overestimates
    slightly at small N for weak dependence. Invariant to per-coordinate
    scaling only with ``standardize``; approximately invariant to smooth
    monotone maps.
    Cost: O(N log N) per query for low dimension (kd-tree), memory O(N k);
    1-D marginals by sorting; from joint dimension ``BRUTE_MIN_DIM`` (and at
    small N from 4) blocked brute force, O(N^2 (d_x + d_y)) time, O(N (k + d)) memory on CPU.
    ``estimate`` matches scikit-learn's ``_compute_mi_cc`` (algorithm 1,
    chebyshev, k=n_neighbors, clip=True, on the same scaled data) and bmi's
    ``KSGEnsembleFirstEstimator(neighborhoods=(k,), metric_x=...)`` to
    floating-point precision (see benchmarks/speed.py).

    References
    ----------
    .. [1] Kraskov, Stoegbauer & Grassberger, Phys. Rev. E 69, 066138 (2004).
    .. [2] Ross, PLoS ONE 9(2), e87357 (2014).
    .. [5] Czyz et al., "Beyond normal", NeurIPS 2023.
    """
    )

    name = "ksg"
    _constraints = {**_KNNBase._common_constraints, "algorithm": [Options((1, 2))],
                    "engine": [Options(_ENGINES)]}

    def __init__(self, *, k: int = 3, algorithm: int = 1, metric: str = "chebyshev",
                 standardize: bool = True, noise: float = 0.0, seed: Any = 0, clip: bool = True,
                 n_jobs: int | None = None, chunk_size: int | None = None, device: Any = None,
                 engine: str = "auto", unit: str = "bits"):
        self.k = k
        self.algorithm = algorithm
        self.engine = engine
        self.metric = metric
        self.standardize = standardize
        self.noise = noise
        self.seed = seed
        self.clip = clip
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size
        self.device = device
        self.unit = unit
        self._check_params()

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        n = x.shape[0]
        self._check_n(n)
        rng = check_random_state(self.seed)
        if self.engine == "tree" and self.device is not None:
            raise ValueError(
                f"KSG engine='tree' runs on CPU (cKDTree); it cannot run on device={self.device!r}. "
                f"Use engine='auto' or 'brute' with a device, or device=None with 'tree'."
            )
        device = None if self.engine == "tree" else self._use_torch(x, y)
        if discrete_x or discrete_y:
            cont, disc = (y, x) if discrete_x else (x, y)
            c = self._prep(cont, "y" if discrete_x else "x", device, rng)
            mi = ksg_mi_mixed(c, self._labels(disc), k=self.k, metric=self.metric,
                              n_jobs=self.n_jobs, chunk_size=self.chunk_size)
        else:
            xa, ya = self._prep_pair(x, y, device, rng)
            if device is not None:
                mi = _ksg_torch(xa, ya, k=self.k, algorithm=self.algorithm, metric=self.metric,
                                chunk_size=self.chunk_size)
            else:
                mi = ksg_mi(xa, ya, k=self.k, algorithm=self.algorithm, metric=self.metric,
                            n_jobs=self.n_jobs, engine=self.engine, chunk_size=self.chunk_size)
        return max(mi, 0.0) if self.clip else mi


class _EntropyKNN(_KNNBase):
    """I = H(X) + H(Y) - H(X,Y), or H(T) - sum_y p(y) H(T|y) with one discrete variable."""

    def _entropy(self, a: Any) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _entropy_of(self, a: Any, what: str) -> float:
        """The entropy of ``a`` in nats, on its whitened rows plus 0.5 log det Sigma when ``whiten``."""
        if not getattr(self, "whiten", False):
            return self._entropy(a)
        w, half_logdet = whiten_for_entropy(a, what=what)
        return self._entropy(w) + half_logdet

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        n = x.shape[0]
        self._check_n(n)
        rng = check_random_state(self.seed)
        device = self._use_torch(x, y)
        if discrete_x or discrete_y:
            cont, disc = (y, x) if discrete_x else (x, y)
            t = self._prep(cont, "y" if discrete_x else "x", device, rng)
            labels = self._labels(disc)
            classes, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
            small = counts <= self.k
            if small.any():
                raise ValueError(
                    f"{type(self).__name__} with k={self.k} needs more than k samples of every "
                    f"class of the discrete variable; classes {classes[small][:10].tolist()} have "
                    f"{counts[small][:10].tolist()}. Lower 'k' or merge rare classes."
                )
            h_cond = 0.0
            for ci in range(classes.size):
                mask = inv == ci
                sub = t[torch.from_numpy(mask).to(t.device)] if is_torch(t) else t[mask]
                h_cond += counts[ci] / n * self._entropy_of(sub, f"the samples of class {classes[ci]!r}")
            mi = self._entropy_of(t, "the continuous variable") - h_cond
        else:
            xa, ya = self._prep_pair(x, y, device, rng)
            joint = torch.cat([xa, ya], dim=1) if is_torch(xa) else np.hstack([xa, ya])
            mi = (self._entropy_of(xa, "x") + self._entropy_of(ya, "y")
                  - self._entropy_of(joint, "the joint (x, y)"))
        return max(mi, 0.0) if self.clip else mi


class KL(_EntropyKNN):
    __doc__ = (
        """MI from Kozachenko-Leonenko entropies: I = H(X) + H(Y) - H(X,Y).

    Each entropy uses its own k-th neighbour distances (the "3KL" estimator);
    with one discrete variable, I(T;Y) = H(T) - sum_y p(y) H(T | Y=y).

    Parameters
    ----------
    k : int, default 3
    whiten : bool, default False
        Estimate each entropy (x, y, the joint; with a discrete partner the
        continuous variable and each of its classes) on its own whitened
        rows plus 0.5 log det of their covariance (:func:`whiten_for_entropy`),
        as Butakov et al. [3]_ do. Consistent as without it, and much less
        biased for strongly dependent variables (high MI), where the joint
        law is a thin sheet that isotropic balls fit badly. Each whitened
        input needs a non-singular covariance (else a ValueError).
    """
        + _KNN_PARAMS_DOC.replace(
            "        Norm used in each space.",
            "        Norm defining the neighbour balls, default 'euclidean' (volume\n"
            "        pi^(d/2)/Gamma(d/2+1)); 'chebyshev' uses cubes (volume 2^d).",
        )
        + """
    Notes
    -----
    Bias: consistent, no bound. The three entropy biases do not cancel as in
    KSG: noticeably worse than KSG for dependent variables in d >= 2 and in
    high dimension (the joint-space bias dominates). Exact duplicates make
    log-distances -inf: use ``noise``.
    Cost: three kd-tree kNN searches, O(N log N) each in low dimension.

    References
    ----------
    .. [1] Kozachenko & Leonenko, Problems Inform. Transmission 23 (1987).
    .. [2] Kraskov, Stoegbauer & Grassberger, Phys. Rev. E 69 (2004).
    .. [3] Butakov et al., "Information bottleneck analysis of deep neural
       networks via lossy compression", ICLR 2024.
    """
    )

    name = "kl"
    _constraints = {**_KNNBase._common_constraints, "whiten": [BOOLEAN]}

    def __init__(self, *, k: int = 3, metric: str = "euclidean", standardize: bool = True,
                 noise: float = 0.0, seed: Any = 0, clip: bool = True, n_jobs: int | None = None,
                 chunk_size: int | None = None, device: Any = None, whiten: bool = False,
                 unit: str = "bits"):
        self._store(k=k, metric=metric, standardize=standardize, noise=noise, seed=seed, clip=clip,
                    n_jobs=n_jobs, chunk_size=chunk_size, device=device, whiten=whiten, unit=unit)

    def _entropy(self, a):
        return kl_entropy(a, k=self.k, metric=self.metric, n_jobs=self.n_jobs, chunk_size=self.chunk_size)


class WKL(_EntropyKNN):
    __doc__ = (
        """MI from weighted Kozachenko-Leonenko entropies (Berrett, Samworth & Yuan 2019).

    H_w = sum_j w_j [log(N-1) - psi(j) + log V_d + (d/N) sum_i log rho_(j),i],
    weights of minimum norm with sum 1 that cancel the leading floor(d/4)
    bias terms (see :func:`wkl_weights`); I = H(X) + H(Y) - H(X,Y) or
    H(T) - sum_y p(y) H(T | Y=y). Used by Butakov et al. (2024).

    Parameters
    ----------
    k : int, default 5
        Largest neighbour order used; must exceed floor(d/4) for the joint
        dimension d.
    max_weight_norm : float, default 40
        Largest accepted L1 norm of the weights (see Notes).
    whiten : bool, default False
        Each entropy on its own whitened rows plus 0.5 log det of their
        covariance, as Butakov et al. [2]_ do (see :class:`KL`).
    """
        + _KNN_PARAMS_DOC.replace(
            "        Norm used in each space.",
            "        Norm defining the neighbour balls, default 'euclidean'.",
        )
        + """
    Notes
    -----
    Bias: consistent; the weights remove the leading bias terms of the
    entropy, which makes it efficient (root-N) up to dimension 7 and less
    biased than KL in d >= 4. For d < 4 it equals KL with k neighbours.
    Stability: the minimum-norm weights grow explosively with the dimension
    at small k, and the estimate's error grows with their L1 norm; the
    theory of [1]_ needs weights of bounded norm. An estimate whose weights
    (joint space) exceed ``max_weight_norm`` is refused with a ValueError
    that says which k would do: with the default 40 that allows joint
    dimension up to 7 for every k, 8 for k >= 5, 9 for k >= 6, 10 for
    k >= 7, 11 for k >= 9, never 12 or more below k = 3000 (use KSG there).
    Cost: as KL (one k-neighbour search per entropy).

    References
    ----------
    .. [1] T. B. Berrett, R. J. Samworth and M. Yuan, Annals of Statistics
       47(1), 288-318, 2019.
    .. [2] Butakov et al., ICLR 2024.
    """
    )

    name = "wkl"
    _constraints = {**_KNNBase._common_constraints,
                    "max_weight_norm": [Interval(float, 1, None)], "whiten": [BOOLEAN]}

    def __init__(self, *, k: int = 5, metric: str = "euclidean", standardize: bool = True,
                 noise: float = 0.0, seed: Any = 0, clip: bool = True, n_jobs: int | None = None,
                 chunk_size: int | None = None, device: Any = None,
                 max_weight_norm: float = MAX_WEIGHT_NORM, whiten: bool = False, unit: str = "bits"):
        self._store(k=k, metric=metric, standardize=standardize, noise=noise, seed=seed, clip=clip,
                    n_jobs=n_jobs, chunk_size=chunk_size, device=device,
                    max_weight_norm=max_weight_norm, whiten=whiten, unit=unit)

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        # refuse unstable weights before any neighbour search (the joint space
        # has the largest dimension, so it decides)
        d = (0 if discrete_x else x.shape[1]) + (0 if discrete_y else y.shape[1])
        check_wkl_weights(self.k, d, x.shape[0], self.max_weight_norm)
        return super()._estimate_nats(x, y, discrete_x, discrete_y)

    def _entropy(self, a):
        return wkl_entropy(a, k=self.k, metric=self.metric, n_jobs=self.n_jobs, chunk_size=self.chunk_size,
                           max_weight_norm=self.max_weight_norm)
