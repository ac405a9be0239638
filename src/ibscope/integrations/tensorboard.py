"""TensorBoard logging of the information plane and the information in the weights.

Install with ``pip install 'ibscope[tensorboard]'``. Works with
``torch.utils.tensorboard.SummaryWriter`` (or anything with ``add_scalar``,
``add_text`` and ``add_figure``). The names are those of the Lightning
callbacks (:mod:`ibscope.integrations.lightning`), so runs of both overlay:

* :func:`log_information_plane` writes, for the rows of an
  information-plane table, the scalars ``<tag>/<estimator>/<layer>/i_xt`` and
  ``i_ty``, the interval bounds ``.../i_xt_lo``, ``i_xt_hi``, ``i_ty_lo``,
  ``i_ty_hi`` where they are finite, ``.../n_flags`` (the number of
  diagnostic flags of the estimate, 0 when healthy), the flagged estimates
  as the text ``<tag>/flags`` and the information-plane figure
  (:func:`ibscope.plots.plot_information_plane` of the rows so far) as the
  figure ``<tag>/information_plane``;
* :func:`log_weight_information` writes ``<tag>/weights/<quantity>/<layer>``;
* :class:`TensorBoardCallback` does both during :func:`ibscope.training.fit`
  for the trackers it is given (put it after them in ``callbacks``).

``tag`` is ``"ibscope"`` by default. The step is the epoch (0 = the
initialization; ``fit``'s own metrics are per epoch) unless ``global_step``
is given; the unit of the values is written once as the text ``<tag>/unit``
(and is on the figure's axes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("ibscope.integrations.tensorboard needs TensorBoard: pip install 'ibscope[tensorboard]'.") from e

from ..training import Callback, TrainState
from . import _scalars

__all__ = ["log_information_plane", "log_weight_information", "TensorBoardCallback", "SummaryWriter"]


def _check_writer(writer: Any) -> None:
    if not hasattr(writer, "add_scalar"):
        raise TypeError(f"'writer' must be a SummaryWriter (with add_scalar), got {type(writer).__name__}.")


def _check_step(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
        raise TypeError(f"'{name}' must be an int or None, got {value!r}.")
    if int(value) < 0:
        raise ValueError(f"'{name}' must be >= 0, got {value!r}.")
    return int(value)


def _write(writer: Any, scalars: dict[str, float], step: int) -> None:
    for key, v in scalars.items():
        writer.add_scalar(key, v, global_step=step)


def log_information_plane(writer: Any, results: pd.DataFrame, *, step: int | None = None,
                          global_step: int | None = None, tag: str = _scalars.PREFIX,
                          figure: bool = True) -> None:
    """Write an information-plane table to TensorBoard.

    Parameters
    ----------
    writer : SummaryWriter
    results : DataFrame
        Columns epoch, layer, estimator, i_xt, i_ty; optional: the interval
        bounds, flags, unit (the table of :class:`ibscope.InformationPlane`).
    step : int, optional
        The epoch to log: only its rows become scalars and the figure shows
        the rows up to it. Default: every row, each at its own epoch, and the
        figure of all rows at the last epoch.
    global_step : int, optional
        The TensorBoard step of ``step``'s values (default: the epoch itself),
        e.g. the optimizer steps taken so far, to overlay other step-based
        curves. Needs ``step``.
    tag : str, default "ibscope"
        The prefix of every name.
    figure : bool, default True
        Also log the information-plane figure of the rows up to ``step``.

    References
    ----------
    Shwartz-Ziv, R., Tishby, N. (2017). Opening the black box of deep neural
    networks via information. arXiv:1703.00810.
    """
    _check_writer(writer)
    _scalars.check_columns(results, _scalars.PLANE_COLUMNS, "information-plane")
    step, global_step = _check_step(step, "step"), _check_step(global_step, "global_step")
    if global_step is not None and step is None:
        raise ValueError("'global_step' needs 'step' (the epoch whose rows it is the step of).")
    if not len(results):
        return
    epochs = sorted(int(e) for e in results["epoch"].unique()) if step is None else [step]
    unit = _scalars.table_unit(results)
    for epoch in epochs:
        rows = results[results["epoch"] == epoch]
        at = epoch if global_step is None else global_step
        _write(writer, _scalars.plane_scalars(rows, tag), at)
        text = _scalars.flags_markdown(rows)
        if text:
            writer.add_text(f"{tag}/flags", text, global_step=at)
    if unit and (step is None or step == int(results["epoch"].min())):
        writer.add_text(f"{tag}/unit", f"information-plane values in {unit}", global_step=0)
    if figure:
        last = epochs[-1]
        upto = results[results["epoch"] <= last]
        if len(upto):
            _scalars.add_plane_figure(writer, upto, f"{tag}/information_plane",
                                      last if global_step is None else global_step)
    writer.flush()


def log_weight_information(writer: Any, results: pd.DataFrame, *, step: int | None = None,
                           global_step: int | None = None, tag: str = _scalars.PREFIX) -> None:
    """Write a weight-information table as the scalars ``<tag>/weights/<quantity>/<layer>``.

    Parameters
    ----------
    writer : SummaryWriter
    results : DataFrame
        Columns epoch, quantity, value; optional: layer ('total' when absent),
        unit (the table of :class:`ibscope.weights.WeightInformation`).
    step : int, optional
        The epoch to log (default: every row at its own epoch).
    global_step : int, optional
        The TensorBoard step of ``step``'s values (default: the epoch).
    tag : str, default "ibscope"

    References
    ----------
    Achille, A., Paolini, G., Soatto, S. (2019). Where is the information in
    a deep network? arXiv:1905.12213.
    """
    _check_writer(writer)
    _scalars.check_columns(results, _scalars.WEIGHT_COLUMNS, "weight-information")
    step, global_step = _check_step(step, "step"), _check_step(global_step, "global_step")
    if global_step is not None and step is None:
        raise ValueError("'global_step' needs 'step' (the epoch whose rows it is the step of).")
    epochs = sorted(int(e) for e in results["epoch"].unique()) if step is None else [step]
    for epoch in epochs:
        rows = results[results["epoch"] == epoch]
        _write(writer, _scalars.weight_scalars(rows, tag), epoch if global_step is None else global_step)
    writer.flush()


class TensorBoardCallback(Callback):
    """Log the trackers' new rows (and the plane figure) after every epoch of :func:`~ibscope.training.fit`.

    Parameters
    ----------
    writer : SummaryWriter or path-like
        A writer, or a log directory for a new one.
    trackers : sequence
        InformationPlane and/or WeightInformation objects, placed *before*
        this callback in ``fit``'s ``callbacks`` (they record first).
    figure : bool, default True
        Log the information-plane figure at every recorded epoch.
    metrics : bool, default True
        Also log ``state.metrics`` (train_loss, eval_loss, ...) under ``train/``.
    tag : str, default "ibscope"
        The prefix of the trackers' names (see the module docstring).
    """

    def __init__(self, writer: Any, trackers: Sequence[Any], *, figure: bool = True, metrics: bool = True,
                 tag: str = _scalars.PREFIX):
        if isinstance(writer, (str, os.PathLike)):
            writer = SummaryWriter(str(writer))
        _check_writer(writer)
        self.writer, self.trackers = writer, list(trackers)
        self.figure, self.metrics, self.tag = bool(figure), bool(metrics), str(tag)

    def on_epoch_end(self, state: TrainState) -> None:
        from ..tracking import InformationPlane

        for tr in self.trackers:
            df = tr.results()
            if df is None or not len(df) or not (df["epoch"] == state.epoch).any():
                continue
            if isinstance(tr, InformationPlane):
                log_information_plane(self.writer, df, step=state.epoch, figure=self.figure, tag=self.tag)
            else:
                log_weight_information(self.writer, df, step=state.epoch, tag=self.tag)
        if self.metrics:
            for k, v in state.metrics.items():
                self.writer.add_scalar(f"train/{k}", float(v), global_step=state.epoch)
        self.writer.flush()

    def on_train_end(self, state: TrainState) -> None:
        self.writer.flush()
