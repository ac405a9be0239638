"""The information Lagrangian: information in the weights vs generalization and invariance.

One run trains an MLP on scikit-learn's digits (default) or a small CNN or MLP
on MNIST-8k/2k (through :func:`ibscope.training.fit`, SGD), then fits the diagonal Gaussian weight
noise of the information Lagrangian of Achille, Paolini and Soatto [1]_
(:func:`ibscope.weights.information_lagrangian`) on the training set at a
fixed ``beta``, and reports the KL at the fitted noise -- the information in
the weights, in bits -- with the train / test accuracy, the generalization
gap and, when the digits carry a nuisance, the information a hidden layer
keeps about it.

The noise fit is checked for convergence: its loss E_w[L(w)] and KL are
recorded at every Adam step (rows ``method="fit"``; the KL of a step is the
step's objective minus its loss, over beta), and the run is flagged
(``lagrangian_converged`` = 0) when the mean KL of the last ``converge_window``
fraction of the steps differs from that of the window before it by more than
``converge_tol`` (relative). A flagged run is reported, and statistics can
leave it out (``require`` of the ``quantity_spearman`` statistic).

Nuisances (``nuisance``), drawn once per image, seeded, for the training and
the test images alike (so training must become invariant to them):

* ``shift``: class c in 0..4 moves the 8x8 image by ``shift_pixels`` (0: none,
  1 right, 2 left, 3 down, 4 up; zero fill);
* ``noise``: class c in 0..``n_noise_levels``-1 adds Gaussian pixel noise of
  standard deviation c * ``noise_std``;
* ``none``.

I(T; nuisance) of the last hidden layer T on the (nuisance-carrying) test
images is estimated with Ross's mixed kNN estimator (``ksg`` with a discrete
nuisance, bits; zero-variance units, e.g. dead ReLUs, are dropped as they
carry no information). Achille et al. [1]_ (Sec. 5-6) argue that less
information in the weights forces representations that are more invariant
to nuisances.

Data (``dataset``): ``'digits'`` (default), the 1797 8x8 digits split
``train_fraction`` / rest (stratified, seeded by the run's seed); ``'mnist'``,
MNIST-8k/2k: the 10,000 MNIST *test* images (read from ``$IBSCOPE_DATA``, no
download) split 8,000 / 2,000 by :func:`ibscope.data.mnist_8k_2k` (stratified,
seeded by the run's seed; ``train_fraction`` does not apply), the loader of
``ib_compare``'s ``dataset: mnist``; results on it are not comparable with the
usual 60k/10k MNIST numbers. The training set is the first ``n_train`` of a
stratified seeded subset of the training pool (all of it when None); label
noise flips a fraction of the training labels only.

Models (``model``): ``'mlp'`` (default), ``depth`` hidden layers of ``width``
units; ``'cnn'``, the small CNN of ``ib_compare``'s ``model: cnn``
(:func:`ibscope.models.conv_classifier`: 3x3 stride-2 convolutions of
``cnn_channels``, then a dense layer), whose dense layer has ``width`` units --
``width`` is the CNN's dense width, not a channel multiplier (the convolutions
keep ``cnn_channels``), and ``depth`` must be 1. The hidden layer of
``i_t_nuisance`` is the last hidden layer (the CNN's dense layer, ``hidden<k>``
with k = len(cnn_channels) + 1); the per-layer information in the weights of
the CNN is named ``conv1``.., ``fc<k>`` and ``logits`` as in
:class:`ibscope.models.ConvNet`. The batched seeds (:func:`run_seeds`) train
MLPs only: with ``model: cnn`` :func:`run_seeds` trains the seeds one after
another through the one-seed path (same rows as ``--no-batch``).

Rows: seed, step, layer, quantity, value, unit, method and the settings
(width, depth, n_train, label_noise, weight_decay, nuisance, lagrangian_beta; the
``dataset`` and ``model`` are in the run's config.json, not in the rows, so the
digits tables keep their columns).
Fit rows (``method="fit"``, one per Adam step): ``lagrangian_kl`` (bits),
``lagrangian_loss`` (nats per example). Final rows (``method="final"``):
``info_weights`` (bits, total and per layer), ``expected_loss`` (nats),
``train_acc``, ``test_acc``, ``gap`` (fraction), ``train_loss``, ``test_loss``,
``loss_gap`` (nats), ``lagrangian_converged`` (0/1),
``lagrangian_kl_change`` (relative), and ``i_t_nuisance`` (bits) with a
nuisance.

References
----------
.. [1] A. Achille, G. Paolini, S. Soatto, "Where is the information in a deep
   neural network?", arXiv:1905.12213, 2019.
.. [2] B. C. Ross, "Mutual information between discrete and continuous data
   sets", PLoS ONE 9(2), e87357, 2014.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._units import nats_to
from .._validation import NONE, Interval, Options
from ..store import checked_parquet_state, write_checked_parquet
from ..training import Callback, fit
from . import (
    as_config,
    check_seeds,
    check_sizes,
    check_threads,
    orchestrated,
    settings_hash,
    validate_config,
)
from ._build import Setup

NAME = "lagrangian"

SETTINGS = ("width", "depth", "n_train", "label_noise", "weight_decay", "nuisance", "lagrangian_beta")
NUISANCES = ("none", "shift", "noise")
DATASETS = ("digits", "mnist")
MODELS = ("mlp", "cnn")
_MNIST_POOL = 8000  # MNIST-8k/2k's training images
_FEATURES = {"digits": 64, "mnist": 784}


@dataclass
class Config:
    dataset: str = "digits"           # 'digits' or 'mnist' (MNIST-8k/2k)
    model: str = "mlp"                # 'mlp' (width, depth) or 'cnn' (cnn_channels, dense layer of width units)
    cnn_channels: tuple[int, ...] = (8, 16)  # cnn: 3x3 stride-2 convolutions
    width: int = 64
    depth: int = 1
    activation: str = "relu"
    n_train: int | None = None        # training-set size (None: the whole training pool)
    train_fraction: float = 0.6       # training pool / test split of the 1797 digits
    label_noise: float = 0.0
    nuisance: str = "none"            # 'none', 'shift' or 'noise'
    shift_pixels: int = 1
    n_noise_levels: int = 3
    noise_std: float = 0.3
    epochs: int = 60
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    lagrangian_beta: float = 1e-3     # fixed across runs (about 1/n of the whole training pool)
    prior_std: float = 1.0
    lagrangian_steps: int = 400
    lagrangian_lr: float = 0.05
    lagrangian_batch_size: int = 256
    init_std: float = 1e-2
    converge_window: float = 0.1      # fraction of the steps compared at the end
    converge_tol: float = 0.02        # relative change of the mean KL between the last two windows
    mi_k: int = 3
    torch_threads: int = 1            # torch CPU threads during the run (0: leave as is); restored after

    def __post_init__(self) -> None:
        check_sizes(self.cnn_channels, "cnn_channels", "lagrangian")  # before the coercion: 2.5 is refused
        self.cnn_channels = tuple(int(c) for c in self.cnn_channels)  # a YAML / JSON list as a tuple

    def validate(self) -> None:
        """Raise a ValueError naming the first bad setting (called by the runner before any work)."""
        from ..models import ACTIVATIONS

        validate_config(self, {**_CONSTRAINTS, "activation": [Options(tuple(ACTIVATIONS))]}, "lagrangian")
        check_sizes(self.cnn_channels, "cnn_channels", "lagrangian")
        pool = _pool(self)
        if self.n_train is not None and self.n_train > pool:
            where = (f"digits at train_fraction={self.train_fraction}" if self.dataset == "digits"
                     else "images of MNIST-8k/2k")
            raise ValueError(f"'n_train' = {self.n_train} exceeds the training pool ({pool} {where}).")
        if self.model == "cnn" and self.depth != 1:
            raise ValueError(f"The 'depth' of lagrangian is {self.depth}, but model 'cnn' has one dense layer "
                             "(its depth is set by 'cnn_channels'): set depth = 1.")
        if int(self.converge_window * self.lagrangian_steps) < 1:
            raise ValueError(f"'converge_window' * 'lagrangian_steps' must be >= 1 step; got "
                             f"{self.converge_window} * {self.lagrangian_steps}.")
        check_threads(self.torch_threads)


_POSITIVE_FLOAT = [Interval(float, 0, None, closed="neither")]
_CONSTRAINTS: dict[str, list] = {
    "dataset": [Options(DATASETS)], "model": [Options(MODELS)],
    "nuisance": [Options(NUISANCES)],
    **{k: [Interval(int, 1, None)] for k in ("width", "depth", "epochs", "batch_size", "lagrangian_steps",
                                             "lagrangian_batch_size", "mi_k")},
    "shift_pixels": [Interval(int, 1, 3)],  # 8x8 images
    "n_noise_levels": [Interval(int, 2, None)],
    "n_train": [Interval(int, 20, None), NONE],
    "label_noise": [Interval(float, 0, 0.9, closed="left")],
    "train_fraction": [Interval(float, 0.1, 0.9)],
    **{k: _POSITIVE_FLOAT for k in ("lr", "lagrangian_beta", "prior_std", "lagrangian_lr", "init_std", "noise_std",
                                    "converge_tol")},
    "momentum": [Interval(float, 0, 1, closed="left")],
    "weight_decay": [Interval(float, 0, None)],
    "converge_window": [Interval(float, 0, 0.5, closed="right")],
}


PROFILES: dict[str, dict[str, Any]] = {
    "test": {"width": 16, "epochs": 2, "n_train": 200, "lagrangian_steps": 40, "batch_size": 50},
    "demo": {"nuisance": "shift"},
    # MNIST-8k/2k with the small CNN (the claims achille-iw-*-mnist): 15 epochs of SGD, beta about 1/8000
    "mnist_cnn": {"dataset": "mnist", "model": "cnn", "cnn_channels": (8, 16), "width": 128, "epochs": 15,
                  "lagrangian_beta": 1.25e-4, "lagrangian_steps": 300},
}


def _config(config: Any) -> Config:
    return as_config(config, Config, "lagrangian")


def _pool(cfg: Config) -> int:
    """Images in the training pool before the ``n_train`` subset."""
    return round(1797 * cfg.train_fraction) if cfg.dataset == "digits" else _MNIST_POOL


def shift_images(x: np.ndarray, classes: np.ndarray, pixels: int) -> np.ndarray:
    """Move each square image (rows of ``x``, (n, side * side): 8x8 digits, 28x28 MNIST) by
    ``pixels`` with zero fill: class 0 none, 1 right, 2 left, 3 down, 4 up."""
    import math

    x = np.asarray(x)
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
        raise ValueError(f"shift_images needs square images; 'x' has {x.shape[1]} features per row.")
    img = x.reshape(-1, side, side)
    out = np.zeros_like(img)
    p = int(pixels)
    moves = {0: (slice(None), slice(None), slice(None), slice(None)),
             1: (slice(None), slice(p, None), slice(None), slice(None, -p)),
             2: (slice(None), slice(None, -p), slice(None), slice(p, None)),
             3: (slice(p, None), slice(None), slice(None, -p), slice(None)),
             4: (slice(None, -p), slice(None), slice(p, None), slice(None))}
    for c, (dr, dc, sr, sc) in moves.items():
        idx = np.flatnonzero(classes == c)
        out[idx, dr, dc] = img[idx, sr, sc]
    return out.reshape(-1, side * side)


def add_nuisance(x: np.ndarray, cfg: Config, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The images with their nuisance and the nuisance classes (int64; zeros for 'none')."""
    rng = np.random.default_rng(seed)
    if cfg.nuisance == "none":
        return x, np.zeros(len(x), dtype=np.int64)
    if cfg.nuisance == "shift":
        c = rng.integers(0, 5, size=len(x))
        return shift_images(x, c, cfg.shift_pixels).astype(np.float32), c.astype(np.int64)
    c = rng.integers(0, cfg.n_noise_levels, size=len(x))
    noisy = x + (c * cfg.noise_std)[:, None] * rng.standard_normal(x.shape)
    return noisy.astype(np.float32), c.astype(np.int64)


def _load(cfg: Config, seed: int) -> dict[str, np.ndarray]:
    from ..data import add_label_noise, load_digits_dataset, mnist_8k_2k, train_test_split

    if cfg.dataset == "mnist":
        m = mnist_8k_2k(seed=seed)
        xp, yp, xt, yt = m["x_train"], m["y_train"], m["x_test"], m["y_test"]
    else:
        x, y = load_digits_dataset()
        sp = train_test_split(len(y), train_fraction=cfg.train_fraction, seed=seed, stratify=y)
        xp, yp, xt, yt = x[sp.train], y[sp.train], x[sp.test], y[sp.test]
    if cfg.n_train is not None and cfg.n_train < len(yp):
        sub = train_test_split(len(yp), train_fraction=cfg.n_train / len(yp), seed=seed + 1, stratify=yp)
        xp, yp = xp[sub.train], yp[sub.train]
    if cfg.label_noise > 0:
        yp = add_label_noise(yp, cfg.label_noise, n_classes=10, seed=seed + 2)
    xp, cp = add_nuisance(xp, cfg, seed + 3)
    xt, ct = add_nuisance(xt, cfg, seed + 4)
    return {"x_train": xp, "y_train": yp, "c_train": cp, "x_test": xt, "y_test": yt, "c_test": ct}


def _model(cfg: Config, seed: int) -> nn.Module:
    from ..models import MLP, conv_classifier

    if cfg.model == "cnn":
        return conv_classifier(_FEATURES[cfg.dataset], cfg.cnn_channels, cfg.width, 10, activation=cfg.activation,
                               seed=seed, owner="lagrangian")
    init = "xavier" if cfg.activation in ("tanh", "sigmoid", "linear") else "he"
    return MLP(_FEATURES[cfg.dataset], (cfg.width,) * cfg.depth, 10, activation=cfg.activation, init=init,
               seed=seed)


def _last_hidden(cfg: Config, model: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of the last hidden layer's activation: the MLP's ``hidden<depth>``, the CNN's dense one."""
    if cfg.model == "cnn":
        return f"hidden{len(cfg.cnn_channels) + 1}", model[-2]
    return f"hidden{cfg.depth}", getattr(model, f"hidden{cfg.depth}")


def _layer_names(cfg: Config, model: nn.Module) -> dict[str, str]:
    """The CNN's module names (Sequential indices) as ConvNet names them: conv1.., fc<k>, logits."""
    if cfg.model != "cnn":
        return {}
    names, conv = {}, 0
    linear = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    for i, m in enumerate(model):
        if isinstance(m, nn.Conv2d):
            conv += 1
            names[str(i)] = f"conv{conv}"
        elif isinstance(m, nn.Linear):
            names[str(i)] = "logits" if i == linear[-1] else f"fc{len(cfg.cnn_channels) + 1}"
    return names


def fit_converged(kl: np.ndarray, window: float, tol: float) -> tuple[bool, float]:
    """(converged, relative change): mean KL of the last ``window`` fraction of the steps vs the window before."""
    kl = np.asarray(kl, dtype=float)
    w = max(1, int(window * kl.size))
    if kl.size < 2 * w:
        return False, float("nan")
    last, before = kl[-w:].mean(), kl[-2 * w:-w].mean()
    change = abs(last - before) / max(abs(last), 1e-12)
    return bool(change <= tol), float(change)


def run_seed(config: Any, seed: int, out_dir: Any, *, progress: bool = False) -> pd.DataFrame:
    """Train one seed, fit the Lagrangian's weight noise, measure; resumable from ``out_dir``.

    The runner's per-seed path (:func:`ibscope.experiments.train_seed`):
    :func:`build`, fit (threads and device are the runner's), :func:`rows`.
    ``out_dir`` (the runner's ``seed_<s>/``) holds the training checkpoint in
    ``lagrangian_seed<s>.ckpt/`` (named by the seed, so seeds may share a
    folder); the runner keeps the finished rows.
    """
    from ._build import train_seed

    return train_seed(sys.modules[__name__], _config(config), seed, out_dir, progress=progress)


def build(config: Config, seed: int, out_dir: Path) -> Setup:
    """The seed's training: ``torch.manual_seed(seed)``, its data (label noise, nuisance), the network, SGD.

    The checkpoint (every quarter of the epochs) is keyed by the runner's
    settings hash (a checkpoint of other settings is refused).
    """
    cfg = config
    torch.manual_seed(seed)
    d = _load(cfg, seed)
    x, y = torch.as_tensor(d["x_train"]), torch.as_tensor(d["y_train"])
    model = _model(cfg, seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return Setup(model=model, loss_fn=nn.CrossEntropyLoss(), train_data=(x, y), optimizer=opt, epochs=cfg.epochs,
                 callbacks=[_SettingsKey(cfg)], batch_size=cfg.batch_size, checkpoint=f"lagrangian_seed{seed}.ckpt",
                 checkpoint_every=max(1, cfg.epochs // 4), desc=f"lagrangian seed {seed}", context={"data": d})


def rows(config: Config, seed: int, setup: Setup, state: Any) -> pd.DataFrame:
    """The trained seed's rows (:func:`measure`)."""
    return measure(config, seed, setup.model, setup.context["data"])


@orchestrated
def run_seeds(config: Any, seeds: list[int], out_dir: Any, *, progress: bool = False) -> dict[int, pd.DataFrame]:
    """Several seeds trained as one batched network; ``{seed: rows}`` as :func:`run_seed` gives them.

    See the batched-seeds section at the end of this module (rows equal the
    one-seed path up to floating-point reassociation; ``out_dir`` holds the
    batch's checkpoint and measured seeds, so an interrupted batch resumes).
    The batched network is an MLP: with ``model: cnn`` the seeds are trained
    one after another through the one-seed path (``out_dir/seed_<s>/``).
    """
    return _run_batched(_config(config), check_seeds(seeds), Path(out_dir), progress=progress)


def _loss_and_acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        out = model(x)
        return float(nn.functional.cross_entropy(out, y)), float((out.argmax(1) == y).double().mean())


def _hidden(model: nn.Module, x: torch.Tensor, module: nn.Module) -> np.ndarray:
    got: list[torch.Tensor] = []
    h = module.register_forward_hook(lambda m, a, o: got.append(o.detach()))
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return got[0].double().numpy()


def nuisance_information(t: np.ndarray, c: np.ndarray, k: int = 3, seed: int = 0) -> float:
    """I(T; C) in bits for continuous T (n, d) and discrete C (Ross's kNN estimator, ``ksg``).

    Zero-variance columns of T (dead units) are dropped; with none left the
    answer is 0 bits (a constant carries no information)."""
    from ..estimators import get

    t = np.asarray(t, dtype=float)
    keep = t.std(axis=0) > 1e-12
    if not keep.any():
        return 0.0
    est = get("ksg", k=k, noise=1e-6, seed=seed)
    return float(est.estimate(t[:, keep], np.asarray(c), discrete_y=True))


def lagrangian_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: Config,
                   seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """Fit the information Lagrangian's noise on (x, y): (result, KL per step in bits, loss per step in nats).

    The loss of each Adam step is recorded through the loss function that
    :func:`ibscope.weights.information_lagrangian` calls (once per step), and
    the step's KL is its objective minus that loss, over beta (the KL at the
    log-variances before the step's update).
    """
    from ..weights import information_lagrangian

    cfg = _config(cfg)
    losses: list[float] = []
    ce = nn.CrossEntropyLoss(reduction="none")

    def loss_fn(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per = ce(outputs, target)
        losses.append(float(per.detach().mean()))
        return per

    bs = cfg.lagrangian_batch_size
    data = [(x[i:i + bs], y[i:i + bs]) for i in range(0, x.shape[0], bs)]
    res = information_lagrangian(model, loss_fn, data, cfg.lagrangian_beta, prior_std=cfg.prior_std,
                                 steps=cfg.lagrangian_steps, lr=cfg.lagrangian_lr, init_std=cfg.init_std,
                                 seed=seed, unit="bits")
    obj = np.asarray(res.history, dtype=float)
    loss = np.asarray(losses, dtype=float)
    if loss.size != obj.size:  # information_lagrangian calls the loss once per step (n_mc = 1)
        raise RuntimeError(f"The noise fit called the loss {loss.size} times in {obj.size} steps.")
    return res, nats_to((obj - loss) / cfg.lagrangian_beta, "bits"), loss


class _SettingsKey(Callback):
    """Keys fit's checkpoint by the runner's settings hash: a checkpoint of other settings is refused."""

    def __init__(self, cfg: Config):
        self.key = settings_hash(cfg)

    def state_dict(self) -> dict[str, Any]:
        return {"settings_hash": self.key}

    def load_state_dict(self, s: Any) -> None:
        if s.get("settings_hash") != self.key:
            raise ValueError("The lagrangian checkpoint belongs to another configuration; delete it or use "
                             "another out_dir.")


def measure(cfg: Config, seed: int, model: nn.Module, d: dict[str, np.ndarray]) -> pd.DataFrame:
    """A trained seed's rows: the Lagrangian's noise fit, the information in the weights, the
    accuracies and gaps, and I(T; nuisance) (``d`` is the seed's ``_load``)."""
    x, y = torch.as_tensor(d["x_train"]), torch.as_tensor(d["y_train"])
    xt, yt = torch.as_tensor(d["x_test"]), torch.as_tensor(d["y_test"])
    settings = {k: getattr(cfg, k) for k in SETTINGS}
    settings["n_train"] = int(x.shape[0])

    def row(step: int, layer: str, quantity: str, value: float, unit: str, method: str) -> dict[str, Any]:
        return {"seed": seed, "step": int(step), "layer": layer, "quantity": quantity, "value": float(value),
                "unit": unit, "method": method, **settings}

    res, kl_bits, loss = lagrangian_fit(model, x, y, cfg, seed)
    rows = []
    for s in range(kl_bits.size):
        rows.append(row(s, "total", "lagrangian_kl", kl_bits[s], "bits", "fit"))
        rows.append(row(s, "total", "lagrangian_loss", loss[s], "nats", "fit"))
    converged, change = fit_converged(kl_bits, cfg.converge_window, cfg.converge_tol)
    last = kl_bits.size
    rows.append(row(last, "total", "info_weights", res.total, res.unit, "final"))
    names = _layer_names(cfg, model)
    for layer, v in res.per_layer.items():
        rows.append(row(last, names.get(layer, layer), "info_weights", v, res.unit, "final"))
    rows.append(row(last, "total", "expected_loss", res.expected_loss, "nats", "final"))
    rows.append(row(last, "total", "lagrangian_converged", float(converged), "bool", "final"))
    rows.append(row(last, "total", "lagrangian_kl_change", change, "fraction", "final"))
    tr_loss, tr_acc = _loss_and_acc(model, x, y)
    te_loss, te_acc = _loss_and_acc(model, xt, yt)
    for q, v, u in (("train_acc", tr_acc, "fraction"), ("test_acc", te_acc, "fraction"),
                    ("gap", tr_acc - te_acc, "fraction"), ("train_loss", tr_loss, "nats"),
                    ("test_loss", te_loss, "nats"), ("loss_gap", te_loss - tr_loss, "nats")):
        rows.append(row(last, "total", q, v, u, "final"))
    if cfg.nuisance != "none":
        layer, module = _last_hidden(cfg, model)
        t = _hidden(model, xt, module)
        rows.append(row(last, layer, "i_t_nuisance", nuisance_information(t, d["c_test"], cfg.mi_k, seed),
                        "bits", "final"))
    return pd.DataFrame(rows)


def _varied(results: pd.DataFrame) -> list[str]:
    return [k for k in SETTINGS if k in results and results[k].nunique() > 1]


def _final_wide(results: pd.DataFrame) -> pd.DataFrame:
    fin = results[(results.method == "final") & (results.layer.isin(["total"]) | (results.quantity == "i_t_nuisance"))]
    keys = [k for k in SETTINGS if k in fin]
    return fin.pivot_table(index=[*keys, "seed"], columns="quantity", values="value").reset_index()


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per setting: mean over seeds of the information in the weights, gap, accuracies,
    I(T; nuisance), and how many seeds' noise fits converged."""
    wide = _final_wide(results)
    keys = [k for k in SETTINGS if k in wide]
    agg = wide.groupby(keys, dropna=False).mean(numeric_only=True).drop(columns="seed")
    agg["n_seeds"] = wide.groupby(keys, dropna=False).size()
    agg["n_converged"] = wide.groupby(keys, dropna=False)["lagrangian_converged"].sum()
    return agg.drop(columns=["lagrangian_converged"]).reset_index()


def plot(results: pd.DataFrame, out_dir: Any) -> list[Path]:
    """The noise fit (KL and loss per step, non-converged fits dashed), and the information in
    the weights against the generalization gap and against I(T; nuisance)."""
    from scipy import stats

    from ..plots import pyplot, save_figure

    plt = pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    varied = _varied(results) or ["width"]
    wide = _final_wide(results)
    conv = {tuple(r[[*varied, "seed"]]): bool(r.lagrangian_converged) for _, r in wide.iterrows()}
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    fitrows = results[results.method == "fit"]
    colors = {}
    for key, g in fitrows.groupby([*varied, "seed"]):
        label = ",".join(str(k) for k in key[:-1])
        first = label not in colors
        color = colors.setdefault(label, f"C{len(colors) % 10}")
        ls = "-" if conv.get(tuple(key), True) else "--"
        for ax, q in zip(axes, ("lagrangian_kl", "lagrangian_loss"), strict=True):
            s = g[g.quantity == q].sort_values("step")
            ax.plot(s.step, s.value, ls, color=color, lw=0.8, alpha=0.7,
                    label=label if (first and q == "lagrangian_loss") else None)
    n_bad = int((~wide.lagrangian_converged.astype(bool)).sum())
    axes[0].set_ylabel("KL(N(w*, Sigma) || prior) (bits)")
    axes[1].set_ylabel("E_w[L(w)] (nats per example)")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("noise-fit step")
    axes[1].legend(fontsize=7, title=",".join(varied), title_fontsize=7, loc="lower right")
    fig.suptitle(f"Information Lagrangian fits ({n_bad} of {len(wide)} not converged, dashed)", fontsize=10)
    paths.append(save_figure(fig, out / "lagrangian_fit.png", dpi=120))
    pairs = [("gap", "generalization gap (train - test accuracy)")]
    if "i_t_nuisance" in wide:
        pairs.append(("i_t_nuisance", "I(T; nuisance) (bits)"))
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4), squeeze=False)
    for ax, (q, label) in zip(axes[0], pairs, strict=True):
        for i, (key, g) in enumerate(wide.groupby(varied)):
            ax.scatter(g.info_weights, g[q], s=14, color=f"C{i % 10}",
                       label=",".join(str(k) for k in (key if isinstance(key, tuple) else (key,))))
        ok = wide[[q, "info_weights"]].dropna()
        rho = stats.spearmanr(ok.info_weights, ok[q]).statistic if len(ok) >= 3 else float("nan")
        ax.set_xlabel("information in the weights (bits)")
        ax.set_ylabel(label)
        ax.set_title(f"Spearman rho over runs {rho:.2f} (n={len(ok)})", fontsize=9)
        ax.legend(fontsize=7, title=",".join(varied), title_fontsize=7)
    paths.append(save_figure(fig, out / "lagrangian_vs_gap.png", dpi=120))
    return paths


# --------------------------------------------------------------------------- batched seeds
# run_seeds trains the seeds of one configuration as one BatchedMLP through fit. Each seed keeps
# what run_seed gives it alone: its data (split, subset, label noise, nuisance), initialization
# (_model(cfg, seed)) and minibatch order (SeedBatches draws what fit's TensorBatches with `seed`
# draws). The training loss is the sum of the seeds' mean cross entropies, so SGD with momentum
# and weight decay (element-wise) takes for each seed the step it takes alone. Each trained seed
# is then unbatched and measured by measure(), as in run_seed (the noise fit is not batched), so
# its rows equal run_seed's up to floating-point reassociation in the batched products (tested).
# Resume: out_dir holds fit's checkpoint and every measured seed's rows (seed_<s>.parquet,
# written atomically): a crashed batch neither retrains nor re-measures what it finished.


def _run_batched(cfg: Any, seeds: list[int], out: Path, *, progress: bool) -> dict[int, pd.DataFrame]:
    from ..models import BatchedMLP, SeedBatches, batched_cross_entropy

    out.mkdir(parents=True, exist_ok=True)
    key = {"settings_hash": settings_hash(cfg)}  # an intermediate file of another configuration is refused
    done: dict[int, pd.DataFrame] = {}
    for s in seeds:
        path = out / f"seed_{s}.parquet"
        state, reason = checked_parquet_state(path, expect=key)
        if state == "other":
            raise ValueError(f"'{path}' belongs to another configuration; delete it or use another out_dir.")
        if state == "damaged":
            import warnings

            warnings.warn(f"The measured seed '{path}' of an interrupted batch is damaged ({reason}); "
                          f"measuring that seed again.", stacklevel=2)
        if state == "ok":
            done[s] = pd.read_parquet(path)
    if len(done) == len(seeds):
        return done
    from ._build import train_seed

    if cfg.model == "cnn":  # BatchedMLP batches MLPs only: the one-seed path, seed after seed
        return {s: train_seed(sys.modules[__name__], cfg, s, out / f"seed_{s}", progress=progress) for s in seeds}
    data = [_load(cfg, s) for s in seeds]
    if any(d["x_train"].shape != data[0]["x_train"].shape for d in data):  # not for digits: equal splits
        return {s: train_seed(sys.modules[__name__], cfg, s, out / f"seed_{s}", progress=progress) for s in seeds}
    xs = torch.stack([torch.as_tensor(d["x_train"]) for d in data])
    ys = torch.stack([torch.as_tensor(d["y_train"]) for d in data])
    model = BatchedMLP([_model(cfg, s) for s in seeds])
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    fit(model, batched_cross_entropy, SeedBatches(xs, ys, cfg.batch_size, seeds), opt, epochs=cfg.epochs, checkpoint_dir=out,
        checkpoint_every=max(1, cfg.epochs // 4), progress=progress, desc=f"lagrangian {len(seeds)} seeds")
    for i, (s, d) in enumerate(zip(seeds, data, strict=True)):
        if s not in done:
            torch.manual_seed(s)  # as the one-seed path seeds torch's global generator for its seed
            done[s] = measure(cfg, s, model.unbatch(i), d)
            write_checked_parquet(out / f"seed_{s}.parquet", done[s], key)
    return {s: done[s] for s in seeds}


__all__ = ["NAME", "Config", "DATASETS", "MODELS", "PROFILES", "run_seed", "run_seeds", "plot", "summarize", "add_nuisance", "shift_images",
           "fit_converged", "lagrangian_fit", "nuisance_information"]
