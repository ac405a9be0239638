"""Binning and KDE plane estimators against hand-computed values."""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from ibscope import estimators, mutual_information
from ibscope.estimators._binning import adaptive_bin_codes, fixed_bin_codes


def test_fixed_bins_clip_never_wrap():
    t = np.array([[-5.0], [-1.0], [-0.99], [0.0], [0.999], [1.0], [7.0]])
    codes = fixed_bin_codes(t, n_bins=4, value_range=(-1, 1))
    # bins [-1,-.5) [-.5,0) [0,.5) [.5,1]; out-of-range values go to the edge bins
    assert codes.ravel().tolist() == [0, 0, 0, 2, 3, 3, 3]
    assert fixed_bin_codes(np.array([[0.26], [-0.26]]), bin_width=0.5).ravel().tolist() == [0, -1]


def test_binning_plane_hand_computed():
    # 8 samples of a 2-unit layer; with 2 bins over (-1, 1) the rows become
    # symbols A=(0,0) x3, B=(1,1) x3, C=(0,1) x2
    t = np.array([[-0.9, -0.9], [-0.5, -0.1], [-0.2, -0.7], [0.3, 0.2], [0.9, 0.9],
                  [0.5, 0.1], [-0.3, 0.4], [-0.8, 0.6]])
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    est = estimators.get("binning", n_bins=2, value_range=(-1, 1))
    i_xt, i_ty = est.plane(t, y)
    p = np.array([3, 3, 2]) / 8
    h_t = -(p * np.log2(p)).sum()
    # H(T|Y): y=0 -> {A,A,A,C}; y=1 -> {B,B,B,C}
    h_cond = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert i_xt == pytest.approx(h_t, abs=1e-12)
    assert i_ty == pytest.approx(h_t - h_cond, abs=1e-12)
    nats = estimators.get("binning", n_bins=2, value_range=(-1, 1), unit="nats").plane(t, y)
    assert nats[0] == pytest.approx(h_t * math.log(2), abs=1e-12)


def test_binning_with_explicit_inputs_and_bounds(rng):
    t = np.tanh(rng.normal(size=(512, 4)))
    y = rng.integers(0, 2, 512)
    est = estimators.get("binning")
    i_xt, i_ty = est.plane(t, y)
    assert 0 <= i_xt <= math.log2(512) + 1e-9 and 0 <= i_ty <= 1 + 1e-9
    # with repeated inputs, I(X;T) <= H(X)
    x_ids = np.arange(512) % 4
    i_xt2, _ = est.plane(np.tile(t[:4], (128, 1)), y, x=x_ids)
    assert i_xt2 == pytest.approx(2.0, abs=1e-9)


def test_adaptive_binning_equal_mass_and_floor():
    v = np.arange(1000, dtype=float)[:, None]
    codes = adaptive_bin_codes(v, n_bins=10)
    assert np.bincount(codes.ravel()).tolist() == [100] * 10
    # a ReLU-like layer: half exact zeros; the floor gets its own bin, the rest adapt
    r = np.concatenate([np.zeros(500), np.linspace(0.01, 5, 500)])[:, None]
    c = adaptive_bin_codes(r, n_bins=6, floor=0.0)
    counts = np.bincount(c.ravel())
    assert counts[0] == 500 and counts[1:].tolist() == [100] * 5
    # equal_distinct: equal numbers of distinct values per bin (the reference code's behaviour)
    skew = np.concatenate([np.zeros(900), np.arange(1, 101)]).astype(float)[:, None]
    cm = np.bincount(adaptive_bin_codes(skew, n_bins=4, mode="equal_mass").ravel())
    cd = np.bincount(adaptive_bin_codes(skew, n_bins=4, mode="equal_distinct").ravel())
    assert cm.tolist() == [900, 34, 33, 33]  # ties never split, the rest shared equally
    assert cd.tolist() == [925, 25, 25, 25]  # 101 distinct values: 0..25 (900 zeros + 25), then 25 each
    # the adaptive estimator gives H(T) = log2(bins) for uniform data in 1-D
    est = estimators.get("adaptive_binning", n_bins=8)
    assert est.plane(np.linspace(0, 1, 800)[:, None], np.zeros(800, int))[0] == pytest.approx(3.0)


def _naive_kde(t, y, s2, factor):
    def term(a):
        d = ((a[:, None] - a[None]) ** 2).sum(-1)
        return np.mean(np.log(len(a)) - logsumexp(-d / (factor * s2), axis=1))

    h = term(t)
    hc = sum((y == c).mean() * term(t[y == c]) for c in np.unique(y))
    return h / math.log(2), (h - hc) / math.log(2)


@pytest.mark.parametrize("name,factor", [("kde_upper", 2.0), ("kde_lower", 8.0)])
def test_kde_matches_naive_formula(rng, name, factor):
    t = np.tanh(rng.normal(size=(300, 3)))
    y = rng.integers(0, 3, 300)
    got = estimators.get(name, noise_variance=0.05, chunk_size=37).plane(t, y)
    want = _naive_kde(t, y, 0.05, factor)
    assert got == pytest.approx(want, abs=1e-10)
    # torch input gives the same numbers
    got_t = estimators.get(name, noise_variance=0.05).plane(torch.as_tensor(t), torch.as_tensor(y))
    assert got_t == pytest.approx(want, abs=1e-10)


def test_kde_bounds_order_and_limits(rng):
    t = rng.normal(size=(400, 2))
    y = (t[:, 0] > 0).astype(int)
    up = estimators.get("kde_upper", noise_variance=0.1).plane(t, y)
    lo = estimators.get("kde_lower", noise_variance=0.1).plane(t, y)
    assert lo[0] <= up[0] <= math.log2(400) + 1e-9
    # tiny noise: every point is its own component -> log2 N; huge noise -> 0
    assert estimators.get("kde_upper", noise_variance=1e-8).plane(t, y)[0] == pytest.approx(math.log2(400), abs=1e-6)
    assert estimators.get("kde_upper", noise_variance=1e8).plane(t, y)[0] == pytest.approx(0.0, abs=1e-6)
    # labels fully determined by a well separated layer -> I(T;Y) ~ H(Y) = 1 bit
    sep = np.concatenate([np.zeros((200, 1)), 10 * np.ones((200, 1))])
    lab = np.repeat([0, 1], 200)
    assert estimators.get("kde_upper", noise_variance=0.1).plane(sep, lab)[1] == pytest.approx(1.0, abs=1e-9)


def test_adaptive_kde_scales_with_range(rng):
    t = np.abs(rng.normal(size=(300, 3)))
    y = rng.integers(0, 2, 300)
    est = estimators.get("adaptive_kde", noise_fraction=0.1)
    # scale invariance: the variance follows the layer's range
    assert est.plane(t, y) == pytest.approx(est.plane(7.5 * t, y), abs=1e-9)
    assert est.plane(np.zeros((50, 2)), np.arange(50) % 2) == (0.0, 0.0)


def test_estimate_interface_and_errors(rng):
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] > 0).astype(int)
    v = mutual_information(x, y, method="kde_upper", discrete_y=True, noise_variance=0.01)
    assert 0.5 < v <= 1.0 + 1e-9
    with pytest.raises(ValueError, match="does not support"):
        mutual_information(x, x, method="kde_upper")
    with pytest.raises(ValueError, match="NaN"):
        estimators.get("binning").plane(np.array([[np.nan], [1.0]]), [0, 1])
    with pytest.raises(ValueError, match="same number of samples"):
        estimators.get("binning").plane(x, y[:-1])
    with pytest.raises(ValueError, match="non-integer"):
        estimators.get("binning").plane(x, y + 0.5)
    with pytest.raises(ValueError, match="'n_bins' parameter of Binning"):
        estimators.get("binning", n_bins=1)
    with pytest.raises(ValueError, match="'noise_variance' parameter"):
        estimators.get("kde_upper", noise_variance=-1.0)
    with pytest.raises(ValueError, match="Unknown estimator 'nope'"):
        estimators.get("nope")
    with pytest.raises(TypeError, match="Parameters of estimator 'binning'"):
        estimators.get("binning", bins=3)
    with pytest.raises(ValueError, match="value_range"):
        estimators.get("binning", value_range=(1, -1))


def test_discrete_plugin_and_miller_madow(rng):
    a = rng.integers(0, 4, 2000)
    b = (a + (rng.random(2000) < 0.1)) % 4
    est = estimators.get("discrete")
    joint = np.zeros((4, 4))
    np.add.at(joint, (a, b), 1)
    p = joint / joint.sum()
    pa, pb = p.sum(1), p.sum(0)
    nz = p > 0
    want = (p[nz] * np.log2(p[nz] / np.outer(pa, pb)[nz])).sum()
    assert est.estimate(a, b, discrete_x=True, discrete_y=True) == pytest.approx(want, abs=1e-12)
    mm = estimators.get("discrete", miller_madow=True).estimate(a, b, discrete_x=True, discrete_y=True)
    # MM adds (ma-1)/2N + (mb-1)/2N - (mab-1)/2N nats
    mab = int(nz.sum())
    corr = (3 + 3 - (mab - 1)) / (2 * 2000) / math.log(2)
    assert mm == pytest.approx(max(want + corr, 0.0), abs=1e-12)


@pytest.mark.parametrize("name", ["binning", "adaptive_binning", "kde_upper", "kde_lower", "adaptive_kde"])
def test_plane_ci_is_the_shared_subsampling_scheme(name):
    from ibscope.estimators.base import subsample_interval

    rng = np.random.default_rng(0)
    t = rng.normal(size=(300, 2))
    y = (t[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int)
    est = estimators.get(name)
    a, b = est.plane(t, y, ci=0.9, n_resamples=8, subsample=0.5, seed=3)
    point = est.plane(t, y)
    assert (a.value, b.value) == pytest.approx(point, abs=1e-12)
    assert a.level == b.level == 0.9 and a.n_resamples == 8 and a.subsample_size == 150 and a.unit == "bits"
    # the same subsets as estimate_ci's scheme: rebuild the interval by hand from the replicates
    g = np.random.default_rng(3)
    reps = []
    for _ in range(8):
        idx = np.sort(g.choice(300, size=150, replace=False))
        reps.append(est.plane(t[idx], y[idx]))
    reps = np.asarray(reps)
    for j, e in enumerate((a, b)):
        lo, hi = subsample_interval(point[j], reps[:, j], 300, 150, 0.9)
        assert e.low == pytest.approx(max(lo, 0.0), abs=1e-9) and e.high == pytest.approx(max(hi, 0.0), abs=1e-9)
    assert a.high > a.low
    with pytest.raises(ValueError, match="'ci' parameter"):
        est.plane(t, y, ci=1.5)


def test_binning_plane_ci_subsamples_x_too():
    rng = np.random.default_rng(1)
    t = rng.uniform(-1, 1, size=(200, 1))
    x = rng.integers(0, 4, size=200)
    y = (t[:, 0] > 0).astype(int)
    est = estimators.get("binning", n_bins=4, value_range=(-1, 1))
    a, _ = est.plane(t, y, x=x, ci=0.9, n_resamples=5)
    assert a.value == pytest.approx(est.plane(t, y, x=x)[0], abs=1e-12)
    assert a.value <= 2.0 + 1e-9  # I(X;T) <= H(X) <= log2(4) with explicit inputs
@pytest.mark.parametrize("name", ["kde_upper", "kde_lower"])
def test_kde_is_offset_invariant(rng, name):
    # the distance formula cancels for a large common offset unless the sample is
    # centred first (before: 0.845 bits at offset 0, 0.481 at 1e8, 0.0 at 1e10)
    y = rng.integers(0, 2, 400)
    t = 0.5 * rng.standard_normal((400, 3)) + y[:, None]
    est = estimators.get(name)
    ref = est.estimate(t, y, discrete_y=True)
    assert ref > 0.3
    for offset in (1e8, -1e10, 1e12):
        # the data themselves keep ~ulp(offset)/0.5 relative precision
        assert est.estimate(t + offset, y, discrete_y=True) == pytest.approx(ref, abs=1e-4)
    # points a huge distance apart (squared norms overflow) are exactly separated
    far = np.r_[t, [[1e300, 0, 0], [-1e300, 0, 0]]]
    i_xt, i_ty = est.plane(far, np.r_[y, 0, 1])
    assert np.isfinite(i_xt) and np.isfinite(i_ty) and i_xt <= math.log2(402) + 1e-12


def test_adaptive_kde_is_scale_invariant_at_any_scale(rng):
    # s2 = noise_fraction * max|t|^2 underflowed to 0 for tiny layers (ZeroDivisionError)
    y = rng.integers(0, 2, 300)
    t = 0.5 * rng.standard_normal((300, 2)) + y[:, None]
    est = estimators.get("adaptive_kde")
    ref = est.plane(t, y)
    for s in (1e-300, 1e-160, 1e160, 1e300):
        assert est.plane(t * s, y) == pytest.approx(ref, rel=1e-9)


def test_kde_plane_takes_2d_labels_as_joint_symbols(rng):
    # used to fail inside a matmul; now rows are joint symbols, as in estimate()
    y2 = rng.integers(0, 2, (200, 2))
    t = rng.standard_normal((200, 2)) + y2
    est = estimators.get("kde_upper")
    joint = y2[:, 0] * 2 + y2[:, 1]
    assert est.plane(t, y2) == pytest.approx(est.plane(t, joint), rel=1e-12)
    assert est.plane(t, y2)[1] == pytest.approx(est.estimate(t, y2, discrete_y=True), rel=1e-12)
    with pytest.raises(ValueError, match="'y'"):
        est.plane(t, rng.integers(0, 2, (200, 2, 2)))
