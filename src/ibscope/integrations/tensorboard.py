"""TensorBoard logging of the information plane and the information in the weights.

Install with ``pip install 'ibscope[tensorboard]'``. Works with
``torch.utils.tensorboard.SummaryWriter`` (or anything with ``add_scalar`` /
``add_image``):

* :func:`log_information_plane` writes, for every row of an
  information-plane table, the scalars ``<tag>/<estimator>/<layer>/i_xt``
  and ``.../i_ty`` with the epoch as the step, and the information-plane
  figure (:func:`ibscope.plots.plot_information_plane` of the rows so far)
  as the image ``<tag>``;
* :func:`log_weight_information` writes ``<tag>/<quantity>/<layer>``;
* :class:`TensorBoardCallback` does both during :func:`ibscope.training.fit`
  for the trackers it is given (put it after them in ``callbacks``).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("ibscope.integrations.tensorboard needs TensorBoard: pip install 'ibscope[tensorboard]'.") from e

from ..training import Callback, TrainState

__all__ = ["log_information_plane", "log_weight_information", "TensorBoardCallback", "SummaryWriter"]


def _figure_array(results: pd.DataFrame) -> Any:
    from matplotlib.image import imread

    from .. import plots
    from ..tracking._plane import for_plot

    with tempfile.TemporaryDirectory() as d:
        path = plots.plot_information_plane(for_plot(results), Path(d) / "information_plane.png")
        img = imread(str(path))
    if img.dtype != "uint8":
        img = (img * 255).clip(0, 255).astype("uint8")
    return img[..., :3]


def log_information_plane(writer: Any, results: pd.DataFrame, *, step: int | None = None,
                          tag: str = "information_plane", figure: bool = True) -> None:
    """Write an information-plane table to TensorBoard.

    Parameters
    ----------
    writer : SummaryWriter
    results : DataFrame
        Columns epoch, layer, estimator, i_xt, i_ty (the table of
        :class:`ibscope.InformationPlane`).
    step : int, optional
        Only the rows of this epoch become scalars, and the figure is logged
        at this step; default: every row at its own epoch, the figure at the
        last epoch.
    tag : str
    figure : bool
        Also log the figure of all rows up to ``step`` as an image.
    """
    for col in ("epoch", "layer", "estimator", "i_xt", "i_ty"):
        if col not in results.columns:
            raise ValueError(f"'results' lacks the column {col!r} of the information-plane table.")
    if not len(results):
        return
    rows = results if step is None else results[results["epoch"] == step]
    for r in rows.itertuples(index=False):
        for q in ("i_xt", "i_ty"):
            v = float(getattr(r, q))
            if math.isfinite(v):
                writer.add_scalar(f"{tag}/{r.estimator}/{r.layer}/{q}", v, global_step=int(r.epoch))
    if figure:
        upto = results if step is None else results[results["epoch"] <= step]
        at = int(upto["epoch"].max()) if step is None else int(step)
        writer.add_image(tag, _figure_array(upto), global_step=at, dataformats="HWC")
    writer.flush()


def log_weight_information(writer: Any, results: pd.DataFrame, *, step: int | None = None,
                           tag: str = "weight_information") -> None:
    """Write a weight-information table (epoch, quantity, value[, layer]) as scalars."""
    for col in ("epoch", "quantity", "value"):
        if col not in results.columns:
            raise ValueError(f"'results' lacks the column {col!r} of the weight-information table.")
    rows = results if step is None else results[results["epoch"] == step]
    for r in rows.to_dict("records"):
        v = float(r["value"])
        if math.isfinite(v):
            writer.add_scalar(f"{tag}/{r['quantity']}/{r.get('layer', 'total')}", v, global_step=int(r["epoch"]))
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
    """

    def __init__(self, writer: Any, trackers: Sequence[Any], *, figure: bool = True, metrics: bool = True):
        if isinstance(writer, (str, os.PathLike)):
            writer = SummaryWriter(str(writer))
        if not hasattr(writer, "add_scalar"):
            raise TypeError(f"'writer' must be a SummaryWriter or a log directory, got {type(writer).__name__}.")
        self.writer, self.trackers = writer, list(trackers)
        self.figure, self.metrics = bool(figure), bool(metrics)

    def on_epoch_end(self, state: TrainState) -> None:
        from ..tracking import InformationPlane

        for tr in self.trackers:
            df = tr.results()
            if df is None or not len(df) or not (df["epoch"] == state.epoch).any():
                continue
            if isinstance(tr, InformationPlane):
                log_information_plane(self.writer, df, step=state.epoch, figure=self.figure)
            else:
                log_weight_information(self.writer, df, step=state.epoch)
        if self.metrics:
            for k, v in state.metrics.items():
                self.writer.add_scalar(f"train/{k}", float(v), global_step=state.epoch)
        self.writer.flush()

    def on_train_end(self, state: TrainState) -> None:
        self.writer.flush()
