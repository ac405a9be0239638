"""IB training compared: vanilla, L2, dropout, VIB, dual IB and PIB (SGLD) on digits or MNIST-8k/2k.

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
* ``dual_ib``: the same stochastic model as ``vib``, trained on the
  variational dual IB loss (Piran, Shwartz-Ziv & Tishby 2020;
  :class:`ibscope.objectives.DualIBLoss`): ``dual_gamma`` times the reverse
  KL of the decoder to the noisy labels p_tilde (label smoothing with
  ``dual_noise``), plus ``dual_ce_weight`` times the cross entropy, plus
  ``vib_beta`` times the KL to the prior (as VIB, in bits); predictions as VIB;
* ``pib``: SGLD on CE + beta * IIW at temperature ``temperature``
  (None: ``temperature_scale`` / n; scale 1 is the Bayesian posterior, the
  default 0.1 a colder one), the IIW term's Fisher refreshed every
  ``pib_interval`` steps; predictions average the posterior samples kept in
  the second half of the same run (every ``thin`` steps) -- no extra epochs.

``label_smoothing`` (default 0: off) replaces the cross entropy of any
method by torch's label-smoothed cross entropy (Szegedy et al. 2016), the
control arm for the dual IB, whose noisy labels are a smoothing of the same
kind. For ``dual_ib`` it applies to its ``dual_ce_weight`` cross-entropy term
(so it needs ``dual_ce_weight > 0``). With the defaults of the new settings
(``label_smoothing``, ``dual_*``) the results of the other methods are those
of the version without them.

The result cache, the config hash, the device and the threads belong to the
runner (:mod:`ibscope.experiments.runner`); ``run_seed`` only computes rows.

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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import NONE, InstanceOf, Interval, Options
from ..store import safe_name
from . import as_config, check_device, check_sizes, orchestrated, validate_config

NAME = "ib_compare"
METHODS = ("vanilla", "l2", "dropout", "vib", "pib", "dual_ib")
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
    label_smoothing: float = 0.0        # any method's cross entropy (0: plain CE)
    dual_gamma: float = 1.0             # dual_ib: weight of the reverse KL to the noisy labels
    dual_noise: float = 0.1             # dual_ib: label smoothing of p_tilde, in (0, 1]
    dual_ce_weight: float = 0.0         # dual_ib: weight of the cross entropy (0: pure dual IB)
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_sizes(self.hidden, "hidden", "ib_compare")  # before the coercion: 2.5 or "a" is refused, not cast
        self.hidden = tuple(int(h) for h in self.hidden)
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad setting (on construction, and by the runner)."""
        from ..models import ACTIVATIONS

        constraints = {**_CONSTRAINTS, "activation": [Options(tuple(ACTIVATIONS))]}
        validate_config(self, constraints, "ib_compare")
        check_sizes(self.hidden, "hidden", "ib_compare")
        if self.method == "dual_ib" and self.label_smoothing > 0 and self.dual_ce_weight == 0:
            raise ValueError("The 'label_smoothing' of ib_compare applies to a cross entropy, and method 'dual_ib' "
                             "with dual_ce_weight = 0 has none: set dual_ce_weight > 0 or label_smoothing = 0 "
                             "(the dual IB's own noisy labels are set by 'dual_noise').")
        check_device(self.device)


_POSITIVE_INT = [Interval(int, 1, None)]
_RATE = [Interval(float, 0, None)]  # a finite float >= 0
_CONSTRAINTS: dict[str, list] = {
    "method": [Options(METHODS)], "dataset": [Options(DATASETS)],
    **{k: _POSITIVE_INT for k in ("epochs", "batch_size", "latent_dim", "vib_samples", "pib_interval",
                                  "pib_examples", "thin", "iiw_examples")},
    "n_train": [Interval(int, 2, None), NONE], "split_seed": [Interval(int, 0, None)],
    **{k: _RATE for k in ("lr", "weight_decay", "vib_beta", "pib_beta", "temperature_scale", "dual_gamma",
                          "dual_ce_weight")},
    "temperature": [Interval(float, 0, None), NONE],
    "dropout": [Interval(float, 0, 1, closed="left")],
    "test_fraction": [Interval(float, 0, 1, closed="neither")],
    "label_smoothing": [Interval(float, 0, 1, closed="left")],
    "dual_noise": [Interval(float, 0, 1, closed="right")],  # the noisy labels need full support
    "extra": [InstanceOf((dict,), "a dict")],
}

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
    if cfg.method in ("vib", "dual_ib"):
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


def _stochastic_objective(cfg: Config, n_classes: int) -> Any:
    """The per-batch loss of ``vib`` / ``dual_ib`` (in bits), with the label-smoothed CE where asked."""
    from .._units import nats_to
    from ..objectives import DualIBLoss, NoisyLabels, VIBLoss, gaussian_kl
    from ..training import BatchLoss

    def ce_smoothed(out: Any, y: torch.Tensor) -> torch.Tensor:
        s, n, c = out.logits.shape
        return nn.functional.cross_entropy(out.logits.reshape(s * n, c), y.repeat(s),
                                           label_smoothing=cfg.label_smoothing)

    if cfg.method == "vib":
        vib_loss = VIBLoss(cfg.vib_beta)

        def objective(m: nn.Module, batch: tuple) -> tuple[torch.Tensor, dict[str, float]]:
            out = m(batch[0])
            loss, terms = vib_loss(out, batch[1])
            if cfg.label_smoothing > 0:  # VIBLoss with the smoothed CE: (CE_ls + beta KL) / ln 2
                ce = ce_smoothed(out, batch[1])
                loss = nats_to(ce + cfg.vib_beta * gaussian_kl(out.mu, out.std).mean(), "bits")
                terms["ce"] = nats_to(float(ce.detach()), "bits")
            return loss, {k: v for k, v in terms.items() if isinstance(v, (int, float))}
    else:
        # the CE term is added here (not by DualIBLoss's ce_weight) so label smoothing can apply to it
        dual = DualIBLoss(cfg.vib_beta, noisy_labels=NoisyLabels.smoothing(cfg.dual_noise, n_classes),
                          gamma=cfg.dual_gamma, ce_weight=0.0)

        def objective(m: nn.Module, batch: tuple) -> tuple[torch.Tensor, dict[str, float]]:
            out = m(batch[0])
            loss, terms = dual(out, batch[1], batch[0])
            if cfg.dual_ce_weight > 0:
                ce = ce_smoothed(out, batch[1])
                loss = loss + cfg.dual_ce_weight * nats_to(ce, "bits")
                terms["ce"] = nats_to(float(ce.detach()), "bits")
            return loss, {k: v for k, v in terms.items() if isinstance(v, (int, float))}

    return BatchLoss(objective)


def _accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    return float((probs.argmax(-1) == y).double().mean())


# --------------------------------------------------------------------------- #
# one seed
# --------------------------------------------------------------------------- #
@orchestrated
def run_seed(config: Config, seed: int, out_dir: str | Path, *, progress: bool = False) -> pd.DataFrame:
    """Train one method with one seed; rows of test/train accuracy and IIW.

    ``out_dir`` is unused (the method trains in memory); the runner keeps the
    finished rows. ``config.device`` is resolved by :func:`ibscope.experiments.orchestrated`.
    """
    from ..objectives import train_gibbs
    from ..training import fit
    from ..weights import iiw, init_prior

    cfg = as_config(config, Config, "ib_compare")
    torch.manual_seed(seed)
    dev = torch.device(cfg.device)
    d = _data(cfg)
    xtr, ytr = torch.as_tensor(d["x_train"], device=dev), torch.as_tensor(d["y_train"], device=dev)
    xte, yte = torch.as_tensor(d["x_test"], device=dev), torch.as_tensor(d["y_test"], device=dev)
    n, n_classes = xtr.shape[0], int(max(d["y_train"].max(), d["y_test"].max())) + 1
    model = _build(cfg, seed, xtr.shape[1], n_classes).to(dev)
    stochastic = cfg.method in ("vib", "dual_ib")
    iiw_model = _Deterministic(model) if stochastic else model
    prior = init_prior(iiw_model)
    ce: Any = nn.functional.cross_entropy
    if cfg.label_smoothing > 0:
        def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)

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
        if stochastic:
            loss_fn: Any = _stochastic_objective(cfg, n_classes)
        else:
            loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        # the minibatch order of train_gibbs (a generator seeded with the seed); dropout and the
        # VIB samples draw from torch's global RNG, seeded above
        fit(model, loss_fn, (xtr, ytr), opt, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=seed,
            device=dev, progress=progress, desc=f"{cfg.method} seed {seed}")
        model.eval()
        if stochastic:
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
            "epochs": cfg.epochs, "n_train": n}
    rows = [
        {**base, "quantity": "test_accuracy", "value": acc_test, "unit": "fraction"},
        {**base, "quantity": "train_accuracy", "value": acc_train, "unit": "fraction"},
        {**base, "quantity": "iiw", "value": info.total, "unit": "bits"},
    ]
    rows += [{**base, "quantity": k, "value": float(v), "unit": "count"} for k, v in extra.items()]
    return pd.DataFrame(rows)


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
        paths.append(save_figure(fig, out / f"ib_compare_{safe_name(dataset, what='dataset')}.png", dpi=120))
    return paths
