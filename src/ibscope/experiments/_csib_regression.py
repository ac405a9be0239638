"""CS-IB (Yu et al. 2024) against plain MSE for regression: test RMSE.

Data sets: scikit-learn's ``diabetes`` (442 x 10) and ``heteroscedastic``, a
synthetic 1-D problem y = x sin(x) + (0.2 + 0.3 |x|) eps, x ~ U(-3, 3),
eps ~ N(0, 1), n = 1000 (generated from ``split_seed``). Inputs and targets
are standardized with training-set statistics; the RMSE is reported in the
original target units.

Both methods train the same network (an MLP trunk whose last hidden layer is
the representation Z, then a linear head), from the same initialization, with
the same optimizer (Adam), epochs, batch size and minibatch order:

* ``mse``: mean squared error;
* ``csib``: D_CS(p(y|x) || q(y_hat|x)) + beta * I_CS(X; Z) on each minibatch,
  Gaussian kernels with Silverman widths (:class:`ibscope.objectives.CSIBLoss`).

Registry name ``csib_regression`` (module ``_csib_regression``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..store import atomic_write_parquet, config_hash

NAME = "csib_regression"
METHODS = ("mse", "csib")
DATASETS = ("diabetes", "heteroscedastic")


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
    sigma: str = "silverman"            # csib: width rule of the kernels on x and z
    sigma_y: str | float = 1.0          # csib: width (or rule) of the target kernel, standardized units
    test_fraction: float = 0.3
    split_seed: int = 0
    n_synthetic: int = 1000
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad setting (on construction, and by the runner)."""
        from ..models import ACTIVATIONS
        from ..objectives._cs import WIDTH_RULES

        if self.method not in METHODS:
            raise ValueError(f"The 'method' of csib_regression must be one of {METHODS}. Got {self.method!r} instead.")
        if self.dataset not in DATASETS:
            raise ValueError(f"The 'dataset' of csib_regression must be one of {DATASETS}. Got {self.dataset!r} instead.")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"The 'hidden' of csib_regression must be a non-empty list of ints >= 1. "
                             f"Got {self.hidden!r} instead.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"The 'activation' of csib_regression must be one of {sorted(ACTIVATIONS)}. "
                             f"Got {self.activation!r} instead.")
        for name in ("epochs", "batch_size", "n_synthetic"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"The '{name}' of csib_regression must be an int >= 1. Got {v!r} instead.")
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"The 'beta' of csib_regression must be a float >= 0. Got {self.beta!r} instead.")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"The 'lr' of csib_regression must be a finite float > 0. Got {self.lr!r} instead.")
        if not (isinstance(self.test_fraction, (int, float)) and 0 < self.test_fraction < 1):
            raise ValueError(f"The 'test_fraction' of csib_regression must be in (0, 1). "
                             f"Got {self.test_fraction!r} instead.")
        for name in ("sigma", "sigma_y"):
            v = getattr(self, name)
            ok = v in WIDTH_RULES if isinstance(v, str) else (
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0)
            if not ok:
                raise ValueError(f"The '{name}' of csib_regression must be a width rule {WIDTH_RULES} or a "
                                 f"float > 0. Got {v!r} instead.")


PROFILES: dict[str, dict[str, Any]] = {
    "test": {"hidden": (8,), "epochs": 2, "n_synthetic": 120, "batch_size": 40},
    "default": {},
}


def _data(cfg: Config) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(cfg.split_seed)
    if cfg.dataset == "diabetes":
        from sklearn.datasets import load_diabetes

        d = load_diabetes()
        x, y = d.data.astype(np.float64), d.target.astype(np.float64)[:, None]
    else:
        x = rng.uniform(-3, 3, size=(cfg.n_synthetic, 1))
        y = x * np.sin(x) + (0.2 + 0.3 * np.abs(x)) * rng.standard_normal((cfg.n_synthetic, 1))
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


def run_seed(config: Config, seed: int, out_dir: str | Path, *, progress: bool = False) -> pd.DataFrame:
    """Train one method with one seed; rows: test_rmse and train_rmse (target units)."""
    from ..objectives import CSIBLoss
    from ..training import BatchLoss, TensorBatches, fit

    cfg = config if isinstance(config, Config) else Config(**config)
    out = Path(out_dir)
    chash = config_hash({**asdict(cfg), "seed": seed})
    result_file = out / f"csib_{cfg.dataset}_{cfg.method}_seed{seed}_{chash}.parquet"
    if result_file.exists():
        return pd.read_parquet(result_file)
    xtr, ytr, xte, yte = _data(cfg)
    mx, sx = xtr.mean(0), xtr.std(0) + 1e-12
    my, sy = ytr.mean(0), ytr.std(0) + 1e-12
    dev = torch.device(cfg.device)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=dev)

    xtr_t, ytr_t, xte_t = t((xtr - mx) / sx), t((ytr - my) / sy), t((xte - mx) / sx)
    torch.manual_seed(seed)
    net = _Net(cfg, xtr.shape[1], ytr.shape[1], seed).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    crit = CSIBLoss(cfg.beta, sigma_x=cfg.sigma, sigma_z=cfg.sigma, sigma_y=cfg.sigma_y) if cfg.method == "csib" else None

    def objective(model: nn.Module, batch: tuple) -> Any:
        x, y = batch
        z, pred = model(x)
        if crit is None:
            return nn.functional.mse_loss(pred, y)
        loss, terms = crit(x, z, y, pred)
        return loss, {k: v for k, v in terms.items() if isinstance(v, (int, float))}

    # minibatches of fewer than 2 examples are skipped (the CS kernels need pairs); the same order for both methods
    batches = TensorBatches((xtr_t, ytr_t), cfg.batch_size, seed=seed, min_batch_size=2)
    fit(net, BatchLoss(objective), batches, opt, epochs=cfg.epochs, device=dev, progress=progress,
        desc=f"{cfg.method} seed {seed}")
    net.eval()
    with torch.no_grad():
        pte = net(xte_t)[1].cpu().double().numpy() * sy + my
        ptr = net(xtr_t)[1].cpu().double().numpy() * sy + my
    base = {"experiment": NAME, "dataset": cfg.dataset, "method": cfg.method, "seed": seed,
            "epochs": cfg.epochs, "config_hash": chash}
    df = pd.DataFrame([
        {**base, "quantity": "test_rmse", "value": float(np.sqrt(((pte - yte) ** 2).mean())), "unit": "target"},
        {**base, "quantity": "train_rmse", "value": float(np.sqrt(((ptr - ytr) ** 2).mean())), "unit": "target"},
    ])
    atomic_write_parquet(result_file, df)
    return df


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t-interval of the test RMSE per (dataset, method)."""
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
