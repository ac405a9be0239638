"""Ground-truth tasks: closed forms checked independently (log-det, Monte Carlo, quadrature)."""

import math

import numpy as np
import pytest
from scipy.stats import multivariate_t

from ibscope import estimators, tasks
from ibscope.tasks import gaussian_mi_nats, render_blobs, student_t_mi_correction

LN2 = math.log(2)

ALL = [
    ("gaussian_split", dict(dim=3, mi=1.5)),
    ("gaussian_dense", dict(dim_x=2, dim_y=3, rho=0.3)),
    ("gaussian_sparse", dict(dim_x=3, dim_y=2, rho=0.8, n_interacting=2)),
    ("student_t", dict(dim=2, dof=3.0, rho=0.5)),
    ("asinh", dict(base="student_t", dim=1, dof=2.0, rho=0.6)),
    ("half_cube", dict(base="gaussian_split", dim=2, mi=1.0)),
    ("spiral", dict(base="gaussian_split", dim=2, mi=1.0)),
    ("mixture_labels", dict(n_classes=3, dim=2, separation=2.0)),
    ("blobs_image", dict(latent_dim=2, mi=1.0, size=16)),
    ("symmetric_channel", dict(n_symbols=3, error=0.1)),
]


def test_available_lists_every_task():
    assert set(tasks.available()) == {name for name, _ in ALL}


@pytest.mark.parametrize("name,params", ALL)
def test_task_contract(name, params):
    t = tasks.get(name, **params)
    x, y = t.sample(50, seed=3)
    for a, disc, dim in ((x, t.discrete_x, t.dim_x), (y, t.discrete_y, t.dim_y)):
        if disc:
            assert a.shape == (50,) and a.dtype == np.int64
        else:
            assert a.shape == (50, dim) and a.dtype == np.float64
            assert np.isfinite(a).all()
    x2, y2 = t.sample(50, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)  # seeded
    assert not np.array_equal(x, t.sample(50, seed=4)[0])
    assert t.mutual_information >= 0
    assert t.mutual_information_nats == pytest.approx(t.mutual_information * LN2)
    assert t.name.startswith(name + "(")
    assert tasks.get(name, **t.get_params()).name == t.name  # params round-trip


def test_gaussian_split_closed_form_and_logdet_agree():
    for dim, mi in [(1, 0.5), (3, 2.0), (5, 4.0)]:
        t = tasks.get("gaussian_split", dim=dim, mi=mi, mixing_seed=7)
        assert gaussian_mi_nats(t.covariance, dim) == pytest.approx(mi * LN2, rel=1e-10)
        assert -0.5 * dim * math.log(1 - t.rho ** 2) == pytest.approx(mi * LN2, rel=1e-12)
        if dim > 1:  # the mixing is a real rotation: the cross block is not rho * I
            assert not np.allclose(t.covariance[:dim, dim:], t.rho * np.eye(dim), atol=1e-3)
    assert tasks.get("gaussian_split", dim=2, mi=0.0).mutual_information == 0.0


@pytest.mark.parametrize("name,params", [
    ("gaussian_split", dict(dim=3, mi=1.5)),
    ("gaussian_dense", dict(dim_x=2, dim_y=3, rho=0.3)),
    ("gaussian_sparse", dict(dim_x=4, dim_y=2, rho=-0.7, n_interacting=2)),
])
def test_gaussian_tasks_match_gaussian_estimator_at_large_n(name, params):
    t = tasks.get(name, **params)
    x, y = t.sample(200_000, seed=0)
    est = estimators.get("gaussian").estimate(x, y)
    assert est == pytest.approx(t.mutual_information, abs=0.01)
    if hasattr(t, "closed_form_nats"):
        assert t.closed_form_nats() == pytest.approx(t.mutual_information_nats, rel=1e-10)


def test_gaussian_dense_rejects_non_positive_definite():
    with pytest.raises(ValueError, match="positive definite"):
        tasks.get("gaussian_dense", dim_x=2, dim_y=2, rho=0.5)
    with pytest.raises(ValueError, match="n_interacting"):
        tasks.get("gaussian_sparse", dim_x=2, dim_y=3, rho=0.5, n_interacting=3)


@pytest.mark.parametrize("dim,dof,rho", [(1, 3.0, 0.5), (2, 1.0, 0.0), (2, 5.0, 0.8)])
def test_student_t_formula_by_monte_carlo(dim, dof, rho):
    t = tasks.get("student_t", dim=dim, dof=dof, rho=rho)
    x, y = t.sample(100_000, seed=11)
    s = t.shape_matrix
    lj = multivariate_t(np.zeros(2 * dim), s, df=dof).logpdf(np.hstack([x, y]))
    lx = multivariate_t(np.zeros(dim), s[:dim, :dim], df=dof).logpdf(x)
    ly = multivariate_t(np.zeros(dim), s[dim:, dim:], df=dof).logpdf(y)
    v = lj - lx - ly
    se = v.std() / math.sqrt(v.size)
    assert t.mutual_information_nats == pytest.approx(v.mean(), abs=4 * se + 1e-3)


def test_student_t_correction_limits():
    assert student_t_mi_correction(1e7, 2, 3) == pytest.approx(0.0, abs=1e-5)  # Gaussian limit
    assert student_t_mi_correction(1.0, 1, 1) > student_t_mi_correction(10.0, 1, 1) > 0


def test_transforms_keep_mi_and_are_invertible():
    base = tasks.get("gaussian_split", dim=2, mi=1.3)
    for name in ("asinh", "half_cube", "spiral"):
        t = tasks.get(name, base="gaussian_split", dim=2, mi=1.3)
        assert t.mutual_information == base.mutual_information
        x0, _ = base.sample(200, seed=5)
        x1, _ = t.sample(200, seed=5)
        assert not np.allclose(x0, x1)
        assert np.allclose(t.transform(x0), x1)
    sp = tasks.get("spiral", base="gaussian_split", dim=3, mi=1.0, speed=0.7)
    x0, _ = sp.base_task.sample(100, seed=1)
    z = sp.transform(x0)
    assert np.allclose(np.linalg.norm(z, axis=1), np.linalg.norm(x0, axis=1))  # norm kept -> invertible
    with pytest.raises(ValueError, match="at least 2"):
        tasks.get("spiral", base="gaussian_split", dim=1, mi=1.0)
    # transforms of a labelled task leave the labels alone
    lab = tasks.get("asinh", base="mixture_labels", n_classes=2, dim=2, separation=1.0)
    assert lab.discrete_y and lab.sample(10, seed=0)[1].dtype == np.int64


def test_mixture_labels_quadrature_vs_monte_carlo():
    t = tasks.get("mixture_labels", n_classes=4, dim=3, separation=1.5)
    x, y = t.sample(200_000, seed=2)
    # exact posterior: log p(y|x) + log K, averaged
    d2 = ((x[:, None, :] - t.means[None, :, :]) ** 2).sum(-1)
    logpost = -0.5 * d2[np.arange(len(y)), y] - np.log(np.exp(-0.5 * d2).sum(1))
    v = logpost + math.log(4)
    se = v.std() / math.sqrt(v.size)
    assert t.mutual_information_nats == pytest.approx(v.mean(), abs=4 * se)
    assert tasks.get("mixture_labels", n_classes=3, dim=1, separation=0.0).mutual_information == pytest.approx(0, abs=1e-9)
    assert tasks.get("mixture_labels", n_classes=3, dim=1, separation=40.0).mutual_information == pytest.approx(math.log2(3), abs=1e-6)


def test_symmetric_channel_closed_form():
    t = tasks.get("symmetric_channel", n_symbols=4, error=0.3)
    x, y = t.sample(400_000, seed=0)
    joint = np.zeros((4, 4))
    np.add.at(joint, (x, y), 1.0)
    p = joint / joint.sum()
    empirical = float((p * np.log(p / p.sum(1, keepdims=True) / p.sum(0, keepdims=True))).sum())
    assert t.mutual_information_nats == pytest.approx(empirical, abs=2e-3)
    assert tasks.get("symmetric_channel", n_symbols=3, error=0.0).mutual_information == pytest.approx(math.log2(3))
    assert tasks.get("symmetric_channel", n_symbols=3, error=2 / 3).mutual_information == pytest.approx(0, abs=1e-12)


def test_blobs_are_injective_renderings_of_the_latents():
    t = tasks.get("blobs_image", latent_dim=2, mi=2.0, size=16)
    assert t.mutual_information == pytest.approx(2.0)
    u, v = t.sample_latents(30, seed=9)
    x, y = t.sample(30, seed=9)
    assert np.array_equal(x, render_blobs(u, 16)) and np.array_equal(y, render_blobs(v, 16))
    # recover the centre from three pixels of each row/column (log pixels are quadratic)
    img = x.reshape(30, 16, 16)
    col = np.log(img[:, 7, 5:8])  # log values at j = 5, 6, 7 of row 7
    # for a parabola a j^2 + b j + c: centre = -b / (2a)
    a = (col[:, 2] - 2 * col[:, 1] + col[:, 0]) / 2
    b = (col[:, 1] - col[:, 0]) - a * (2 * 5 + 1)
    from scipy.special import ndtr
    assert np.allclose(-b / (2 * a), 2 + 11 * ndtr(u[:, 0]), atol=1e-6)
    with pytest.raises(ValueError, match="latent_dim"):
        tasks.get("blobs_image", latent_dim=5)


def test_bad_task_names_and_params():
    with pytest.raises(ValueError, match="Unknown task"):
        tasks.get("gaussian")
    with pytest.raises(TypeError, match="Parameters of task 'student_t'"):
        tasks.get("student_t", dimension=2)
    with pytest.raises(ValueError, match="'mi' parameter"):
        tasks.get("gaussian_split", dim=2, mi=-1.0)
    with pytest.raises(ValueError, match="'n' parameter"):
        tasks.get("gaussian_split").sample(0)
