"""CS-IB (Yu et al. 2024) against plain MSE and a VIB-style regressor: test RMSE.

Data sets (every regression set available offline; each one fixed by
``split_seed``, which draws the synthetic samples and the 70/30 split):

* ``diabetes``: scikit-learn's bundled 442 x 10 set;
* ``heteroscedastic``: y = x sin(x) + (0.2 + 0.3 |x|) eps, x ~ U(-3, 3),
  eps ~ N(0, 1), n = ``n_synthetic``;
* ``friedman1`` / ``friedman2`` / ``friedman3``: scikit-learn's
  ``make_friedman1`` (10 inputs, 5 informative, noise sd 1.0),
  ``make_friedman2`` (noise sd 125) and ``make_friedman3`` (noise sd 0.1); the
  noise levels are Friedman's (1991) and Breiman's (1996, bagging), roughly a
  3:1 signal-to-noise ratio for 2 and 3;
* ``linear_2d``: ``make_regression`` with 20 inputs (10 informative), **two**
  targets and noise sd 50 (the CS divergence's kernel on multi-dimensional
  targets; see PAPERS.md on the reference code's 1-D bug).

scikit-learn's ``load_linnerud`` is left out: 20 samples (6 in a 30% test
split) give an RMSE per seed dominated by which 6 athletes land in the test
set. California housing and the UCI sets of the paper need a download.

Inputs and targets are standardized with training-set statistics. The RMSE is
reported in the original target units (``rmse_unit: target``, the default,
unit ``target``) or in units of the training targets' standard deviation
(``rmse_unit: sd``, unit ``target_sd``: comparable across data sets; for
several targets, the root of the mean over targets of the squared errors
in each target's sd units).

Every method trains the same widths, with Adam, the same epochs, batch size
and minibatch order (an equal budget):

* ``mse``: an MLP trunk whose last hidden layer (after its activation) is the
  representation Z, then a linear head; mean squared error;
* ``csib``: the same network and initialization;
  D_CS(p(y|x) || q(y_hat|x)) + beta * I_CS(X; Z) on each minibatch, Gaussian
  kernels with Silverman widths (:class:`ibscope.objectives.CSIBLoss`,
  ``mode: paper_text``, the paper's equations), or, with ``mode:
  paper_code``, the objective of the paper's reference code
  (:func:`ibscope.objectives.csib_code_loss`: for a 1-D target the sum of
  squared errors / ln 2, plus beta x the normalized CS-QMI at sigma = 1).
  Profile ``paper_code`` also takes the code's optimizer (Adam 1e-4,
  StepLR(10, 0.6)), 128-wide layers and its selection of the best test RMSE
  over epochs (``select: best_test``; the last epoch's RMSE is kept as
  ``test_rmse_last``);
* ``vib``: a VIB-style regressor (Alemi et al. 2017, with a Gaussian
  decoder): :class:`ibscope.objectives.StochasticEncoder` (the same trunk
  ``hidden``, then a linear layer to mu(x) and sigma(x) of a
  K = ``hidden[-1]``-dimensional Gaussian Z, sigma = softplus(rho - 5), as
  Alemi et al.'s encoder), one reparameterized z per example,
  a linear decoder y_hat = W z + b, and the loss
  0.5 ||y - y_hat||^2 + vib_beta * KL(p(z|x) || N(0, I)) (the negative
  log-likelihood of q(y|z) = N(y_hat, I) in standardized units, up to a
  constant; KL in closed form, :func:`ibscope.objectives.gaussian_kl`). The
  prediction is the decoder at z = mu(x), the exact mean of y_hat over
  p(z|x) for a linear decoder. It also reports ``izx_upper``, the mean KL on
  the training set (Alemi's upper bound on I(Z;X), bits). Its initialization
  differs from mse/csib, and it has one more (linear) layer: hidden[-1] ->
  2K for mu and rho.

Registry name ``csib_regression`` (module ``_csib_regression``).

References
----------
.. [1] S. Yu, X. Yu, S. Lokse, R. Jenssen, J. C. Principe, "Cauchy-Schwarz
   divergence information bottleneck for regression", ICLR 2024.
.. [2] A. A. Alemi, I. Fischer, J. V. Dillon, K. Murphy, "Deep variational
   information bottleneck", ICLR 2017.
.. [3] J. H. Friedman, "Multivariate adaptive regression splines", Ann.
   Statist. 19 (1991); L. Breiman, "Bagging predictors", Mach. Learn. 24 (1996).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import Interval, Options
from . import as_config, check_device, check_sizes, validate_config
from ._build import Setup

NAME = "csib_regression"
METHODS = ("mse", "csib", "vib")
MODES = ("paper_text", "paper_code")  # csib: the paper's equations, or what its reference code optimizes
SELECTS = ("last", "best_test")
DATASETS = ("diabetes", "heteroscedastic", "friedman1", "friedman2", "friedman3", "linear_2d")
RMSE_UNITS = {"target": "target", "sd": "target_sd"}


@dataclass
class Config:
    method: str = "mse"
    dataset: str = "diabetes"
    hidden: tuple[int, ...] = (64, 32)
    activation: str = "relu"
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    beta: float = 1e-2                  # csib: weight of I_CS(X; Z)
    vib_beta: float = 1e-3              # vib: weight of KL(p(z|x) || N(0, I)) (nats)
    sigma: str = "silverman"            # csib: width rule of the kernels on x and z
    sigma_y: str | float = 1.0          # csib: width (or rule) of the target kernel, standardized units
    test_fraction: float = 0.3
    split_seed: int = 0
    n_synthetic: int = 1000
    rmse_unit: str = "target"           # 'target' (original units) or 'sd' (training target sd units)
    mode: str = "paper_text"            # csib: 'paper_text' (CSIBLoss) or 'paper_code' (csib_code_loss)
    lr_step: tuple[int, float] | None = None  # StepLR (step_size epochs, gamma), e.g. (10, 0.6) as the code
    select: str = "last"                # test RMSE at the last epoch, or the best over epochs (the code's)
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_sizes(self.hidden, "hidden", "csib_regression")  # before the coercion: 2.5 or "a" is refused, not cast
        self.hidden = tuple(int(h) for h in self.hidden)
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad setting (on construction, and by the runner)."""
        from ..models import ACTIVATIONS
        from ..objectives._cs import WIDTH_RULES

        validate_config(self, {**_CONSTRAINTS, "activation": [Options(tuple(ACTIVATIONS))]}, "csib_regression")
        check_sizes(self.hidden, "hidden", "csib_regression")
        if self.lr_step is not None:
            ok = (isinstance(self.lr_step, (list, tuple)) and len(self.lr_step) == 2
                  and isinstance(self.lr_step[0], int) and not isinstance(self.lr_step[0], bool)
                  and self.lr_step[0] >= 1 and isinstance(self.lr_step[1], (int, float))
                  and not isinstance(self.lr_step[1], bool) and 0 < self.lr_step[1] <= 1)
            if not ok:
                raise ValueError(f"The 'lr_step' of csib_regression must be None or [step_size >= 1 (int), "
                                 f"gamma in (0, 1]]. Got {self.lr_step!r} instead.")
            self.lr_step = (int(self.lr_step[0]), float(self.lr_step[1]))
        for name in ("sigma", "sigma_y"):
            v = getattr(self, name)
            ok = v in WIDTH_RULES if isinstance(v, str) else (
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0)
            if not ok:
                raise ValueError(f"The '{name}' of csib_regression must be a width rule {WIDTH_RULES} or a "
                                 f"float > 0. Got {v!r} instead.")
        check_device(self.device)


_CONSTRAINTS: dict[str, list] = {
    "method": [Options(METHODS)], "dataset": [Options(DATASETS)], "mode": [Options(MODES)],
    "select": [Options(SELECTS)], "rmse_unit": [Options(tuple(RMSE_UNITS))],
    **{k: [Interval(int, 1, None)] for k in ("epochs", "batch_size", "n_synthetic")},
    "split_seed": [Interval(int, 0, None)],
    "beta": [Interval(float, 0, None)], "vib_beta": [Interval(float, 0, None)],
    "lr": [Interval(float, 0, None, closed="neither")],
    "test_fraction": [Interval(float, 0, 1, closed="neither")],
}

PROFILES: dict[str, dict[str, Any]] = {
    "test": {"hidden": (8,), "epochs": 2, "n_synthetic": 120, "batch_size": 40},
    "default": {},
    # the reference code's setting (CS_IB_Housing.py): 128-wide encoder, Adam 1e-4 with StepLR(10, 0.6),
    # 200 epochs, its objective and the best test RMSE over epochs
    "paper_code": {"mode": "paper_code", "hidden": (128, 128, 128), "lr": 1e-4, "lr_step": (10, 0.6),
                   "select": "best_test"},
}


def _data(cfg: Config) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(cfg.split_seed)
    if cfg.dataset == "diabetes":
        from sklearn.datasets import load_diabetes

        d = load_diabetes()
        x, y = d.data.astype(np.float64), d.target.astype(np.float64)[:, None]
    elif cfg.dataset == "heteroscedastic":
        x = rng.uniform(-3, 3, size=(cfg.n_synthetic, 1))
        y = x * np.sin(x) + (0.2 + 0.3 * np.abs(x)) * rng.standard_normal((cfg.n_synthetic, 1))
    else:
        from sklearn import datasets as skd

        n, rs = cfg.n_synthetic, cfg.split_seed
        if cfg.dataset == "friedman1":
            x, y = skd.make_friedman1(n, n_features=10, noise=1.0, random_state=rs)
        elif cfg.dataset == "friedman2":
            x, y = skd.make_friedman2(n, noise=125.0, random_state=rs)
        elif cfg.dataset == "friedman3":
            x, y = skd.make_friedman3(n, noise=0.1, random_state=rs)
        else:  # linear_2d
            x, y = skd.make_regression(n, n_features=20, n_informative=10, n_targets=2, noise=50.0,
                                       random_state=rs)
        x, y = x.astype(np.float64), y.astype(np.float64).reshape(n, -1)
    perm = rng.permutation(len(y))
    k = int(round((1 - cfg.test_fraction) * len(y)))
    tr, te = perm[:k], perm[k:]
    return x[tr], y[tr], x[te], y[te]


class _Net(nn.Module):
    def __init__(self, cfg: Config, d_in: int, d_out: int, seed: int):
        super().__init__()
        from ..models import MLP

        self.trunk = MLP(d_in, cfg.hidden[:-1], cfg.hidden[-1], activation=cfg.activation, init="he", seed=seed)
        from ..models import make_activation

        self.act = make_activation(cfg.activation)
        self.head = nn.Linear(cfg.hidden[-1], d_out)
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            self.head.weight.normal_(0.0, 1.0 / math.sqrt(cfg.hidden[-1]), generator=gen)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.act(self.trunk(x))
        return z, self.head(z)


class _VIBNet(nn.Module):
    """StochasticEncoder (trunk ``hidden``, K = hidden[-1]) + linear decoder; forward -> (mu, std, y_hat)."""

    def __init__(self, cfg: Config, d_in: int, d_out: int, seed: int):
        super().__init__()
        from ..objectives import StochasticEncoder

        k = cfg.hidden[-1]
        self.encoder = StochasticEncoder(d_in, k, cfg.hidden, activation=cfg.activation, std_offset=5.0,
                                         init="he", seed=seed)
        self.head = nn.Linear(k, d_out)
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            self.head.weight.normal_(0.0, 1.0 / math.sqrt(k), generator=gen)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, std = self.encoder(x)
        z = mu + std * torch.randn_like(mu) if self.training else mu
        return mu, std, self.head(z)


def run_seed(config: Config, seed: int, out_dir: str | Path, *, progress: bool = False) -> pd.DataFrame:
    """Train one method with one seed; rows: test_rmse and train_rmse (unit per ``rmse_unit``), vib: izx_upper.

    The runner's per-seed path (:func:`ibscope.experiments.train_seed`):
    :func:`build`, fit, :func:`rows`. ``out_dir`` is unused (training takes
    seconds and is held in memory: an interrupted seed is recomputed); the
    runner keeps the finished rows.
    """
    from ._build import train_seed

    return train_seed(sys.modules[__name__], as_config(config, Config, "csib_regression"), seed, out_dir,
                      progress=progress)


def build(config: Config, seed: int, out_dir: Path) -> Setup:
    """The seed's training: the standardized split, the network (init from ``seed``), Adam, the objective.

    ``torch.manual_seed(seed)`` precedes the network (the VIB's noise draws
    follow torch's global RNG); the minibatches come from a
    :class:`~ibscope.training.TensorBatches` seeded with ``seed`` that skips
    batches of fewer than two examples (the CS kernels need pairs), the same
    order for every method. No checkpoint (``Setup.checkpoint=False``).
    """
    from ..objectives import CSIBLoss, csib_code_loss, gaussian_kl
    from ..training import BatchLoss, Callback, TensorBatches

    cfg = config
    xtr, ytr, xte, yte = _data(cfg)
    mx, sx = xtr.mean(0), xtr.std(0) + 1e-12
    my, sy = ytr.mean(0), ytr.std(0) + 1e-12
    dev = torch.device(cfg.device)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=dev)

    xtr_t, ytr_t, xte_t = t((xtr - mx) / sx), t((ytr - my) / sy), t((xte - mx) / sx)
    torch.manual_seed(seed)
    net = (_VIBNet if cfg.method == "vib" else _Net)(cfg, xtr.shape[1], ytr.shape[1], seed).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    crit = None
    if cfg.method == "csib" and cfg.mode == "paper_text":
        crit = CSIBLoss(cfg.beta, sigma_x=cfg.sigma, sigma_z=cfg.sigma, sigma_y=cfg.sigma_y)
    elif cfg.method == "csib":  # the reference code's objective: SSE/ln2 (1-D targets) + beta x normalized CS-QMI
        def crit(x, z, y, pred):
            return csib_code_loss(x, z, y, pred, cfg.beta, sigma=1.0)

    def objective(model: nn.Module, batch: tuple) -> Any:
        x, y = batch
        if cfg.method == "vib":
            mu, std, pred = model(x)
            nll = 0.5 * ((pred - y) ** 2).sum(-1).mean()
            kl = gaussian_kl(mu, std).mean()
            return nll + cfg.vib_beta * kl, {"nll": float(nll.detach()), "kl": float(kl.detach())}
        z, pred = model(x)
        if crit is None:
            return nn.functional.mse_loss(pred, y)
        loss, terms = crit(x, z, y, pred)
        return loss, {k: v for k, v in terms.items() if isinstance(v, (int, float))}

    # minibatches of fewer than 2 examples are skipped (the CS kernels need pairs); the same order for both methods
    batches = TensorBatches((xtr_t, ytr_t), cfg.batch_size, seed=seed, min_batch_size=2)
    scale = 1.0 if cfg.rmse_unit == "target" else sy   # 'sd': errors in training-target sd units

    def rmse(pred: np.ndarray, target: np.ndarray) -> float:
        return float(np.sqrt((((pred - target) / scale) ** 2).mean()))

    def test_pred(model: nn.Module) -> np.ndarray:
        was = model.training
        model.eval()
        with torch.no_grad():
            out = model(xte_t)[-1].cpu().double().numpy() * sy + my
        model.train(was)
        return out

    scheduler = (torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step[0], gamma=cfg.lr_step[1])
                 if cfg.lr_step is not None else None)
    per_epoch: list[float] = []

    class _EpochEnd(Callback):
        def on_epoch_end(self, state: Any) -> None:
            if state.epoch == 0:  # fit's call at initialization: nothing trained yet
                return
            if scheduler is not None:
                scheduler.step()
            if cfg.select == "best_test":  # the reference code keeps the best test RMSE over epochs
                per_epoch.append(rmse(test_pred(net), yte))

    return Setup(model=net, loss_fn=BatchLoss(objective), train_data=batches, optimizer=opt, epochs=cfg.epochs,
                 callbacks=[_EpochEnd()], checkpoint=False, desc=f"{cfg.method} seed {seed}",
                 context={"x_train": xtr_t, "y_train": ytr, "x_test": xte_t, "y_test": yte, "y_mean": my,
                          "y_sd": sy, "rmse": rmse, "per_epoch": per_epoch})


def rows(config: Config, seed: int, setup: Setup, state: Any) -> pd.DataFrame:
    """The trained seed's RMSEs (test, train; with ``select='best_test'`` also the last epoch's) and, for
    the VIB, the upper bound on I(Z;X) in bits."""
    from .._units import nats_to
    from ..objectives import gaussian_kl

    cfg, c, net = config, setup.context, setup.model
    sy, my, rmse, per_epoch = c["y_sd"], c["y_mean"], c["rmse"], c["per_epoch"]
    unit = RMSE_UNITS[cfg.rmse_unit]
    net.eval()
    with torch.no_grad():
        pte = net(c["x_test"])[-1].cpu().double().numpy() * sy + my
        ptr = net(c["x_train"])[-1].cpu().double().numpy() * sy + my
        izx = (nats_to(float(gaussian_kl(*net(c["x_train"])[:2]).double().mean()), "bits")
               if cfg.method == "vib" else None)
    base = {"experiment": NAME, "dataset": cfg.dataset, "method": cfg.method, "seed": seed,
            "epochs": cfg.epochs}
    last = rmse(pte, c["y_test"])
    out = [
        {**base, "quantity": "test_rmse", "value": min(per_epoch) if per_epoch else last, "unit": unit},
        {**base, "quantity": "train_rmse", "value": rmse(ptr, c["y_train"]), "unit": unit},
    ]
    if per_epoch:  # selected on the test set (as the reference code does): the last epoch's value beside it
        out.append({**base, "quantity": "test_rmse_last", "value": last, "unit": unit})
    if izx is not None:
        out.append({**base, "quantity": "izx_upper", "value": izx, "unit": "bits"})
    return pd.DataFrame(out)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """The RMSE table: mean and 95% t-interval half-width (``ci95``) of the test RMSE per (dataset, method)."""
    from ._ib_compare import summarize as _summarize

    return _summarize(results, quantities=("test_rmse",))


def plot(results: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Test RMSE per method and data set (mean, 95% interval)."""
    from ..plots import pyplot, save_figure

    plt = pyplot()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = summarize(results)
    datasets = list(s["dataset"].unique())
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(4 * max(len(datasets), 1), 3.5), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=False):
        g = s[s["dataset"] == ds]
        ax.bar(g["method"], g["mean"], yerr=g["ci95"], capsize=4, color="tab:green")
        ax.set_title(ds)
        ax.set_ylabel("test RMSE")
    return [save_figure(fig, out / "csib_regression.png", dpi=120)]
