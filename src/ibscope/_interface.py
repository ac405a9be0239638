"""Protocols shared across ibscope.

This module imports nothing from the package (so it can never take part in an
import cycle). The runner and the sweep type experiments against
:class:`Experiment` (and check a module against it before using it); every
registered estimator satisfies :class:`MIEstimator` (the plane estimators also
:class:`PlaneEstimator`) and every task :class:`Task`, which
``tests/test_security.py`` checks for the whole registries.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class MIEstimator(Protocol):
    """A mutual-information estimator: ``estimate(x, y)`` returns I(X;Y) in ``unit``."""

    name: str
    unit: str

    def estimate(self, x: Any, y: Any, *, discrete_x: bool = False,
                 discrete_y: bool = False) -> float: ...

    def get_params(self) -> dict[str, Any]: ...


@runtime_checkable
class PlaneEstimator(Protocol):
    """An estimator that exploits network structure to give both plane coordinates.

    ``plane(t, y)`` returns ``(I(X;T), I(T;Y))`` for a layer ``t`` of a network
    whose input X is the index of the sample (all inputs distinct) and ``y`` the
    discrete labels.
    """

    def plane(self, t: Any, y: Any) -> tuple[float, float]: ...


@runtime_checkable
class Experiment(Protocol):
    """An experiment module (the contract of :mod:`ibscope.experiments`).

    ``Config`` is a dataclass of every setting whose ``validate()`` raises a
    ValueError naming a bad one; ``run_seed`` runs one seed into ``out_dir``
    (resuming from what it finds there) and returns tidy rows; ``plot`` draws
    the figures of all seeds' rows into ``out_dir``.
    """

    NAME: str
    Config: type

    def run_seed(self, config: Any, seed: int, out_dir: Any, *, progress: bool = False) -> Any: ...

    def plot(self, results: Any, out_dir: Any) -> list[Any]: ...


EXPERIMENT_CONTRACT = ("NAME", "Config", "run_seed", "plot")


@runtime_checkable
class Task(Protocol):
    """A distribution with known mutual information (ground truth for tests)."""

    name: str
    dim_x: int
    dim_y: int

    @property
    def mutual_information(self) -> float:  # in bits
        ...

    def sample(self, n: int, seed: int | None = None) -> tuple[Any, Any]: ...
