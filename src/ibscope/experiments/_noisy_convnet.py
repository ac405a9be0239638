"""The information plane of a noisy conv net on MNIST-8k/2k (Butakov et al. 2024, Sec. 6).

A stochastic network (Goldfeld et al. 2019): ibscope's :class:`~ibscope.models.ConvNet`
(conv 8-16-32, 3x3 stride 2, then a dense layer of 32 units and 10 logits;
LeakyReLU) with Gaussian noise added to every hidden activation
(:class:`~ibscope.models.GaussianNoise`: ``additive`` t + N(0, std^2 I),
Goldfeld et al., or ``multiplicative`` t + std |t| N(0, I), as in the
authors' code), in training and while the layers are recorded. The noise
makes I(X;T) finite; the recorded layer T is the noisy activation (the
softmax output is a function of the noisy last hidden layer).

Training: cross-entropy, Adam, on the 8,000 training images of
:func:`ibscope.data.mnist_8k_2k` (the 10,000 MNIST test images split 8k/2k;
``data_dir`` or ``$IBSCOPE_DATA``, a clear FileNotFoundError when the files
are missing), through :func:`ibscope.training.fit` with an
:class:`ibscope.tracking.InformationPlane` callback at log-spaced epochs
(0 = initialization). Both coordinates are estimated on ``n_eval`` training
images (a fixed seeded subset) by lossy compression + KSG: each variable (the
images X, each layer T) is compressed to ``dim`` dimensions (``autoencoder``
by default, or ``pca``) and I(X;T), I(T;Y) are KSG estimates on the codes
(labels are never compressed). As in the paper, each variable is compressed
once per snapshot and its code serves both estimates (X, the same images at
every snapshot, once per run): :class:`CodesOnce` is
:class:`~ibscope.estimators.Compressed` with a memo of the codes keyed by the
variable's content.

Rows: the information-plane table (epoch, layer, layer_index, estimator,
i_xt, i_ty, unit, ...; bits by default) with the training metrics of each
snapshot (train_loss, eval_loss, eval_acc on the 2,000 held-out images), plus
seed and the noise settings. Resumable: fit's checkpoints and the plane's
table live in ``out_dir``. The seed is declared (:func:`build` gives the
:class:`~ibscope.experiments.Setup`, :func:`rows` the table) and trained by
the runner (:func:`ibscope.experiments.train_seed`).

Registry name ``noisy_convnet`` (module ``_noisy_convnet``).

References
----------
.. [1] I. Butakov et al., "Information bottleneck analysis of deep neural
   networks via lossy compression", ICLR 2024.
.. [2] Z. Goldfeld et al., "Estimating information flow in deep neural
   networks", ICML 2019.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import NONE, InstanceOf, Interval, Options
from ..estimators._compressed import Compressed
from ..models import ConvNet, GaussianNoise
from . import as_config, check_device, check_sizes, validate_config
from ._build import Setup

NAME = "noisy_convnet"
COMPRESSIONS = ("autoencoder", "pca")
NOISE_MODES = ("additive", "multiplicative")


@dataclass
class Config:
    data_dir: str | None = None          # MNIST IDX files; default ibscope.data.data_dir() ($IBSCOPE_DATA)
    split_seed: int = 0                  # the 8k/2k split (and the evaluation subset)
    channels: tuple[int, ...] = (8, 16, 32)
    dense: int = 32
    activation: str = "leaky_relu"
    noise_std: float = 1e-3              # paper: 1e-3
    noise_mode: str = "additive"
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3                     # Adam
    n_snapshots: int = 12                # log-spaced epochs of [0, epochs], 0 and the last included
    n_eval: int = 2000                   # training images on which the plane is estimated
    compression: str = "autoencoder"
    dim: int = 4                         # code dimension of X and of every layer
    k: int = 3                           # KSG neighbours
    ae_epochs: int = 20
    ae_hidden: tuple[int, ...] = (128, 64)
    max_features: int | None = 4096      # wider layers are randomly projected while recorded
    unit: str = "bits"
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_sizes(self.channels, "channels", "noisy_convnet")  # before the coercion: 2.5 or "a" is refused, not cast
        self.channels = tuple(int(c) for c in self.channels)
        check_sizes(self.ae_hidden, "ae_hidden", "noisy_convnet")  # before the coercion: 2.5 or "a" is refused, not cast
        self.ae_hidden = tuple(int(h) for h in self.ae_hidden)
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad setting."""
        from ..models import ACTIVATIONS

        constraints = {**_CONSTRAINTS, "activation": [Options(tuple(ACTIVATIONS))],
                       "max_features": [Interval(int, (self.dim if isinstance(self.dim, int) else 1) + 1, None),
                                        NONE]}
        validate_config(self, constraints, "noisy_convnet")
        check_sizes(self.channels, "channels", "noisy_convnet")
        check_sizes(self.ae_hidden, "ae_hidden", "noisy_convnet")
        if self.k >= self.n_eval:
            raise ValueError(f"The 'k' of noisy_convnet must be below 'n_eval' ({self.n_eval}). Got {self.k!r}.")
        check_device(self.device)


_CONSTRAINTS: dict[str, list] = {
    "data_dir": [InstanceOf((str,), "a path (str)"), NONE],
    **{k: [Interval(int, 1, None)] for k in ("dense", "epochs", "batch_size", "dim", "k", "ae_epochs")},
    "split_seed": [Interval(int, 0, None)], "n_snapshots": [Interval(int, 2, None)],
    "n_eval": [Interval(int, 20, None)],
    "noise_std": [Interval(float, 0, None, closed="neither")],  # the noise makes I(X;T) finite
    "noise_mode": [Options(NOISE_MODES)], "compression": [Options(COMPRESSIONS)],
    "lr": [Interval(float, 0, None, closed="neither")], "unit": [Options(("bits", "nats"))],
}

PROFILES: dict[str, dict[str, Any]] = {
    "test": {"channels": (2, 4), "dense": 8, "epochs": 2, "n_snapshots": 2, "n_eval": 100, "ae_epochs": 2,
             "ae_hidden": (16,), "batch_size": 500},
    "default": {},
}


class NoisyConvNet(ConvNet):
    """:class:`~ibscope.models.ConvNet` whose hidden layers ``hidden1..`` output activation + Gaussian noise.

    Each hidden module becomes ``Sequential(activation, GaussianNoise(std, mode, in_eval=True))``,
    so recording ``hidden{i}`` records the noisy activation.
    """

    def __init__(self, *, noise_std: float, noise_mode: str = "additive", **kwargs: Any):
        super().__init__(**kwargs)
        for name in self.layer_names[:-1]:
            setattr(self, name, nn.Sequential(getattr(self, name), GaussianNoise(noise_std, noise_mode, True)))


class CodesOnce(Compressed):
    """:class:`~ibscope.estimators.Compressed` that compresses each distinct variable once.

    The codes of a variable are kept (keyed by a hash of its values, shape
    and target dimension; the last ``memo`` variables), so I(X;T) and
    I(T;Y) of a snapshot share the code of T, and the fixed inputs X are
    compressed once per run. The value is the one ``Compressed`` gives with
    the first role's compression seed.
    """

    memo = 3

    def _compress(self, a: Any, dim: Any, discrete: bool, which: str) -> Any:
        if dim is None or discrete:
            return super()._compress(a, dim, discrete, which)
        arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        key = (hashlib.blake2b(np.ascontiguousarray(arr).tobytes(), digest_size=16).hexdigest(), arr.shape,
               arr.dtype.str, dim)
        cache: OrderedDict = self.__dict__.setdefault("_codes", OrderedDict())
        if key in cache:
            cache.move_to_end(key)
            codes, info = cache[key]
            self.compression_[which] = info
            return codes
        codes = super()._compress(a, dim, discrete, which)
        cache[key] = (codes, self.compression_[which])
        while len(cache) > self.memo:
            cache.popitem(last=False)
        return codes


def estimator_label(cfg: Config) -> str:
    return f"{cfg.compression}+ksg"


def _data(cfg: Config) -> dict[str, np.ndarray]:
    from ..data import data_dir, mnist_8k_2k

    try:
        return mnist_8k_2k(cfg.data_dir if cfg.data_dir is not None else data_dir(), seed=cfg.split_seed)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"noisy_convnet needs the MNIST test images (t10k-*-idx*-ubyte[.gz]) under "
                                f"<data>/mnist: set the config's 'data_dir' or IBSCOPE_DATA. ({e})") from None


def run_seed(config: Config, seed: int, out_dir: str | Path, *, progress: bool = False) -> pd.DataFrame:
    """Train one noisy conv net (one seed) with its information plane; rows: the plane's table.

    The runner's per-seed path (:func:`ibscope.experiments.train_seed`):
    :func:`build`, fit with the checkpoint in ``out_dir`` (the runner's
    ``seed_<s>/``, which also holds the plane's snapshots, so an interrupted
    seed resumes), then :func:`rows`; the runner keeps the finished rows.
    """
    from ._build import train_seed

    return train_seed(sys.modules[__name__], as_config(config, Config, "noisy_convnet"), seed, out_dir,
                      progress=progress)


def build(config: Config, seed: int, out_dir: Path) -> Setup:
    """The seed's training: the noisy conv net, Adam, the 8k training images, the plane callback.

    The model is initialized from ``seed`` after ``torch.manual_seed(seed)``
    (the noise draws follow torch's global RNG, checkpointed by fit); the
    plane is estimated on ``n_eval`` training images (a fixed subset drawn
    from ``split_seed``) at log-spaced epochs, its snapshots under
    ``out_dir/plane``; the 2,000 held-out images are fit's evaluation data.
    """
    from ..tracking import InformationPlane, log_schedule

    cfg = config
    d = _data(cfg)
    x_tr, y_tr = torch.as_tensor(d["x_train"]), torch.as_tensor(d["y_train"])
    x_te, y_te = torch.as_tensor(d["x_test"]), torch.as_tensor(d["y_test"])
    pick = np.sort(np.random.default_rng(cfg.split_seed).choice(len(y_tr), size=min(cfg.n_eval, len(y_tr)),
                                                                  replace=False))
    x_ev, y_ev = x_tr[pick], y_tr[pick]
    torch.manual_seed(seed)  # the noise draws follow torch's global RNG (checkpointed by fit)
    model = NoisyConvNet(noise_std=float(cfg.noise_std), noise_mode=cfg.noise_mode, channels=cfg.channels,
                         dense=cfg.dense, activation=cfg.activation, seed=seed).to(torch.device(cfg.device))
    params: dict[str, Any] = {"estimator": "ksg", "estimator_params": {"k": cfg.k}, "compression": cfg.compression,
                              "dim_x": cfg.dim, "dim_y": cfg.dim, "seed": seed, "unit": cfg.unit}
    if cfg.compression == "autoencoder":
        params.update(epochs=cfg.ae_epochs, hidden=cfg.ae_hidden)
    est = CodesOnce(**params)
    schedule = log_schedule(cfg.epochs, cfg.n_snapshots)
    plane = InformationPlane(model, x_ev, y_ev.numpy(), estimators={estimator_label(cfg): est}, schedule=schedule,
                             out_dir=Path(out_dir) / "plane", unit=cfg.unit, max_features=cfg.max_features,
                             seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return Setup(model=model, loss_fn=nn.CrossEntropyLoss(), train_data=(x_tr, y_tr), optimizer=opt,
                 epochs=cfg.epochs, callbacks=[plane], batch_size=cfg.batch_size, eval_data=(x_te, y_te),
                 checkpoint_every=[e for e in schedule if e > 0], desc=f"noisy convnet seed {seed}",
                 context={"plane": plane, "n_eval": len(pick)})


def rows(config: Config, seed: int, setup: Setup, state: Any) -> pd.DataFrame:
    """The plane's table (one row per snapshot epoch and layer) with the seed and the noise settings."""
    df = setup.context["plane"].results()
    df.insert(0, "experiment", NAME)
    df["seed"] = seed
    df["noise_std"] = float(config.noise_std)
    df["noise_mode"] = config.noise_mode
    df["compression"] = config.compression
    df["n_eval"] = setup.context["n_eval"]
    return df


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per layer: I(X;T) and I(T;Y) at the first and last snapshot and at their peaks (means over seeds, 95% t)."""
    from .._intervals import mean_interval

    if results.empty:
        return pd.DataFrame()
    rows = []
    for (seed, est, layer), g in results.groupby(["seed", "estimator", "layer"], sort=True):
        g = g.sort_values("epoch")
        rows.append({"seed": seed, "estimator": est, "layer": layer, "layer_index": int(g["layer_index"].iloc[0]),
                     "unit": g["unit"].iloc[0], "i_xt_first": g["i_xt"].iloc[0], "i_xt_peak": g["i_xt"].max(),
                     "i_xt_last": g["i_xt"].iloc[-1], "i_ty_first": g["i_ty"].iloc[0],
                     "i_ty_peak": g["i_ty"].max(), "i_ty_last": g["i_ty"].iloc[-1],
                     "eval_acc_last": g["eval_acc"].iloc[-1] if "eval_acc" in g else math.nan})
    per = pd.DataFrame(rows)
    values = ["i_xt_first", "i_xt_peak", "i_xt_last", "i_ty_first", "i_ty_peak", "i_ty_last", "eval_acc_last"]
    s = mean_interval(per, ["estimator", "layer_index", "layer", "unit"], values)
    return s.rename(columns={"n": "seeds"})


def plot(results: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """The information plane (mean over seeds per layer and epoch, colour = epoch) and I(T;Y), I(X;T) vs epoch."""
    from ..plots import pyplot, save_figure

    plt = pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if results.empty:
        return []
    unit = str(results["unit"].iloc[0])
    m = results.groupby(["layer_index", "layer", "epoch"], sort=True)[["i_xt", "i_ty"]].mean().reset_index()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for (_, layer), g in m.groupby(["layer_index", "layer"], sort=True):
        axes[0].plot(g["i_xt"], g["i_ty"], marker="o", markersize=3, label=layer)
        axes[1].plot(g["epoch"].clip(lower=0.5), g["i_xt"], marker="o", markersize=3, label=layer)
        axes[2].plot(g["epoch"].clip(lower=0.5), g["i_ty"], marker="o", markersize=3, label=layer)
    axes[0].set_xlabel(f"I(X;T) ({unit})")
    axes[0].set_ylabel(f"I(T;Y) ({unit})")
    axes[0].set_title("information plane (mean over seeds)")
    for ax, what in ((axes[1], "I(X;T)"), (axes[2], "I(T;Y)")):
        ax.set_xscale("log")
        ax.set_xlabel("epoch (0 shown at 0.5)")
        ax.set_ylabel(f"{what} ({unit})")
    axes[0].legend(fontsize=8)
    return [save_figure(fig, out / "noisy_convnet.png", dpi=120)]
