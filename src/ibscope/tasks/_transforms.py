"""Invertible maps of a base task: the mutual information is unchanged.

If f and g are injective and differentiable (diffeomorphisms onto their
image), I(f(X); g(Y)) = I(X; Y) (Cover & Thomas [1]_, and the "Beyond
Normal" benchmark [2]_ for these particular maps). The maps below are applied
to every continuous variable of the base task (x, and y unless y is a
discrete label); they change the marginals (heavy or light tails, twisted
geometry) and so challenge the estimators, not the ground truth.

Usage::

    tasks.get("asinh", base="student_t", dim=2, dof=1.0, rho=0.5)
    tasks.get("half_cube", base="gaussian_split", dim=3, mi=1.0)
    tasks.get("spiral", base="gaussian_split", dim=2, mi=1.0, speed=0.5)

References
----------
.. [1] T. M. Cover and J. A. Thomas, "Elements of Information Theory", 2006.
.. [2] P. Czyz et al., "Beyond normal: on the evaluation of mutual
   information estimators", NeurIPS 2023.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import Interval, validate_params
from ._base import BaseTask

__all__ = ["TransformedTask", "Asinh", "HalfCube", "Spiral"]


class TransformedTask(BaseTask):
    """A base task seen through an invertible per-sample map (MI unchanged).

    Parameters
    ----------
    base : str or task object
        Registry name of the base task (its parameters passed as keywords)
        or a task object.
    **base_params
        Parameters of the base task.
    """

    def __init__(self, base: Any = "gaussian_split", **base_params: Any):
        from . import get  # local import: the registry imports this module

        if isinstance(base, str):
            self.base_task = get(base, **base_params)
        elif isinstance(base, BaseTask):
            if base_params:
                raise TypeError(f"Task {self.task_name!r}: parameters {sorted(base_params)} "
                                f"given with a base task object; pass them to the base task.")
            self.base_task = base
        else:
            raise TypeError(f"The 'base' parameter of task {self.task_name!r} must be a task name "
                            f"or a task object. Got {base!r} instead.")
        self.dim_x, self.dim_y = self.base_task.dim_x, self.base_task.dim_y
        self.discrete_x, self.discrete_y = self.base_task.discrete_x, self.base_task.discrete_y

    def get_params(self) -> dict[str, Any]:
        own = {k: getattr(self, k) for k in self._param_order}
        return {"base": self.base_task.task_name, **self.base_task.get_params(), **own}

    @property
    def name(self) -> str:
        own = "".join(f", {k}={getattr(self, k)}" for k in self._param_order)
        return f"{self.task_name}({self.base_task.name}{own})"

    def _mi_nats(self) -> float:
        return self.base_task.mutual_information_nats

    def transform(self, a: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sample(self, n, rng):
        x, y = self.base_task._sample(n, rng)
        if not self.discrete_x:
            x = self.transform(x)
        if not self.discrete_y:
            y = self.transform(y)
        return x, y


class Asinh(TransformedTask):
    """Coordinate-wise asinh: compresses heavy tails (log-like growth), bijective on R."""

    task_name = "asinh"

    def transform(self, a):
        return np.arcsinh(a)


class HalfCube(TransformedTask):
    """Coordinate-wise t -> sign(t) |t|^(3/2): lengthens tails, bijective on R."""

    task_name = "half_cube"

    def transform(self, a):
        return np.sign(a) * np.abs(a) ** 1.5


class Spiral(TransformedTask):
    """Rotate the plane of the first two coordinates by the angle ``speed * ||t||^2``.

    The map keeps the norm ||t||, so its inverse is the rotation by
    ``-speed * ||t||^2``: a smooth bijection of R^d (d >= 2) that twists the
    distribution into a spiral (a ``Beyond Normal`` transform [2]_).

    Parameters
    ----------
    base, **base_params : as for :class:`TransformedTask`.
    speed : float, default 0.5
        Radians per unit of squared norm.
    """

    task_name = "spiral"
    _param_order = ("speed",)

    def __init__(self, base: Any = "gaussian_split", speed: float = 0.5, **base_params: Any):
        super().__init__(base, **base_params)
        self.speed = speed
        validate_params("task 'spiral'", {"speed": speed}, {"speed": [Interval(float, None, None)]})
        for name, dim, disc in (("x", self.dim_x, self.discrete_x), ("y", self.dim_y, self.discrete_y)):
            if not disc and dim < 2:
                raise ValueError(f"Task 'spiral' needs at least 2 dimensions in every continuous "
                                 f"variable; the base task's {name} has {dim}.")

    def transform(self, a):
        theta = self.speed * np.einsum("ij,ij->i", a, a)
        c, s = np.cos(theta), np.sin(theta)
        out = a.copy()
        out[:, 0] = c * a[:, 0] - s * a[:, 1]
        out[:, 1] = s * a[:, 0] + c * a[:, 1]
        return out
