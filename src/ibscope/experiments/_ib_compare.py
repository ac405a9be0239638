"""IB training compared: vanilla, L2, dropout, VIB, dual IB and PIB (SGLD) on digits or MNIST-8k/2k.

Equal budgets, by construction: every method trains the same network
trunk (an :class:`~ibscope.models.MLP`, or the small CNN below, built with the run's seed, so
the *same initialization*), for the same number of epochs, with the same batch
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
runner (:mod:`ibscope.experiments.runner`). A seed is declared by
:func:`build`, its phases (the default recipe: one fit, ``train``; the
reference recipe below: ``pretrain``, for PIB ``prior``, then ``train``, each
built from the ones before it once they are trained), and :func:`rows`; the
runner trains the phases, each with its checkpoint folder
(:func:`ibscope.experiments.train_seed`), so a seed interrupted in a phase
resumes in it; ``run_seed`` is the one-line wrapper of that path.

Rows (tidy, one per quantity): ``test_accuracy`` and ``train_accuracy``
(unit 'fraction'), ``iiw`` (bits: :func:`ibscope.weights.iiw`,
``fisher_quadratic`` with the initialization as prior mean -- identical
for all methods of a seed -- on the training set; for VIB on the
deterministic path x -> mu -> decoder; for PIB on the last sample).

Models (``model``): ``'mlp'`` (default; ``hidden``) or ``'cnn'``, a small
convolutional net for square one-channel images (MNIST's 28 x 28): the
convolutions of :class:`~ibscope.models.ConvNet` (3 x 3, stride 2,
``cnn_channels``, default 16 and 32), one dense layer of ``cnn_dense`` units
and the logits, built with the run's seed (the same initialization for every
method; ``dropout`` goes after the dense layer, as in the reference VGG's
classifier). ``cnn`` trains vanilla, L2, dropout and PIB (not VIB / dual IB).

Recipes (``pib_recipe``). ``'ibscope'`` (default) is the single-phase
protocol above. ``'reference'`` follows the training protocol of the PIB
authors' reference code (Wang et al. 2022, ``run_vgg_PIB.py`` and
``src/pib_utils.py``) for methods vanilla, L2, dropout and PIB, and gives all
four *the same two-phase budget*:

1. a validation split: ``val_fraction`` (0.1, as the reference's 10%) of the
   training set (stratified, ``split_seed``) is held out; the models train on
   the rest (n examples) and the validation accuracy drives early stopping;
2. pre-training (every method): Adam, lr ``pretrain_lr`` (1e-4, the PIB run's lr),
   batch ``batch_size`` (32), at most ``pretrain_epochs`` (20) epochs, early
   stopping after ``pretrain_patience`` (3) epochs without a strictly better
   validation accuracy, the best epoch's weights restored. L2 adds Adam's
   ``weight_decay`` (reference 1e-4), dropout its ``dropout`` (reference 0.1);
3. the second phase (every method): at most ``epochs`` (reference 100) epochs of
   :class:`ibscope.objectives.SGLD` driven by :func:`ibscope.training.fit`,
   step ``lr`` decayed x0.1 at the epochs ``lr_milestones`` (reference 50, 80),
   early stopping after ``patience`` (10) epochs, best epoch restored. For
   vanilla / L2 / dropout the SGLD temperature is 0, i.e. exactly plain SGD
   on their own loss (L2: SGLD's ``weight_decay``); for PIB the loss is
   CE + ``ref_beta`` (0.1) x dw^T F dw with dw = w - w0 and the SGLD noise
   has variance ``sgld_noise`` (1e-10) per step (temperature sgld_noise / (2 lr));
4. the PIB prior mean w0: a network of the same architecture from another
   initialization (seed + 30000, the reference re-initializes after training it)
   trained on the *validation* set only (:func:`ibscope.weights.heldout_prior`, Adam, ``prior_lr``
   5e-5, ``prior_epochs`` 10, batch ``batch_size``);
5. the term dw^T F dw: with ``pib_fisher='per_example'`` (default)
   :class:`ibscope.objectives.PIBLoss` with ``beta = 2 ref_beta / n``
   (PIBLoss holds (n/2) dw^T F dw), F the empirical Fisher of
   ``pib_examples`` random training examples' per-example gradients,
   refreshed once per epoch (the reference recomputes its term once per
   epoch); with ``pib_fisher='mean_gradient'`` the reference code's form,
   sum over weight tensors of (dw_k . g_k)^2 with its mean gradient g
   (:class:`_MeanGradientTerm`: 10 x 1000 examples, its scaling, from the second epoch on);
6. the test accuracy is the restored best-validation model's (one network
   for every method, no posterior averaging), as the reference reports it.

What remains different from the reference, on purpose or for lack of an
equivalent: (a) ibscope's SGLD has no momentum, so the reference's SGD
momentum 0.9 at lr 1e-4 is replaced by its steady-state step, lr
1e-4 / (1 - 0.9) = 1e-3 (set ``lr``); (b) with ``pib_fisher='per_example'``, F is the per-example empirical
Fisher over all trainable parameters (the paper's definition, and
:func:`ibscope.weights.iiw`'s), where the reference code sums over the
weight tensors (biases left out) the square of dw_k . g_k, g_k the sum of
10 minibatch-mean gradients of 1000 random training examples divided by
the number of 1000-example batches of the training set (another quadratic form);
(c) with 'per_example' the term applies from the first step (the reference: from the second
SGLD epoch); with 'mean_gradient' g is frozen per epoch but dw follows the current weights (the
reference freezes the whole gradient of its term per epoch); (d) the reference trains the comparison methods with Adam for 20
epochs only, so its budgets differ between arms; here every arm gets phases 2 and 3.
Extra rows of this recipe: ``pretrain_epochs_run`` and ``epochs_run``
(unit 'count': epochs trained before early stopping).

MNIST-8k/2k means the 10,000 MNIST *test* images split 8,000 / 2,000
(:func:`ibscope.data.mnist_8k_2k`); results on it are not comparable with
the usual 60k/10k MNIST numbers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import NONE, InstanceOf, Interval, Options
from ..store import safe_name
from ..training import Callback
from . import as_config, check_device, check_sizes, settings_hash, validate_config
from ._build import Setup

NAME = "ib_compare"
METHODS = ("vanilla", "l2", "dropout", "vib", "pib", "dual_ib")
DATASETS = ("digits", "mnist")
MODELS = ("mlp", "cnn")
RECIPES = ("ibscope", "reference")
FISHERS = ("per_example", "mean_gradient")  # the reference recipe's IIW term (module docstring)
REFERENCE_METHODS = ("vanilla", "l2", "dropout", "pib")  # the methods of the reference recipe and the CNN


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
    model: str = "mlp"                  # 'mlp' (hidden) or 'cnn' (cnn_channels, cnn_dense)
    cnn_channels: tuple[int, ...] = (16, 32)  # cnn: 3x3 stride-2 convolutions
    cnn_dense: int = 64                 # cnn: units of the dense layer
    pib_recipe: str = "ibscope"         # 'ibscope' (one phase) or 'reference' (Wang et al.'s protocol)
    val_fraction: float = 0.1           # reference: held-out validation share of the training set
    pretrain_epochs: int = 20           # reference: at most this many epochs of Adam pre-training
    pretrain_lr: float = 1e-4           # reference: Adam's lr in pre-training
    pretrain_patience: int = 3          # reference: early stopping of the pre-training (epochs)
    patience: int = 10                  # reference: early stopping of the second phase (epochs)
    lr_milestones: tuple[int, ...] = (50, 80)  # reference: second-phase epochs where lr is cut x0.1
    sgld_noise: float = 1e-10           # reference, pib: variance of the SGLD noise per step
    ref_beta: float = 0.1               # reference, pib: weight of dw^T F dw next to the mean CE (nats)
    pib_fisher: str = "per_example"     # reference, pib: F of the IIW term, 'per_example' or 'mean_gradient'
    prior_epochs: int = 10              # reference, pib: epochs of the prior's training on the validation set
    prior_lr: float = 5e-5              # reference, pib: Adam's lr for the prior
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_sizes(self.hidden, "hidden", "ib_compare")  # before the coercion: 2.5 or "a" is refused, not cast
        check_sizes(self.cnn_channels, "cnn_channels", "ib_compare")
        _check_milestones(self.lr_milestones)
        self.hidden = tuple(int(h) for h in self.hidden)
        self.cnn_channels = tuple(int(c) for c in self.cnn_channels)
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad setting (on construction, and by the runner)."""
        from ..models import ACTIVATIONS

        constraints = {**_CONSTRAINTS, "activation": [Options(tuple(ACTIVATIONS))]}
        validate_config(self, constraints, "ib_compare")
        check_sizes(self.hidden, "hidden", "ib_compare")
        check_sizes(self.cnn_channels, "cnn_channels", "ib_compare")
        _check_milestones(self.lr_milestones)
        for setting, value in (("model", self.model), ("pib_recipe", self.pib_recipe)):
            if value != "mlp" and value != "ibscope" and self.method not in REFERENCE_METHODS:
                raise ValueError(f"The '{setting}' {value!r} of ib_compare trains the methods "
                                 f"{list(REFERENCE_METHODS)}; method {self.method!r} needs model 'mlp' and "
                                 "pib_recipe 'ibscope'.")
        if self.pib_recipe == "reference" and self.label_smoothing > 0:
            raise ValueError("The 'label_smoothing' of ib_compare is not part of pib_recipe 'reference' "
                             "(its cross entropy is plain): set label_smoothing = 0.")
        if self.method == "dual_ib" and self.label_smoothing > 0 and self.dual_ce_weight == 0:
            raise ValueError("The 'label_smoothing' of ib_compare applies to a cross entropy, and method 'dual_ib' "
                             "with dual_ce_weight = 0 has none: set dual_ce_weight > 0 or label_smoothing = 0 "
                             "(the dual IB's own noisy labels are set by 'dual_noise').")
        check_device(self.device)


def _check_milestones(value: Any) -> None:
    """The ``lr_milestones`` of ib_compare: a list (maybe empty) of increasing ints >= 1."""
    import numbers

    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok or list(value) != sorted(set(value)):
        raise ValueError("The 'lr_milestones' of ib_compare must be a list of strictly increasing ints >= 1 "
                         f"(epochs of the second phase). Got {value!r} instead.")


_POSITIVE_INT = [Interval(int, 1, None)]
_RATE = [Interval(float, 0, None)]  # a finite float >= 0
_CONSTRAINTS: dict[str, list] = {
    "method": [Options(METHODS)], "dataset": [Options(DATASETS)],
    **{k: _POSITIVE_INT for k in ("epochs", "batch_size", "latent_dim", "vib_samples", "pib_interval",
                                  "pib_examples", "thin", "iiw_examples", "cnn_dense", "pretrain_epochs",
                                  "pretrain_patience", "patience", "prior_epochs")},
    "model": [Options(MODELS)], "pib_recipe": [Options(RECIPES)], "pib_fisher": [Options(FISHERS)],
    "val_fraction": [Interval(float, 0, 1, closed="neither")],
    **{k: [Interval(float, 0, None, closed="neither")] for k in ("pretrain_lr", "prior_lr")},
    "sgld_noise": [Interval(float, 0, None)], "ref_beta": [Interval(float, 0, None)],
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
    # Wang et al.'s reference recipe on MNIST-8k/2k with a small CNN (the claims wang-pib-vs-*-mnist):
    # second phase capped at 40 epochs (reference 100; lr cut at the same fractions, 0.5 and 0.8)
    "mnist_reference": {"dataset": "mnist", "model": "cnn", "cnn_channels": (8, 16), "cnn_dense": 32,
                        "pib_recipe": "reference", "batch_size": 32, "lr": 1e-3, "epochs": 40,
                        "lr_milestones": (20, 32), "weight_decay": 1e-4, "dropout": 0.1,
                        "pib_fisher": "mean_gradient"},
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


def _build_cnn(cfg: Config, seed: int, in_features: int, n_classes: int) -> nn.Module:
    """The small CNN of ``model='cnn'`` (:func:`ibscope.models.conv_classifier`), dropout after the dense layer."""
    from ..models import conv_classifier

    return conv_classifier(in_features, cfg.cnn_channels, cfg.cnn_dense, n_classes, activation=cfg.activation,
                           seed=seed, dropout=cfg.dropout if cfg.method == "dropout" else 0.0, owner="ib_compare")


def _build(cfg: Config, seed: int, in_features: int, n_classes: int) -> nn.Module:
    """The same trunk initialization (MLP or CNN with ``seed``) for every method."""
    from ..models import MLP
    from ..objectives import StochasticEncoder, VIBClassifier

    if cfg.model == "cnn":
        return _build_cnn(cfg, seed, in_features, n_classes)

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


class _EarlyStopping(Callback):
    """Early stopping of the reference recipe (a :class:`ibscope.training.Callback`).

    The validation accuracy after every epoch (not at epoch 0: the reference's
    candidates are the states after each epoch); training stops after
    ``patience`` epochs without a strictly better one; :meth:`restore` loads
    the best epoch's weights (kept in memory, and in fit's checkpoint). A
    phase that stopped stops again when its checkpoint is resumed (fit does
    not keep ``stop_training``), so a finished pre-training is not trained on.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, patience: int):
        self.model, self.x, self.y, self.patience = model, x, y, patience
        self.best, self.best_epoch, self.wait, self.epochs_run = -1.0, 0, 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, state: Any) -> None:
        if state.resumed and self.wait >= self.patience:
            state.stop_training = True

    def on_epoch_end(self, state: Any) -> None:
        if state.epoch == 0:
            return
        self.epochs_run = state.epoch
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            acc = _accuracy(torch.cat([self.model(self.x[i:i + 1000]) for i in range(0, len(self.y), 1000)]), self.y)
        self.model.train(was)
        if acc > self.best:
            self.best, self.best_epoch, self.wait = acc, state.epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                state.stop_training = True

    def restore(self) -> None:
        """Load the weights of the best validation epoch (none yet: keep the current ones)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "epochs_run": self.epochs_run, "best_state": self.best_state}

    def load_state_dict(self, s: Any) -> None:
        self.best, self.best_epoch = float(s["best"]), int(s["best_epoch"])
        self.wait, self.epochs_run = int(s["wait"]), int(s["epochs_run"])
        self.best_state = None if s["best_state"] is None else dict(s["best_state"])


class _MeanGradientTerm:
    """The IIW term of the reference code (``pib_fisher='mean_gradient'``): sum_k (dw_k . g_k)^2.

    Over the weight tensors k (biases left out), dw_k = w_k - w0_k and g_k
    the sum of ``n_batches`` minibatch-mean cross-entropy gradients of
    ``batch`` training examples drawn with replacement, divided by
    ceil(n / ``batch``) -- the reference's scaling. g is recomputed at the
    start of every epoch from the second on and frozen within the epoch;
    in the first epoch the term is 0 (the reference adds it from its second
    SGLD epoch). ``term(model)`` is differentiable in dw (nats, unweighted).

    References
    ----------
    .. [1] Z. Wang et al., "PAC-Bayes information bottleneck", ICLR 2022
       (the authors' code, ``src/pib_utils.py`` and ``src/models.py``).
    """

    def __init__(self, model: nn.Module, prior: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 steps_per_epoch: int, seed: int, *, n_batches: int = 10, batch: int = 1000):
        self.names = [k for k, p in model.named_parameters() if p.requires_grad and k.endswith("weight")]
        self.prior = {k: prior[k].detach() for k in self.names}
        self.x, self.y, self.steps_per_epoch = x, y, steps_per_epoch
        self.n_batches, self.batch = n_batches, batch
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.calls = 0
        self.g: dict[str, torch.Tensor] | None = None

    def refresh(self, model: nn.Module) -> None:
        """g at the current weights (see the class docstring)."""
        params = dict(model.named_parameters())
        total = {k: torch.zeros_like(params[k]) for k in self.names}
        n = len(self.y)
        for _ in range(self.n_batches):
            idx = torch.randint(n, (self.batch,), generator=self.generator).to(self.x.device)
            loss = nn.functional.cross_entropy(model(self.x[idx]), self.y[idx])
            grads = torch.autograd.grad(loss, [params[k] for k in self.names])
            for k, g in zip(self.names, grads, strict=True):
                total[k] += g
        scale = 1.0 / -(-n // self.batch)
        self.g = {k: v.detach() * scale for k, v in total.items()}

    def __call__(self, model: nn.Module) -> torch.Tensor:
        epoch, position = divmod(self.calls, self.steps_per_epoch)
        self.calls += 1
        ref = next(model.parameters())
        if epoch == 0:
            return torch.zeros((), dtype=ref.dtype, device=ref.device)
        if position == 0 or self.g is None:
            self.refresh(model)
        params = dict(model.named_parameters())
        return sum((((params[k] - self.prior[k]) * self.g[k]).sum() ** 2 for k in self.names),
                   torch.zeros((), dtype=ref.dtype, device=ref.device))


class _TermState(Callback):
    """Checkpoints the reference PIB term's own state (its example generator, counters and frozen
    gradients), so a resumed second phase draws the same examples as an uninterrupted one."""

    state_key = "pib_term"

    def __init__(self, generator: torch.Generator, term: Any):
        self.generator, self.term = generator, term

    def state_dict(self) -> dict[str, Any]:
        if isinstance(self.term, _MeanGradientTerm):
            term = {"calls": self.term.calls, "g": self.term.g}
        else:
            term = self.term.checkpoint_state()
        return {"generator": self.generator.get_state(), "term": term}

    def load_state_dict(self, s: Any) -> None:
        self.generator.set_state(s["generator"])
        if isinstance(self.term, _MeanGradientTerm):
            self.term.calls = int(s["term"]["calls"])
            self.term.g = None if s["term"]["g"] is None else dict(s["term"]["g"])
        else:
            self.term.restore_state(s["term"])


def _reference_phases(cfg: Config, seed: int, d: dict[str, np.ndarray], dev: torch.device,
                      key: str) -> dict[str, Any]:
    """The phases of Wang et al.'s recipe (module docstring): ``pretrain`` (Adam, early stopping),
    for PIB ``prior`` (the held-out prior, trained on the validation split), then ``train`` (SGLD from
    the pre-trained model's best epoch, lr decay, early stopping)."""
    from ..data import train_test_split
    from ..objectives import SGLD, PIBLoss
    from ..training import BatchLoss, LRSchedulerCallback
    from ..weights import init_prior, snapshot_parameters
    from ..weights._common import _ShuffledBatches, iter_batches

    split = train_test_split(len(d["y_train"]), train_fraction=1 - cfg.val_fraction, seed=cfg.split_seed,
                             stratify=d["y_train"])
    xtr = torch.as_tensor(d["x_train"][split.train], device=dev)
    ytr = torch.as_tensor(d["y_train"][split.train], device=dev)
    xva = torch.as_tensor(d["x_train"][split.test], device=dev)
    yva = torch.as_tensor(d["y_train"][split.test], device=dev)
    n, n_classes = xtr.shape[0], int(max(d["y_train"].max(), d["y_test"].max())) + 1
    model = _build(cfg, seed, xtr.shape[1], n_classes).to(dev)
    init = init_prior(model)
    l2 = cfg.weight_decay if cfg.method == "l2" else 0.0
    ce = nn.functional.cross_entropy
    stop1 = _EarlyStopping(model, xva, yva, cfg.pretrain_patience)
    context = {"data": d, "train": (xtr, ytr), "init": init, "pretrain_stop": stop1}

    # phase 1: Adam pre-training with early stopping (every method, its own regularizer)
    phases: dict[str, Any] = {"pretrain": Setup(
        model, nn.CrossEntropyLoss(), (xtr, ytr),
        torch.optim.Adam(model.parameters(), lr=cfg.pretrain_lr, weight_decay=l2), epochs=cfg.pretrain_epochs,
        callbacks=[stop1], batch_size=cfg.batch_size, checkpoint=f"pretrain-{key}",
        desc=f"{cfg.method} seed {seed} pre-training", context=context)}

    if cfg.method == "pib":
        def prior_phase(setups: dict[str, Setup], states: dict[str, Any]) -> Setup:
            """The prior mean: another initialization trained on the validation split only, as
            :func:`ibscope.weights.heldout_prior` trains it (Adam, batches in a seeded order)."""
            prior_net = _build(cfg, seed + 30_000, xtr.shape[1], n_classes).to(dev)
            val_batches = list(iter_batches([(xva[i:i + cfg.batch_size], yva[i:i + cfg.batch_size])
                                             for i in range(0, len(yva), cfg.batch_size)], dev,
                                            owner="heldout_prior"))

            def objective(m: nn.Module, batch: tuple) -> torch.Tensor:
                return ce(m(batch[0]), batch[1])

            return Setup(prior_net, BatchLoss(objective), _ShuffledBatches(val_batches, seed),
                         torch.optim.Adam([p for p in prior_net.parameters() if p.requires_grad], lr=cfg.prior_lr),
                         epochs=cfg.prior_epochs, checkpoint=f"prior-{key}", desc="prior training")

        phases["prior"] = prior_phase

    def train_phase(setups: dict[str, Setup], states: dict[str, Any]) -> Setup:
        """Phase 2: SGLD (temperature 0 = plain SGD except for PIB) from the best pre-training epoch."""
        stop1.restore()
        loss_fn: Any = nn.CrossEntropyLoss()
        temperature = 0.0
        callbacks: list[Callback] = []
        if cfg.method == "pib":
            prior = snapshot_parameters(setups["prior"].model)
            gen = torch.Generator().manual_seed(seed + 1)

            def draw() -> list[tuple[torch.Tensor, torch.Tensor]]:
                idx = torch.randperm(n, generator=gen)[:cfg.pib_examples].to(dev)
                return [(xtr[i], ytr[i]) for i in torch.split(idx, 256)]

            steps_per_epoch = -(-n // cfg.batch_size)
            if cfg.pib_fisher == "per_example":
                pib = PIBLoss(model, 2.0 * cfg.ref_beta / n, n_train=n, prior_mean=prior, loss_fn=ce, batches=draw,
                              interval=steps_per_epoch, unit="nats")
                callbacks.append(_TermState(gen, pib))

                def penalty_of(m: nn.Module) -> torch.Tensor:
                    return pib(m)[0]
            else:
                term = _MeanGradientTerm(model, prior, xtr, ytr, steps_per_epoch, seed)
                callbacks.append(_TermState(term.generator, term))

                def penalty_of(m: nn.Module) -> torch.Tensor:
                    return cfg.ref_beta * term(m)

            def objective(m: nn.Module, batch: tuple) -> tuple[torch.Tensor, dict[str, float]]:
                nll = ce(m(batch[0]), batch[1])
                penalty = penalty_of(m)
                return nll + penalty, {"nll": float(nll.detach()), "penalty": float(penalty.detach())}

            loss_fn = BatchLoss(objective)
            temperature = cfg.sgld_noise / (2.0 * cfg.lr)
        opt = SGLD(model.parameters(), lr=cfg.lr, temperature=temperature, weight_decay=l2, seed=seed)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.lr_milestones), gamma=0.1)
        stop2 = _EarlyStopping(model, xva, yva, cfg.patience)
        return Setup(model, loss_fn, (xtr, ytr), opt, epochs=cfg.epochs,
                     callbacks=[LRSchedulerCallback(sched, "epoch"), stop2, *callbacks], batch_size=cfg.batch_size,
                     shuffle_stream=50_000, checkpoint=f"train-{key}", desc=f"{cfg.method} seed {seed}",
                     context={**context, "stop": stop2})

    phases["train"] = train_phase
    return phases


# --------------------------------------------------------------------------- #
# one seed: build (the phases), rows
# --------------------------------------------------------------------------- #
def run_seed(config: Config, seed: int, out_dir: str | Path, *, progress: bool = False) -> pd.DataFrame:
    """Train one method with one seed; rows of test/train accuracy and IIW.

    The runner's per-seed path (:func:`ibscope.experiments.train_seed`): the
    phases of :func:`build` trained in order by :func:`ibscope.training.fit`,
    each with its checkpoint in a sub-folder of ``out_dir`` (the runner's
    ``seed_<s>/``: ``train-<h>/``; with ``pib_recipe='reference'`` also
    ``pretrain-<h>/`` and, for PIB, ``prior-<h>/``, <h> the first 12 hex
    digits of the settings hash of the config and the seed, so one folder
    may serve several configurations and seeds), so an interrupted seed
    resumes in the phase it stopped in; then :func:`rows`. ``config.device`` is
    resolved by train_seed; the runner keeps the finished rows.
    """
    from ._build import train_seed

    return train_seed(sys.modules[__name__], as_config(config, Config, "ib_compare"), seed, out_dir,
                      progress=progress)


def build(config: Config, seed: int, out_dir: Path) -> dict[str, Any]:
    """The phases of one seed (see :mod:`ibscope.experiments._build`).

    ``{"train": Setup}`` with the default recipe (one fit: SGD on the
    method's loss, or for PIB the SGLD chain of
    :func:`ibscope.objectives.train_gibbs` with its posterior ensemble);
    ``pretrain``, ``prior`` (PIB only) and ``train`` with
    ``pib_recipe='reference'`` (module docstring), the later ones built from
    the earlier ones once trained. Torch's global RNG (dropout, the VIB
    samples) is seeded with ``seed``; the minibatch order is drawn from the
    seed too (the same for every method).

    Parameters
    ----------
    config : Config
    seed : int
    out_dir : Path
        The seed's folder (unused: the checkpoints are the runner's; each
        phase's sub-folder is named ``<phase>-<first 12 hex digits of
        settings_hash(config, seed=seed)>``).

    Returns
    -------
    dict
        Phase name -> :class:`~ibscope.experiments.Setup` or callable.

    References
    ----------
    .. [1] Z. Wang et al., "PAC-Bayes Information Bottleneck", ICLR 2022.
    """
    cfg = as_config(config, Config, "ib_compare")
    torch.manual_seed(seed)
    dev = torch.device(cfg.device)
    d = _data(cfg)
    key = settings_hash(cfg, seed=seed)[:12]  # run_seed may be given one folder for several configs and seeds
    if cfg.pib_recipe == "reference":
        return _reference_phases(cfg, seed, d, dev, key)
    return {"train": _ibscope_setup(cfg, seed, d, dev, key)}


def _ibscope_setup(cfg: Config, seed: int, d: dict[str, np.ndarray], dev: torch.device, key: str) -> Setup:
    """The one fit of the default recipe."""
    from ..objectives._pib import _gibbs_chain
    from ..weights import init_prior

    xtr, ytr = torch.as_tensor(d["x_train"], device=dev), torch.as_tensor(d["y_train"], device=dev)
    xte, yte = torch.as_tensor(d["x_test"], device=dev), torch.as_tensor(d["y_test"], device=dev)
    n, n_classes = xtr.shape[0], int(max(d["y_train"].max(), d["y_test"].max())) + 1
    model = _build(cfg, seed, xtr.shape[1], n_classes).to(dev)
    stochastic = cfg.method in ("vib", "dual_ib")
    iiw_model = _Deterministic(model) if stochastic else model
    prior = init_prior(iiw_model)
    context = {"train": (xtr, ytr), "test": (xte, yte), "iiw_model": iiw_model, "prior": prior}
    ce: Any = nn.functional.cross_entropy
    if cfg.label_smoothing > 0:
        def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)

    if cfg.method == "pib":
        # the chain of ibscope.objectives.train_gibbs (its defaults: no lr decay, no preconditioner,
        # burn-in half the steps), as one fit the runner checkpoints
        chain = _gibbs_chain(model, ce, xtr, ytr, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                             temperature=cfg.temperature if cfg.temperature is not None
                             else cfg.temperature_scale / n,
                             beta=cfg.pib_beta, pib=None, pib_interval=cfg.pib_interval,
                             pib_examples=cfg.pib_examples, prior_mean=prior, precondition=False, decay_b=None,
                             decay_gamma=0.55, weight_decay=0.0, burn_in=None, thin=cfg.thin, max_samples=None,
                             ensemble_dir=None, seed=seed)
        return Setup(model, chain.loss, chain.data, chain.optimizer, epochs=cfg.epochs, callbacks=[chain.monitor],
                     check_weights=True, checkpoint=f"train-{key}", desc=f"pib seed {seed}",
                     context={**context, "ensemble": chain.ensemble})
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay if cfg.method == "l2" else 0.0)
    loss_fn: Any = (_stochastic_objective(cfg, n_classes) if stochastic
                    else nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing))
    # the minibatch order of train_gibbs (a generator seeded with the seed); dropout and the
    # VIB samples draw from torch's global RNG, seeded in build
    return Setup(model, loss_fn, (xtr, ytr), opt, epochs=cfg.epochs, batch_size=cfg.batch_size,
                 checkpoint=f"train-{key}", desc=f"{cfg.method} seed {seed}", context=context)


def rows(config: Config, seed: int, setups: dict[str, Setup], states: dict[str, Any]) -> pd.DataFrame:
    """The seed's rows from its trained phases: test / train accuracy, IIW (bits) and the counts.

    Parameters
    ----------
    config : Config
    seed : int
    setups, states : dict
        The trained phases of :func:`build` and fit's final states, by phase name.

    Returns
    -------
    pandas.DataFrame
        One row per quantity (module docstring).
    """
    from ..weights import iiw

    cfg = as_config(config, Config, "ib_compare")
    setup = setups["train"]
    ctx, model = setup.context, setup.model
    xtr, ytr = ctx["train"]
    n = xtr.shape[0]
    if cfg.pib_recipe == "reference":
        ctx["stop"].restore()
        model.eval()
        xte = torch.as_tensor(ctx["data"]["x_test"], device=xtr.device)
        yte = torch.as_tensor(ctx["data"]["y_test"], device=xtr.device)

        def predict(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([torch.softmax(model(x[i:i + 1000]).double(), -1) for i in range(0, len(x), 1000)])

        extra = {"pretrain_epochs_run": ctx["pretrain_stop"].epochs_run, "epochs_run": ctx["stop"].epochs_run}
        iiw_model, prior = model, ctx["init"]
    else:
        xte, yte = ctx["test"]
        iiw_model, prior = ctx["iiw_model"], ctx["prior"]
        extra = {}
        if cfg.method == "pib":
            predict = ctx["ensemble"].predict_proba
            extra = {"n_posterior_samples": len(ctx["ensemble"])}
        else:
            model.eval()
            if cfg.method in ("vib", "dual_ib"):
                def predict(x: torch.Tensor) -> torch.Tensor:
                    return model.predict_proba(x, cfg.vib_samples)
            else:
                def predict(x: torch.Tensor) -> torch.Tensor:
                    with torch.no_grad():
                        return torch.softmax(model(x).double(), -1)

    with torch.no_grad():
        acc_test, acc_train = _accuracy(predict(xte), yte), _accuracy(predict(xtr), ytr)
    iiw_model.eval()
    m = min(cfg.iiw_examples, n)
    batches = [(xtr[i:i + 256], ytr[i:i + 256]) for i in range(0, m, 256)]
    info = iiw(iiw_model, nn.CrossEntropyLoss(reduction="none"), batches, prior_mean=prior, n_train=n, unit="bits")
    return _rows(cfg, seed, n, acc_test, acc_train, info.total, extra)


def _rows(cfg: Config, seed: int, n: int, acc_test: float, acc_train: float, iiw_bits: float,
          extra: dict[str, Any]) -> pd.DataFrame:
    base = {"experiment": NAME, "dataset": cfg.dataset, "method": cfg.method, "seed": seed,
            "epochs": cfg.epochs, "n_train": n}
    rows = [
        {**base, "quantity": "test_accuracy", "value": acc_test, "unit": "fraction"},
        {**base, "quantity": "train_accuracy", "value": acc_train, "unit": "fraction"},
        {**base, "quantity": "iiw", "value": iiw_bits, "unit": "bits"},
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
