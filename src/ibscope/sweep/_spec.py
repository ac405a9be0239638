"""Sweep specifications: the YAML format, grid expansion and task ids."""

from __future__ import annotations

import itertools
import json
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._validation import read_config_file
from ..store import config_hash

__all__ = ["MAX_TASKS", "SweepSpec", "Task", "load_spec", "parse_grid_args", "grid_points", "task_id"]

_TOP_LEVEL = ("experiment", "config", "grid", "seeds", "profile")


@dataclass
class SweepSpec:
    """What to run: an experiment, its base settings, the grid axes and the seeds.

    Attributes
    ----------
    experiment : str
        Registry name (``tishby``), or the dotted path of your own experiment
        module; such a module runs only with the explicit opt-in
        ``run_sweep(..., allow_module=<the same path>)`` (CLI
        ``--allow-module``), never because a file names it.
    config : dict
        Base settings (override the experiment's defaults and the profile).
    grid : dict of str to list
        Axes: each key is a setting, each value the list of values to try.
        Every combination of values is one grid point.
    seeds : list of int
        Seeds run at every grid point. At most :data:`MAX_TASKS` tasks
        (grid points x seeds) per sweep.
    profile : str or None
        Named profile of the experiment applied before ``config``.
    """

    experiment: str
    config: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    profile: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.experiment, str) or not self.experiment:
            raise ValueError(f"'experiment' must name an experiment (e.g. tishby), got {self.experiment!r}.")
        if not isinstance(self.config, Mapping):
            raise ValueError(f"'config' must be a mapping of settings, got {type(self.config).__name__}.")
        self.config = dict(self.config)
        if not isinstance(self.grid, Mapping):
            raise ValueError(f"'grid' must map settings to lists of values, got {type(self.grid).__name__}.")
        grid: dict[str, list[Any]] = {}
        size = 1
        for key, values in self.grid.items():
            if not isinstance(values, (list, tuple)) or len(values) == 0:
                raise ValueError(f"Grid axis {key!r} must be a non-empty list of values, got {values!r}.")
            size *= len(values)
            if size > MAX_TASKS:  # checked from the axes' lengths, before any point is built
                raise ValueError(f"The grid has more than {MAX_TASKS} points (axes {list(self.grid)} with "
                                 f"{[len(v) if isinstance(v, (list, tuple)) else v for v in self.grid.values()]}"
                                 f" values); at most {MAX_TASKS} tasks (points x seeds) are planned.")
            canon = [json.dumps(v, sort_keys=True, default=str) for v in values]
            if len(set(canon)) != len(canon):
                raise ValueError(f"Grid axis {key!r} lists a value twice: {list(values)!r}.")
            grid[str(key)] = list(values)
        self.grid = grid
        self.seeds = _seed_list(self.seeds)
        if size * len(self.seeds) > MAX_TASKS:
            raise ValueError(f"The sweep has {size} grid point(s) x {len(self.seeds)} seed(s) = "
                             f"{size * len(self.seeds)} tasks; at most {MAX_TASKS} are planned (split it into "
                             f"several sweeps).")
        if self.profile is not None and not isinstance(self.profile, str):
            raise ValueError(f"'profile' must be a profile name, got {self.profile!r}.")

    def with_changes(self, *, seeds: int | Iterable[int] | None = None,
                     grid: Mapping[str, list[Any]] | None = None,
                     config: Mapping[str, Any] | None = None) -> SweepSpec:
        """A copy with more/other seeds, grid axes replaced or added, and settings overridden."""
        return SweepSpec(self.experiment, {**self.config, **dict(config or {})},
                         {**self.grid, **dict(grid or {})},
                         self.seeds if seeds is None else seeds, self.profile)


MAX_SEEDS = 100_000  # a larger count is a typo (a sweep of that size is not planned here)
MAX_TASKS = 100_000
"""Most tasks (grid points x seeds) one sweep plans; checked from the axes' lengths before expanding."""


def _seed_list(seeds: Any) -> list[int]:
    """A count n (seeds 0..n-1) or a list of distinct integral seeds; strings and floats are refused."""
    from ..experiments import check_seeds

    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        if not 1 <= seeds <= MAX_SEEDS:
            raise ValueError(f"'seeds' as a count must be in [1, {MAX_SEEDS}], got {seeds}.")
        return list(range(int(seeds)))
    if isinstance(seeds, (str, bytes, bool, Mapping)) or not isinstance(seeds, Iterable):
        raise ValueError(f"'seeds' must be a number of seeds or a list of ints, got {seeds!r}.")
    out = check_seeds(seeds)
    if len(out) > MAX_SEEDS:
        raise ValueError(f"'seeds' lists {len(out)} seeds; at most {MAX_SEEDS}.")
    return out


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep file: ``experiment``, ``config``, optional ``grid``, ``seeds``, ``profile``.

    Example::

        experiment: tishby
        profile: demo            # optional
        seeds: 5                 # optional: 0..4 (default 1 seed)
        config: {epochs: 2000}   # base settings
        grid:                    # optional: every combination is a point
          activation: [tanh, relu]

    The file is plain YAML (:func:`ibscope._validation.load_yaml`: no tags,
    no anchors or aliases, at most 1 MB); an unknown top-level key is
    refused (the same check as ``ibscope run --config``), and so is a sweep
    of more than :data:`MAX_TASKS` tasks (grid points x seeds, counted from
    the axes' lengths before any point is built).
    """
    data = read_config_file(path, _TOP_LEVEL, argument="config", required=("experiment",))
    return SweepSpec(experiment=data["experiment"], config=data.get("config") or {},
                     grid=data.get("grid") or {}, seeds=data.get("seeds", 1), profile=data.get("profile"))


def parse_grid_args(items: Iterable[str] | None) -> dict[str, list[Any]]:
    """``["activation=tanh,relu", "hidden=[10,7],[12,5]"]`` -> axes (each value parsed as YAML)."""
    import yaml

    out: dict[str, list[Any]] = {}
    for item in items or []:
        key, sep, rhs = item.partition("=")
        if not sep or not key.strip() or not rhs.strip():
            raise ValueError(f"--grid expects KEY=V1,V2,..., got {item!r}.")
        try:
            values = yaml.safe_load(f"[{rhs}]")
        except yaml.YAMLError as e:
            raise ValueError(f"--grid {item!r}: cannot parse the values ({e}).") from None
        out[key.strip()] = values
    return out


def grid_points(grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values (axes in their given order); ``[{}]`` without axes."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=False)) for combo in itertools.product(*(grid[k] for k in keys))]


_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _slug(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(_slug(v) for v in value) or "empty"
    text = json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, str):
        text = value
    return _SAFE.sub("-", text).strip("-") or "empty"


def _reads_as_other_type(value: Any) -> bool:
    """A string such as "1" or "true" would print like the number or bool it is not."""
    if not isinstance(value, str):
        return False
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def task_id(point: Mapping[str, Any], seed: int) -> str:
    """A readable, filesystem-safe id built from the point's settings and the seed.

    ``activation=relu__lr=0.001__seed=3``. Where the readable form loses
    information (odd characters, nested values) or grows long, a short hash of
    the point is appended, so distinct points never share an id.
    """
    parts, lossy = [], False
    for key, value in point.items():
        slug = _slug(value)
        exact = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        lossy |= slug != exact or _SAFE.search(str(key)) is not None or _reads_as_other_type(value)
        parts.append(f"{_SAFE.sub('-', str(key))}={slug}")
    body = "__".join(parts)
    if lossy or len(body) > 100:
        body = f"{body[:80]}__h{config_hash(dict(point))[:8]}"
    return f"{body}__seed={int(seed)}" if body else f"seed={int(seed)}"


@dataclass(frozen=True)
class Task:
    """One unit of work: the experiment at one grid point with one seed."""

    task_id: str
    point: dict[str, Any]
    seed: int
    config_hash: str

    def as_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "point": self.point, "seed": self.seed, "config_hash": self.config_hash}
