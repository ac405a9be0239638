"""The ``auto`` estimator: its rules, the recorded choice, and accuracy where each rule applies."""

import numpy as np
import pytest

from ibscope import estimators, tasks


def test_gaussian_copula_beyond_max_knn_dim_and_choice_recorded():
    t = tasks.get("multinormal_dense", dim_x=6, dim_y=6, off_diag=0.5)
    x, y = t.sample(3000, seed=0)
    a = estimators.get("auto")
    v = a.estimate(x, y)
    assert a.choice_["chosen"] == "gaussian_copula" and "max_knn_dim" in a.choice_["rule"]
    assert a.choice_["candidates"] == {"gaussian_copula": pytest.approx(v)}
    assert v == pytest.approx(t.mutual_information, abs=0.05)


def test_ksg_on_scores_where_the_copula_is_not_gaussian():
    t = tasks.get("student_t", dim=2, dof=1.0, rho=0.0)  # dependence only through the shared scale
    x, y = t.sample(3000, seed=1)
    a = estimators.get("auto")
    v = a.estimate(x, y)
    assert a.choice_["chosen"] == "ksg_copula"
    assert a.choice_["candidates"]["gaussian_copula"] < 0.05
    assert v == pytest.approx(t.mutual_information, abs=0.1)
    # rank based: a strictly increasing map of a coordinate changes nothing
    assert a.estimate(np.arcsinh(x), y ** 3) == pytest.approx(v, rel=1e-9)


def test_max_rule_keeps_the_copula_value_on_gaussians():
    t = tasks.get("gaussian_sparse", dim_x=3, dim_y=3, rho=0.8, n_interacting=2)
    x, y = t.sample(3000, seed=2)
    a = estimators.get("auto")
    v = a.estimate(x, y)
    c = a.choice_["candidates"]
    assert v == pytest.approx(max(c.values())) and set(c) == {"gaussian_copula", "ksg_copula"}
    assert v == pytest.approx(t.mutual_information, abs=0.06)


def test_discrete_and_mixed_pairs():
    a = estimators.get("auto", correction="chao_shen")
    t = tasks.get("symmetric_channel", n_symbols=4, error=0.2)
    x, y = t.sample(2000, seed=3)
    v = a.estimate(x, y, discrete_x=True, discrete_y=True)
    assert a.choice_["chosen"] == "discrete" and "chao_shen" in a.choice_["rule"]
    assert v == pytest.approx(estimators.get("discrete", correction="chao_shen").estimate(
        x, y, discrete_x=True, discrete_y=True))
    t = tasks.get("mixture_labels", n_classes=3, dim=2, separation=2.0)
    x, y = t.sample(2000, seed=4)
    v = a.estimate(x, y, discrete_y=True)
    assert a.choice_["chosen"] == "ksg_mixed_copula"
    assert v == pytest.approx(t.mutual_information, abs=0.08)
    assert a.estimate(y, x, discrete_x=True) == pytest.approx(v, rel=1e-9)
    with pytest.raises(ValueError, match="every class"):
        a.estimate(x[:20], np.r_[np.zeros(18, int), 1, 1], discrete_y=True)


def test_choice_of_the_full_sample_survives_a_confidence_interval():
    t = tasks.get("student_t", dim=1, dof=2.0, rho=0.0)
    x, y = t.sample(1000, seed=5)
    a = estimators.get("auto")
    r = a.estimate(x, y, ci=0.9, n_resamples=6)
    assert r.method == "auto" and a.choice_["candidates"][a.choice_["chosen"]] == pytest.approx(r.value)


def test_ties_are_jittered():
    rng = np.random.default_rng(6)
    x = np.round(rng.standard_normal((2000, 1)), 1)  # many ties
    y = x + 0.5 * rng.standard_normal((2000, 1))
    v = estimators.get("auto").estimate(x, y)
    assert np.isfinite(v) and 0.5 < v < 2.0


# ------------------------------------------- real layers: degenerate and dependent columns
# Ground truth: x ~ N(0, I_2), y = x_1 + sigma * e (n = 3000); I(X;Y) = 1/2 log2(1 + 1/sigma^2).
# The same pair with constant, duplicated and linearly dependent columns appended to x or y, a
# layer wider than its input (x W, W 2 x 6) and a LayerNorm-like centring (rank d - 1) has the same
# MI (each extra column is a function of the others). Tolerance 0.08 bits: the Gaussian
# estimators are exact here (sd ~0.02 at n = 3000), auto takes max(copula, KSG) (KSG ~0.03 low).
N_DEG = 3000
SIGMA = 0.8
TOL_DEG = 0.08
DEG_ESTIMATORS = ("auto", "gaussian", "gaussian_copula")


def _gaussian_pair(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_DEG, 2))
    y = x[:, :1] + SIGMA * rng.standard_normal((N_DEG, 1))
    return x, y, 0.5 * np.log2(1 + 1 / SIGMA ** 2)


def _variants(x):
    one = np.ones((len(x), 1))
    w = np.random.default_rng(7).standard_normal((2, 6))
    x32 = x.astype(np.float32)
    return {
        "constant": (np.c_[one, x, 3 * one], {"constant": [0, 3]}, "dropped_columns"),
        "duplicate": (np.c_[x, x[:, 1], x[:, 0]], {"duplicate": [2, 3]}, "dropped_columns"),
        "dependent": (np.c_[x, x[:, 0] + x[:, 1]], {"rank": 2}, "rank_deficient"),  # any one of 3 dropped
        "dependent_float32": (np.c_[x32, x32[:, 0] + x32[:, 1]], {"rank": 2}, "rank_deficient"),
        "wider_layer": (x @ w, {"rank": 2}, "rank_deficient"),
        "wider_layer_float32": ((x32 @ w.astype(np.float32)), {"rank": 2}, "rank_deficient"),
    }


@pytest.mark.parametrize("name", DEG_ESTIMATORS)
def test_degenerate_columns_keep_the_closed_form_mi(name):
    x, y, truth = _gaussian_pair()
    e = estimators.get(name)
    clean = e.estimate(x, y)
    assert clean == pytest.approx(truth, abs=TOL_DEG)
    for case, (xv, record, flag) in _variants(x).items():
        for swap in (False, True):  # the degenerate variable as x, then as y
            v = e.estimate(y, xv) if swap else e.estimate(xv, y)
            assert v == pytest.approx(truth, abs=TOL_DEG), (name, case, swap)
            assert flag in e.flags_, (name, case, e.flags_)
            cols = (e.choice_["columns"] if name == "auto" else e.columns_)["y" if swap else "x"]
            assert {k: cols[k] for k in record} == record, (case, cols)
            assert len(cols["kept"]) == cols["rank"] == 2 and sorted(
                cols["kept"] + cols["constant"] + cols["duplicate"] + cols["dependent"]) == list(range(xv.shape[1]))
            if case in ("constant", "duplicate"):  # the same columns reach the estimator: same value
                assert v == pytest.approx(clean, rel=1e-9)


@pytest.mark.parametrize("name", DEG_ESTIMATORS)
def test_layernorm_like_rank_deficiency_against_the_truth(name):
    # t = centred rows of a 4-dim Gaussian (sums to 0, rank 3, as a LayerNorm output before its gain);
    # y = t_1 + sigma e with var(t_1) = 3/4: I(T;Y) = 1/2 log2(1 + 0.75 / sigma^2)
    rng = np.random.default_rng(1)
    g = rng.standard_normal((N_DEG, 4))
    for t in (g - g.mean(1, keepdims=True), (g - g.mean(1, keepdims=True)).astype(np.float32)):
        y = t[:, :1] + SIGMA * rng.standard_normal((N_DEG, 1))
        e = estimators.get(name)
        v = e.estimate(t, y)
        assert v == pytest.approx(0.5 * np.log2(1 + 0.75 / SIGMA ** 2), abs=TOL_DEG)
        cols = (e.choice_["columns"] if name == "auto" else e.columns_)["x"]
        assert cols["rank"] == 3 and len(cols["dependent"]) == 1 and "rank_deficient" in e.flags_


@pytest.mark.parametrize("name", DEG_ESTIMATORS)
def test_a_constant_variable_gives_zero_with_a_flag(name):
    x, y, _ = _gaussian_pair()
    e = estimators.get(name)
    assert e.estimate(np.ones((N_DEG, 3)), y) == 0.0 and e.flags_ == ("constant_variable",)
    assert e.estimate(x, np.full((N_DEG, 1), 2.5)) == 0.0 and e.flags_ == ("constant_variable",)
    if name != "gaussian":  # continuous vs labels
        assert e.estimate(np.ones((N_DEG, 3)), (x[:, 0] > 0).astype(int), discrete_y=True) == 0.0
        assert e.flags_ == ("constant_variable",)


def test_fewer_samples_than_dimensions_is_a_named_error_not_a_singular_covariance():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((40, 60)), rng.standard_normal((40, 2))
    for name in DEG_ESTIMATORS:
        with pytest.raises(ValueError, match=r"more samples than dimensions.*'x' rank 39 of 60") as info:
            estimators.get(name).estimate(x, y)
        assert "singular" not in str(info.value)


def _small_transformer_layer(n=1500, seed=0):
    """Post-norm encoder layer output of the first token (LayerNorm, float32: rank d - 1) and labels."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.0,
                                             batch_first=True)
    emb = torch.nn.Embedding(10, 16)
    tokens = torch.randint(0, 10, (n, 6), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        inputs = emb(tokens)
        t = layer(inputs)[:, 0, :]
    return inputs.reshape(n, -1).numpy(), t.numpy(), (tokens[:, 0] % 3).numpy()


def test_auto_on_a_transformer_layernorm_output():
    x, t, labels = _small_transformer_layer()
    a = estimators.get("auto")
    i_ty = a.estimate(t, labels, discrete_y=True)
    h_y = -sum(p * np.log2(p) for p in np.bincount(labels) / len(labels))
    assert 0.0 <= i_ty <= h_y + 0.02  # I(T;Y) <= H(Y) (+ the estimator's small upward bias)
    assert a.choice_["columns"]["x"]["rank"] == 15 and "rank_deficient" in a.flags_
    i_xt = a.estimate(x, t)  # failed before: "The sample covariance of 'x' is singular"
    assert np.isfinite(i_xt) and i_xt > 0 and a.choice_["columns"]["y"]["rank"] == 15


def _mnist(shared_data, n):
    from ibscope.data import load_mnist_idx

    if not (shared_data / "mnist").is_dir():
        pytest.skip("MNIST not in the shared data directory")
    images, labels = load_mnist_idx(shared_data)
    return images[:n].reshape(n, -1).astype(np.float32) / 255.0, labels[:n]


def _check_mnist(x, labels):
    a = estimators.get("auto")
    v = a.estimate(x, labels, discrete_y=True)  # failed before: "'x' has zero-variance column(s)"
    h_y = -sum(p * np.log2(p) for p in np.bincount(labels) / len(labels) if p > 0)
    assert 0.3 < v <= h_y  # the pixels carry much of the label, never more than H(Y)
    cols = a.choice_["columns"]["x"]
    assert 0 in cols["constant"] and 783 in cols["constant"]  # the border
    assert "dropped_columns" in a.flags_ and cols["rank"] == len(cols["kept"]) < 784
    return v


def test_auto_on_mnist_pixels_with_constant_borders(shared_data):
    _check_mnist(*_mnist(shared_data, 400))


@pytest.mark.slow
def test_auto_on_2000_mnist_images(shared_data):
    _check_mnist(*_mnist(shared_data, 2000))  # ~60 s: Ross KSG in ~600 dims


# ------------------------------------------- a wide layer against labels: compressed before the kNN
# Ground truth: a 2-D three-class mixture (separation 2, I(X;Y) = 0.893 bits) plus 254 independent
# N(0, 0.5^2) columns, rotated at random into 256 dims: the extra columns are independent of
# (x, y) and the rotation is invertible, so I(T;Y) = I(X;Y). N = 3000. Measured (PCA to 4, KSG on
# normal scores): 0.90-0.92 bits in 11-256 dims (the full-width KSG drifts down: 0.80 at 32 dims,
# and costs O(N^2 d)). Tolerance 0.08 bits, as for the low-dimensional mixed pair above.
def _wide_mixture(n=3000, width=256, noise=0.5, seed=4):
    t = tasks.get("mixture_labels", n_classes=3, dim=2, separation=2.0)
    x, y = t.sample(n, seed=seed)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((width, width)))
    return np.hstack([x, noise * rng.standard_normal((n, width - 2))]) @ q, y, t.mutual_information


def test_wide_layer_against_labels_is_compressed_first():
    z, y, truth = _wide_mixture()
    a = estimators.get("auto")
    v = a.estimate(z, y, discrete_y=True)
    c = a.choice_["compressed"]
    assert (c["variable"], c["from"], c["to"]) == ("x", 256, 4) and 0 < c["explained_variance_ratio"] < 1
    assert a.choice_["chosen"] == "ksg_mixed_copula" and "PCA to 4" in a.choice_["rule"]
    assert v == pytest.approx(truth, abs=0.08)
    # labels first: the same choice for y
    assert a.estimate(y, z, discrete_x=True) == pytest.approx(v, rel=1e-9)
    assert a.choice_["compressed"]["variable"] == "y"


def test_compression_threshold_is_the_dimension_after_dropping_columns():
    t = tasks.get("mixture_labels", n_classes=3, dim=2, separation=2.0)
    x, y = t.sample(2000, seed=7)
    rng = np.random.default_rng(7)
    wide = np.hstack([x, rng.standard_normal((2000, 6))]) @ rng.standard_normal((8, 200))  # rank 8
    a = estimators.get("auto")
    a.estimate(wide, y, discrete_y=True)  # 200 columns of rank 8 <= max_knn_dim: KSG in 8 dims
    assert "compressed" not in a.choice_ and a.choice_["columns"]["x"]["rank"] == 8
    small = estimators.get("auto", max_knn_dim=3)  # caps the PCA dimension too
    small.estimate(wide, y, discrete_y=True)
    assert (small.choice_["compressed"]["from"], small.choice_["compressed"]["to"]) == (8, 3)
    with pytest.raises(ValueError, match="compress_dim"):
        estimators.get("auto", compress_dim=0)
