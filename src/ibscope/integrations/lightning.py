"""PyTorch Lightning callbacks: the information plane and the information in the weights.

Install with ``pip install 'ibscope[lightning]'``. Every ibscope callback is a
:class:`ibscope.training.Callback` driven by :func:`ibscope.training.fit`;
:class:`IbscopeCallback` drives one from a Lightning ``Trainer`` with the same
epoch convention:

* epoch 0 (the initialization) at ``on_train_start``, before any step (not
  when the trainer resumes from a checkpoint past epoch 0);
* epoch e at ``on_train_epoch_end`` after e epochs (``trainer.current_epoch + 1``;
  when ``max_steps`` ends training inside an epoch, that last, partial epoch).

The hooks receive a :class:`ibscope.training.TrainState` with the
LightningModule as ``model``, the first optimizer, ``epochs`` (the planned
length of training: ``max_epochs``, or the epochs that ``max_steps`` takes
when it ends training first) and as ``metrics`` the trainer's scalar
``callback_metrics``.

Logging. New rows go to *every* logger of the trainer (``trainer.loggers``:
TensorBoard, CSV, Weights & Biases, MLflow, ...) through
``logger.log_metrics(metrics, step)`` at Lightning's own logging step, the
count of batches that stepped the optimizer (``trainer.global_step`` with
automatic optimization; Lightning's step metrics, its LearningRateMonitor
and DeviceStatsMonitor use the same count), so the curves overlay
Lightning's metrics. Epoch 0 is at step 0, epoch e at the number of steps
taken by its end (the step of the next batch's step metrics; Lightning logs
an epoch's aggregated ``on_epoch`` metrics one step earlier, at its last
batch). The keys:

* ``ibscope/<estimator>/<layer>/i_xt`` and ``i_ty``; ``.../i_xt_lo``,
  ``i_xt_hi``, ``i_ty_lo``, ``i_ty_hi`` when the estimator gave finite
  interval bounds (``ci=`` of InformationPlane);
* ``ibscope/<estimator>/<layer>/n_flags``: the number of diagnostic flags of
  the estimate (0 when healthy), a metric every logger can show;
* ``ibscope/weights/<quantity>/<layer>`` for WeightInformation;
* ``ibscope/epoch``: the ibscope epoch of the values (0 = initialization).

Once, at the first record, ``logger.log_hyperparams`` gets the unit of the
values (``ibscope/unit``; ``ibscope/weights/<quantity>/unit``), so every
logger stores it. A ``TensorBoardLogger`` additionally gets, at each
recorded epoch, the information-plane figure of the rows so far
(``add_figure``, tag ``ibscope/information_plane``) and, when any estimate
is flagged, the names of the flags as a text table (``add_text``, tag
``ibscope/flags``); other loggers get the flag counts only (their text APIs
differ). The wrapped callback's ``state_dict`` is saved in Lightning
checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("ibscope.integrations.lightning needs PyTorch Lightning: pip install 'ibscope[lightning]'.") from e

import pandas as pd
import torch

from ..training import Callback, TrainState
from . import _scalars

__all__ = ["IbscopeCallback", "InformationPlaneCallback", "WeightInformationCallback"]


def _scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                continue
            v = v.item()
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


def _logging_step(trainer: Any) -> int:
    """The step Lightning's own logging uses now (its count of batches that stepped the optimizer).

    Equal to ``trainer.global_step`` with automatic optimization; with manual
    optimization of several optimizers ``global_step`` counts every
    optimizer's step while Lightning logs its metrics at this count.
    """
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(loop, "_batches_that_stepped", None)
    return int(step) if isinstance(step, int) else int(trainer.global_step)


def _planned_epochs(trainer: Any) -> int | None:
    """Epochs the trainer will run: ``max_epochs``, or fewer when ``max_steps`` ends training first; None
    when neither bounds training (``max_epochs=-1`` and ``max_steps=-1``) or the epoch length is unknown."""
    bounds = []
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs >= 0:
        bounds.append(int(max_epochs))
    max_steps = getattr(trainer, "max_steps", -1)
    batches = getattr(trainer, "num_training_batches", math.inf)
    if max_steps is not None and max_steps >= 0 and isinstance(batches, (int, float)) and math.isfinite(batches):
        accumulate = max(int(getattr(trainer, "accumulate_grad_batches", 1) or 1), 1)
        per_epoch = max(math.ceil(batches / accumulate), 1)
        bounds.append(math.ceil(max_steps / per_epoch))
    return min(bounds) if bounds else None


class IbscopeCallback(pl.Callback):
    """Run an :class:`ibscope.training.Callback` inside a Lightning ``Trainer``.

    The epoch convention, the step and the keys of what is logged are in
    the module docstring (:mod:`ibscope.integrations.lightning`).

    Parameters
    ----------
    callback : ibscope.training.Callback
    log : bool, default True
        Log the callback's new rows (its ``results()`` at that epoch) to every
        logger of the trainer (``trainer.loggers``).
    figure : bool, default True
        With a ``TensorBoardLogger``, also log the callback's figure (the
        information plane) at every recorded epoch.
    """

    def __init__(self, callback: Callback, *, log: bool = True, figure: bool = True):
        if not isinstance(callback, Callback):
            raise TypeError(f"'callback' must be an ibscope.training.Callback, got {type(callback).__name__}.")
        self.callback, self.log, self.figure = callback, bool(log), bool(figure)
        self._hparams_logged = False

    # the ibscope state seen by the wrapped callback
    def _epochs(self, trainer: Any, epoch: int) -> int:
        planned = _planned_epochs(trainer)
        return max(int(epoch), 0) if planned is None else planned

    def _state(self, trainer: Any, pl_module: Any, epoch: int) -> TrainState:
        optimizers = getattr(trainer, "optimizers", None) or [None]
        return TrainState(model=pl_module, optimizer=optimizers[0], epochs=self._epochs(trainer, epoch),
                          device=pl_module.device, epoch=int(epoch), step=int(trainer.global_step),
                          metrics=_scalar_metrics(trainer.callback_metrics),
                          resumed=trainer.current_epoch > 0)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        state = self._state(trainer, pl_module, trainer.current_epoch)
        self.callback.on_train_begin(state)
        if trainer.current_epoch == 0 and trainer.global_step == 0:
            state.metrics = {}
            self.callback.on_epoch_end(state)
            self._log(trainer, 0)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch + 1
        self.callback.on_epoch_end(self._state(trainer, pl_module, epoch))
        self._log(trainer, epoch)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.callback.on_train_end(self._state(trainer, pl_module, trainer.current_epoch))

    @property
    def state_key(self) -> str:
        """Lightning's key of this callback's state: the wrapped callback's ``state_key``, so two
        wrapped trackers keep their own state in a Lightning checkpoint (the class name alone
        while a plane built at ``setup`` does not exist yet)."""
        if self.callback is None:
            return type(self).__qualname__
        return f"{type(self).__qualname__}[{self.callback.state_key}]"

    def state_dict(self) -> dict[str, Any]:
        return {"callback": self.callback.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.callback.load_state_dict(state_dict.get("callback", {}))

    # logging
    def rows(self, epoch: int) -> pd.DataFrame:
        """The callback's rows of ``epoch`` (empty when it recorded none then)."""
        results = getattr(self.callback, "results", None)
        df = results() if callable(results) else None
        if not isinstance(df, pd.DataFrame) or not len(df) or "epoch" not in df.columns:
            return pd.DataFrame()
        return df[df["epoch"] == epoch]

    def scalars(self, epoch: int) -> dict[str, float]:
        """The scalars of the callback's rows at ``epoch`` (what is logged; keys in the module docstring)."""
        return {}

    def hyperparams(self) -> dict[str, str]:
        """Run-level strings logged once with ``log_hyperparams`` (the unit of the values)."""
        return {}

    def _tensorboard(self, writer: Any, epoch: int, step: int) -> None:
        """Extra TensorBoard output (figure, text) at a recorded epoch; nothing for a generic callback."""

    def _log(self, trainer: Any, epoch: int) -> None:
        loggers = list(getattr(trainer, "loggers", None) or [])
        if not self.log or not loggers:
            return
        values = self.scalars(epoch)
        if not values:
            return
        step = _logging_step(trainer)
        values = {**values, "ibscope/epoch": float(epoch)}
        hparams = {} if self._hparams_logged else self.hyperparams()
        self._hparams_logged = True
        for logger in loggers:
            if hparams:
                logger.log_hyperparams(hparams)
            logger.log_metrics(values, step=step)
            if isinstance(logger, pl.loggers.TensorBoardLogger):
                self._tensorboard(logger.experiment, epoch, step)
            logger.save()


class InformationPlaneCallback(IbscopeCallback):
    """:class:`ibscope.InformationPlane` in a Lightning ``Trainer``.

    Pass an existing ``plane``, or the arguments of InformationPlane
    (``inputs``, ``labels`` and keywords); without ``model`` the plane is
    built on the LightningModule at ``setup`` (so argument errors that need
    the model, such as unknown layer names, surface there, before training).
    What is logged, at which step, is in the module docstring
    (:mod:`ibscope.integrations.lightning`).

    Parameters
    ----------
    inputs, labels
        The evaluation inputs X and labels Y of InformationPlane.
    plane : ibscope.InformationPlane, optional
        An existing plane instead of ``inputs`` and keywords.
    model : torch.nn.Module, optional
        The network the plane records (default: the LightningModule).
    log : bool, default True
        Log each recorded epoch to every logger of the trainer.
    figure : bool, default True
        With a ``TensorBoardLogger``, also log the information-plane figure
        (:func:`ibscope.plots.plot_information_plane`) at each recorded epoch.
    **plane_kwargs
        Keywords of :class:`ibscope.InformationPlane` (``estimators``,
        ``schedule``, ``ci``, ``unit``, ``out_dir``, ...).

    Attributes
    ----------
    plane : ibscope.InformationPlane
        ``plane.results()`` and ``plane.plot()`` after (or during) training.

    Notes
    -----
    A trainer without an end (``max_epochs=-1`` and ``max_steps=-1``) needs an
    explicit ``schedule``: the default log-spaced schedule is chosen from the
    number of epochs (a ValueError says so at the start of training).

    References
    ----------
    Shwartz-Ziv, R., Tishby, N. (2017). Opening the black box of deep neural
    networks via information. arXiv:1703.00810.
    """

    def __init__(self, inputs: Any = None, labels: Any = None, *, plane: Any = None, model: Any = None,
                 log: bool = True, figure: bool = True, **plane_kwargs: Any):
        from ..tracking import InformationPlane

        self._pending = None
        if plane is not None:
            if not isinstance(plane, InformationPlane):
                raise TypeError(f"'plane' must be an ibscope.InformationPlane, got {type(plane).__name__}.")
            if inputs is not None or plane_kwargs:
                raise TypeError("Pass either 'plane' or the InformationPlane arguments, not both.")
        elif model is not None:
            plane = InformationPlane(model, inputs, labels, **plane_kwargs)
        else:
            if inputs is None:
                raise TypeError("InformationPlaneCallback needs 'inputs' (or 'plane').")
            self._pending = (inputs, labels, plane_kwargs)
        self.log, self.figure = bool(log), bool(figure)
        self._hparams_logged = False
        self.callback = plane

    @property
    def plane(self) -> Any:
        if self.callback is None:
            raise RuntimeError("The plane is built on the LightningModule at setup; the trainer has not run yet.")
        return self.callback

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.callback is None and self._pending is not None:
            from ..tracking import InformationPlane

            inputs, labels, kwargs = self._pending
            self.callback = InformationPlane(pl_module, inputs, labels, **kwargs)

    def _epochs(self, trainer: Any, epoch: int) -> int:
        planned = _planned_epochs(trainer)
        if planned is not None:
            return planned
        if self.plane.schedule is None:
            raise ValueError("The trainer has no end of training (max_epochs=-1 and max_steps=-1, or an "
                             "epoch of unknown length with max_steps): the default log-spaced 'schedule' of "
                             "InformationPlane needs the number of epochs. Pass an explicit schedule, e.g. "
                             "InformationPlaneCallback(x, y, schedule=[0, 1, 2, 5, 10]), or set max_epochs.")
        return max(max(self.plane.schedule), int(epoch))

    def scalars(self, epoch: int) -> dict[str, float]:
        return _scalars.plane_scalars(self.rows(epoch))

    def hyperparams(self) -> dict[str, str]:
        unit = _scalars.table_unit(self.plane.results())
        return {"ibscope/unit": unit} if unit else {}

    def _tensorboard(self, writer: Any, epoch: int, step: int) -> None:
        text = _scalars.flags_markdown(self.rows(epoch))
        if text and hasattr(writer, "add_text"):
            writer.add_text("ibscope/flags", text, global_step=step)
        if self.figure and hasattr(writer, "add_figure"):
            df = self.plane.results()
            _scalars.add_plane_figure(writer, df[df["epoch"] <= epoch], "ibscope/information_plane", step)


class WeightInformationCallback(IbscopeCallback):
    """:class:`ibscope.WeightInformation` (information in the weights) in a Lightning ``Trainer``.

    Pass an existing ``tracker`` (a WeightInformation) or its arguments
    (``loss_fn``, ``data`` and keywords, see
    :class:`ibscope.weights.WeightInformation`). The LightningModule is the
    model whose weights are measured (``state.model`` in its hooks). The
    values are logged as ``ibscope/weights/<quantity>/<layer>`` (see the
    module docstring).

    Parameters
    ----------
    loss_fn, data
        The per-example loss and the data of WeightInformation.
    tracker : ibscope.weights.WeightInformation, optional
        An existing tracker instead of ``loss_fn``, ``data`` and keywords.
    log : bool, default True
        Log each recorded epoch to every logger of the trainer.
    **kwargs
        Keywords of :class:`ibscope.weights.WeightInformation`.

    References
    ----------
    Achille, A., Paolini, G., Soatto, S. (2019). Where is the information in
    a deep network? arXiv:1905.12213.
    """

    def __init__(self, loss_fn: Any = None, data: Any = None, *, tracker: Any = None, log: bool = True,
                 **kwargs: Any):
        try:
            from ..weights import WeightInformation
        except ImportError:  # pragma: no cover - depends on the weights module's version
            raise ImportError("ibscope.weights.WeightInformation is not available in this version of ibscope.") from None
        if tracker is None:
            if loss_fn is None or data is None:
                raise TypeError("WeightInformationCallback needs 'loss_fn' and 'data' (or 'tracker').")
            tracker = WeightInformation(loss_fn, data, **kwargs)
        elif not isinstance(tracker, WeightInformation):
            raise TypeError(f"'tracker' must be an ibscope.weights.WeightInformation, got {type(tracker).__name__}.")
        super().__init__(tracker, log=log, figure=False)

    @property
    def tracker(self) -> Any:
        return self.callback

    def scalars(self, epoch: int) -> dict[str, float]:
        return _scalars.weight_scalars(self.rows(epoch))

    def hyperparams(self) -> dict[str, str]:
        df = self.callback.results()
        if df is None or not len(df) or "unit" not in df.columns:
            return {}
        units = df.drop_duplicates("quantity").set_index("quantity")["unit"].astype(str)
        return {f"ibscope/weights/{q}/unit": u for q, u in units.items()}
