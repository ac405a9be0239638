"""The information plane of the 12-bit task (Shwartz-Ziv & Tishby 2017).

Train the 12-10-7-5-4-3-2 network on the 12-bit task, snapshot every layer on
the whole data set at log-spaced epochs, and estimate I(X;T) and I(T;Y) of
each layer with any plane estimator (binning, adaptive binning, KDE bounds).

Defaults follow the paper: tanh hidden layers, softmax output, truncated
normal N(0, 1/fan_in) init, Adam lr 4e-4, batch 512, 8000 epochs, 80%
training fraction, ~300 log-spaced snapshots. Unlike the reference code the
train/test split is shuffled (stratified, seeded), values outside the binning
range are clipped rather than wrapped, and test metrics are really computed.

Binning uses fixed edges on every layer: ``n_bins`` bins over a bounded
activation's range, and on unbounded activations (ReLU, ...) bins of fixed
width ``2 / n_bins`` (or the ``bin_width`` / ``value_range`` given), never
each snapshot's own min/max, which would stretch with the activations and
show a ReLU layer "compressing" (the contrast of Saxe et al. [2]_ needs
fixed-width bins).

Training goes through :func:`ibscope.training.fit`; the snapshots are a
callback at the scheduled epochs. Each seed runs in its own directory with
fit's checkpoint (model, optimizer and RNG state; written atomically at
every snapshot epoch, read with ``weights_only=True``), so a crashed or
interrupted run resumes at its last snapshot without recomputing or losing
anything; a truncated checkpoint is moved aside and the seed starts over.

References
----------
.. [1] R. Shwartz-Ziv and N. Tishby, arXiv:1703.00810, 2017.
.. [2] A. M. Saxe et al., ICLR 2018.
.. [3] I. Chelombiev, C. Houghton and C. O'Donnell, ICLR 2019.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import estimators as est_registry
from .._validation import BOOLEAN, NONE, InstanceOf, Interval, Options
from ..data import load_twelve_bit_mat, train_test_split, twelve_bit
from ..models import ACTIVATIONS, INITS
from ..store import TableWriter
from ..tracking import ActivationRecorder, log_schedule
from ..tracking._plane import layer_params
from ..training import Callback, TrainState
from . import check_device, check_sizes, orchestrated, validate_config
from ._build import Setup
from ._tishby_common import logit_metrics, make_net, plane_rows

NAME = "tishby"
PLANE_ESTIMATORS = ("binning", "adaptive_binning", "kde_upper", "kde_lower", "adaptive_kde")


@dataclass
class Config:
    """Settings of the 12-bit information-plane experiment (paper defaults).

    Attributes
    ----------
    data : str or None
        Path to the original ``var_u.mat``; None uses the built-in generator
        (identical to the original file).
    hidden : list of int
        Hidden widths.
    activation : str
        Hidden activation (tanh, relu, elu, softplus, silu, sigmoid, leaky_relu, linear).
    init : str
        'truncated_normal' (paper), 'he', 'xavier' or 'default'.
    init_scale : float
        Multiplies every initial weight matrix (1: the scheme as is); the
        initialization sweeps of Chelombiev et al. [3]_.
    lr, batch_size, epochs, weight_decay
        Adam learning rate, minibatch size, passes over the training set, L2.
    train_fraction : float
        Share of the 4096 patterns used for training (5%, 45%, 80-85% in papers).
    n_snapshots : int
        Number of log-spaced snapshot epochs (epoch 0 and the last included).
    estimators : dict
        Estimator label -> parameters; the label is the estimator's name,
        or any label with the name under the parameter ``estimator`` (e.g.
        ``{"binning_snapshot": {"estimator": "binning", "value_range": None}}``
        next to ``binning``: two binnings of the same training). Rows carry
        the label in their ``estimator`` column. Binning ranges and adaptive-binning
        floors default to each layer's activation bounds (tanh (-1, 1),
        softmax (0, 1)); unbounded layers (ReLU, ...) get fixed-width bins of
        width ``2 / n_bins`` (never the snapshot's own min/max); an explicit
        ``value_range`` or ``bin_width`` applies to every layer.
    layers : list of str or None
        The layers whose plane is estimated (names ``hidden1`` ... and
        ``output``); None: every layer. A claim that reads one layer need not
        pay for the others (adaptive KDE costs ~0.2 s per layer and snapshot).
    unit : str
        'bits' or 'nats'.
    keep_activations : bool
        Keep the snapshot files after estimation (they allow re-estimating
        with other estimators without retraining).
    device : str
        'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when available, else the CPU);
        resolved once by :func:`ibscope.experiments.orchestrated` (an
        unavailable CUDA device is a ValueError naming ``device``). Not part of
        the config hash.
    torch_threads : int
        Intra-op threads torch may use while this seed runs (restored after).
        The 12-bit network's operations are tiny, so one thread is fastest and
        immune to the slowdown of oversubscribed machines; 0 keeps torch's default.
        Set by :func:`ibscope.experiments.orchestrated`; not part of the config hash.
    """

    data: str | None = None
    hidden: list[int] = field(default_factory=lambda: [10, 7, 5, 4, 3])
    activation: str = "tanh"
    init: str = "truncated_normal"
    init_scale: float = 1.0
    lr: float = 4e-4
    batch_size: int = 512
    epochs: int = 8000
    weight_decay: float = 0.0
    train_fraction: float = 0.8
    n_snapshots: int = 300
    estimators: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"binning": {"n_bins": 30}, "adaptive_binning": {"n_bins": 30}}
    )
    layers: list[str] | None = None
    unit: str = "bits"
    keep_activations: bool = True
    device: str = "cpu"
    torch_threads: int = 1

    def validate(self) -> None:
        """Check every field; raise before any work starts."""
        validate_config(self, _CONSTRAINTS, "tishby")
        check_sizes(self.hidden, "hidden", "tishby")
        if not isinstance(self.estimators, dict) or not self.estimators:
            raise ValueError("'estimators' must map at least one estimator name to its parameters.")
        for label, params in self.estimators.items():
            if params is not None and not isinstance(params, dict):
                raise ValueError(f"Estimator {label!r} (config 'estimators') needs a mapping of parameters, "
                                 f"got {params!r}.")
            name, params = estimator_name(label, params)
            est_registry.get_class(name)  # unknown names first, with the list of estimators
            if name not in PLANE_ESTIMATORS:
                raise ValueError(
                    f"Estimator {name!r} (config 'estimators') cannot give an information plane of a "
                    f"deterministic network. Choose from: {', '.join(PLANE_ESTIMATORS)}."
                )
            est_registry.get(name, **params)  # validates the parameters now
        if self.layers is not None:
            known = [f"hidden{i}" for i in range(1, len(self.hidden) + 1)] + ["output"]
            if not isinstance(self.layers, (list, tuple)) or not self.layers \
                    or any(name not in known for name in self.layers):
                raise ValueError(f"'layers' must be None or a non-empty list of layer names of this network "
                                 f"({', '.join(known)}), got {self.layers!r}.")
        if self.data is not None:
            load_twelve_bit_mat(self.data)  # fails now on a missing or malformed file
        check_device(self.device)


_CONSTRAINTS: dict[str, list] = {
    "data": [InstanceOf((str, os.PathLike), "a path (str or os.PathLike)"), NONE],
    "activation": [Options(tuple(ACTIVATIONS))], "init": [Options(tuple(INITS))],
    "epochs": [Interval(int, 1, None)], "batch_size": [Interval(int, 1, None)],
    "n_snapshots": [Interval(int, 2, None)],
    "init_scale": [Interval(float, 0, None, closed="neither")],
    "lr": [Interval(float, 0, None, closed="neither")], "weight_decay": [Interval(float, 0, None)],
    "train_fraction": [Interval(float, 0, 1, closed="neither")],
    "unit": [Options(("bits", "nats"))], "keep_activations": [BOOLEAN],
    "torch_threads": [Interval(int, 0, None)],
}


PROFILES: dict[str, dict[str, Any]] = {
    # The paper's setup is the default. 'demo' finishes in a few minutes on 2 cores:
    # fewer epochs and snapshots, three seeds, binning + adaptive binning + KDE upper bound.
    "demo": {
        "epochs": 2000, "n_snapshots": 40,
        "estimators": {"binning": {"n_bins": 30}, "adaptive_binning": {"n_bins": 30},
                       "kde_upper": {"noise_variance": 0.1}},
        "keep_activations": False,
    },
    # 'test' is for the test suite: seconds.
    "test": {"epochs": 60, "n_snapshots": 6, "batch_size": 256, "hidden": [10, 7, 5]},
}
DEMO_SEEDS = 3


def estimator_name(label: str, params: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(registry name, parameters without it) of an ``estimators`` entry: ``params['estimator']`` or the label."""
    p = dict(params or {})
    name = p.pop("estimator", label)
    if not isinstance(name, str):
        raise ValueError(f"Estimator {label!r} (config 'estimators'): 'estimator' must be a name, got {name!r}.")
    return name, p


def _layer_estimator(name: str, params: dict[str, Any], activation: str, unit: str):
    """The estimator for one layer, by the tracking package's per-layer rule (``layer_params``).

    ``binning`` without ``value_range`` or ``bin_width`` gets fixed edges on
    every layer, never the snapshot's own min/max (which stretch with the
    activations and make an unbounded layer look compressed, the artefact
    Saxe et al. [2]_ point out): ``n_bins`` bins over the range of a bounded
    activation, unbounded bins of width ``2 / n_bins`` anchored at 0 on an
    unbounded one. An explicit ``value_range`` or ``bin_width`` applies to
    every layer as given. The library's :class:`~ibscope.tracking.InformationPlane`
    uses the same rule.
    """
    name, p = estimator_name(name, params)
    return est_registry.get(name, unit=unit, **layer_params(name, activation, p))


def load_data(config: Config) -> tuple[np.ndarray, np.ndarray]:
    return twelve_bit() if config.data is None else load_twelve_bit_mat(config.data)


def _entropy_bits(y: np.ndarray) -> float:
    p = np.bincount(y) / y.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


@torch.no_grad()
def _metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    if x.shape[0] == 0:
        return float("nan"), float("nan")
    was = model.training
    model.eval()
    logits = model(x)
    model.train(was)
    return logit_metrics(logits, y)


def run_seed(config: Config, seed: int, out_dir: str | Path, *, progress: bool = False) -> pd.DataFrame:
    """Train one network and return its information-plane rows (one per epoch, layer, estimator).

    The runner's per-seed path (:func:`ibscope.experiments.train_seed`):
    :func:`build`, then :func:`ibscope.training.fit` with ``out_dir`` as its
    checkpoint directory (one ``checkpoint.pt``, written at every snapshot
    epoch and read with ``weights_only=True``), then :func:`rows`. A rerun
    resumes from it and skips the snapshots already in
    ``out_dir/infoplane.parquet``; a planted checkpoint holding pickled
    objects is refused (:class:`ibscope.training.CheckpointError`); a
    truncated one is moved aside and the seed starts over from epoch 0.
    """
    from ._build import train_seed

    if not isinstance(config, Config):
        raise TypeError(f"'config' must be a tishby Config; got {type(config).__name__}.")
    config.validate()
    return train_seed(sys.modules[__name__], config, seed, out_dir, progress=progress)


class _PlaneSnapshots(Callback):
    """At the scheduled epochs: record every layer, estimate its plane, add the rows to the table.

    Private to the experiment (its row schema); the rows on disk are its
    state, so resuming skips the epochs already estimated (training is
    deterministic given the config and the seed, so those rows are exactly
    what the resumed trajectory would give).
    """

    def __init__(self, *, seed: int, recorder: ActivationRecorder, estimators: dict, layer_names: list[str],
                 labels: np.ndarray, train: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], unit: str, table: TableWriter):
        self.seed, self.recorder, self.estimators, self.layer_names = seed, recorder, estimators, layer_names
        self.labels, self.train, self.test, self.unit, self.table = labels, train, test, unit, table
        frame = table.frame()
        self.done = set(frame["epoch"].unique().tolist()) if len(frame) else set()

    def on_epoch_end(self, state: TrainState) -> None:
        epoch = state.epoch
        if epoch not in self.recorder.schedule or epoch in self.done:
            return
        acts = self.recorder.record(epoch)
        metrics = (*_metrics(state.model, *self.train), *_metrics(state.model, *self.test))
        rows = plane_rows(seed=self.seed, epoch=epoch, acts=acts, estimators=self.estimators,
                          layer_names=self.layer_names, labels=self.labels, metrics=metrics, unit=self.unit)
        self.table.add(rows)
        self.table.flush()  # before fit writes the checkpoint of this epoch
        self.done.add(epoch)


def build(config: Config, seed: int, out_dir: Path) -> Setup:
    """The seed's training: its stratified split, the network, Adam, and the snapshot callback.

    The split and the initialization come from ``seed``; the minibatch order
    from ``seed + 1_000_003`` (``shuffle_stream``, the order the batched path
    reproduces). Snapshots of every layer on the whole data set (the 4096
    patterns) go to ``out_dir/activations`` when ``keep_activations``, the
    plane's rows to ``out_dir/infoplane.parquet`` as they are estimated.
    """
    out_dir = Path(out_dir)
    device = torch.device(config.device)  # resolved by the runner (ibscope.experiments.execution)
    x_np, y_np = load_data(config)
    split = train_test_split(len(y_np), train_fraction=config.train_fraction, seed=seed, stratify=y_np)
    x_all = torch.as_tensor(x_np, dtype=torch.float32, device=device)
    y_all = torch.as_tensor(y_np, dtype=torch.int64, device=device)
    x_tr, y_tr = x_all[split.train], y_all[split.train]
    x_te, y_te = x_all[split.test], y_all[split.test]

    model = make_net(config, x_np.shape[1], seed).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = log_schedule(config.epochs, config.n_snapshots)
    recorder = ActivationRecorder(model, x_all, out_dir=out_dir / "activations" if config.keep_activations else None,
                                  schedule=schedule)
    layer_acts = model.layer_activations
    ests = {(name, layer): _layer_estimator(name, params, layer_acts[layer], config.unit)
            for name, params in config.estimators.items() for layer in model.layer_names
            if config.layers is None or layer in config.layers}
    table = TableWriter(out_dir / "infoplane.parquet")
    snapshots = _PlaneSnapshots(seed=seed, recorder=recorder, estimators=ests, layer_names=list(model.layer_names),
                                labels=y_np, train=(x_tr, y_tr), test=(x_te, y_te), unit=config.unit, table=table)
    return Setup(model=model, loss_fn=nn.CrossEntropyLoss(), train_data=(x_tr, y_tr), optimizer=opt,
                 epochs=config.epochs, callbacks=[snapshots], batch_size=config.batch_size,
                 checkpoint_every=schedule, shuffle_stream=_SHUFFLE_STREAM, desc=f"seed {seed}",
                 context={"table": table}, close=table.flush)


_SHUFFLE_STREAM = 1_000_003  # the minibatch order's generator: seed + 1_000_003 (as _tishby_batched)


def rows(config: Config, seed: int, setup: Setup, state: Any) -> pd.DataFrame:
    """The plane's rows of the seed, sorted by epoch, estimator and layer."""
    return setup.context["table"].frame().sort_values(["epoch", "estimator", "layer_index"]).reset_index(drop=True)


@orchestrated
def run_seeds(config: Config, seeds: list[int], out_dir: str | Path, *, progress: bool = False
              ) -> dict[int, pd.DataFrame]:
    """Several seeds trained as one batched network; ``{seed: rows}`` as :func:`run_seed` gives them.

    See :mod:`ibscope.experiments._tishby_batched` (per-seed rows equal the
    one-seed path up to floating-point reassociation; ``out_dir`` holds the
    batch's checkpoint, so an interrupted batch resumes).
    """
    from ._tishby_batched import run_seeds as batched

    return batched(config, seeds, out_dir, load_data=load_data, layer_estimator=_layer_estimator, progress=progress)


def label_entropy(config: Config) -> float:
    """H(Y) of the data set in bits (the ceiling of I(T;Y))."""
    return _entropy_bits(load_data(config)[1])


def config_from_dict(values: dict[str, Any]) -> Config:
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"Unknown setting(s) {unknown} for experiment 'tishby'. Known: {sorted(names)}.")
    return Config(**values)


# --------------------------------------------------------------------------- report hooks
# The experiment's figures and statistics (summarize, plot, and the sweep report's compression vs
# generalization section) live in ._tishby_stats, apart from the training code above.
from ._tishby_stats import compression_statistics, plot, summarize, sweep_sections  # noqa: E402

__all__ = ["NAME", "Config", "PROFILES", "DEMO_SEEDS", "PLANE_ESTIMATORS", "run_seed", "run_seeds", "build", "rows", "plot", "summarize",
           "sweep_sections", "compression_statistics", "load_data", "label_entropy", "config_from_dict"]
