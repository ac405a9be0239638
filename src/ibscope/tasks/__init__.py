"""Distributions with known mutual information (ground truth for estimators).

``get(name, **params)`` builds a task; ``available()`` lists the names. Every
task has ``sample(n, seed) -> (x, y)`` (float64 arrays of shape (n, dim);
labels / discrete variables are int64 of shape (n,)), ``mutual_information`` (bits; also
``mutual_information_nats``), ``name`` (built from its parameters),
``dim_x``, ``dim_y``, ``discrete_x``, ``discrete_y`` and ``get_params()``.
Each class documents the derivation of its ground truth.

=================  ==========================================================
name               parameters
=================  ==========================================================
gaussian_split     dim, mi (bits), mixing_seed=0
gaussian_dense     dim_x, dim_y, rho
gaussian_sparse    dim_x, dim_y, rho, n_interacting
student_t          dim, dof, rho
asinh, half_cube   base (task name), **base_params
spiral             base, speed=0.5, **base_params
mixture_labels     n_classes, dim, separation, mixing_seed=0
blobs_image        latent_dim=2, mi=1.0 (bits), size=16, mixing_seed=0
symmetric_channel  n_symbols=4, error=0.2 (both variables discrete)
multinormal_dense  dim_x, dim_y, off_diag=0.5 (all correlations equal)
additive_uniform   epsilon (X ~ U(0,1), Y = X + U(-eps, eps))
normal_cdf, wiggly, bimodal  base, **base_params (monotone maps)
swiss_roll         base='additive_uniform', **base_params (1-D x in [0,1] -> 2-D)
normalized_spiral  base='gaussian_sparse', speed=1.0, **base_params
embedded_gaussian  latent_dim=2, mi=1.0 (bits), ambient_dim=50, noise_dim=24, mixing_seed=0
mixture_x          rho=0.9 (Gaussian mixture; MI by Monte Carlo)
gaussian_mixture   dim_x, dim_y, n_components=3, separation=3.0, rho=0.8, mixing_seed=0
=================  ==========================================================

``beyond_normal_suite()`` returns the 40 tasks of the "Beyond Normal"
benchmark (Czyz et al. 2023, benchmark-mi v1) with bmi's task ids.

Example::

    from ibscope import tasks
    task = tasks.get("gaussian_split", dim=3, mi=2.0)
    x, y = task.sample(5000, seed=0)
    task.mutual_information        # 2.0 bits
"""

from __future__ import annotations

from typing import Any

from ._base import BaseTask
from ._beyond_normal import (
    AdditiveUniform,
    Bimodal,
    MultinormalDense,
    NormalCDF,
    NormalizedSpiral,
    SuiteTask,
    SwissRoll,
    Wiggly,
    beyond_normal_suite,
    equicorrelation_logdet,
)
from ._embedded import EmbeddedGaussian
from ._gaussian import (
    GaussianDense,
    GaussianSparse,
    GaussianSplit,
    GaussianTask,
    StudentT,
    gaussian_mi_nats,
    random_orthogonal,
    student_t_mi_correction,
)
from ._images import BlobsImage, render_blobs
from ._labels import MixtureLabels, SymmetricChannel, mixture_label_mi_nats
from ._mixtures import GaussianMixture, MixtureTask, XMixture, mixture_pmi
from ._transforms import Asinh, HalfCube, Spiral, TransformedTask

_REGISTRY: dict[str, type[BaseTask]] = {
    "gaussian_split": GaussianSplit,
    "gaussian_dense": GaussianDense,
    "gaussian_sparse": GaussianSparse,
    "student_t": StudentT,
    "asinh": Asinh,
    "half_cube": HalfCube,
    "spiral": Spiral,
    "mixture_labels": MixtureLabels,
    "blobs_image": BlobsImage,
    "symmetric_channel": SymmetricChannel,
    "multinormal_dense": MultinormalDense,
    "additive_uniform": AdditiveUniform,
    "normal_cdf": NormalCDF,
    "wiggly": Wiggly,
    "bimodal": Bimodal,
    "swiss_roll": SwissRoll,
    "normalized_spiral": NormalizedSpiral,
    "embedded_gaussian": EmbeddedGaussian,
    "mixture_x": XMixture,
    "gaussian_mixture": GaussianMixture,
}


def available() -> list[str]:
    """Names accepted by :func:`get`, sorted."""
    return sorted(_REGISTRY)


def get(name: str, **params: Any) -> BaseTask:
    """Build the task ``name`` with ``params`` (see each class for its parameters)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"Unknown task {name!r}. Available tasks: {', '.join(available())}.")
    cls = _REGISTRY[name]
    try:
        return cls(**params)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            import inspect

            allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
            raise TypeError(f"{e}. Parameters of task {name!r}: {', '.join(allowed)}.") from None
        raise


__all__ = [
    "BaseTask", "GaussianTask", "GaussianSplit", "GaussianDense", "GaussianSparse", "StudentT",
    "TransformedTask", "Asinh", "HalfCube", "Spiral", "MixtureLabels", "SymmetricChannel", "BlobsImage",
    "available", "get", "gaussian_mi_nats", "random_orthogonal", "student_t_mi_correction",
    "mixture_label_mi_nats", "render_blobs",
    "MultinormalDense", "AdditiveUniform", "NormalCDF", "Wiggly", "Bimodal", "SwissRoll",
    "NormalizedSpiral", "SuiteTask", "EmbeddedGaussian",
    "MixtureTask", "XMixture", "GaussianMixture", "mixture_pmi", "beyond_normal_suite", "equicorrelation_logdet",
]
