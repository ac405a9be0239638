"""Information in infinite ensembles of infinitely wide networks, next to finite ones.

Reproduces the setting of Shwartz-Ziv & Alemi [1]_: a fully connected network
(by default two hidden erf layers, ``weight_std=1``, ``bias_std=0``, NTK
parameterization) trained by gradient flow on the MSE. For each dataset the
infinite ensemble's Gaussian predictions give, over training time ``t``, the
I(X;Z) bounds, the Gibbs and Bayes losses, the KL bound on I(Z;D|X), the
expected MSE, the accuracy of the ensemble mean and the Fisher trace
(:mod:`ibscope.ntk`), on the training and on the test points. Next to them an
ensemble of ``n_networks`` finite networks of the same architecture (width
``width``) is trained by full-batch gradient descent (:func:`ibscope.training.fit`
with ``torch.optim.SGD``, one step per epoch) on ``0.5 * mean((f - y)**2)``
with step ``lr = lr_scale * n k / lambda_max(Theta)`` (half the stability
limit for ``lr_scale = 1``), so ``t = lr * step``; it reports its MSE,
accuracy, empirical Fisher trace, the deviation of its mean prediction from the
infinite-width mean, and the deviation of each network from its own linearized
(infinite-width) prediction started at the same initial outputs; both
references follow the same discrete gradient descent (``learning_rate=lr``),
so the deviations measure finite width only, not the step size.

Datasets are given as ``"<source>-<n>"``: ``n`` training and ``n`` test points
drawn without overlap (seeded) from scikit-learn's digits (``digits``, 1,797
8x8 images, bundled) or from the 10,000 MNIST test images (``mnist``, IDX files
under ``$IBSCOPE_DATA/mnist``). Inputs are pixels divided by their maximum
(16 or 255), flattened; targets are one-hot labels minus 1/10 (zero mean per
example).

The seed keeps a ``run_seed`` of its own rather than a declared
``build`` / ``rows`` (:class:`ibscope.experiments.Setup`, issue 22): per
dataset it computes the closed-form kernels and the infinite ensemble's
curves (no training) and trains one finite ensemble, with a finished table
per dataset; that is several computations per seed, not one fit.

References
----------
.. [1] R. Shwartz-Ziv and A. A. Alemi, "Information in infinite ensembles of
   infinitely-wide neural networks", AABI 2020 (PMLR 118). arXiv:1911.09189.
.. [2] J. Lee et al., "Wide neural networks of any depth evolve as linear
   models under gradient descent", NeurIPS 2019.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._validation import Interval, Options
from ..ntk import ACTIVATIONS, GradientFlowMSE, ensemble_information, fisher_trace, kernels
from ..store import checked_parquet_state, safe_name, write_checked_parquet
from ..training import BatchLoss, Callback, TrainState, fit
from . import check_device, orchestrated, settings_hash, validate_config

NAME = "ntk"

__all__ = ["NAME", "Config", "PROFILES", "load_dataset", "run_seed", "plot"]


@dataclass
class Config:
    """Settings of the ``ntk`` experiment (defaults: the paper's architecture)."""

    datasets: tuple[str, ...] = ("digits-500", "mnist-20", "mnist-1000")
    depth: int = 2
    activation: str = "erf"
    weight_std: float = 1.0
    bias_std: float = 0.0
    diag_reg: float = 1e-6          # relative to the mean diagonal of the training NTK
    t_min: float = 1e-2
    t_max: float = 1e6
    n_times: int = 41               # log-spaced, plus t = 0 and t = inf
    n_samples: int = 16             # Monte Carlo draws for the I(X;Z) bounds
    var_floor: float = 1e-8
    obs_var: float = 1.0
    width: int = 1024
    n_networks: int = 4
    finite_max_steps: int = 2000
    lr_scale: float = 1.0
    fisher_points: int = 64
    device: str = "auto"

    def validate(self) -> None:
        """Raise a ValueError naming the first bad setting (called by the runner before any work)."""
        validate_config(self, _CONSTRAINTS, "ntk")
        check_device(self.device)
        if self.t_min >= self.t_max:
            raise ValueError(f"'t_min' must be below 't_max'; got {self.t_min} and {self.t_max}.")
        if isinstance(self.datasets, str) or not self.datasets:
            raise ValueError("'datasets' must be a non-empty list such as ['digits-500', 'mnist-20'].")
        for spec in self.datasets:
            if not isinstance(spec, str) or not _SPEC.match(spec):
                raise ValueError(f"Unknown dataset {spec!r} in 'datasets': use '<digits|mnist>-<n>' "
                                 f"(n train and n test points).")
            if int(_SPEC.match(spec).group(2)) < 2:
                raise ValueError(f"Dataset {spec!r} in 'datasets': n must be at least 2 (n train and n test points).")


PROFILES: dict[str, dict[str, Any]] = {
    "demo": {"datasets": ("digits-200", "mnist-20"), "width": 512, "n_networks": 3,
             "finite_max_steps": 400, "n_times": 25, "t_max": 1e5},
    "test": {"datasets": ("digits-30",), "width": 256, "n_networks": 2, "finite_max_steps": 40,
             "n_times": 6, "t_max": 1e4, "n_samples": 4, "fisher_points": 8, "device": "cpu"},
}

_CONSTRAINTS = {
    "depth": [Interval(int, 1, None)],
    "activation": [Options(ACTIVATIONS)],
    "weight_std": [Interval(float, 0, None, closed="neither")],
    "bias_std": [Interval(float, 0, None)],
    "diag_reg": [Interval(float, 0, None)],
    "t_min": [Interval(float, 0, None, closed="neither")],
    "t_max": [Interval(float, 0, None, closed="neither")],
    "n_times": [Interval(int, 1, None)],
    "n_samples": [Interval(int, 1, None)],
    "var_floor": [Interval(float, 0, None, closed="neither")],
    "obs_var": [Interval(float, 0, None, closed="neither")],
    "width": [Interval(int, 1, None)],
    "n_networks": [Interval(int, 1, None)],
    "finite_max_steps": [Interval(int, 0, None)],
    "lr_scale": [Interval(float, 0, 2, closed="neither")],
    "fisher_points": [Interval(int, 1, None)],
}

_SPEC = re.compile(r"^(digits|mnist)-(\d+)$")
_N_CLASSES = 10


def _check_config(config: Config) -> None:
    if not isinstance(config, Config):
        raise TypeError(f"'config' must be an ibscope.experiments._ntk.Config; got {type(config).__name__}.")
    config.validate()


def load_dataset(spec: str, seed: int) -> dict[str, np.ndarray]:
    """Inputs, one-hot-minus-0.1 targets and labels of a ``"<source>-<n>"`` dataset.

    Returns a dict with ``x_train, y_train, labels_train, x_test, y_test,
    labels_test`` (inputs flattened and scaled to [0, 1]).
    """
    m = _SPEC.match(spec) if isinstance(spec, str) else None
    if m is None:
        raise ValueError(f"Unknown dataset {spec!r}: use '<digits|mnist>-<n>' (n train and n test points).")
    source, n = m.group(1), int(m.group(2))
    if source == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, labels = bunch.data / 16.0, bunch.target.astype(np.int64)
    else:
        from ..data._mnist import load_mnist_idx

        images, labels = load_mnist_idx()
        x = images.reshape(len(images), -1) / 255.0
    if n < 2 or 2 * n > len(x):
        raise ValueError(f"Dataset {spec!r}: n must be in [2, {len(x) // 2}] ({len(x)} {source} images "
                         f"for n training and n test points); got {n}.")
    perm = np.random.default_rng(seed).permutation(len(x))
    tr, te = perm[:n], perm[n:2 * n]
    onehot = np.eye(_N_CLASSES)[labels] - 1.0 / _N_CLASSES
    return {"x_train": x[tr], "y_train": onehot[tr], "labels_train": labels[tr],
            "x_test": x[te], "y_test": onehot[te], "labels_test": labels[te]}


# --------------------------------------------------------------------------- #
# Finite networks (an ensemble, vectorized): NTK parameterization
# --------------------------------------------------------------------------- #
def _phi(activation: str):
    return torch.relu if activation == "relu" else torch.erf


def _init_ensemble(n_nets: int, dims: list[int], gen: torch.Generator, device: Any) -> list[torch.Tensor]:
    params = []
    for i in range(len(dims) - 1):
        w = torch.randn(n_nets, dims[i + 1], dims[i], generator=gen, dtype=torch.float64).to(device)
        b = torch.randn(n_nets, 1, dims[i + 1], generator=gen, dtype=torch.float64).to(device)
        params += [w.requires_grad_(), b.requires_grad_()]
    return params


def _forward(params: list[torch.Tensor], x: torch.Tensor, cfg: Config, keep: bool = False):
    """Outputs (E, n, k); with ``keep`` also the pre-activations and layer inputs."""
    phi = _phi(cfg.activation)
    a = x.expand(params[0].shape[0], *x.shape)
    pres, inputs = [], []
    n_layers = len(params) // 2
    for layer in range(n_layers):
        w, b = params[2 * layer], params[2 * layer + 1]
        h = torch.matmul(a, w.transpose(1, 2)) * (cfg.weight_std / math.sqrt(w.shape[2])) + cfg.bias_std * b
        if keep:
            inputs.append(a)
            pres.append(h)
        a = phi(h) if layer < n_layers - 1 else h
    return (a, pres, inputs) if keep else a


def _empirical_fisher(params: list[torch.Tensor], x: torch.Tensor, cfg: Config) -> float:
    """k * mean_i Theta_emp(x_i, x_i), averaged over the ensemble (exact per-sample norms)."""
    out, pres, inputs = _forward(params, x, cfg, keep=True)
    total = 0.0
    for c in range(out.shape[2]):
        deltas = torch.autograd.grad(out[:, :, c].sum(), pres, retain_graph=True)
        for d, a in zip(deltas, inputs, strict=True):
            per = (d * d).sum(dim=2) * (cfg.weight_std**2 * (a * a).sum(dim=2) / a.shape[2] + cfg.bias_std**2)
            total += float(per.detach().sum())
    return total / (out.shape[0] * out.shape[1])


# --------------------------------------------------------------------------- #
# One seed
# --------------------------------------------------------------------------- #
class _Ensemble(torch.nn.Module):
    """The finite networks as one module (their stacked weights are its parameters), for :func:`fit`."""

    def __init__(self, params: list[torch.Tensor], cfg: Config):
        super().__init__()
        self.params = torch.nn.ParameterList([torch.nn.Parameter(p.detach()) for p in params])
        self.cfg = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _forward(list(self.params), x, self.cfg)


def _ensemble_mse(model: _Ensemble, batch: tuple) -> torch.Tensor:
    """0.5 * mean squared error of every member, summed over the members (each follows its own gradient)."""
    x, y = batch
    return 0.5 * ((model(x) - y[None]) ** 2).mean(dim=(1, 2)).sum()


class _FiniteCurves(Callback):
    """At the steps of the time grid: MSE, accuracy, deviations from infinite width, Fisher trace."""

    def __init__(self, cfg: Config, steps_grid: np.ndarray, lr: float, xf: torch.Tensor, xs: torch.Tensor,
                 fisher_x: torch.Tensor, tens: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                 mu_inf: dict[str, torch.Tensor], lin: dict[str, torch.Tensor], y_rms: float):
        self.cfg, self.lr, self.xf, self.xs, self.fisher_x = cfg, lr, xf, xs, fisher_x
        self.tens, self.labels, self.mu_inf, self.lin, self.y_rms = tens, labels, mu_inf, lin, y_rms
        self.index = {int(step): i for i, step in enumerate(steps_grid)}
        self.records: list[tuple[float, str, str, float]] = []

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch in self.index:
            self.record(state.model, state.epoch)

    def record(self, model: _Ensemble, step: int) -> None:
        idx, params, cfg = self.index[step], list(model.params), self.cfg
        t_now = float(step * self.lr)
        with torch.no_grad():
            outs = {"train": _forward(params, self.xf, cfg), "test": _forward(params, self.xs, cfg)}
        for split, out in outs.items():
            y = self.tens[f"y_{split}"]
            self.records += [
                (t_now, split, "mse_loss", float(0.5 * ((out - y[None]) ** 2).mean())),
                (t_now, split, "accuracy", float((out.mean(0).argmax(1) == self.labels[split]).double().mean())),
                (t_now, split, "mean_deviation", _rms(out.mean(0) - self.mu_inf[split][idx]) / self.y_rms),
                (t_now, split, "lin_deviation", _rms(out - self.lin[split][:, idx]) / self.y_rms),
            ]
        self.records.append((t_now, "train", "fisher_trace", _empirical_fisher(params, self.fisher_x, cfg)))


def _rows(df: pd.DataFrame, **cols: Any) -> pd.DataFrame:
    for k, v in cols.items():
        df[k] = v
    return df


def _rms(a: torch.Tensor) -> float:
    return float(torch.sqrt((a * a).mean()))


def _run_dataset(cfg: Config, spec: str, seed: int, device: Any, progress: bool) -> pd.DataFrame:
    data = load_dataset(spec, seed)
    t_grid = np.concatenate([[0.0], np.logspace(math.log10(cfg.t_min), math.log10(cfg.t_max), cfg.n_times),
                             [np.inf]])
    kw = dict(depth=cfg.depth, activation=cfg.activation, weight_std=cfg.weight_std, bias_std=cfg.bias_std)
    tens = {k: torch.as_tensor(v, dtype=torch.float64, device=device) for k, v in data.items()
            if not k.startswith("labels")}
    k_tt = kernels(tens["x_train"], **kw)
    k_st = kernels(tens["x_test"], tens["x_train"], **kw)
    k_ss = kernels(tens["x_test"], **kw)
    flow = GradientFlowMSE(k_tt, tens["y_train"], diag_reg=cfg.diag_reg)
    n, k = data["y_train"].shape
    y_rms = _rms(tens["y_train"])
    frames = []

    # ---- infinite width ------------------------------------------------------
    splits = {
        "train": (flow.predict(t_grid), data["y_train"], k_tt.nngp, data["labels_train"]),
        "test": (flow.predict(t_grid, k_st, k_ss.nngp), data["y_test"], k_ss.nngp, data["labels_test"]),
    }
    for split, (pred, y, prior, labels) in splits.items():
        info = ensemble_information(pred, y, prior, n_samples=cfg.n_samples, var_floor=cfg.var_floor,
                                    obs_var=cfg.obs_var, seed=seed)
        frames.append(_rows(info.to_frame(), split=split, source="infinite"))
        mean, var = pred.mean.cpu().numpy(), pred.var.cpu().numpy()
        mse = 0.5 * (((mean - y[None]) ** 2).mean(axis=(1, 2)) + var.mean(axis=1))
        acc = (mean.argmax(axis=2) == labels[None]).mean(axis=1)
        frames.append(pd.DataFrame({"t": np.tile(t_grid, 2), "quantity": ["mse_loss"] * len(t_grid) + ["accuracy"] * len(t_grid),
                                    "value": np.concatenate([mse, acc]), "unit": ["none"] * (2 * len(t_grid)),
                                    "split": split, "source": "infinite"}))
    frames.append(pd.DataFrame({"t": t_grid, "quantity": "fisher_trace", "value": fisher_trace(k_tt, k),
                                "unit": "none", "split": "train", "source": "infinite"}))

    # ---- finite width ----------------------------------------------------------
    if cfg.finite_max_steps > 0:
        lam_max = float(flow.eigenvalues_[-1])
        lr = cfg.lr_scale * flow.normalization_ / lam_max
        steps_grid = np.unique(np.round(t_grid[np.isfinite(t_grid)] / lr).astype(np.int64))
        steps_grid = steps_grid[steps_grid <= cfg.finite_max_steps]
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + 17)
        dims = [data["x_train"].shape[1]] + [cfg.width] * cfg.depth + [k]
        params = _init_ensemble(cfg.n_networks, dims, gen, device)
        xf, xs = tens["x_train"], tens["x_test"]
        fisher_x = xf[: cfg.fisher_points]
        with torch.no_grad():
            f0_train, f0_test = _forward(params, xf, cfg), _forward(params, xs, cfg)
        t_fin = steps_grid * lr
        # the infinite-width predictions of the same discrete gradient descent
        mu_inf = {"train": flow.predict(t_fin, compute_cov=False, learning_rate=lr).mean,
                  "test": flow.predict(t_fin, k_st, compute_cov=False, learning_rate=lr).mean}
        lin = {"train": torch.stack([flow.linearized(t_fin, f0_train[e], learning_rate=lr)
                                     for e in range(cfg.n_networks)]),
               "test": torch.stack([flow.linearized(t_fin, f0_train[e], f0_test[e], k_st, learning_rate=lr)
                                    for e in range(cfg.n_networks)])}
        labels = {"train": torch.as_tensor(data["labels_train"], device=device),
                  "test": torch.as_tensor(data["labels_test"], device=device)}
        curves = _FiniteCurves(cfg, steps_grid, lr, xf, xs, fisher_x, tens, labels, mu_inf, lin, y_rms)
        ensemble = _Ensemble(params, cfg)
        if steps_grid[-1] == 0:  # every later time point needs more than finite_max_steps steps
            curves.record(ensemble, 0)
        else:
            # full-batch gradient descent: one "epoch" of fit is one step over the whole training set
            fit(ensemble, BatchLoss(_ensemble_mse), [(xf, tens["y_train"])], torch.optim.SGD(ensemble.parameters(), lr=lr),
                epochs=int(steps_grid[-1]), callbacks=[curves], device=device, progress=progress, desc=f"{spec} GD")
        records = curves.records
        fin = pd.DataFrame(records, columns=["t", "split", "quantity", "value"])
        fin["unit"], fin["source"] = "none", "finite"
        frames.append(fin)

    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "dataset", spec)
    out.insert(0, "seed", int(seed))
    return out[["seed", "dataset", "split", "t", "quantity", "value", "unit", "source"]]


@orchestrated
def run_seed(config: Config, seed: int, out_dir: str | os.PathLike, *, progress: bool = False) -> pd.DataFrame:
    """Run every dataset of ``config`` for one seed; tidy rows (resumes per dataset).

    Columns: ``seed, dataset, split ('train'/'test'), t, quantity, value, unit,
    source ('infinite'/'finite')``. Information quantities are in bits; MSE,
    accuracy, Fisher trace and deviations are unitless (``unit='none'``).
    The seed picks the data subsets, the Monte Carlo draws and the finite
    networks' initializations. Each dataset's rows are an intermediate
    checkpoint, ``out_dir/ntk_seed<seed>_<dataset>.parquet`` (written with a
    sha256 sidecar keyed by :func:`ibscope.experiments.settings_hash`), reused
    when an interrupted seed resumes; one of another configuration or a
    damaged one is recomputed (the latter with a warning naming the file). The
    runner keeps the finished rows; ``device`` is resolved by
    :func:`ibscope.experiments.orchestrated`.
    """
    _check_config(config)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"'seed' must be a non-negative int; got {seed!r}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device)
    key = {"settings_hash": settings_hash(config, seed=int(seed))}
    frames = []
    for spec in config.datasets:
        path = out / f"ntk_seed{int(seed)}_{safe_name(spec, what='dataset')}.parquet"
        state, reason = checked_parquet_state(path, expect=key)
        if state == "ok":
            frames.append(pd.read_parquet(path))
            continue
        if state == "damaged":
            warnings.warn(f"The ntk dataset result '{path}' is damaged ({reason}); computing it again.",
                          stacklevel=2)
        df = _run_dataset(config, spec, int(seed), device, progress)
        write_checked_parquet(path, df, key)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- #
# Figures
# --------------------------------------------------------------------------- #
_PANELS = [
    ("I(X;Z) bounds [bits]", [("infinite", "ixz_lower"), ("infinite", "ixz_upper")]),
    ("Gibbs / Bayes loss [bits per example]", [("infinite", "gibbs_loss"), ("infinite", "bayes_loss")]),
    ("KL(p_t || p_0) >= I(Z;D|X) [bits]", [("infinite", "kl_prior")]),
    ("MSE loss (0.5 mean sq. error)", [("infinite", "mse_loss"), ("finite", "mse_loss")]),
    ("accuracy of the ensemble mean", [("infinite", "accuracy"), ("finite", "accuracy")]),
    ("Fisher trace k mean Theta(x,x)", [("infinite", "fisher_trace"), ("finite", "fisher_trace")]),
    ("finite vs infinite (RMS / RMS(y))", [("finite", "lin_deviation"), ("finite", "mean_deviation")]),
]


def plot(results: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """One figure per dataset: information curves over t, infinite vs finite width.

    Curves are the mean over seeds with a min-max band; ``t = 0`` and ``t =
    inf`` rows are in the data but not on the log-time axis.
    """
    from ..plots import pyplot, save_figure

    plt = pyplot()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = results[np.isfinite(results["t"]) & (results["t"] > 0)]
    paths = []
    styles = {"train": "-", "test": "--"}
    for spec, sub in df.groupby("dataset", sort=False):
        fig, axes = plt.subplots(2, 4, figsize=(18, 8))
        for ax, (title, series) in zip(axes.flat, _PANELS, strict=False):
            for source, quantity in series:
                for split, ls in styles.items():
                    s = sub[(sub["source"] == source) & (sub["quantity"] == quantity) & (sub["split"] == split)]
                    if s.empty:
                        continue
                    g = s.groupby("t")["value"].agg(["mean", "min", "max"])
                    line, = ax.plot(g.index, g["mean"], ls, label=f"{quantity} {source} {split}")
                    if len(s["seed"].unique()) > 1:
                        ax.fill_between(g.index, g["min"], g["max"], color=line.get_color(), alpha=0.2)
            ax.set_xscale("log")
            if title.startswith(("I(X;Z)", "KL")):
                ax.set_yscale("symlog", linthresh=1.0)
                ax.set_ylim(bottom=0.0)
            ax.set_xlabel("training time t (lr x steps)")
            ax.set_title(title, fontsize=10)
            ax.legend(fontsize=7)
        axes.flat[-1].axis("off")
        fig.suptitle(f"Infinite ensemble (NTK) vs finite networks: {spec}")
        paths.append(save_figure(fig, out / f"ntk_{safe_name(spec, what='dataset')}.png", dpi=110))
    return paths
