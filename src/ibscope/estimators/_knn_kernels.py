"""Compiled CPU kernels of the kNN estimators (numba): blocked brute-force KSG algorithm 1.

KSG algorithm 1 with the Chebyshev (max) norm needs, for every point, the
distance eps_i to its k-th neighbour in the joint space and the numbers of
points within eps_i in each marginal space. In a joint dimension of about 10
and more, trees prune little and a brute-force scan over all pairs is faster,
provided it runs at the speed of the vector units. These kernels scan the
pairs in blocks: an outer loop over blocks of ``_BLOCK`` data points (their
coordinates, ``d x _BLOCK`` float64, stay in the L2 cache) and an inner loop
over the query points; for each query the distances to the block are formed
one coordinate at a time along the block (a loop the compiler vectorizes:
subtract, negate, two maxima). Two passes: the k+1 smallest joint distances of
every query (self included), then both marginal counts against the radius.

Every distance is computed in float64 as max_f max(a_f - b_f, b_f - a_f),
which equals max_f |a_f - b_f| exactly (IEEE subtraction is sign-symmetric),
the distance scipy's cKDTree and scikit-learn's KDTree compute; the
comparisons are those of the tree path (k-th distance including the point
itself, counts of distances <= nextafter(eps_i, 0), self included), so the
counts -- and the estimate -- are identical to the tree path's, ties and
duplicates included. ``fastmath`` lets the compiler use vector maxima (no
NaN can occur: the callers check the inputs are finite); the kernels form no
float sums or products whose order it could change.

Queries are split over ``n_jobs`` threads (the kernels release the GIL).
Cost O(N^2 (d_x + d_y)) float64 operations, memory O(N (k + d)). The kernels
are compiled on first use and cached on disk where numba finds a writable
place (else once per process, a few seconds).

References
----------
.. [1] A. Kraskov, H. Stoegbauer and P. Grassberger, "Estimating mutual
   information", Phys. Rev. E 69, 066138, 2004.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

__all__ = ["ksg1_counts"]

#: Data points per block (d x _BLOCK float64 stay in the L2 cache for d <= 64).
_BLOCK = 1024


_OPTS = dict(nogil=True, fastmath=True, boundscheck=False, error_model="numpy")


def _jit(fn):
    """Compile with an on-disk cache where numba finds a writable place for it, else per process."""
    try:
        return njit(cache=True, **_OPTS)(fn)
    except RuntimeError:  # no writable cache location (read-only install without a home directory)
        return njit(cache=False, **_OPTS)(fn)


@_jit
def _block_dist(zt, f0, f1, j0, m, i, dist):
    """dist[:m] = Chebyshev distances of point i to points j0:j0+m over features f0:f1."""
    q = zt[f0, i]
    row = zt[f0, j0:j0 + m]
    for jj in range(m):
        a = row[jj] - q
        b = q - row[jj]
        dist[jj] = a if a > b else b
    for f in range(f0 + 1, f1):
        q = zt[f, i]
        row = zt[f, j0:j0 + m]
        for jj in range(m):
            a = row[jj] - q
            b = q - row[jj]
            c = dist[jj]
            c = a if a > c else c
            c = b if b > c else c
            dist[jj] = c


@_jit
def _kth_joint(zt, k, lo, hi, block, eps):
    """eps[i] = (k+1)-th smallest joint distance of point i (self included), i in lo:hi."""
    d, n = zt.shape
    nq = hi - lo
    best = np.full((nq, k + 1), np.inf)
    dist = np.empty(block)
    for j0 in range(0, n, block):
        m = min(block, n - j0)
        for qi in range(nq):
            _block_dist(zt, 0, d, j0, m, lo + qi, dist)
            worst = best[qi, k]
            for jj in range(m):
                v = dist[jj]
                if v < worst:  # insert into the sorted k+1 smallest
                    t = k
                    while t > 0 and best[qi, t - 1] > v:
                        best[qi, t] = best[qi, t - 1]
                        t -= 1
                    best[qi, t] = v
                    worst = best[qi, k]
    for qi in range(nq):
        eps[lo + qi] = best[qi, k]


@_jit
def _count_marginals(zt, dx, r, lo, hi, block, cx, cy):
    """cx[i], cy[i] = #{j : marginal distance <= r[i]} (self included), i in lo:hi."""
    d, n = zt.shape
    dist = np.empty(block)
    for i in range(lo, hi):
        cx[i] = 0
        cy[i] = 0
    for j0 in range(0, n, block):
        m = min(block, n - j0)
        for i in range(lo, hi):
            ri = r[i]
            _block_dist(zt, 0, dx, j0, m, i, dist)
            c = 0
            for jj in range(m):
                c += dist[jj] <= ri
            cx[i] += c
            _block_dist(zt, dx, d, j0, m, i, dist)
            c = 0
            for jj in range(m):
                c += dist[jj] <= ri
            cy[i] += c


def ksg1_counts(x: np.ndarray, y: np.ndarray, k: int, n_jobs: int = 1
                ) -> tuple[np.ndarray, np.ndarray]:
    """Marginal counts of KSG algorithm 1 (Chebyshev), self included, by blocked brute force.

    Parameters
    ----------
    x, y : float64 arrays (n, d_x), (n, d_y)
        Finite samples (not checked here: the caller validates).
    k : int
        Number of neighbours (k < n).
    n_jobs : int
        Threads; the query points are split into ``n_jobs`` contiguous ranges.

    Returns
    -------
    cx, cy : int64 arrays (n,)
        #{j : ||x_j - x_i||_inf <= nextafter(eps_i, 0)} and the same in y,
        with eps_i the k-th neighbour distance in the joint max-norm -- the
        tree path's counts, identical.
    """
    n, dx = x.shape
    zt = np.ascontiguousarray(np.hstack([x, y]).T, dtype=np.float64)
    eps = np.empty(n)
    cx = np.empty(n, dtype=np.int64)
    cy = np.empty(n, dtype=np.int64)
    parts = max(1, min(int(n_jobs), n))
    bounds = np.linspace(0, n, parts + 1).astype(np.int64)
    ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

    def run(fn, args):
        if len(ranges) == 1:
            fn(*args(*ranges[0]))
            return
        with ThreadPoolExecutor(len(ranges)) as pool:
            for fut in [pool.submit(fn, *args(lo, hi)) for lo, hi in ranges]:
                fut.result()

    run(_kth_joint, lambda lo, hi: (zt, k, lo, hi, _BLOCK, eps))
    r = np.nextafter(eps, 0)
    run(_count_marginals, lambda lo, hi: (zt, dx, r, lo, hi, _BLOCK, cx, cy))
    return cx, cy
