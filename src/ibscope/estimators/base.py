"""Base class and registry of mutual-information estimators.

Every estimator follows one small interface (after scikit-learn and bmi):

* the constructor only stores and validates its parameters;
* ``estimate(x, y, *, discrete_x=False, discrete_y=False) -> float`` returns
  I(X;Y) in ``unit`` ('bits' by default, 'nats' on request);
* ``get_params()`` returns the settings, to be logged next to every result;
* estimators that exploit the structure of a deterministic network (binning,
  KDE with added noise) also offer ``plane(t, y) -> (I(X;T), I(T;Y))``.

Subclasses implement ``_estimate_nats(x, y, discrete_x, discrete_y)`` on
validated 2-D inputs and declare which discrete/continuous combinations they
support in ``supports``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

from .._units import check_unit, from_nats
from .._validation import BOOLEAN, Options, check_xy, validate_params

CONTINUOUS, DISCRETE = "continuous", "discrete"
ALL_KINDS = frozenset(
    {(CONTINUOUS, CONTINUOUS), (CONTINUOUS, DISCRETE), (DISCRETE, CONTINUOUS), (DISCRETE, DISCRETE)}
)


class BaseMIEstimator:
    """Common machinery of the ibscope MI estimators.

    Class attributes a subclass sets:

    name : str
        Registry name.
    bound : {"upper", "lower", None}
        Direction of the estimator's guaranteed bias, if any (None: consistent
        estimator without a bound guarantee).
    supports : frozenset of (kind_x, kind_y)
        Which combinations of 'continuous'/'discrete' inputs are accepted.
    keep_torch : bool
        If True torch inputs reach ``_estimate_nats`` as tensors (so the
        computation can run on their device); otherwise everything is numpy.
    min_samples : int
        Smallest sample size the method accepts.
    """

    name: ClassVar[str] = ""
    bound: ClassVar[str | None] = None
    supports: ClassVar[frozenset] = ALL_KINDS
    keep_torch: ClassVar[bool] = False
    min_samples: ClassVar[int] = 2
    _constraints: ClassVar[dict[str, list]] = {}
    _base_constraints: ClassVar[dict[str, list]] = {"unit": [Options(("bits", "nats"))]}

    # ------------------------------------------------------------------ params
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """The estimator's settings (constructor arguments), for logging with results."""
        return {k: getattr(self, k) for k in self._param_names()}

    def _check_params(self) -> None:
        constraints = {**self._base_constraints, **self._constraints}
        validate_params(type(self).__name__, self.get_params(), constraints)
        check_unit(self.unit)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ---------------------------------------------------------------- estimate
    def _check_support(self, discrete_x: bool, discrete_y: bool) -> None:
        kinds = (DISCRETE if discrete_x else CONTINUOUS, DISCRETE if discrete_y else CONTINUOUS)
        if kinds not in self.supports:
            ok = ", ".join(f"x {a} / y {b}" for a, b in sorted(self.supports))
            raise ValueError(
                f"{type(self).__name__} does not support x {kinds[0]} with y {kinds[1]} "
                f"(supported: {ok}). Choose another estimator or change 'discrete_x'/'discrete_y'."
            )

    def _validate_xy(self, x: Any, y: Any, discrete_x: bool, discrete_y: bool) -> tuple[Any, Any]:
        validate_params(
            type(self).__name__ + ".estimate",
            {"discrete_x": discrete_x, "discrete_y": discrete_y},
            {"discrete_x": [BOOLEAN], "discrete_y": [BOOLEAN]},
        )
        self._check_support(bool(discrete_x), bool(discrete_y))
        return check_xy(
            x, y,
            discrete_x=bool(discrete_x), discrete_y=bool(discrete_y),
            min_samples=self.min_samples, keep_torch=self.keep_torch,
        )

    def estimate(self, x: Any, y: Any, *, discrete_x: bool = False, discrete_y: bool = False) -> float:
        """Estimate I(X;Y) in ``self.unit``.

        Parameters
        ----------
        x, y : array-like or torch.Tensor of shape (n,) or (n, d)
            Paired samples (row i of ``x`` goes with row i of ``y``).
        discrete_x, discrete_y : bool
            Declare a variable discrete (integer-valued symbols). Nothing is
            guessed: a float array declared discrete must hold integers.
        """
        xa, ya = self._validate_xy(x, y, discrete_x, discrete_y)
        nats = float(self._estimate_nats(xa, ya, bool(discrete_x), bool(discrete_y)))
        return self._finish(nats)

    def _finish(self, nats: float) -> float:
        if not math.isfinite(nats):
            raise FloatingPointError(
                f"{type(self).__name__} produced a non-finite estimate ({nats}); "
                f"check the input scale and the estimator's parameters {self.get_params()}."
            )
        return from_nats(nats, self.unit)

    def _estimate_nats(self, x: Any, y: Any, discrete_x: bool, discrete_y: bool) -> float:
        raise NotImplementedError  # every registered subclass implements this
