"""MI and entropy estimators behind one interface.

``get(name, **params)`` builds an estimator, ``available()`` lists the names.
The registry is the one source of what a name means: ``get(name)``,
``ibscope.mutual_information(x, y, method=name)``, ``ibscope estimate --method
name`` and the label of an ``InformationPlane`` estimator built from a name
all use the class and defaults registered here (the plane's default is
``pca_ksg``: PCA to 4 dimensions + KSG, k = 3; ``compressed`` by name chooses
its dimensions by TwoNN).
Every estimator has ``estimate(x, y, *, discrete_x=False, discrete_y=False)``
returning I(X;Y) in bits (``unit='nats'`` on request) and ``get_params()``.
Implementations live in private modules, one per family, and are loaded
lazily, so importing ibscope stays cheap.

Diagnostics: every call stores named flags in ``estimator.flags_`` (and
``MIEstimate.flags``); ``FLAG_DESCRIPTIONS`` maps each flag to a one-line
text for reports. In tidy tables the column is ``flags``: a str of flag
names joined by ';' (``format_flags``), '' when healthy. Each (estimator,
flag) pair warns once per run (``EstimateDiagnosticWarning``);
``reset_warnings()`` starts a new run, ``warned()`` lists what was warned.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from typing import Any

from ._diagnostics import (
    FLAG_DESCRIPTIONS,
    EstimateDiagnosticWarning,
    format_flags,
    parse_flags,
    reset_warnings,
    warned,
)
from .base import BaseMIEstimator, MIEstimate

# name -> "module:Class" (module relative to this package)
_REGISTRY: dict[str, str] = {
    "discrete": "_discrete:Discrete",
    "binning": "_binning:Binning",
    "adaptive_binning": "_binning:AdaptiveBinning",
    "kde_upper": "_kde:KDEUpper",
    "kde_lower": "_kde:KDELower",
    "adaptive_kde": "_kde:AdaptiveKDE",
    "ksg": "_knn:KSG",
    "kl": "_knn:KL",
    "wkl": "_knn:WKL",
    "gaussian": "_gaussian:Gaussian",
    "gaussian_copula": "_copula:GaussianCopula",
    "auto": "_auto:Auto",
    "renyi": "_renyi:Renyi",
    "mine": "_neural:MINE",
    "nwj": "_neural:NWJ",
    "infonce": "_neural:InfoNCE",
    "compressed": "_compressed:Compressed",
    "pca_ksg": "_compressed:PCAKSG",
    "flow": "_flow:Flow",
    "flow_tridiag": "_flow:FlowTridiag",
    "latent_ksg": "_latent:LatentKSG",
}


@functools.cache  # the package's modules do not change while it runs (find_spec is slow)
def _module_exists(module: str) -> bool:
    return importlib.util.find_spec(f"{__name__}.{module}") is not None


def available() -> list[str]:
    """Names accepted by :func:`get`, sorted."""
    return sorted(n for n, spec in _REGISTRY.items() if _module_exists(spec.split(":")[0]))


def get_class(name: str) -> type[BaseMIEstimator]:
    """The estimator class registered under ``name``."""
    if not isinstance(name, str) or name not in available():
        raise ValueError(
            f"Unknown estimator {name!r}. Available estimators: {', '.join(available())}."
        )
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def get(name: str, **params: Any) -> BaseMIEstimator:
    """Build the estimator ``name`` with ``params`` (see each class for its parameters)."""
    cls = get_class(name)
    try:
        return cls(**params)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            allowed = ", ".join(cls._param_names())
            raise TypeError(f"{e}. Parameters of estimator {name!r}: {allowed}.") from None
        raise


def __getattr__(attr: str) -> Any:  # lazy access to the classes, e.g. estimators.KSG
    for spec in _REGISTRY.values():
        module, cls = spec.split(":")
        if cls == attr and _module_exists(module):
            return getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = [
    "BaseMIEstimator", "MIEstimate", "available", "get", "get_class",
    "FLAG_DESCRIPTIONS", "EstimateDiagnosticWarning", "format_flags", "parse_flags",
    "reset_warnings", "warned",
]
