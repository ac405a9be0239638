"""What the one-seed and the batched 12-bit runs share: the metrics and the rows of one snapshot."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..tracking._plane import measure_layer

__all__ = ["logit_metrics", "make_net", "plane_rows"]


def make_net(config: Any, in_features: int, seed: int) -> nn.Module:
    """The tishby network of ``config`` for ``seed``: its init, every weight matrix scaled by ``init_scale``.

    ``init_scale`` multiplies the initial weights (not the zero biases), the
    initialization axis of Chelombiev et al. (2019).
    """
    from ..models import MLP

    net = MLP(in_features, config.hidden, 2, activation=config.activation, init=config.init, seed=seed)
    if config.init_scale != 1.0:
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.Linear):
                    m.weight.mul_(config.init_scale)
    return net


def logit_metrics(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross entropy (nats) and accuracy of ``logits`` for labels ``y``; NaN for no rows."""
    if y.shape[0] == 0:
        return float("nan"), float("nan")
    return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).double().mean())


def plane_rows(*, seed: int, epoch: int, acts: Mapping[str, np.ndarray], estimators: Mapping[tuple[str, str], Any],
               layer_names: Sequence[str], labels: np.ndarray, metrics: tuple[float, float, float, float],
               unit: str) -> list[dict[str, Any]]:
    """One row per (estimator, layer) of one snapshot: the plane, the run's metrics, the seconds it took.

    Each layer is measured by :func:`ibscope.tracking._plane.measure_layer`,
    the path :class:`ibscope.tracking.InformationPlane` uses (for the plane
    estimators of this experiment: ``estimator.plane(t, labels)``).

    ``metrics`` is (train loss, train accuracy, test loss, test accuracy).
    """
    tr_loss, tr_acc, te_loss, te_acc = metrics
    rows = []
    for (name, layer), est in estimators.items():
        t0 = time.perf_counter()
        a = acts[layer]
        if not np.isfinite(a).all():
            raise FloatingPointError(f"Layer '{layer}' of seed {seed} has NaN or infinite activations at "
                                     f"epoch {epoch}; lower the learning rate or check the inputs.")
        m = measure_layer(a, labels, est, layer=layer, epoch=epoch, label=name)  # the library's one path
        i_xt, i_ty = m.i_xt, m.i_ty
        rows.append({"seed": seed, "epoch": epoch, "layer": layer, "layer_index": list(layer_names).index(layer) + 1,
                     "estimator": name, "i_xt": i_xt, "i_ty": i_ty, "unit": unit,
                     "train_loss": tr_loss, "train_acc": tr_acc, "test_loss": te_loss, "test_acc": te_acc,
                     "seconds": time.perf_counter() - t0})
    return rows
