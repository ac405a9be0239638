"""KSG / KL / WKL: exact agreement with scikit-learn and with slow reference code, closed forms."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import digamma
from sklearn.feature_selection import mutual_info_classif, mutual_info_regression
from sklearn.feature_selection._mutual_info import _compute_mi_cc, _compute_mi_cd

from ibscope import estimators, tasks
from ibscope.estimators._knn import count_within, kl_entropy, wkl_entropy, wkl_weights


def slow_ksg(x, y, k, algorithm, metric):
    """Obviously correct O(n^2) KSG (the paper's definitions, loops over points)."""
    n = len(x)

    def dist(a, i):
        d = a - a[i]
        return np.abs(d).max(1) if metric == "chebyshev" else np.sqrt((d ** 2).sum(1))

    acc = 0.0
    for i in range(n):
        dx, dy = dist(x, i), dist(y, i)
        dz = np.maximum(dx, dy)
        order = np.argsort(dz, kind="stable")
        order = order[order != i][:k]
        if algorithm == 1:
            eps = dz[order[-1]]
            acc += digamma((dx < eps).sum()) + digamma((dy < eps).sum())  # counts include i: n_x + 1
        else:
            acc += digamma((dx <= dx[order].max()).sum() - 1) + digamma((dy <= dy[order].max()).sum() - 1)
    if algorithm == 1:
        return digamma(k) + digamma(n) - acc / n
    return digamma(k) - 1 / k + digamma(n) - acc / n


@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize("metric", ["chebyshev", "euclidean"])
def test_ksg_matches_slow_reference(algorithm, metric):
    t = tasks.get("gaussian_split", dim=2, mi=1.5)
    x, y = t.sample(300, seed=0)
    ref = slow_ksg(x, y, 4, algorithm, metric)
    for device in (None, "cpu"):  # cKDTree path and torch brute-force path
        est = estimators.get("ksg", k=4, algorithm=algorithm, metric=metric, standardize=False,
                             clip=False, unit="nats", device=device, chunk_size=64)
        assert est.estimate(x, y) == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_ksg_equals_sklearn_1d(k):
    t = tasks.get("student_t", dim=1, dof=3.0, rho=0.6)
    x, y = t.sample(3000, seed=k)
    ours = estimators.get("ksg", k=k, standardize=False, unit="nats").estimate(x, y)
    assert ours == pytest.approx(_compute_mi_cc(x[:, 0], y[:, 0], k), abs=1e-12)
    # the public function, with its scaling and 1e-10 noise reproduced
    rng = np.random.RandomState(0)
    xs = x / x.std()
    xs = xs + 1e-10 * max(1.0, np.abs(xs).mean()) * rng.standard_normal(size=(len(x), 1))
    ys = (y[:, 0] / y[:, 0].std())
    ys = ys + 1e-10 * max(1.0, np.abs(ys).mean()) * rng.standard_normal(size=len(x))
    public = mutual_info_regression(x, y[:, 0], n_neighbors=k, random_state=0)[0]
    assert estimators.get("ksg", k=k, standardize=False, unit="nats").estimate(xs, ys) == pytest.approx(public, abs=1e-9)


def test_ksg_mixed_equals_sklearn_classif():
    t = tasks.get("mixture_labels", n_classes=4, dim=1, separation=1.0)
    x, y = t.sample(2000, seed=1)
    ours = estimators.get("ksg", k=3, standardize=False, metric="euclidean", unit="nats")
    assert ours.estimate(x, y, discrete_y=True) == pytest.approx(_compute_mi_cd(x[:, 0], y, 3), abs=1e-12)
    assert ours.estimate(y, x, discrete_x=True) == ours.estimate(x, y, discrete_y=True)
    torch_path = estimators.get("ksg", k=3, standardize=False, metric="euclidean", unit="nats", device="cpu")
    assert torch_path.estimate(x, y, discrete_y=True) == pytest.approx(_compute_mi_cd(x[:, 0], y, 3), abs=1e-12)
    assert mutual_info_classif(x, y, n_neighbors=3, random_state=0)[0] == pytest.approx(
        ours.estimate(x, y, discrete_y=True), abs=1e-3)


def test_count_within_1d_exact_with_ties_and_boundaries():
    rng = np.random.default_rng(0)
    a = np.round(rng.standard_normal(500), 2)  # many ties
    r = np.abs(a - a[rng.integers(0, 500, 500)])  # radii that hit other points exactly
    r = np.where(rng.random(500) < 0.5, np.nextafter(r, 0), r)
    brute = (np.abs(a[None, :] - a[:, None]) <= r[:, None]).sum(1)
    assert np.array_equal(count_within(a[:, None], r), brute)
    assert np.array_equal(count_within(np.c_[a, a], r), brute)  # tree path, 2-D


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_ksg_1d_path_matches_slow_reference_with_ties(n_jobs):
    # the 1-D x and y path (x-sorted order, one tree, sorted counts) on data with many
    # ties, where an off-by-one in the strict '< eps' counts would show
    rng = np.random.default_rng(3)
    x = np.round(rng.standard_normal((400, 1)), 2)
    y = np.round(x + rng.standard_normal((400, 1)), 2)
    ref = slow_ksg(x, y, 3, 1, "chebyshev")
    assert np.isfinite(ref) and len(np.unique(x)) < 300  # ties in x, but every eps_i > 0
    est = estimators.get("ksg", k=3, standardize=False, clip=False, unit="nats", n_jobs=n_jobs)
    assert est.estimate(x, y) == pytest.approx(ref, abs=1e-10)


def test_threaded_counts_and_knn_equal_single_thread():
    x, y = tasks.get("gaussian_split", dim=3, mi=1.0).sample(5000, seed=4)
    r = np.full(len(x), 0.3)
    assert np.array_equal(count_within(x, r, n_jobs=1), count_within(x, r, n_jobs=3))
    one = estimators.get("ksg", k=3, n_jobs=1).estimate(x, y)
    assert estimators.get("ksg", k=3, n_jobs=2).estimate(x, y) == one
    assert estimators.get("ksg", k=3, n_jobs=-1).estimate(x, y) == one
    assert estimators.get("ksg", k=3).estimate(x, y) == one  # default: torch's thread count


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_n_jobs_validated(bad):
    with pytest.raises((ValueError, TypeError), match="n_jobs"):
        estimators.get("ksg", n_jobs=bad)


def test_kl_entropy_of_gaussian():
    rng = np.random.default_rng(1)
    for d in (1, 3):
        a = rng.standard_normal((20000, d))
        h = 0.5 * d * math.log(2 * math.pi * math.e)
        assert kl_entropy(a, k=3) == pytest.approx(h, abs=0.03 * d)
        assert kl_entropy(a, k=3, metric="chebyshev") == pytest.approx(h, abs=0.03 * d)
        assert wkl_entropy(a, k=5) == pytest.approx(h, abs=0.03 * d)


def test_wkl_weights_constraints_and_estimator():
    from scipy.special import gammaln
    for d, k in [(4, 5), (8, 10), (12, 20)]:
        w = wkl_weights(k, d)
        j = np.arange(1, k + 1)
        assert w.sum() == pytest.approx(1.0)
        for ell in range(1, d // 4 + 1):
            assert np.dot(w, np.exp(gammaln(j + 2 * ell / d) - gammaln(j))) == pytest.approx(0, abs=1e-8)
    assert np.array_equal(wkl_weights(5, 3), [0, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="k > floor"):
        wkl_weights(2, 12)
    # the estimator is the weighted sum of per-order KL terms (log(n-1) in place of psi(n))
    n, d = 4000, 8
    a = np.random.default_rng(2).standard_normal((n, d))
    w = wkl_weights(10, d)
    per_j = np.array([kl_entropy(a, k=j) for j in range(1, 11)]) + math.log(n - 1) - digamma(n)
    assert wkl_entropy(a, k=10) == pytest.approx(np.dot(w, per_j), abs=1e-9)
    h = 0.5 * d * math.log(2 * math.pi * math.e)
    assert wkl_entropy(a, k=30) == pytest.approx(h, abs=0.1)


def test_duplicates_and_small_n():
    x = np.repeat(np.arange(50.0), 4)[:, None]
    y = x + np.random.default_rng(0).standard_normal(x.shape)
    with pytest.raises(ValueError, match="duplicates"):
        estimators.get("kl").estimate(x, y)
    assert np.isfinite(estimators.get("kl", noise=1e-6, clip=False).estimate(x, y))  # tie breaking
    with pytest.raises(ValueError, match="k=5 needs more than k samples"):
        estimators.get("ksg", k=5).estimate(np.arange(5.0), np.arange(5.0) ** 2)
    t = tasks.get("mixture_labels", n_classes=2, dim=1)
    xx, yy = t.sample(100, seed=0)
    yy[:2] = 7  # a rare class
    with pytest.raises(ValueError, match="every class"):
        estimators.get("kl").estimate(xx, yy, discrete_y=True)
    with pytest.raises(ValueError, match="does not support"):
        estimators.get("ksg").estimate(yy, yy, discrete_x=True, discrete_y=True)


def test_noise_is_seeded_and_small():
    t = tasks.get("gaussian_split", dim=1, mi=1.0)
    x, y = t.sample(1000, seed=0)
    a = estimators.get("ksg", noise=1e-10, seed=3).estimate(x, y)
    assert a == estimators.get("ksg", noise=1e-10, seed=3).estimate(x, y)
    assert a == pytest.approx(estimators.get("ksg").estimate(x, y), abs=1e-3)


def test_torch_input_and_bounded_memory_path():
    t = tasks.get("gaussian_split", dim=3, mi=2.0)
    x, y = t.sample(600, seed=4)
    ref = estimators.get("ksg", k=5).estimate(x, y)
    # CPU tensors go to the tree path; device='cpu' forces chunked torch brute force
    assert estimators.get("ksg", k=5).estimate(torch.from_numpy(x), torch.from_numpy(y)) == ref
    assert estimators.get("ksg", k=5, device="cpu", chunk_size=100).estimate(x, y) == pytest.approx(ref, abs=1e-12)
    for name in ("kl", "wkl"):
        a = estimators.get(name).estimate(x, y)
        assert estimators.get(name, device="cpu", chunk_size=77).estimate(x, y) == pytest.approx(a, abs=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    t = tasks.get("gaussian_split", dim=3, mi=2.0)
    x, y = t.sample(3000, seed=5)
    for name in ("ksg", "kl", "wkl"):
        cpu = estimators.get(name).estimate(x, y)
        gpu = estimators.get(name).estimate(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda())
        assert gpu == pytest.approx(cpu, abs=1e-9)


def test_ksg_close_to_truth_at_larger_n():
    for algorithm in (1, 2):
        t = tasks.get("gaussian_split", dim=2, mi=2.0)
        x, y = t.sample(10000, seed=6)
        v = estimators.get("ksg", k=5, algorithm=algorithm).estimate(x, y)
        assert v == pytest.approx(2.0, abs=0.1)  # KSG's downward bias at 2 bits in 2+2 dims is ~0.03-0.05


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), which=st.sampled_from(["cube", "exp", "affine"]))
def test_ksg_nearly_invariant_to_monotone_maps(seed, which):
    t = tasks.get("gaussian_split", dim=1, mi=1.0)
    x, y = t.sample(2000, seed=seed)
    f = {"cube": lambda a: a ** 3 + a, "exp": np.exp, "affine": lambda a: 3.0 * a - 7.0}[which]
    e = estimators.get("ksg", k=5)
    a, b = e.estimate(x, y), e.estimate(f(x), y)
    # exact for affine maps (standardize), within sampling error for smooth monotone maps
    assert b == pytest.approx(a, abs=1e-9 if which == "affine" else 0.12)


@pytest.mark.parametrize("name", ["ksg", "kl", "wkl"])
@pytest.mark.parametrize("standardize", [True, False])
def test_knn_estimates_survive_extreme_scales(name, standardize):
    # scaled by 1e154 the standard deviation overflowed (ksg returned 0.0 bits, kl/wkl
    # blamed "duplicates"); by 1e-200 it underflowed ("data must be finite" in scipy)
    t = tasks.get("gaussian_split", dim=1, mi=2.35)
    x, y = t.sample(800, seed=3)
    est = estimators.get(name, standardize=standardize)
    ref = est.estimate(x, y)
    assert ref == pytest.approx(2.35, abs=0.25)
    for s in (1e154, 1e200, 1e300, 1e-200, 1e-300):
        assert est.estimate(x * s, y * s) == pytest.approx(ref, abs=1e-9)
    if standardize:  # per-column scale invariance, also through the torch path
        assert est.estimate(x * 1e250, y * 1e-250) == pytest.approx(ref, abs=1e-9)
        torch_est = estimators.get(name, device="cpu")
        assert torch_est.estimate(torch.from_numpy(x * 1e250), torch.from_numpy(y * 1e-250)) == \
            pytest.approx(ref, abs=1e-9)
    assert est.estimate(x + 1e6, y - 1e6) == pytest.approx(ref, abs=0.02)


def test_wkl_refuses_unstable_weights():
    # 8+8-dimensional Gaussians (2-5 bits) gave anything from -370 to +300 bits at k=5:
    # the minimum-norm weights there have L1 norm ~3e4 (Berrett, Samworth & Yuan need
    # bounded weights)
    t = tasks.get("gaussian_split", dim=8, mi=3.0)
    x, y = t.sample(500, seed=0)
    with pytest.raises(ValueError, match="max_weight_norm"):
        estimators.get("wkl").estimate(x, y)
    # 4+4 at k=5 (norm 33) is allowed; the error names the k that would do
    t4 = tasks.get("gaussian_split", dim=5, mi=3.0)
    x4, y4 = t4.sample(500, seed=0)
    with pytest.raises(ValueError, match="k >= 7"):
        estimators.get("wkl", k=5).estimate(x4, y4)
    assert math.isfinite(estimators.get("wkl", k=7).estimate(x4, y4))
    with pytest.raises(ValueError, match="max_weight_norm"):
        estimators.get("wkl", max_weight_norm=0.5)
    # d = 128 at n = 400: the constraint Gram matrix of large k is numerically singular (was a raw LinAlgError)
    from ibscope.estimators._knn import check_wkl_weights

    with pytest.raises(ValueError, match="no k below n=400"):
        check_wkl_weights(33, 128, 400)


# --------------------------------------------------------------------------- #
# Blocked brute-force engine (KSG algorithm 1, Chebyshev): identical to the trees
# --------------------------------------------------------------------------- #
def _tree_and_brute(x, y, k=3, **kw):
    from ibscope.estimators._knn import ksg1_brute, ksg_mi

    return ksg_mi(x, y, k=k, engine="tree"), ksg1_brute(x, y, k, **kw)


@pytest.mark.parametrize("chunk_size", [None, 37])
def test_ksg_brute_identical_to_tree_high_dim(chunk_size):
    t = tasks.get("gaussian_split", dim=10, mi=2.0)
    x, y = t.sample(700, seed=3)
    for backend in ("numba", "torch"):
        tree, brute = _tree_and_brute(x, y, k=3, chunk_size=chunk_size, backend=backend)
        assert brute == tree  # the same counts and the same arithmetic: bit-identical
        _, brute64 = _tree_and_brute(x, y, k=3, chunk_size=chunk_size, precision="float64",
                                     backend=backend)
        assert brute64 == tree
    # the estimator: engine='brute', 'auto' (joint dimension 20) and the torch device path agree exactly
    vals = {e: estimators.get("ksg", engine=e, chunk_size=chunk_size, unit="nats").estimate(x, y)
            for e in ("tree", "brute", "auto")}
    vals["device"] = estimators.get("ksg", device="cpu", unit="nats").estimate(x, y)
    assert len(set(vals.values())) == 1, vals


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("k", [1, 4])
def test_ksg_brute_identical_with_ties_and_duplicates(k, backend):
    rng = np.random.default_rng(k)
    # coarse grid: many tied distances at the k-th neighbour and at the count radii
    x = np.round(rng.standard_normal((600, 5)) * 2) / 2
    y = np.round(x[:, :4] + rng.standard_normal((600, 4)))
    tree, brute = _tree_and_brute(x, y, k=k, chunk_size=50, backend=backend)
    assert brute == tree
    # exact duplicate rows (more than the candidate limit at the boundary: the exact block fallback)
    xd = np.vstack([x[:400], np.repeat(x[:2], 150, axis=0)])
    yd = np.vstack([y[:400], np.repeat(y[:2], 150, axis=0)])
    tree, brute = _tree_and_brute(xd, yd, k=k, chunk_size=64, backend=backend)
    assert brute == tree


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_ksg_brute_float32_boundary_rechecked_in_float64(backend):
    # differences of 1e-7 on top of 0.75: float32 (resolution 6e-8 there) rounds them to a
    # few levels, so float32 distances alone get the counts wrong; the exact check may not
    from ibscope.estimators._knn import ksg_mi

    rng = np.random.default_rng(0)
    z = rng.standard_normal((400, 8))
    x = 0.75 + 1e-7 * z[:, :4]
    y = 0.75 + 1e-7 * (z[:, 4:] + z[:, :4])
    tree, brute = _tree_and_brute(x, y, k=3, chunk_size=64, backend=backend)
    assert brute == tree
    as32 = [a.astype(np.float32).astype(np.float64) for a in (x, y)]
    assert abs(ksg_mi(*as32, k=3, engine="tree") - tree) > 0.05  # what float32 alone would give
    # and where the joint search alone is close (values near a float32 rounding boundary)
    x2 = np.hstack([x, 1e-7 * rng.standard_normal((400, 4))])
    tree, brute = _tree_and_brute(x2, y, k=2, chunk_size=100, backend=backend)
    assert brute == tree


def test_ksg_brute_numba_blocks_threads_and_backend_choice(monkeypatch):
    # more points than one block of the compiled kernels, cut into several blocks and thread ranges
    from ibscope.estimators import _knn, _knn_kernels

    monkeypatch.setattr(_knn_kernels, "_BLOCK", 97)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1000, 6))
    y = np.round(x[:, :5] + rng.standard_normal((1000, 5)), 1)  # ties at the count radii
    tree = _knn.ksg_mi(x, y, k=3, engine="tree")
    one = _knn.ksg1_brute(x, y, 3, n_jobs=1, backend="numba")
    assert one == tree
    cx1, cy1 = _knn_kernels.ksg1_counts(x, y, 3, 1)
    cx3, cy3 = _knn_kernels.ksg1_counts(x, y, 3, 3)  # three uneven thread ranges
    assert np.array_equal(cx1, cx3) and np.array_equal(cy1, cy3)
    assert cx1.min() >= 1 and cy1.min() >= 1  # self included, as the tree path counts
    # 'auto' is numba for CPU data (numpy or CPU tensors), torch for other devices
    calls = []
    real = _knn_kernels.ksg1_counts
    monkeypatch.setattr(_knn_kernels, "ksg1_counts", lambda *a: calls.append(a[3]) or real(*a))
    assert _knn.ksg1_brute(torch.from_numpy(x), torch.from_numpy(y), 3, n_jobs=2) == tree
    assert calls == [2]
    assert _knn.ksg1_brute(x, y, 3, backend="torch") == tree
    assert calls == [2]
    with pytest.raises(ValueError, match="backend"):
        _knn.ksg1_brute(x, y, 3, backend="cython")
    if torch.cuda.is_available():  # pragma: no cover - CUDA machines
        with pytest.raises(ValueError, match="backend='numba'"):
            _knn.ksg1_brute(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(), 3,
                            backend="numba")


def test_ksg_kernels_compile_without_a_disk_cache(monkeypatch):
    # a read-only install without a writable cache directory: numba refuses cache=True at
    # decoration; the kernels are then compiled per process instead of failing the import
    from ibscope.estimators import _knn_kernels

    seen = []

    def fake_njit(cache=False, **opts):
        seen.append(cache)
        if cache:
            raise RuntimeError("cannot cache function: no locator available")
        return lambda fn: fn

    monkeypatch.setattr(_knn_kernels, "njit", fake_njit)
    fn = _knn_kernels._jit(lambda a: a + 1)
    assert fn(1) == 2 and seen == [True, False]


def test_ksg_engine_choice_and_validation(monkeypatch):
    from ibscope.estimators import _knn

    big = 10 ** 6
    assert _knn.use_brute("auto", 1, "chebyshev", _knn.BRUTE_MIN_DIM, big)  # any n from there
    assert not _knn.use_brute("auto", 1, "chebyshev", _knn.BRUTE_MIN_DIM - 1, big)
    small = _knn.BRUTE_N_PER_DIM * 6  # joint dimension 4..BRUTE_MIN_DIM - 1: only at small n
    assert _knn.use_brute("auto", 1, "chebyshev", 6, small)
    assert not _knn.use_brute("auto", 1, "chebyshev", 6, small + 1)
    assert not _knn.use_brute("auto", 1, "chebyshev", 3, 100)  # below 4: the trees
    assert not _knn.use_brute("auto", 2, "chebyshev", 40, big)  # algorithm 2 keeps the trees
    assert _knn.use_brute("brute", 2, "chebyshev", 2, 10)
    assert not _knn.use_brute("tree", 1, "chebyshev", 40, big)
    with pytest.raises(ValueError, match="engine"):
        estimators.get("ksg", engine="numba")
    with pytest.raises(ValueError, match="engine='tree'"):
        estimators.get("ksg", engine="tree", device="cpu").estimate(np.ones((10, 1)), np.ones((10, 1)))
    with pytest.raises(ValueError, match="precision"):
        _knn.ksg1_brute(np.ones((10, 1)), np.ones((10, 1)), 3, precision="float16")
    with pytest.raises(ValueError, match="finite"):
        _knn.ksg1_brute(np.full((10, 1), np.nan), np.ones((10, 1)), 3)
    calls = []
    real = _knn.ksg1_brute
    monkeypatch.setattr(_knn, "ksg1_brute", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    t = tasks.get("gaussian_split", dim=_knn.BRUTE_MIN_DIM // 2, mi=1.0)
    x, y = t.sample(200, seed=0)
    estimators.get("ksg").estimate(x, y)
    assert calls == [1]  # auto: brute force from the documented joint dimension
    estimators.get("ksg").estimate(x[:, :1], y[:, :1])
    estimators.get("ksg", algorithm=2).estimate(x, y)
    assert calls == [1]  # low dimension and algorithm 2: the trees
    monkeypatch.setattr(_knn, "BRUTE_N_PER_DIM", 10)  # the small-n rule, at a test's sample size
    monkeypatch.setattr(_knn, "BRUTE_MIN_DIM", 100)
    estimators.get("ksg").estimate(x, y)
    assert calls == [1]  # joint dimension 10 with n = 200 > 10 x 10: the trees


def test_ksg_brute_algorithm2_engine_matches_tree():
    t = tasks.get("gaussian_split", dim=5, mi=1.0)
    x, y = t.sample(400, seed=5)
    vals = [estimators.get("ksg", algorithm=2, engine=e, unit="nats").estimate(x, y)
            for e in ("tree", "brute")]
    assert vals[1] == pytest.approx(vals[0], abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ksg_brute_cuda_identical_to_tree():
    from ibscope.estimators._knn import ksg1_brute, ksg_mi

    t = tasks.get("gaussian_split", dim=10, mi=2.0)
    x, y = t.sample(3000, seed=1)
    ref = ksg_mi(x, y, k=3, engine="tree")
    assert ksg1_brute(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(), 3) == ref
    est = estimators.get("ksg", unit="nats", standardize=False)
    assert est.estimate(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()) == \
        estimators.get("ksg", unit="nats", standardize=False, engine="tree").estimate(x, y)
