"""IB training compared: vanilla, L2, dropout, VIB and PIB (SGLD) on digits or MNIST-8k/2k.

Equal budgets, by construction: every method trains the same network
trunk (an :class:`~ibscope.models.MLP` built with the run's seed, so the
*same initialization*), for the same number of epochs, with the same batch
size, the same step size and the same minibatch order. The differences are
only the method's own:

* ``vanilla``: SGD on the cross entropy;
* ``l2``: SGD with ``weight_decay``;
* ``dropout``: dropout (``dropout``) after every hidden layer;
* ``vib``: the trunk followed by a stochastic layer (mu, softplus(rho - 5))
  of ``latent_dim`` units and a linear decoder, loss CE + beta KL
  (Alemi et al. 2017); predictions average 12 samples of z;
* ``pib``: SGLD on CE + beta * IIW at temperature ``temperature``
  (None: ``temperature_scale`` / n; scale 1 is the Bayesian posterior, the
  default 0.1 a colder one), the IIW term's Fisher refreshed every
  ``pib_interval`` steps; predictions average the posterior samples kept in
  the second half of the same run (every ``thin`` steps) -- no extra epochs.

Rows (tidy, one per quantity): ``test_accuracy`` and ``train_accuracy``
(unit 'fraction'), ``iiw`` (bits: :func:`ibscope.weights.iiw`,
``fisher_quadratic`` with the initialization as prior mean -- identical
for all methods of a seed -- on the training set; for VIB on the
deterministic path x -> mu -> decoder; for PIB on the last sample).

MNIST-8k/2k means the 10,000 MNIST *test* images split 8,000 / 2,000
(:func:`ibscope.data.mnist_8k_2k`); results on it are not comparable with
the usual 60k/10k MNIST numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..store import atomic_write_parquet, config_hash

NAME = "ib_compare"
METHODS = ("vanilla", "l2", "dropout", "vib", "pib")
DATASETS = ("digits", "mnist")


@dataclass
class Config:
    """Every setting of one comparison run (one method on one data set)."""

    method: str = "vanilla"
    dataset: str = "digits"
    hidden: tuple[int, ...] = (128, 128)
    activation: str = "relu"
    epochs: int = 60
    batch_size: int = 64
    lr: float = 0.05
    test_fraction: float = 0.3          # digits only (stratified, split_seed)
    split_seed: int = 0
    n_train: int | None = None          # subsample the training set (None: all)
    weight_decay: float = 1e-3          # l2
    dropout: float = 0.3                # dropout
    vib_beta: float = 1e-3              # vib
    latent_dim: int = 32                # vib
    vib_samples: int = 12               # vib, at test time
    pib_beta: float = 1e-5              # pib: weight of IIW (nats) next to the mean CE
    temperature: float | None = None    # pib: None = temperature_scale / n_train
    temperature_scale: float = 0.1      # pib: 1.0 = Bayesian posterior; 0.1 = a "cold" posterior
    pib_interval: int = 20              # pib: Fisher refresh (steps)
    pib_examples: int = 128             # pib: examples per Fisher refresh
    thin: int = 10                      # pib: keep one sample every `thin` steps after burn-in
    iiw_examples: int = 1024            # examples used by the reported IIW
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad setting (on construction, and by the runner)."""
        from ..models import ACTIVATIONS

        if self.method not in METHODS:
            raise ValueError(f"The 'method' of ib_compare must be one of {METHODS}. Got {self.method!r} instead.")
        if self.dataset not in DATASETS:
            raise ValueError(f"The 'dataset' of ib_compare must be one of {DATASETS}. Got {self.dataset!r} instead.")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"The 'hidden' of ib_compare must be a non-empty list of ints >= 1. Got {self.hidden!r} instead.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"The 'activation' of ib_compare must be one of {sorted(ACTIVATIONS)}. "
                             f"Got {self.activation!r} instead.")
        for name in ("epochs", "batch_size", "latent_dim", "vib_samples", "pib_interval", "pib_examples", "thin",
                     "iiw_examples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"The '{name}' of ib_compare must be an int >= 1. Got {v!r} instead.")
        if self.n_train is not None and (isinstance(self.n_train, bool) or not isinstance(self.n_train, int)
                                         or self.n_train < 2):
            raise ValueError(f"The 'n_train' of ib_compare must be None or an int >= 2. Got {self.n_train!r} instead.")
        for name in ("lr", "weight_decay", "vib_beta", "pib_beta", "temperature_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"The '{name}' of ib_compare must be a finite float >= 0. Got {v!r} instead.")
        if self.temperature is not None and not (isinstance(self.temperature, (int, float))
                                                 and math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"The 'temperature' of ib_compare must be None or a float >= 0. Got {self.temperature!r}.")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"The 'dropout' of ib_compare must be in [0, 1). Got {self.dropout!r} instead.")
        if not (isinstance(self.test_fraction, (int, float)) and 0 < self.test_fraction < 1):
            raise ValueError(f"The 'test_fraction' of ib_compare must be in (0, 1). Got {self.test_fraction!r} instead.")


PROFILES: dict[str, dict[str, Any]] = {
    "test": {"hidden": (16,), "epochs": 2, "n_train": 200, "batch_size": 50, "latent_dim": 4,
             "pib_interval": 2, "pib_examples": 16, "thin": 1, "iiw_examples": 64},
    "digits": {},
    # reduced budget for a 2-core CPU: 20 epochs of 784-256-256-10
    "mnist": {"dataset": "mnist", "hidden": (256, 256), "epochs": 20, "batch_size": 128, "lr": 0.05},
}


# --------------------------------------------------------------------------- #
# data and models
# --------------------------------------------------------------------------- #
def _data(cfg: Config) -> dict[str, np.ndarray]:
    from ..data import load_digits_dataset, mnist_8k_2k, train_test_split

    if cfg.dataset == "digits":
        x, y = load_digits_dataset()
        split = train_test_split(len(y), train_fraction=1 - cfg.test_fraction, seed=cfg.split_seed, stratify=y)
        d = {"x_train": x[split.train], "y_train": y[split.train], "x_test": x[split.test], "y_test": y[split.test]}
    else:
        d = mnist_8k_2k(seed=cfg.split_seed)
    if cfg.n_train is not None and cfg.n_train < len(d["y_train"]):
        rng = np.random.default_rng(cfg.split_seed)
        keep = np.sort(rng.choice(len(d["y_train"]), cfg.n_train, replace=False))
        d["x_train"], d["y_train"] = d["x_train"][keep], d["y_train"][keep]
    return d


class _Deterministic(nn.Module):
    """x -> mu(x) -> decoder: the deterministic path of a VIB model (for IIW and the loss interface)."""

    def __init__(self, vib: nn.Module):
        super().__init__()
        self.vib = vib

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.vib.encoder(x)
        return self.vib.decoder(mu)


def _build(cfg: Config, seed: int, in_features: int, n_classes: int) -> nn.Module:
    """The same trunk initialization (MLP with ``seed``) for every method."""
    from ..models import MLP
    from ..objectives import StochasticEncoder, VIBClassifier

    mlp = MLP(in_features, cfg.hidden, n_classes, activation=cfg.activation, init="he", seed=seed)
    n_hidden = len(cfg.hidden)
    if cfg.method == "vib":
        enc = StochasticEncoder(in_features, cfg.latent_dim, cfg.hidden, activation=cfg.activation,
                                init="he", seed=seed + 10_000)
        for i in range(n_hidden):  # copy the shared trunk initialization
            enc.trunk[2 * i].load_state_dict(getattr(mlp, f"fc{i + 1}").state_dict())
        return VIBClassifier(enc, n_classes, seed=seed + 20_000)
    layers: list[nn.Module] = []
    for i in range(1, n_hidden + 1):
        layers += [getattr(mlp, f"fc{i}"), getattr(mlp, f"hidden{i}")]
        if cfg.method == "dropout" and cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
    layers.append(mlp.logits)
    return nn.Sequential(*layers)


def _accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    return float((probs.argmax(-1) == y).double().mean())


# --------------------------------------------------------------------------- #
# one seed
# --------------------------------------------------------------------------- #
def run_seed(config: Config, seed: int, out_dir: str | Path, *, progress: bool = False) -> pd.DataFrame:
    """Train one method with one seed; rows of test/train accuracy and IIW. Resumes from ``out_dir``."""
    from ..objectives import VIBLoss, train_gibbs
    from ..training import BatchLoss, fit
    from ..weights import iiw, init_prior

    cfg = config if isinstance(config, Config) else Config(**config)
    out = Path(out_dir)
    chash = config_hash({**asdict(cfg), "seed": seed})
    result_file = out / f"ib_compare_{cfg.dataset}_{cfg.method}_seed{seed}_{chash}.parquet"
    if result_file.exists():
        return pd.read_parquet(result_file)

    torch.manual_seed(seed)
    dev = torch.device(cfg.device)
    d = _data(cfg)
    xtr, ytr = torch.as_tensor(d["x_train"], device=dev), torch.as_tensor(d["y_train"], device=dev)
    xte, yte = torch.as_tensor(d["x_test"], device=dev), torch.as_tensor(d["y_test"], device=dev)
    n, n_classes = xtr.shape[0], int(max(d["y_train"].max(), d["y_test"].max())) + 1
    model = _build(cfg, seed, xtr.shape[1], n_classes).to(dev)
    iiw_model = _Deterministic(model) if cfg.method == "vib" else model
    prior = init_prior(iiw_model)
    ce = nn.functional.cross_entropy

    if cfg.method == "pib":
        res = train_gibbs(model, ce, xtr, ytr, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                          temperature=cfg.temperature if cfg.temperature is not None else cfg.temperature_scale / n,
                          beta=cfg.pib_beta, pib_interval=cfg.pib_interval,
                          pib_examples=cfg.pib_examples, prior_mean=prior, thin=cfg.thin, seed=seed,
                          progress=progress)
        predict = res.ensemble.predict_proba
        extra = {"n_posterior_samples": len(res.ensemble)}
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr,
                              weight_decay=cfg.weight_decay if cfg.method == "l2" else 0.0)
        if cfg.method == "vib":
            vib_loss = VIBLoss(cfg.vib_beta)

            def objective(m: nn.Module, batch: tuple) -> tuple[torch.Tensor, dict[str, float]]:
                loss, terms = vib_loss(m(batch[0]), batch[1])
                return loss, {k: v for k, v in terms.items() if isinstance(v, (int, float))}

            loss_fn: Any = BatchLoss(objective)
        else:
            loss_fn = nn.CrossEntropyLoss()
        # the minibatch order of train_gibbs (a generator seeded with the seed); dropout and the
        # VIB samples draw from torch's global RNG, seeded above
        fit(model, loss_fn, (xtr, ytr), opt, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=seed,
            device=dev, progress=progress, desc=f"{cfg.method} seed {seed}")
        model.eval()
        if cfg.method == "vib":
            def predict(x: torch.Tensor) -> torch.Tensor:
                return model.predict_proba(x, cfg.vib_samples)
        else:
            def predict(x: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    return torch.softmax(model(x).double(), -1)
        extra = {}

    with torch.no_grad():
        acc_test, acc_train = _accuracy(predict(xte), yte), _accuracy(predict(xtr), ytr)
    iiw_model.eval()
    m = min(cfg.iiw_examples, n)
    batches = [(xtr[i:i + 256], ytr[i:i + 256]) for i in range(0, m, 256)]
    info = iiw(iiw_model, nn.CrossEntropyLoss(reduction="none"), batches, prior_mean=prior, n_train=n, unit="bits")
    base = {"experiment": NAME, "dataset": cfg.dataset, "method": cfg.method, "seed": seed,
            "epochs": cfg.epochs, "n_train": n, "config_hash": chash}
    rows = [
        {**base, "quantity": "test_accuracy", "value": acc_test, "unit": "fraction"},
        {**base, "quantity": "train_accuracy", "value": acc_train, "unit": "fraction"},
        {**base, "quantity": "iiw", "value": info.total, "unit": "bits"},
    ]
    rows += [{**base, "quantity": k, "value": float(v), "unit": "count"} for k, v in extra.items()]
    df = pd.DataFrame(rows)
    atomic_write_parquet(result_file, df)
    return df


# --------------------------------------------------------------------------- #
# summaries and figures
# --------------------------------------------------------------------------- #
def summarize(results: pd.DataFrame, quantities: tuple[str, ...] = ("test_accuracy", "iiw"),
              by: tuple[str, ...] = ("dataset", "method")) -> pd.DataFrame:
    """Mean and 95% t-interval half-width over seeds of each quantity, per ``by`` group (order kept)."""
    from ..sweep import mean_interval

    sel = results[results["quantity"].isin(quantities)]
    keys = [*by, "quantity"]
    out = mean_interval(sel, keys, ["value"], sort=False)
    units = sel.groupby(keys, sort=False, dropna=False)["unit"].first().to_numpy()
    return pd.DataFrame({**{k: out[k] for k in keys}, "mean": out["value"], "ci95": out["value_hi"] - out["value"],
                         "n_seeds": out["n"], "unit": units})


def plot(results: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Bar charts of test accuracy and IIW (mean and 95% interval over seeds) per method."""
    from ..plots import pyplot, save_figure

    plt = pyplot()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    paths = []
    for dataset, g in summary.groupby("dataset"):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, q, label in ((axes[0], "test_accuracy", "test accuracy"), (axes[1], "iiw", "IIW (bits)")):
            s = g[g["quantity"] == q]
            ax.bar(s["method"], s["mean"], yerr=s["ci95"], capsize=4, color="tab:blue")
            ax.set_ylabel(label)
            if q == "test_accuracy" and len(s):
                lo = float((s["mean"] - s["ci95"].fillna(0)).min())
                ax.set_ylim(max(0.0, lo - 0.02), 1.0)
        fig.suptitle(f"ib_compare on {dataset} (mean, 95% interval over seeds)")
        paths.append(save_figure(fig, out / f"ib_compare_{dataset}.png", dpi=120))
    return paths
