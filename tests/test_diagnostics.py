"""Diagnostic flags: each fires on a constructed case and stays silent on a healthy one.

Also: warned once per run, the ``flags`` table contract, and saturated values
without a (zero-width) interval.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from ibscope import estimators, tasks
from ibscope.estimators import (
    FLAG_DESCRIPTIONS,
    EstimateDiagnosticWarning,
    format_flags,
    parse_flags,
)
from ibscope.estimators import _diagnostics as diag
from ibscope.estimators._gaussian import Gaussian


@pytest.fixture
def layer():
    """A deterministic 'layer' on 2000 distinct inputs with 10 balanced labels."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(2000, 8)), np.arange(2000) % 10


def _diag_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, EstimateDiagnosticWarning)]


# ------------------------------------------------------------------ saturation
def test_binning_plane_saturates_at_log_n_and_log_classes(layer):
    t, y = layer
    est = estimators.get("binning")  # 30 bins on 8 units: every row its own symbol
    i_xt, i_ty = est.plane(t, y)
    assert i_xt == pytest.approx(math.log2(2000), abs=1e-9) and i_ty == pytest.approx(math.log2(10))
    assert set(est.flags_) == {"saturated_xt", "saturated_ty"}
    healthy = estimators.get("binning", n_bins=2)
    healthy.plane(t[:, :2], y)  # 4 symbols: far from both ceilings
    assert healthy.flags_ == ()


def test_kde_plane_saturates_with_tiny_noise(layer):
    t, y = layer
    tiny = estimators.get("kde_upper", noise_variance=1e-4)
    tiny.plane(t[:500], y[:500])
    assert "saturated_xt" in tiny.flags_
    wide = estimators.get("kde_upper", noise_variance=10.0)
    i_xt, _ = wide.plane(t[:500], y[:500])
    assert i_xt < 0.9 * math.log2(500) and wide.flags_ == ("noise_dominated",)  # s2 = 10 blurs the layer
    scaled = estimators.get("kde_upper", noise_variance=float(t[:500].var(0).sum()) / (2 * math.log(500)))
    i_scaled, _ = scaled.plane(t[:500], y[:500])
    assert i_scaled > i_xt and "noise_dominated" not in scaled.flags_


def test_kde_noise_dominated_on_a_small_scale_injective_layer():
    # an injective layer of 400 distinct points at scale 0.02 (a GPT-2 embedding's std): with s2 = 0.1 the
    # KDE measures T + noise, far below log2 400, and says so; the same layer x 50 is resolved by the noise
    rng = np.random.default_rng(0)
    t, y = 0.02 * rng.normal(size=(400, 16)), rng.integers(0, 2, 400)
    for name in ("kde_upper", "kde_lower"):
        est = estimators.get(name)
        i_small, _ = est.plane(t, y)
        assert i_small < 0.5 * math.log2(400) and "noise_dominated" in est.flags_
        i_big, _ = est.plane(50 * t, y)
        assert i_big > 0.9 * math.log2(400) and "noise_dominated" not in est.flags_
    adaptive = estimators.get("adaptive_kde")
    adaptive.plane(t, y)
    assert "noise_dominated" not in adaptive.flags_


def test_estimate_with_labels_saturates_at_label_entropy(layer):
    t, y = layer
    b = estimators.get("binning")
    b.estimate(t, y, discrete_y=True)
    assert b.flags_ == ("saturated_ty",)
    # separated classes: KSG (Ross) reaches H(Y) as well
    x = (y[:, None] * 10.0 + np.random.default_rng(1).normal(size=(2000, 1)))
    k = estimators.get("ksg")
    assert k.estimate(x, y, discrete_y=True) == pytest.approx(math.log2(10), abs=0.07)
    assert "saturated_ty" in k.flags_
    mixed = tasks.get("mixture_labels", n_classes=3, dim=2, separation=3.0)
    xm, ym = mixed.sample(1000, seed=0)
    k.estimate(xm, ym, discrete_y=True)  # 1.27 of H(Y) = 1.58 bits
    assert k.flags_ == ()


def test_binning_of_a_continuous_pair_saturates_at_the_bin_entropy():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(1000, 1))
    b = estimators.get("binning", n_bins=8)
    b.estimate(x, x)  # y = x: the binned x determines the binned y
    assert b.flags_ == ("saturated_bins",)
    b.estimate(x, x + rng.normal(scale=0.3, size=x.shape))
    assert b.flags_ == ()


def test_infonce_ceiling():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 1))
    # I(X;Y) ~ 10 bits >> log2(4) = 2; a concat critic learns -|x - y| fast
    est = estimators.get("infonce", critic="concat", batch_size=4, lr=0.05, max_epochs=15,
                         patience=15, hidden=(16,))
    value = est.estimate(x, x + 0.001 * rng.normal(size=x.shape))
    assert 0.9 * 2.0 <= value <= 2.0 + 1e-9 and "ceiling_infonce" in est.flags_
    assert est.eval_ceiling_nats(60) == pytest.approx(math.log(4))
    assert est.eval_ceiling_nats(6) == pytest.approx(math.log(3))  # two chunks of 3 rows
    est.estimate(x, rng.normal(size=x.shape))  # independent: far below the cap
    assert "ceiling_infonce" not in est.flags_


# -------------------------------------------------------------- other checks
def test_few_samples_for_dim():
    rng = np.random.default_rng(4)
    ksg = estimators.get("ksg")
    ksg.estimate(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)))  # 2^8 = 256 > 200
    assert ksg.flags_ == ("few_samples_for_dim",)
    ksg.estimate(rng.normal(size=(300, 4)), rng.normal(size=(300, 4)))
    assert ksg.flags_ == ()
    assert diag.few_samples_for_dim(1000, 10) and not diag.few_samples_for_dim(1024, 10)
    # a discrete partner adds no dimension
    kl = estimators.get("kl")
    kl.estimate(rng.normal(size=(300, 8)), np.arange(300) % 2, discrete_y=True)
    assert kl.flags_ == ()


def test_duplicates():
    rng = np.random.default_rng(5)
    x = np.maximum(rng.normal(size=(500, 1)), 0.0)  # ReLU: half the rows are 0
    y = x + rng.normal(size=x.shape)
    ksg = estimators.get("ksg")
    ksg.estimate(x, y)
    assert ksg.flags_ == ("duplicates",)
    jittered = estimators.get("ksg", noise=1e-10)
    jittered.estimate(x, y)
    assert jittered.flags_ == ()
    ksg.estimate(rng.normal(size=(500, 1)), y)
    assert ksg.flags_ == ()
    assert diag.duplicate_fraction(np.array([[0, 1], [0, 1], [1, 1], [2, 2]])) == 0.25


def test_critic_not_converged():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(200, 1))
    y = x + rng.normal(size=x.shape)
    short = estimators.get("nwj", max_epochs=2, patience=5, hidden=(16,))
    short.estimate(x, y)
    assert short.flags_ == ("critic_not_converged",) and not short.converged_
    done = estimators.get("nwj", max_epochs=60, patience=3, hidden=(16,), lr=0.05, batch_size=32)
    done.estimate(x, y)  # converges within ~10 epochs, then early stopping
    assert done.converged_ and done.flags_ == () and len(done.history_) < 60
    # the pure check
    hist = [{"test": v} for v in (0.1, 0.2, 0.3, 0.3, 0.3)]
    assert not diag.critic_not_converged(hist, max_epochs=5, patience=2)  # best at 3, two flat epochs
    assert diag.critic_not_converged(hist[:3], max_epochs=3, patience=2)
    assert not diag.critic_not_converged(hist[:3], max_epochs=10, patience=2)  # early-stopped


def test_compressed_carries_the_inner_flags():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 12))
    y = x[:, :2] + rng.normal(size=(300, 2))
    raw = estimators.get("compressed", dim_x=None, dim_y=None)  # KSG in 14 dims on 300 rows
    raw.estimate(x, y)
    assert raw.flags_ == ("few_samples_for_dim",)
    small = estimators.get("compressed", dim_x=2)
    small.estimate(x, y)
    assert small.flags_ == ()


def test_gaussian_and_discrete_have_no_ceiling_flags():
    t = tasks.get("gaussian_split", dim=1, mi=8.0)  # very high MI: no cap, no flag
    x, y = t.sample(500, seed=0)
    g = estimators.get("gaussian")
    g.estimate(x, y)
    assert g.flags_ == ()
    d = estimators.get("discrete")
    s = np.arange(400) % 4
    d.estimate(s, s, discrete_x=True, discrete_y=True)  # I = H: a genuine value, not an artefact
    assert d.flags_ == ()


def test_saturation_tolerance():
    c = math.log(2000)
    assert diag.is_saturated(c, c) and diag.is_saturated(0.981 * c, c)
    assert not diag.is_saturated(0.97 * c, c)
    assert diag.is_saturated(math.log(2) - 0.009, math.log(2))  # absolute floor
    assert not diag.is_saturated(1.0, None) and not diag.is_saturated(1.0, math.inf)


# ------------------------------------------------------------------- warnings
def test_warned_once_per_run_and_resettable(layer):
    t, y = layer
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        est = estimators.get("binning")
        for _ in range(3):
            est.plane(t, y)
        estimators.get("binning").plane(t, y)  # a new instance of the same estimator
        estimators.get("kde_upper", noise_variance=1e-4).plane(t[:300], y[:300])
    msgs = _diag_warnings(rec)
    assert len(msgs) == 4, msgs  # binning x 2 flags, kde_upper x 2 flags
    assert ("binning", "saturated_xt") in estimators.warned()
    estimators.reset_warnings()
    assert estimators.warned() == frozenset()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        est.plane(t, y)
    assert len(_diag_warnings(rec)) == 2
    assert est.flags_ == ("saturated_xt", "saturated_ty")  # stored on every call, warned or not


def test_conftest_resets_between_tests_part_1(layer):
    estimators.get("binning").plane(*layer)
    assert estimators.warned()


def test_conftest_resets_between_tests_part_2():
    assert estimators.warned() == frozenset()


# ------------------------------------------------------- table contract, CI
def test_flag_descriptions_and_table_contract():
    assert diag.SATURATION_FLAGS <= set(FLAG_DESCRIPTIONS)
    assert {"few_samples_for_dim", "duplicates", "critic_not_converged"} <= set(FLAG_DESCRIPTIONS)
    assert all(isinstance(v, str) and "\n" not in v for v in FLAG_DESCRIPTIONS.values())
    assert format_flags(()) == "" and parse_flags("") == () and parse_flags(float("nan")) == ()
    flags = ("saturated_xt", "saturated_ty")
    assert format_flags(flags) == "saturated_xt;saturated_ty" and parse_flags(format_flags(flags)) == flags


def test_saturated_estimate_has_no_interval(layer):
    t, y = layer
    r = estimators.get("binning").estimate(t, y, discrete_y=True, ci=0.95)
    assert r.flags == ("saturated_ty",) and r.saturated
    assert math.isnan(r.low) and math.isnan(r.high) and r.n_resamples == 0
    assert "no interval" in str(r) and "saturated_ty" in str(r)
    assert r.as_dict()["flags"] == "saturated_ty"
    healthy = estimators.get("ksg").estimate(*tasks.get("gaussian_split", dim=1, mi=1.0).sample(400, seed=0),
                                             ci=0.95, n_resamples=10)
    assert healthy.flags == () and not healthy.saturated and healthy.low < healthy.value < healthy.high
    assert healthy.as_dict()["flags"] == ""


class _CappedInSubsamples(Gaussian):
    """Test double: a ceiling of 1 nat below 1000 rows, none above (the subsamples are capped)."""

    name = "capped_test"

    def _ceilings_nats(self, x, y, discrete_x, discrete_y):
        return {"saturated_xt": 1.0 if x.shape[0] < 1000 else 100.0}


def test_interval_dropped_when_the_subsamples_are_capped():
    x, y = tasks.get("gaussian_split", dim=1, mi=1.6).sample(1000, seed=0)  # ~1.1 nats
    est = _CappedInSubsamples()
    r = est.estimate_ci(x, y, n_resamples=10)
    assert r.flags == ("saturated_xt",) and math.isnan(r.low) and r.n_resamples == 10
    assert est.flags_ == ("saturated_xt",)
    r2 = est.estimate_ci(*tasks.get("gaussian_split", dim=1, mi=0.5).sample(1000, seed=0), n_resamples=10)
    assert r2.flags == () and r2.low < r2.value < r2.high


def test_estimators_expose_their_ceilings(layer):
    t, y = layer
    caps = estimators.get("binning").ceilings(t, y, discrete_y=True)
    assert caps["saturated_xt"] == pytest.approx(math.log2(2000))
    assert caps["saturated_ty"] == pytest.approx(math.log2(10))
    # 600 held-out rows in 10 chunks of 60 rows: the cap is log 60, not log 64
    assert estimators.get("infonce", batch_size=64, unit="nats").ceilings(t, t)["ceiling_infonce"] == (
        pytest.approx(math.log(60)))
    assert estimators.get("gaussian").ceilings(t, t) == {}
    assert estimators.get("ksg").ceilings(t, y, discrete_y=True) == {"saturated_ty": pytest.approx(math.log2(10))}


def test_plane_ci_gives_a_saturated_coordinate_no_interval():
    from ibscope import estimators

    rng = np.random.default_rng(1)
    t = rng.normal(size=(400, 3))                     # every row its own bin of 30: I(X;T) = log2 N
    y = rng.integers(0, 2, 400)                       # labels independent of t: I(T;Y) far below H(Y)
    est = estimators.get("binning", n_bins=30)
    a, b = est.plane(t, y, ci=0.95, n_resamples=10)
    assert "saturated_xt" in a.flags and np.isnan(a.low) and np.isnan(a.high) and a.n_resamples == 0
    assert "saturated_xt" not in b.flags and b.n_resamples == 10
    assert "saturated_xt" in est.flags_  # the full-data flags, not a subsample's
    healthy = estimators.get("binning", n_bins=3)
    c, d = healthy.plane(t[:, :1], y, ci=0.95, n_resamples=10)
    assert c.flags == () and np.isfinite([c.low, c.high]).all() and c.low <= c.value <= c.high


# ------------------------------------------- the duplicates check: exact and without np.unique(axis=0)
def _reference_fraction(a):
    """The definition: rows minus distinct rows (np.unique's entry-wise ==), over rows."""
    a = np.asarray(a).reshape(len(a), -1)
    return (a.shape[0] - np.unique(a, axis=0).shape[0]) / a.shape[0]


def _duplicate_cases():
    rng = np.random.default_rng(11)
    cases = []
    for n in (2, 3, 257):
        for d in (1, 2, 7):
            ties = rng.integers(0, 3, size=(n, d))
            for dtype in (np.float32, np.float64, np.int64, np.int8, bool):
                cases.append(ties.astype(dtype))
            cases.append(rng.normal(size=(n, d)).astype(np.float32))
            cases.append(rng.normal(size=(n, d)))
    relu = np.maximum(rng.normal(size=(400, 5)), 0.0)
    relu[::3] = 0.0
    cases += [relu, relu[:, :1], np.array([[0.0, 1.0], [-0.0, 1.0], [-0.0, -0.0], [0.0, 0.0]]),
              np.array([[np.nan], [np.nan], [0.0], [-0.0]]),
              np.array([[np.nan, 1.0], [np.nan, 1.0], [2.0, 1.0]])]
    return cases


def test_duplicate_fraction_matches_the_definition():
    torch = pytest.importorskip("torch")
    for a in _duplicate_cases():
        want = _reference_fraction(a)
        assert diag.duplicate_fraction(a) == want, (a.dtype, a.shape)
        assert diag.duplicate_fraction(torch.as_tensor(a)) == want, (a.dtype, a.shape)
        assert diag.has_duplicates(a) == (want >= diag.DUPLICATE_FRACTION)


def test_duplicate_check_collisions_stay_exact(monkeypatch):
    # every row hashes alike: the within-group comparison must still count exactly
    monkeypatch.setattr(diag, "_row_hashes", lambda b: np.zeros(b.shape[0], dtype=np.uint64))
    for a in _duplicate_cases():
        assert diag.duplicate_fraction(a) == _reference_fraction(a), (a.dtype, a.shape)


def test_duplicate_check_avoids_the_row_wise_unique(monkeypatch):
    # np.unique(axis=0) sorts rows as structured records: 11 of the 25 ms of a 1-D KSG at n = 10k
    real = np.unique

    def no_row_unique(*args, **kwargs):
        if kwargs.get("axis") is not None:
            raise AssertionError("np.unique(axis=...) called")
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "unique", no_row_unique)
    rng = np.random.default_rng(12)
    x = np.maximum(rng.normal(size=(3000, 1)), 0.0)
    assert diag.duplicate_fraction(x) == pytest.approx(np.mean(x[:, 0] == 0) - 1 / 3000)
    wide = np.repeat(rng.normal(size=(1000, 16)), 3, axis=0)
    assert diag.duplicate_fraction(wide) == pytest.approx(2 / 3)
    ksg = estimators.get("ksg")
    ksg.estimate(x, x + rng.normal(size=x.shape))
    assert ksg.flags_ == ("duplicates",)
