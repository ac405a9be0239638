"""PyTorch Lightning callbacks: the information plane and the information in the weights.

Install with ``pip install 'ibscope[lightning]'``. Every ibscope callback is a
:class:`ibscope.training.Callback` driven by :func:`ibscope.training.fit`;
:class:`IbscopeCallback` drives one from a Lightning ``Trainer`` with the same
epoch convention:

* epoch 0 (the initialization) at ``on_train_start``, before any step (not
  when the trainer resumes from a checkpoint past epoch 0);
* epoch e at ``on_train_epoch_end`` after e epochs (``trainer.current_epoch + 1``).

The hooks receive a :class:`ibscope.training.TrainState` with the
LightningModule as ``model``, the first optimizer, ``epochs =
trainer.max_epochs`` and as ``metrics`` the trainer's scalar
``callback_metrics``. New rows are logged as scalars to ``trainer.logger``
(when there is one) with the epoch as the step:
``information_plane/<estimator>/<layer>/i_xt`` (and ``i_ty``),
``weight_information/<quantity>/<layer>``. The wrapped callback's
``state_dict`` is saved in Lightning checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("ibscope.integrations.lightning needs PyTorch Lightning: pip install 'ibscope[lightning]'.") from e

import torch

from ..training import Callback, TrainState

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


class IbscopeCallback(pl.Callback):
    """Run an :class:`ibscope.training.Callback` inside a Lightning ``Trainer``.

    Parameters
    ----------
    callback : ibscope.training.Callback
    log : bool, default True
        Log the callback's new rows (its ``results()`` at that epoch) to
        ``trainer.logger``.
    """

    def __init__(self, callback: Callback, *, log: bool = True):
        if not isinstance(callback, Callback):
            raise TypeError(f"'callback' must be an ibscope.training.Callback, got {type(callback).__name__}.")
        self.callback, self.log = callback, bool(log)

    # the ibscope state seen by the wrapped callback
    def _state(self, trainer: Any, pl_module: Any, epoch: int) -> TrainState:
        optimizers = getattr(trainer, "optimizers", None) or [None]
        epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else epoch
        return TrainState(model=pl_module, optimizer=optimizers[0], epochs=int(epochs), device=pl_module.device,
                          epoch=int(epoch), step=int(trainer.global_step),
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

    def state_dict(self) -> dict[str, Any]:
        return {"callback": self.callback.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.callback.load_state_dict(state_dict.get("callback", {}))

    # logging
    def scalars(self, epoch: int) -> dict[str, float]:
        """The scalars of the callback's rows at ``epoch`` (what is logged)."""
        return {}

    def _log(self, trainer: Any, epoch: int) -> None:
        logger = getattr(trainer, "logger", None)
        if not self.log or logger is None:
            return
        values = self.scalars(epoch)
        if values:
            logger.log_metrics(values, step=epoch)


class InformationPlaneCallback(IbscopeCallback):
    """:class:`ibscope.InformationPlane` in a Lightning ``Trainer``.

    Pass an existing ``plane``, or the arguments of InformationPlane
    (``inputs``, ``labels`` and keywords); without ``model`` the plane is
    built on the LightningModule at ``setup`` (so argument errors that need
    the model, such as unknown layer names, surface there, before training).

    Attributes
    ----------
    plane : ibscope.InformationPlane
        ``plane.results()`` and ``plane.plot()`` after (or during) training.
    """

    def __init__(self, inputs: Any = None, labels: Any = None, *, plane: Any = None, model: Any = None,
                 log: bool = True, **plane_kwargs: Any):
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
        self.log = bool(log)
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

    def scalars(self, epoch: int) -> dict[str, float]:
        df = self.plane.results()
        if not len(df):
            return {}
        out = {}
        for r in df[df["epoch"] == epoch].itertuples(index=False):
            for q in ("i_xt", "i_ty"):
                v = float(getattr(r, q))
                if math.isfinite(v):
                    out[f"information_plane/{r.estimator}/{r.layer}/{q}"] = v
        return out


class WeightInformationCallback(IbscopeCallback):
    """:class:`ibscope.WeightInformation` (information in the weights) in a Lightning ``Trainer``.

    Pass an existing ``tracker`` (a WeightInformation) or its arguments
    (``loss_fn``, ``data`` and keywords, see
    :class:`ibscope.weights.WeightInformation`). The LightningModule is the
    model whose weights are measured (``state.model`` in its hooks).
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
        super().__init__(tracker, log=log)

    @property
    def tracker(self) -> Any:
        return self.callback

    def scalars(self, epoch: int) -> dict[str, float]:
        df = self.callback.results()
        if df is None or not len(df):
            return {}
        out = {}
        for r in df[df["epoch"] == epoch].to_dict("records"):
            v = float(r["value"])
            if math.isfinite(v):
                out[f"weight_information/{r['quantity']}/{r.get('layer', 'total')}"] = v
        return out
