"""Gaussian-mixture tasks (Czyz et al. 2023 mixtures): the Monte Carlo truth against independent
computations (closed form for one component, quadrature for the "X" distribution, the
component-label limit for far-apart components) and the sampler against the density."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from ibscope import tasks
from ibscope.tasks import mixture_pmi


def test_one_component_is_the_gaussian_closed_form():
    t = tasks.get("gaussian_mixture", n_components=1, separation=0.0, rho=0.8)
    truth = -0.5 * math.log2(1 - 0.8 ** 2)
    assert abs(t.mutual_information - truth) <= 4 * t.mutual_information_se
    assert 0 < t.mutual_information_se < 0.01


def test_x_mixture_matches_quadrature():
    rho = 0.9
    t = tasks.get("mixture_x", rho=rho)
    g = np.linspace(-9, 9, 1801)
    h = g[1] - g[0]
    xx, yy = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    p = 0.5 * sum(multivariate_normal(cov=[[1, s * rho], [s * rho, 1]]).pdf(pts) for s in (1, -1))
    px = multivariate_normal(cov=1.0).pdf(pts[:, 0]) * multivariate_normal(cov=1.0).pdf(pts[:, 1])
    quad = float(np.sum(p * np.log(p / px)) * h * h) / math.log(2)
    assert abs(t.mutual_information - quad) <= 4 * t.mutual_information_se + 1e-3
    # uncorrelated, yet dependent
    x, y = t.sample(20000, seed=0)
    assert abs(np.corrcoef(x[:, 0], y[:, 0])[0, 1]) < 0.03 and quad > 0.4


def test_far_apart_components_add_the_label_entropy():
    # each mode is identified from x alone and from y alone: I = H(component) + mean within-mode MI
    t = tasks.get("gaussian_mixture", n_components=3, separation=60.0, rho=0.8, mixing_seed=1)
    truth = math.log2(3) - 0.5 * math.log2(1 - 0.8 ** 2)
    assert abs(t.mutual_information - truth) <= 4 * t.mutual_information_se + 1e-3


def test_sampler_matches_the_density():
    t = tasks.get("gaussian_mixture", dim_x=2, dim_y=2, n_components=3)
    x, y = t.sample(40000, seed=5)
    pmi = mixture_pmi(x, y, t.weights_, t.means_, t.covs_) / math.log(2)
    se = pmi.std() / math.sqrt(pmi.size)
    assert abs(pmi.mean() - t.mutual_information) <= 4 * math.hypot(se, t.mutual_information_se)
    # the joint mean is the mixture of the component means
    assert np.allclose(np.hstack([x, y]).mean(0), np.mean(t.means_, axis=0), atol=0.1)


def test_bad_parameters():
    with pytest.raises(ValueError, match="rho"):
        tasks.get("mixture_x", rho=1.0)
    with pytest.raises(ValueError, match="n_components"):
        tasks.get("gaussian_mixture", n_components=0)
