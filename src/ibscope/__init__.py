"""ibscope: information-theoretic analysis of deep neural networks.

Quick start::

    import ibscope
    ibscope.mutual_information(x, y, method="binning")      # bits
    ibscope.estimators.available()                            # every estimator name

See README.md and docs/ for the information plane, weights, objectives and
infinite-width analytics.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import estimators

_SUBMODULES = (
    "data", "models", "tasks", "tracking", "weights", "objectives", "ntk",
    "experiments", "sweep", "store", "plots", "report", "training", "integrations",
)
# lazy public names: attribute -> module that defines it
_LAZY = {
    "InformationPlane": "tracking",
    "information_plane": "tracking",
    "WeightInformation": "weights",
}

__version__ = "0.1.0"


def mutual_information(
    x: Any,
    y: Any,
    method: str = "auto",
    *,
    discrete_x: bool = False,
    discrete_y: bool = False,
    unit: str = "bits",
    ci: float | None = None,
    n_resamples: int = 50,
    subsample: float = 0.5,
    ci_seed: Any = 0,
    **params: Any,
) -> Any:
    """Estimate I(X;Y) with the estimator ``method`` (see ``ibscope.estimators.available()``).

    Parameters
    ----------
    x, y : array-like or torch.Tensor, shape (n,) or (n, d)
        Paired samples. Torch tensors on CUDA are computed on CUDA where the
        estimator supports it.
    method : str, default 'auto'
        Registry name of the estimator. 'auto' chooses per pair (Gaussian
        copula, KSG on normal scores, plug-in for discrete pairs; see
        ``ibscope.estimators._auto``); it scores MAE 0.088 bits on the Beyond
        Normal suite at N = 5,000 (benchmarks/RESULTS.md).
    discrete_x, discrete_y : bool
        Declare a variable discrete (integer symbols); nothing is guessed.
    unit : {'bits', 'nats'}
    ci : float in (0, 1) or None, default None
        If given (e.g. 0.95), return an ``MIEstimate`` (value, low, high, level,
        unit, method, n_resamples) with a confidence interval from subsampling
        without replacement (see ``BaseMIEstimator.estimate_ci`` and
        docs/estimators.md).
    n_resamples, subsample, ci_seed
        Number of subsamples, their fraction of the rows, and the seed that
        draws them (used only with ``ci``).
    **params
        Passed to the estimator's constructor.

    Returns
    -------
    float
        The estimate in ``unit``; an ``MIEstimate`` when ``ci`` is given.
    """
    est = estimators.get(method, unit=unit, **params)
    if ci is not None:
        from ._validation import check_random_state

        check_random_state(ci_seed, "ci_seed")  # fail with the caller's name for it
        return est.estimate_ci(x, y, discrete_x=discrete_x, discrete_y=discrete_y, level=ci,
                               n_resamples=n_resamples, subsample=subsample, seed=ci_seed)
    return est.estimate(x, y, discrete_x=discrete_x, discrete_y=discrete_y)


def __getattr__(name: str) -> Any:  # lazy submodules: ibscope.weights, ibscope.ntk, ...
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", "estimators", "mutual_information", *_LAZY, *_SUBMODULES]
