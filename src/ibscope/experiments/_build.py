"""The declarative side of an experiment's training: :class:`Setup`, and :func:`train_seed` that runs it.

An experiment whose seed is one :func:`ibscope.training.fit` offers

* ``build(config, seed, out_dir) -> Setup``: the model, loss, data,
  optimizer, epochs and callbacks of the seed (its random draws: model init,
  data split, noise), plus the fit options the experiment legitimately
  chooses (minibatch size, evaluation data, checkpoint epochs, ...).
  ``out_dir`` is the folder the runner gives the seed, for the experiment's
  own side files (a plane's snapshots, a table of rows written as they come);
* ``rows(config, seed, setup, state) -> pandas.DataFrame``: the seed's tidy
  rows, from the trained ``setup`` and fit's final :class:`~ibscope.training.TrainState`.

The orchestration is the runner's (:func:`train_seed`): the checkpoint folder
(the seed's folder), the device (the Config's ``device``, resolved by
:func:`ibscope.experiments.execution`), the threads, the progress bar and the
seed of the minibatch order (the run's seed; :attr:`Setup.shuffle_stream`
only selects a stream of it). None of them is a field of :class:`Setup`.

Phases. A seed that is several fits in sequence, each starting from what
the one before trained (a pre-training, then a prior trained on held-out
data, then the method's fit), offers instead

* ``build(config, seed, out_dir) -> dict[str, phase]``: the phases in the
  order they train, keyed by name (a :data:`Phases` mapping). A phase is a
  :class:`Setup`, or a callable ``phase(setups, states) -> Setup`` that
  :func:`train_seed` calls only once the phases before it are trained, with
  their trained setups and final :class:`~ibscope.training.TrainState`
  objects (dicts keyed by phase name, in order): so a later phase starts from an
  earlier phase's trained model (or its callbacks' state);
* ``rows(config, seed, setups, states) -> pandas.DataFrame``: from the dicts
  of all the phases.

Each phase has its own checkpoint folder: ``checkpoint=True`` (the
default) is the sub-folder named by the phase, a string names another
sub-folder (an experiment's historical name), False none. After an
interruption in phase k, the rerun builds the seed again and fit resumes
every finished phase from its last checkpoint at once (no batch is
trained again; the model, the callbacks' state and torch's global RNG
come back as the phase left them), so phase k resumes where it stopped
with the same inputs as without the interruption (a phase with
``checkpoint=False`` is trained again). The runner gives each
configuration its own folder; an experiment whose ``run_seed`` may be
called with one folder for several configurations or seeds names its
phases' folders after them (ib_compare: the settings hash of the config
and the seed; iiw: the seed and the settings hash). fit does not checkpoint
``state.stop_training``: a callback that stops a phase early must stop it
again on resume (e.g. in ``on_train_begin``, from its restored state),
or the finished phase would train on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["Setup", "Phase", "Phases", "train_seed", "has_build"]


@dataclasses.dataclass
class Setup:
    """What one seed of an experiment trains: the arguments of :func:`ibscope.training.fit` it chooses.

    Parameters
    ----------
    model : torch.nn.Module
        Built (and initialized from the seed) by the experiment; :func:`train_seed`
        moves it to the run's device.
    loss_fn : callable
        As :func:`ibscope.training.fit` takes it (a module such as
        ``nn.CrossEntropyLoss()``, or a :class:`~ibscope.training.BatchLoss`).
    train_data
        A tuple of tensors ``(inputs..., target)`` (cut into minibatches of
        ``batch_size`` in an order drawn from the run's seed), or any
        re-iterable fit accepts (e.g. a :class:`~ibscope.training.TensorBatches`
        the experiment seeded itself).
    optimizer : torch.optim.Optimizer
        On ``model.parameters()``.
    epochs : int
        Passes over ``train_data`` (epoch 0 is the initialization).
    callbacks : list of Callback
        Trackers and the experiment's own hooks; their state is checkpointed.
    batch_size : int, optional
        For tensor-tuple ``train_data``.
    eval_data : optional
        Held-out data whose loss (and accuracy) enter fit's metrics.
    eval_every : int, default 1
    checkpoint_every : int or collection of int, default 1
        After which epochs fit writes its checkpoint (the last one always).
    checkpoint : bool or str, default True
        Where in the runner's folder the checkpoint goes: True, the folder
        itself (``checkpoint.pt``), or for a phase of several the sub-folder
        named by the phase; a name, a sub-folder of it (for an experiment
        whose several seeds may share one folder); False, none (training
        held in memory, recomputed after an interruption).
    shuffle : bool, default True
    shuffle_stream : int, default 0
        The minibatch order's generator is seeded with ``seed +
        shuffle_stream`` (the run's seed; the stream keeps an experiment's
        historical order, e.g. tishby's ``1_000_003``).
    check_weights : bool, default False
    desc : str
        Label of the progress bar.
    context : dict
        Anything ``rows`` needs besides the trained model (evaluation
        tensors, the table a callback fills, ...).
    close : callable, optional
        Called after fit, also when it raises (e.g. flush a table).

    References
    ----------
    .. [1] W. Falcon et al., "PyTorch Lightning" (the ``LightningModule`` /
       ``Trainer`` split of what is trained from how it is run), 2019.
    """

    model: Any
    loss_fn: Callable[..., Any]
    train_data: Any
    optimizer: Any
    epochs: int
    callbacks: list[Any] = dataclasses.field(default_factory=list)
    batch_size: int | None = None
    eval_data: Any = None
    eval_every: int = 1
    checkpoint_every: int | Iterable[int] = 1
    checkpoint: bool | str = True
    shuffle: bool = True
    shuffle_stream: int = 0
    check_weights: bool = False
    desc: str = "fit"
    context: dict[str, Any] = dataclasses.field(default_factory=dict)
    close: Callable[[], Any] | None = None


#: One phase of a several-fit seed: a :class:`Setup`, or ``phase(setups, states) -> Setup`` called
#: with the trained setups and final TrainStates of the phases before it (dicts keyed by phase name).
Phase = Setup | Callable[[dict[str, Setup], dict[str, Any]], Setup]
#: What ``build`` returns for a several-fit seed: the phases by name, in training order.
Phases = Mapping[str, Phase]


def has_build(mod: Any) -> bool:
    """True iff the experiment module ``mod`` offers ``build`` and ``rows`` (the runner then trains its seeds)."""
    return callable(getattr(mod, "build", None)) and callable(getattr(mod, "rows", None))


def _checkpoint_dir(setup: Setup, out: Path, phase: str | None = None) -> Path | None:
    if setup.checkpoint is True:
        if phase is not None:
            from ..store import safe_name

            return out / safe_name(phase, what="phase name")
        return out
    if setup.checkpoint is False:
        return None
    if isinstance(setup.checkpoint, str):
        from ..store import safe_name

        return out / safe_name(setup.checkpoint, what="Setup.checkpoint")
    raise TypeError(f"'Setup.checkpoint' must be True, False or a folder name; got {setup.checkpoint!r}.")


def train_seed(mod: Any, config: Any, seed: int, out_dir: str | Path, *, progress: bool = False) -> Any:
    """One seed of an experiment with ``build`` / ``rows``: build, fit under the runner's settings, rows.

    The runner's per-seed path (and what the experiment's ``run_seed``
    calls, so a sweep worker or a test gets the same): under
    :func:`ibscope.experiments.execution` (device resolved, threads set), the
    module's ``build(config, seed, out_dir)`` gives a :class:`Setup`; it is
    trained by :func:`ibscope.training.fit` with the checkpoint in
    ``out_dir`` (resumed from there), the config's device, ``progress`` and
    the minibatch seed ``seed + setup.shuffle_stream``; the module's
    ``rows(config, seed, setup, state)`` gives the returned rows.

    When ``build`` returns phases (a dict of name -> :data:`Phase`, module
    docstring), they are trained in order, each as a one-Setup seed is
    (same fit options, its checkpoint in its own sub-folder, resumed from
    there), a callable phase built from the phases before it once they are
    trained; ``rows(config, seed, setups, states)`` gets the dicts of all
    the phases.

    Parameters
    ----------
    mod : module
        The experiment (``build`` and ``rows``, see :func:`has_build`).
    config : Config
        Validated by the caller (the runner, or the module's ``run_seed``).
    seed : int
    out_dir : path-like
        The seed's folder (the runner's ``seed_<s>/``).
    progress : bool
        fit's progress bar.

    Returns
    -------
    pandas.DataFrame
        The module's ``rows``.

    Raises
    ------
    TypeError
        ``build`` returned neither a Setup nor a dict of phases, or a
        phase (a callable's result) is not a Setup.
    ValueError
        No phase, a phase name that is not a non-empty string, or two
        phases with one checkpoint folder.
    """
    import numbers

    from . import execution

    if not has_build(mod):
        raise TypeError(f"The experiment module {getattr(mod, '__name__', mod)!r} has no build/rows.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"'seed' must be an int, got {seed!r}.")
    seed = int(seed)
    out = Path(out_dir)
    with execution(config) as cfg:
        out.mkdir(parents=True, exist_ok=True)
        built = mod.build(cfg, seed, out)
        device = getattr(cfg, "device", None)
        if isinstance(built, Mapping):
            setups, states = _train_phases(mod, built, seed, out, device, progress)
            return mod.rows(cfg, seed, setups, states)
        if not isinstance(built, Setup):
            raise TypeError(f"{mod.__name__}.build must return an ibscope.experiments.Setup or a dict of "
                            f"phases (name -> Setup or callable); got {type(built).__name__}.")
        state = _fit(built, seed, _checkpoint_dir(built, out), device, progress)
        return mod.rows(cfg, seed, built, state)


def _fit(setup: Setup, seed: int, ckpt: Path | None, device: Any, progress: bool) -> Any:
    """fit of one Setup under the runner's settings (``setup.close`` after it, also when it raises)."""
    from ..training import fit

    try:
        return fit(setup.model, setup.loss_fn, setup.train_data, setup.optimizer, epochs=setup.epochs,
                   callbacks=setup.callbacks, checkpoint_dir=ckpt,
                   eval_data=setup.eval_data, device=device, progress=progress,
                   batch_size=setup.batch_size, shuffle=setup.shuffle, seed=seed + setup.shuffle_stream,
                   checkpoint_every=setup.checkpoint_every, check_weights=setup.check_weights,
                   eval_every=setup.eval_every, desc=setup.desc)
    finally:
        if setup.close is not None:
            setup.close()


def _train_phases(mod: Any, phases: Mapping[str, Any], seed: int, out: Path, device: Any,
                  progress: bool) -> tuple[dict[str, Setup], dict[str, Any]]:
    """Train the phases in order; their setups and final TrainStates by name."""
    names = list(phases)
    if not names:
        raise ValueError(f"{mod.__name__}.build returned no phase (an empty dict).")
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise ValueError(f"The phase names of {mod.__name__}.build must be non-empty strings; got {bad!r}.")
    for name in names:
        if not (isinstance(phases[name], Setup) or callable(phases[name])):
            raise TypeError(f"{mod.__name__}.build must return an ibscope.experiments.Setup or a dict of phases "
                            f"(name -> Setup or callable (setups, states) -> Setup); phase {name!r} is a "
                            f"{type(phases[name]).__name__}.")
    setups: dict[str, Setup] = {}
    states: dict[str, Any] = {}
    folders: dict[Path, str] = {}
    for name in names:
        phase = phases[name]
        setup = phase if isinstance(phase, Setup) else phase(dict(setups), dict(states))
        if not isinstance(setup, Setup):
            raise TypeError(f"Phase {name!r} of {mod.__name__}.build must give an ibscope.experiments.Setup; "
                            f"got {type(setup).__name__}.")
        ckpt = _checkpoint_dir(setup, out, name)
        if ckpt is not None:
            if ckpt in folders:
                raise ValueError(f"Phases {folders[ckpt]!r} and {name!r} of {mod.__name__}.build share the "
                                 f"checkpoint folder '{ckpt}': give each phase its own (Setup.checkpoint).")
            folders[ckpt] = name
        states[name] = _fit(setup, seed, ckpt, device, progress)
        setups[name] = setup
    return setups, states
