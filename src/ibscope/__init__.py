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
    "experiments", "sweep", "store", "plots", "report",
)

__version__ = "0.1.0"


def mutual_information(
    x: Any,
    y: Any,
    method: str = "ksg",
    *,
    discrete_x: bool = False,
    discrete_y: bool = False,
    unit: str = "bits",
    **params: Any,
) -> float:
    """Estimate I(X;Y) with the estimator ``method`` (see ``ibscope.estimators.available()``).

    Parameters
    ----------
    x, y : array-like or torch.Tensor, shape (n,) or (n, d)
        Paired samples. Torch tensors on CUDA are computed on CUDA where the
        estimator supports it.
    method : str
        Registry name of the estimator.
    discrete_x, discrete_y : bool
        Declare a variable discrete (integer symbols); nothing is guessed.
    unit : {'bits', 'nats'}
    **params
        Passed to the estimator's constructor.

    Returns
    -------
    float
        The estimate in ``unit``.
    """
    est = estimators.get(method, unit=unit, **params)
    return est.estimate(x, y, discrete_x=discrete_x, discrete_y=discrete_y)


def __getattr__(name: str) -> Any:  # lazy submodules: ibscope.weights, ibscope.ntk, ...
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", "estimators", "mutual_information", *_SUBMODULES]
