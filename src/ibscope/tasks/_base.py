"""Base class of the ground-truth tasks (distributions with known MI)."""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np

from .._units import LN2
from .._validation import check_random_state, validate_params

__all__ = ["BaseTask", "check_n"]


def check_n(n: Any) -> int:
    """Validate a sample size."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"The 'n' parameter of sample must be an int in [1, inf). Got {n!r} instead.")
    return int(n)


class BaseTask:
    """A distribution of pairs (X, Y) whose mutual information is known.

    Subclasses set ``task_name``, store their parameters as attributes named
    like the constructor arguments (listed in ``_param_order``), set
    ``dim_x``/``dim_y`` and implement ``_mi_nats()`` and ``_sample(n, rng)``.

    Attributes
    ----------
    name : str
        Built from the parameters, e.g. ``"gaussian_split(dim=2, mi=1.0, mixing_seed=0)"``.
    dim_x, dim_y : int
        Number of columns of ``x`` and ``y`` (``dim_y == 1`` for labels).
    discrete_x, discrete_y : bool
        Whether a variable is discrete (integer labels); pass them on to
        ``estimate(..., discrete_y=task.discrete_y)``.
    """

    task_name: ClassVar[str] = ""
    discrete_x: ClassVar[bool] = False
    discrete_y: ClassVar[bool] = False
    _param_order: ClassVar[tuple[str, ...]] = ()
    _constraints: ClassVar[dict[str, list]] = {}

    dim_x: int
    dim_y: int

    def _check_params(self) -> None:
        validate_params(f"task {self.task_name!r}", self.get_params(), self._constraints)

    def get_params(self) -> dict[str, Any]:
        """The task's parameters (constructor arguments)."""
        return {k: getattr(self, k) for k in self._param_order}

    @property
    def name(self) -> str:
        args = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                         for k, v in self.get_params().items())
        return f"{self.task_name}({args})"

    @property
    def mutual_information(self) -> float:
        """The true I(X;Y) in bits."""
        return self._mi_nats() / LN2

    @property
    def mutual_information_nats(self) -> float:
        """The true I(X;Y) in nats."""
        return self._mi_nats()

    def sample(self, n: int, seed: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` i.i.d. pairs.

        Returns
        -------
        x : ndarray of shape (n, dim_x), float64
        y : ndarray of shape (n, dim_y), float64; int64 of shape (n,) for labels
        """
        n = check_n(n)
        return self._sample(n, check_random_state(seed))

    def __repr__(self) -> str:
        return f"<task {self.name}: I(X;Y) = {self.mutual_information:.6g} bits>"

    # subclasses ------------------------------------------------------------
    def _mi_nats(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError
