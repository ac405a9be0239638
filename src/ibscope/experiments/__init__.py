"""Ready, configurable experiments.

Every experiment is a module ``ibscope/experiments/_<name>.py`` that defines

* ``NAME``: its registry name;
* ``Config``: a dataclass holding every setting with the paper's defaults,
  with a ``validate()`` method that raises a ValueError naming a bad setting
  (the runner calls it before any work); plus ``PROFILES``: a dict of named
  overrides, e.g. ``{"demo": {...}}``;
* ``run_seed(config, seed, out_dir, *, progress=False) -> pandas.DataFrame``:
  runs one seed, writes any side files (checkpoints, activations) under
  ``out_dir``, and returns tidy result rows (each with a ``unit`` column);
  it resumes from what it finds in ``out_dir`` after a crash;
* for an experiment whose seed is one training (:func:`ibscope.training.fit`),
  preferably ``build(config, seed, out_dir) -> Setup`` and
  ``rows(config, seed, setup, state) -> pandas.DataFrame``: ``build`` declares
  what is trained (a :class:`Setup`: model, loss, data, optimizer, epochs,
  callbacks and the fit options the experiment chooses), ``rows`` gives the
  seed's rows from the trained setup and fit's final state. The runner then
  trains the seed itself (:func:`train_seed`: the checkpoint folder, device,
  threads, progress bar and minibatch seed are its own), and ``run_seed`` is
  the one-line wrapper ``train_seed(module, config, seed, out_dir,
  progress=progress)`` (noisy_convnet, tishby, csib_regression and
  lagrangian are written so; iiw and ntk, whose seed is several trainings,
  keep a ``run_seed`` of their own);
* ``plot(results, out_dir) -> list[pathlib.Path]``: figures from the rows of
  all seeds (used by the run report);
* optionally ``summarize(results) -> pandas.DataFrame``: a summary table
  (run report; the sweep report applies it to each grid point). Intervals
  over seeds should be confidence intervals (e.g.
  :func:`ibscope.sweep.mean_interval`, Student t), stated in the table;
* optionally ``sweep_sections(results, point_columns, out_dir) -> list``:
  extra sections of the sweep report, each an :class:`ibscope.report.Section`
  or a mapping with its keys (``title``, ``text``, ``figures``, ``tables``);
  ``results`` holds every finished task (one column per grid axis in
  ``point_columns``), figures go under ``out_dir``. The tishby experiment's
  compression vs generalization statistics come this way;
* optionally ``run_seeds(config, seeds, out_dir, *, progress=False) -> dict``:
  several seeds at once (e.g. as one batched network), ``{seed: rows}`` with
  the rows ``run_seed`` would return, resumable from ``out_dir``; the runner
  and the sweep use it for the unfinished seeds of a run or grid point
  (tishby's, iiw's and lagrangian's train them as one
  :class:`ibscope.models.BatchedMLP`).

The runner owns the orchestration: the config hash (:func:`settings_hash`,
without the execution-only settings :data:`EXECUTION_KEYS`), the one result
cache (``seed_<s>/result.parquet`` and its sidecar), the checkpoint folder it
hands ``run_seed`` as ``out_dir``, the device (:func:`resolve_device`) and the
threads (:func:`execution`; an experiment's own ``run_seed`` / ``run_seeds``
are decorated with :func:`orchestrated`, and :func:`train_seed` applies the
same, so a direct call gets the same), and for a declared seed (``build`` /
``rows``) the training itself: fit's checkpoint folder, device, progress bar
and minibatch seed. An experiment keeps no final-result file and no hash
column of its own.

The runner (:mod:`ibscope.experiments.runner`) and the sweep executors only
talk to experiments through this contract; experiment-specific figures and
statistics stay in the experiment's module.

Your own experiment module (same contract, any importable dotted path) is
loaded only after an explicit opt-in that names it exactly:
:func:`allow_module` (``allow_module="mypkg.my_experiment"`` of
:func:`~ibscope.experiments.runner.run` and :func:`ibscope.sweep.run_sweep`,
CLI ``--allow-module mypkg.my_experiment``). A name in a config file alone
never imports anything (a YAML file could otherwise run any module on the
path, including a ``.py`` file that sits beside it).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import re
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

# name -> module (relative to this package)
_REGISTRY: dict[str, str] = {
    "tishby": "_tishby",
    "iiw": "_iiw",
    "ib_compare": "_ib_compare",
    "ntk": "_ntk",
    "csib_regression": "_csib_regression",
    "compressed_images": "_compressed_images",
    "noisy_convnet": "_noisy_convnet",
    "lagrangian": "_lagrangian",
    "lm_tiny": "_lm_tiny",
}


@functools.cache  # the package's modules do not change while it runs; find_spec is slow (sweep planning)
def _module_exists(module: str) -> bool:
    return importlib.util.find_spec(f"{__name__}.{module}") is not None


def available() -> list[str]:
    """Names of the experiments that are installed."""
    return sorted(n for n, m in _REGISTRY.items() if _module_exists(m))


def get(name: str) -> ModuleType:
    """The experiment module registered under ``name``."""
    if not isinstance(name, str) or name not in available():
        raise ValueError(f"Unknown experiment {name!r}. Available experiments: {', '.join(available())}.")
    return importlib.import_module(f"{__name__}.{_REGISTRY[name]}")


_MODULE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

# dotted module paths the user opted in to loading as experiments (this process only)
_ALLOWED: set[str] = set()


def allow_module(name: str) -> None:
    """Opt in to loading the user experiment module ``name`` (a dotted path) in this process.

    Like ``torch.serialization.add_safe_globals``: the opt-in names the exact
    module, and only that module may then be imported by name (from a sweep
    file, a run's ``config.json``, or a worker's task). Registered experiments
    (:func:`available`) need no opt-in.
    """
    if not isinstance(name, str) or not _MODULE_PATH.match(name):
        raise ValueError(f"'allow_module' must be a dotted module path such as 'mypkg.my_experiment', got {name!r}.")
    if name not in _REGISTRY:
        _ALLOWED.add(name)


def as_config(config: Any, config_class: type, experiment: str) -> Any:
    """``config`` as a validated ``config_class``: an instance as is, or a dict of its fields.

    The one coercion of ``run_seed``'s ``config`` argument for experiments
    that also take a plain dict; an unknown key or another type is refused
    naming ``experiment``.
    """
    import dataclasses

    if isinstance(config, config_class):
        cfg = config
    elif isinstance(config, dict):
        unknown = set(config) - {f.name for f in dataclasses.fields(config_class)}
        if unknown:
            raise ValueError(f"Unknown {experiment} config keys: {sorted(unknown)}.")
        cfg = config_class(**config)
    else:
        article = "an" if experiment[:1] in "aeiou" else "a"
        raise TypeError(f"'config' must be {article} {experiment} Config or a dict; got {type(config).__name__}.")
    cfg.validate()
    return cfg


@contextlib.contextmanager
def torch_threads(threads: Any) -> Iterator[None]:
    """Run the block on ``threads`` torch CPU threads (0: leave as is), restoring the count after.

    The one handling of an experiment Config's ``torch_threads`` (how a run
    executes, not what it computes).
    """
    import torch

    check_threads(threads)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- #
# orchestration owned by the runner: config hash, device, threads
# --------------------------------------------------------------------------- #
#: Settings that say how a run executes, not what it computes: they never enter
#: the config hash, so changing them neither invalidates finished seeds nor is
#: refused as "another configuration".
EXECUTION_KEYS = frozenset({"device", "torch_threads", "progress"})

_DEVICE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


def settings_of(config: Any) -> dict[str, Any]:
    """The plain-JSON settings of a Config dataclass (or dict) that determine its results.

    Everything but :data:`EXECUTION_KEYS`; the one input of every config hash.
    """
    import dataclasses
    import json

    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    plain = json.loads(json.dumps(values, default=str))
    return {k: v for k, v in plain.items() if k not in EXECUTION_KEYS}


def settings_hash(config: Any, **extra: Any) -> str:
    """The hash of :func:`settings_of` ``config`` (plus ``extra`` entries, e.g. ``experiment``, ``seed``).

    The runner's config hash is ``settings_hash(config, experiment=name)``;
    an experiment that guards an intermediate checkpoint (training state,
    finished cells) against another configuration keys it with the same
    function, never with a hash of its own.
    """
    from ..store import config_hash

    return config_hash({**settings_of(config), **extra})


def check_device(device: Any) -> str:
    """Raise a ValueError naming ``device`` unless it is 'cpu', 'cuda', 'cuda:N' or 'auto'.

    The syntax check of a Config's ``device`` (no torch call: a sweep may be
    planned on a machine without the workers' GPUs); :func:`resolve_device`
    checks that the device exists.
    """
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ValueError(f"'device' must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}.")
    return device


def resolve_device(device: Any) -> str:
    """``device`` as the name of an available torch device; the one resolution of a Config's ``device``.

    'auto' is 'cuda' when CUDA is available, else 'cpu'. 'cuda' or 'cuda:N'
    on a machine without CUDA (or without device N) is a ValueError naming
    ``device``: a run never silently falls back to the CPU when a GPU was asked for.
    """
    import torch

    check_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"'device' is {device!r}, but CUDA is not available on this machine: use 'cpu', "
                             f"or 'auto' (CUDA when available, else the CPU).")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"'device' is {device!r}, but this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s).")
    return device


def check_threads(threads: Any) -> int:
    """Raise a ValueError naming ``torch_threads`` unless it is an int >= 0 (0: leave torch's count as is)."""
    import numbers

    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 0:
        raise ValueError(f"'torch_threads' must be an int >= 0, got {threads!r}.")
    return int(threads)


def resolve_execution(config: Any) -> Any:
    """``config`` with its ``device`` resolved (:func:`resolve_device`); a dict or Config alike.

    A config without a ``device`` setting is returned as is; ``torch_threads``
    is checked. The runner calls it once before any work.
    """
    import dataclasses

    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    if get("torch_threads") is not None:
        check_threads(get("torch_threads"))
    device = get("device")
    if device is None:
        return config
    resolved = resolve_device(device)
    if resolved == device:
        return config
    if isinstance(config, dict):
        return {**config, "device": resolved}
    if dataclasses.is_dataclass(config):
        return dataclasses.replace(config, device=resolved)
    return config


@contextlib.contextmanager
def execution(config: Any) -> Iterator[Any]:
    """Run the block under ``config``'s execution settings; yields the config with its device resolved.

    The one place where a run's ``device`` is resolved and its
    ``torch_threads`` set (and restored after).
    """
    cfg = resolve_execution(config)
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    threads = get("torch_threads")
    with torch_threads(0 if threads is None else threads):
        yield cfg


def orchestrated(fn: Any) -> Any:
    """Decorate an experiment's ``run_seed`` / ``run_seeds``: it runs under :func:`execution`.

    So the experiment neither resolves its ``device`` nor sets threads
    itself, whoever calls it (the runner, a sweep worker, a test).
    """
    @functools.wraps(fn)
    def wrapper(config: Any, *args: Any, **kwargs: Any) -> Any:
        with execution(config) as cfg:
            return fn(cfg, *args, **kwargs)

    return wrapper


def validate_config(config: Any, constraints: Any, experiment: str) -> None:
    """Check the fields of ``config`` named in ``constraints`` (the declarative rules of
    :func:`ibscope._validation.validate_params`: ``Interval``, ``Options``, ``InstanceOf``).

    The one shape of a Config's per-setting checks: an int setting takes an
    integral number (no bool, float or str), a float setting a finite real
    (no bool); the error is a ValueError (TypeError for a type-only rule)
    naming the setting and ``experiment``.
    """
    from .._validation import validate_params

    validate_params(f"the {experiment} Config", {k: getattr(config, k) for k in constraints}, constraints)


def check_sizes(value: Any, name: str, experiment: str) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a non-empty list of ints >= 1.

    The one check of a Config's layer widths, channel counts and the like
    (bools, floats and strings are refused, not compared).
    """
    import numbers

    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok:
        raise ValueError(f"The '{name}' of {experiment} must be a non-empty list of ints >= 1. Got {value!r} instead.")


def check_seeds(seeds: Iterable[Any]) -> list[int]:
    """The ``seeds`` of a ``run_seeds`` call as a list of ints; refused unless non-empty, integral and distinct."""
    import numbers

    given = list(seeds)
    if not given or len(set(given)) != len(given) or any(
            isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in given):
        raise ValueError(f"'seeds' must be a non-empty list of distinct ints, got {given!r}.")
    return [int(s) for s in given]


def is_allowed(name: str) -> bool:
    """True iff ``name`` is a registered experiment or a module opted in with :func:`allow_module`."""
    return name in _REGISTRY or name in _ALLOWED


from ._build import Setup, has_build, train_seed  # noqa: E402  (uses execution above)

__all__ = ["allow_module", "available", "get", "is_allowed", "EXECUTION_KEYS", "settings_of", "settings_hash",
           "check_device", "resolve_device", "resolve_execution", "execution", "orchestrated", "validate_config",
           "Setup", "has_build", "train_seed"]
