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
    ("multinormal_dense", dict(dim_x=2, dim_y=3, off_diag=0.4)),
    ("additive_uniform", dict(epsilon=0.3)),
    ("normal_cdf", dict(base="gaussian_split", dim=2, mi=1.0)),
    ("wiggly", dict(base="gaussian_split", dim=1, mi=1.0)),
    ("bimodal", dict(base="gaussian_dense", dim_x=1, dim_y=1, rho=0.75)),
    ("swiss_roll", dict(base="additive_uniform", epsilon=0.5)),
    ("normalized_spiral", dict(base="gaussian_sparse", dim_x=3, dim_y=4, rho=0.8, n_interacting=2)),
    ("embedded_gaussian", dict(latent_dim=2, mi=1.0, ambient_dim=8, noise_dim=2)),
    ("mixture_x", dict(rho=0.8)),
    ("gaussian_mixture", dict(dim_x=2, dim_y=1, n_components=2)),
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


@pytest.mark.parametrize("dim,dof,rho", [(1, 3.0, 0.5), (2, 1.0, 0.0), (2, 5.0, 0.8), (5, 2, 0.0)])
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


def test_paper_blobs_follow_butakov_et_al_renderer_and_are_injective():
    from scipy.special import ndtr

    from ibscope.experiments._compressed_images import Config, _render

    z = np.random.default_rng(3).standard_normal((40, 2))
    img = render_blobs(z, 16, style="paper").reshape(40, 16, 16)
    c = ndtr(z)  # centres in [0, 1]^2, anywhere in the image
    grid = np.linspace(0.0, 1.0, 16)
    i, j = 4, 11  # one pixel: row i (vertical coordinate grid[i]), column j (horizontal grid[j])
    assert np.allclose(img[:, i, j], np.exp(-10.0 * ((grid[j] - c[:, 0]) ** 2 + (grid[i] - c[:, 1]) ** 2)))
    # injective: the log of a row is a parabola in x whose vertex is the horizontal centre
    row = np.log(img[:, 0, :3])
    a = (row[:, 2] - 2 * row[:, 1] + row[:, 0]) / 2
    b = (row[:, 1] - row[:, 0]) - a * (2 * 0 + 1)
    assert np.allclose((-b / (2 * a)) / 15.0, c[:, 0], atol=1e-8)
    # wider than ibscope's blobs: std (size - 1) / sqrt(20) pixels, not 2
    assert (img > 0.5).sum(axis=(1, 2)).mean() > (render_blobs(z, 16) > 0.5).sum(axis=1).mean() * 2
    with pytest.raises(ValueError, match="style"):
        render_blobs(z, 16, style="keras")
    with pytest.raises(ValueError, match="2-D latents"):
        render_blobs(np.zeros((3, 3)), 16, style="paper")
    # the experiment draws its blobs with the Config's renderer
    assert np.array_equal(_render(Config(task="blobs", blob_renderer="paper"), z),
                          render_blobs(z, 16, style="paper"))
    assert np.array_equal(_render(Config(task="blobs"), z), render_blobs(z, 16))
    with pytest.raises(ValueError, match="blob_renderer"):
        Config(task="blobs", latent_dim=3, blob_renderer="paper")
    with pytest.raises(ValueError, match="blob_renderer"):
        Config(blob_renderer="wide")


def test_bad_task_names_and_params():
    with pytest.raises(ValueError, match="Unknown task"):
        tasks.get("gaussian")
    with pytest.raises(TypeError, match="Parameters of task 'student_t'"):
        tasks.get("student_t", dimension=2)
    with pytest.raises(ValueError, match="'mi' parameter"):
        tasks.get("gaussian_split", dim=2, mi=-1.0)
    with pytest.raises(ValueError, match="'n' parameter"):
        tasks.get("gaussian_split").sample(0)


# --------------------------------------------------------------------------- #
# The Beyond Normal suite (Czyz et al. 2023): truths checked independently
# --------------------------------------------------------------------------- #
def test_beyond_normal_suite_lists_the_40_v1_tasks():
    suite = tasks.beyond_normal_suite()
    ids = [e.task_id for e in suite]
    assert len(ids) == 40 and len(set(ids)) == 40
    # the families of bmi's task list, with their counts
    count = lambda prefix: sum(i.startswith(prefix) for i in ids)  # noqa: E731
    assert count("1v1-") == 4 and count("multinormal-dense-") == 5
    assert count("multinormal-sparse-") == 4 and count("student-identity-") == 7
    assert count("normal_cdf-") == 4 and count("half_cube-") == 4 and count("spiral-") == 6
    assert count("asinh-") == 4 and count("wiggly-") == 1 and count("swissroll_x-") == 1
    groups = {g: sum(e.dim_group == g for e in suite) for g in ("1-2", "3", "5", "25-50")}
    assert sum(groups.values()) == 40 and min(groups.values()) >= 7
    for e in suite:
        x, y = e.task.sample(64, seed=0)
        assert x.shape == (64, e.task.dim_x) and y.shape == (64, e.task.dim_y)
        assert np.isfinite(x).all() and np.isfinite(y).all()
        assert np.array_equal(x, e.task.sample(64, seed=0)[0])
        assert 0 < e.mutual_information < 3


def _latent_two_pair_covariance(d, lam=2.0, eps=1.0, eta=2.0):
    """Covariance of bmi's 2-pair latent model built from its mixing matrix (independent of the task)."""
    rows = []
    for var in range(2):  # x then y
        for i in range(d):
            # latent order: z_0, z_1, e_0..e_{d-1}, f_0..f_{d-1}, v_2..v_{d-1}, w_2..w_{d-1}
            r = np.zeros(2 + 2 * d + 2 * (d - 2))
            if i < 2:
                r[i] = lam
            r[2 + var * d + i] = eps
            if i >= 2:
                r[2 + 2 * d + var * (d - 2) + i - 2] = eta
            rows.append(r)
    a = np.array(rows)
    return a @ a.T


@pytest.mark.parametrize("d", [2, 3, 5, 25])
def test_two_pair_truth_from_the_latent_model(d):
    e = {x.task_id: x for x in tasks.beyond_normal_suite()}[f"multinormal-sparse-{d}-{d}-2-2.0"]
    assert e.task.mutual_information_nats == pytest.approx(
        gaussian_mi_nats(_latent_two_pair_covariance(d), d), rel=1e-12)
    assert e.task.mutual_information_nats == pytest.approx(-math.log(1 - 0.8 ** 2), rel=1e-12)


@pytest.mark.parametrize("dx,dy,c", [(2, 2, 0.5), (5, 5, 0.5), (50, 50, 0.5), (2, 3, -0.2)])
def test_multinormal_dense_closed_form_vs_eigenvalues(dx, dy, c):
    t = tasks.get("multinormal_dense", dim_x=dx, dim_y=dy, off_diag=c)
    s = (1 - c) * np.eye(dx + dy) + c
    ld = lambda m: np.log(np.linalg.eigvalsh(m)).sum()  # noqa: E731
    expect = 0.5 * (ld(s[:dx, :dx]) + ld(s[dx:, dx:]) - ld(s))
    assert t.mutual_information_nats == pytest.approx(expect, rel=1e-10)
    assert t.closed_form_nats() == pytest.approx(expect, rel=1e-10)
    with pytest.raises(ValueError, match="off_diag"):
        tasks.get("multinormal_dense", dim_x=2, dim_y=2, off_diag=-0.4)


@pytest.mark.parametrize("eps", [0.1, 0.5, 0.75, 2.0])
def test_additive_uniform_truth_by_quadrature(eps):
    from scipy.integrate import quad

    def p(y):  # density of X + N by convolution of the two uniform densities
        return max(min(y + eps, 1.0) - max(y - eps, 0.0), 0.0) / (2 * eps)

    pts = sorted({-eps, eps, 1 - eps, 1 + eps})
    h_y = sum(quad(lambda y: -p(y) * math.log(p(y)) if p(y) > 0 else 0.0, a, b)[0]
              for a, b in zip(pts[:-1], pts[1:]))
    t = tasks.get("additive_uniform", epsilon=eps)
    assert t.mutual_information_nats == pytest.approx(h_y - math.log(2 * eps), abs=1e-8)
    x, y = t.sample(2000, seed=0)
    assert (x >= 0).all() and (x <= 1).all() and (np.abs(y - x) <= eps).all()


def test_monotone_transforms_are_strictly_increasing_and_keep_mi():
    grid = np.linspace(-6, 6, 4001)[:, None]
    base = tasks.get("gaussian_dense", dim_x=1, dim_y=1, rho=0.75)
    for name in ("normal_cdf", "wiggly", "bimodal"):
        t = tasks.get(name, base="gaussian_dense", dim_x=1, dim_y=1, rho=0.75)
        assert t.mutual_information == base.mutual_information
        fx = getattr(t, "transform_x", t.transform)(grid)
        fy = getattr(t, "transform_y", t.transform)(grid)
        assert (np.diff(fx[:, 0]) > 0).all() and (np.diff(fy[:, 0]) > 0).all()
        x0, y0 = base.sample(300, seed=2)
        x1, y1 = t.sample(300, seed=2)
        assert np.allclose(x1, getattr(t, "transform_x", t.transform)(x0))
        assert np.allclose(y1, getattr(t, "transform_y", t.transform)(y0))


def test_bimodal_marginals_are_the_stated_mixtures():
    from scipy.special import ndtr
    from scipy.stats import kstest

    t = tasks.get("bimodal", base="gaussian_dense", dim_x=1, dim_y=1, rho=0.75)
    x, y = t.sample(4000, seed=3)
    fx = lambda v: 0.3 * ndtr(v) + 0.7 * ndtr(v - 5)  # noqa: E731
    fy = lambda v: 0.5 * ndtr(v + 1) + 0.5 * ndtr(v - 3)  # noqa: E731
    assert kstest(x[:, 0], fx).pvalue > 1e-3 and kstest(y[:, 0], fy).pvalue > 1e-3
    z = np.array([[-5.0], [-1.0], [0.0], [2.0], [5.0]])
    assert np.allclose(fx(t.transform_x(z)), ndtr(z), atol=1e-12)  # exact quantile inversion


def test_swiss_roll_and_normalized_spiral_are_invertible():
    sr = tasks.get("swiss_roll", base="additive_uniform", epsilon=0.5)
    assert sr.dim_x == 2 and sr.mutual_information == sr.base_task.mutual_information
    x0, _ = sr.base_task.sample(500, seed=1)
    z = sr.transform_x(x0)
    t = 21 * np.linalg.norm(z, axis=1)  # radius = t / 21 with t = 1.5 pi (1 + 2 x)
    assert np.allclose(t / (1.5 * math.pi) / 2 - 0.5, x0[:, 0])
    with pytest.raises(ValueError, match="injective"):
        tasks.get("swiss_roll", base="gaussian_dense", dim_x=1, dim_y=1, rho=0.5).sample(100, seed=0)
    sp = tasks.get("normalized_spiral", base="gaussian_sparse", dim_x=3, dim_y=3, rho=0.8,
                   n_interacting=2)
    x0, y0 = sp.base_task.sample(200, seed=4)
    x1, y1 = sp.sample(200, seed=4)
    assert np.allclose(np.linalg.norm(x1, axis=1), np.linalg.norm(x0, axis=1))
    assert np.allclose(x1[:, 2], x0[:, 2]) and np.allclose(y1[:, 0], y0[:, 0])  # planes (0,1), (1,2)
    assert np.allclose(sp._rotate(x1, 0, 1, -sp.speed / 3), x0)  # the inverse rotation
    with pytest.raises(ValueError, match="at least 2"):
        tasks.get("normalized_spiral", base="gaussian_sparse", dim_x=3, dim_y=2, n_interacting=1)


def test_student_t_suite_truth_by_monte_carlo():
    # the suite's hardest closed form: 5 x 5, dof 2, identity dispersion (checked above too)
    e = {x.task_id: x for x in tasks.beyond_normal_suite()}["student-identity-5-5-2"]
    x, y = e.task.sample(100_000, seed=5)
    lj = multivariate_t(np.zeros(10), np.eye(10), df=2).logpdf(np.hstack([x, y]))
    lx = multivariate_t(np.zeros(5), np.eye(5), df=2).logpdf(x)
    ly = multivariate_t(np.zeros(5), np.eye(5), df=2).logpdf(y)
    v = lj - lx - ly
    assert e.task.mutual_information_nats == pytest.approx(v.mean(), abs=4 * v.std() / math.sqrt(v.size))
