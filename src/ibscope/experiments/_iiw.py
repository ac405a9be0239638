"""PAC-Bayes IB analysis: information in the weights vs batch size, width, label noise, activation.

One run trains an MLP with SGD (through :func:`ibscope.training.fit`, one
fit "epoch" per stretch between two tracked iterations; the minibatches are
drawn from reshuffled passes over S whatever the stretches) for a fixed
number of *iterations* (equal across batch sizes, as in Wang et al. [1]_),
tracks IIW
(:func:`ibscope.weights.iiw`, ``fisher_quadratic``) at evenly spaced
iterations, and reports the final IIW, train / test accuracy and the
generalization gap (train - test accuracy), plus the fitting-to-compression
transition of the IIW curve. The prior mean theta_0 comes from the same
initialization trained for as many iterations on a held-out part of the
training pool (``prior="heldout"``, the paper's choice) or is the
initialization itself (``prior="init"``); ``prior="both"`` tracks the two side
by side on the same training run (S is then the held-out split's S, and
quantity ``iiw`` is the held-out prior's, ``iiw_init`` the initialization's).

Data: scikit-learn digits (1797 images, split ``train_fraction`` / rest,
stratified, seeded) or MNIST-8k/2k (the 10k MNIST test images split 8,000 /
2,000; only those exist here). With ``prior="heldout"`` a fraction
``prior_fraction`` of the training pool trains the prior and the rest is S
(also with ``prior="both"``).
Label noise flips a fraction of S's (and the prior set's) labels, never the
test labels.

Rows: seed, iteration, epoch, layer, quantity, value, unit, method and the
settings (dataset, batch_size, width, depth, activation, label_noise, prior).
Quantities: ``iiw`` (per layer and total, tracked), ``train_acc``,
``test_acc`` (tracked), and in the final rows (``method="final"``) ``iiw``,
``train_acc``, ``test_acc``, ``gap``, ``phase_epoch``, ``phase_confidence``.
With ``prior="both"`` the same again for ``iiw_init`` (tracked, final,
``phase_epoch_init``, ``phase_confidence_init``). The tracked IIW rows'
``method`` is the estimator (``fisher_quadratic``); IIW at iteration 0 with
the initialization prior is 0 by construction.

One seed is declared by :func:`build` / :func:`rows` and trained by the
runner (:func:`ibscope.experiments.train_seed`, issue 22) as phases: with
``prior="heldout"`` or ``"both"`` the prior on the held-out split (phase
``prior``), then the tracked training on S from the same initialization
(phase ``train``, built once the prior is trained), each with its own
checkpoint folder in the seed's, so an interruption in the tracked training
resumes there without training the prior again. The batched path of several
seeds (:func:`run_seeds`, the runner's default for several seeds) stays as it
was: one batched network trains the seeds' priors, then their tracked
trainings, in its own ``run_seeds`` (its rows equal the one-seed path's up to
floating-point reassociation).

References
----------
.. [1] Z. Wang et al., "PAC-Bayes Information Bottleneck", ICLR 2022.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import NONE, InstanceOf, Interval, Options
from ..store import config_hash
from ..training import Callback, TrainState, fit
from . import as_config, check_seeds, check_threads, orchestrated, settings_hash, validate_config
from ._build import Setup

NAME = "iiw"

PRIORS = ("heldout", "init", "both")
SETTINGS = ("dataset", "batch_size", "width", "depth", "activation", "label_noise", "prior")


@dataclass
class Config:
    dataset: str = "mnist"            # 'digits' or 'mnist' (MNIST-8k/2k)
    data_dir: str | None = None       # for MNIST; default ibscope.data.data_dir()
    batch_size: int = 64
    width: int = 128
    depth: int = 2
    activation: str = "relu"
    label_noise: float = 0.0
    iterations: int = 4000            # SGD steps, equal across batch sizes
    lr: float = 0.05
    momentum: float = 0.9
    prior: str = "heldout"            # 'heldout', 'init' or 'both' (both tracked on one run)
    prior_fraction: float = 0.25      # of the training pool, for prior='heldout'
    train_fraction: float = 0.6       # digits only: train pool / test split
    n_evals: int = 16                 # tracked points over training (besides iteration 0)
    eval_spacing: str = "linear"      # 'linear' or 'log' (log: dense early, where IIW rises)
    iiw_examples: int = 1024          # examples per IIW estimate
    iiw_batch_size: int = 256
    torch_threads: int = 1            # torch CPU threads during the run (0: leave as is); restored after

    def validate(self) -> None:
        """Raise a ValueError naming the first bad setting (called by the runner before any work)."""
        from ..models import ACTIVATIONS

        validate_config(self, {**_CONSTRAINTS, "activation": [Options(tuple(ACTIVATIONS))]}, "iiw")
        check_threads(self.torch_threads)


_CONSTRAINTS: dict[str, list] = {
    "dataset": [Options(("digits", "mnist"))], "prior": [Options(PRIORS)],
    "eval_spacing": [Options(("linear", "log"))],
    "label_noise": [Interval(float, 0, 1)],
    **{k: [Interval(int, 1, None)] for k in ("batch_size", "width", "depth", "iterations", "n_evals",
                                             "iiw_examples", "iiw_batch_size")},
    "lr": [Interval(float, 0, None, closed="neither")],
    "momentum": [Interval(float, 0, 1, closed="left")],
    "prior_fraction": [Interval(float, 0, 1, closed="neither")],
    "train_fraction": [Interval(float, 0, 1, closed="neither")],
    "data_dir": [InstanceOf((str,), "a path (str)"), NONE],
}


PROFILES: dict[str, dict[str, Any]] = {
    "test": {"dataset": "digits", "width": 16, "depth": 1, "iterations": 40, "n_evals": 4,
             "iiw_examples": 128, "batch_size": 32},
    "demo": {"dataset": "digits", "width": 64, "iterations": 1500, "n_evals": 12, "iiw_examples": 512},
    "paper": {"dataset": "mnist", "width": 512, "iterations": 6000, "n_evals": 24, "iiw_examples": 2048},
}


def _config(config: Any) -> Config:
    return as_config(config, Config, "iiw")


def _load(cfg: Config, seed: int) -> dict[str, np.ndarray]:
    from ..data import add_label_noise, load_digits_dataset, mnist_8k_2k, train_test_split

    if cfg.dataset == "digits":
        x, y = load_digits_dataset()
        sp = train_test_split(len(y), train_fraction=cfg.train_fraction, seed=seed, stratify=y)
        d = {"x_pool": x[sp.train], "y_pool": y[sp.train], "x_test": x[sp.test], "y_test": y[sp.test]}
    else:
        m = mnist_8k_2k(cfg.data_dir, seed=seed)
        d = {"x_pool": m["x_train"], "y_pool": m["y_train"], "x_test": m["x_test"], "y_test": m["y_test"]}
    if cfg.prior in ("heldout", "both"):
        sp = train_test_split(len(d["y_pool"]), train_fraction=1.0 - cfg.prior_fraction, seed=seed + 1,
                              stratify=d["y_pool"])
        d["x_prior"], d["y_prior"] = d["x_pool"][sp.test], d["y_pool"][sp.test]
        d["x_train"], d["y_train"] = d["x_pool"][sp.train], d["y_pool"][sp.train]
    else:
        d["x_train"], d["y_train"] = d["x_pool"], d["y_pool"]
    if cfg.label_noise > 0:
        d["y_train"] = add_label_noise(d["y_train"], cfg.label_noise, n_classes=10, seed=seed + 2)
        if "y_prior" in d:
            d["y_prior"] = add_label_noise(d["y_prior"], cfg.label_noise, n_classes=10, seed=seed + 3)
    return d


def _model(cfg: Config, in_features: int, seed: int) -> nn.Module:
    from ..models import MLP

    init = "xavier" if cfg.activation in ("tanh", "sigmoid", "linear") else "he"
    return MLP(in_features, (cfg.width,) * cfg.depth, 10, activation=cfg.activation, init=init, seed=seed)


class _IterationBatches:
    """SGD iterations over reshuffled epochs, cut into segments: one :func:`ibscope.training.fit`
    "epoch" per segment (the iterations between two tracked points).

    Every draw takes the next ``batch_size`` indices of the current permutation
    and reshuffles (a new seeded ``randperm``) when fewer than ``batch_size``
    remain, so the batches do not depend on where the segments are cut. The
    state (generator, permutation, position, segment) is checkpointed by fit.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, segments: list[int]):
        self.x, self.y, self.n, self.bs = x, y, int(x.shape[0]), int(batch_size)
        self.segments = list(segments)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.perm = torch.randperm(self.n, generator=self.generator)
        self.pos, self.segment = 0, 0

    def _next(self) -> torch.Tensor:
        if self.pos + self.bs > self.n:
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return idx

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        length = self.segments[self.segment]
        self.segment += 1
        for _ in range(length):
            idx = self._next()
            yield self.x[idx], self.y[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm, "pos": self.pos,
                "segment": self.segment}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.generator.set_state(s["generator"])
        self.perm, self.pos, self.segment = s["perm"], int(s["pos"]), int(s["segment"])


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def _sgd(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)


class _Tracker(Callback):
    """IIW and accuracies at every tracked iteration (fit epoch e = iteration ``evals[e]``)."""

    def __init__(self, evaluate: Callable[[int, Any], list[dict[str, Any]]], evals: list[int],
                 make_prior: Callable[[], dict[str, dict[str, torch.Tensor]]], chash: str):
        self.evaluate, self.evals, self.make_prior, self.chash = evaluate, evals, make_prior, chash
        self.prior: dict[str, dict[str, torch.Tensor]] | None = None  # quantity -> prior mean
        self.rows: list[dict[str, Any]] = []

    def on_train_begin(self, state: TrainState) -> None:
        if not state.resumed:
            self.prior, self.rows = self.make_prior(), []

    def on_epoch_end(self, state: TrainState) -> None:
        self.rows += self.evaluate(self.evals[state.epoch], self.prior)

    def state_dict(self) -> dict[str, Any]:
        return {"config_hash": self.chash, "prior": self.prior, "rows": self.rows}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        if s["config_hash"] != self.chash:
            raise ValueError("The iiw checkpoint belongs to another configuration; delete it or use another out_dir.")
        if not all(isinstance(v, dict) for v in s["prior"].values()):
            raise ValueError("The iiw checkpoint is of an older format; delete it or use another out_dir.")
        self.prior, self.rows = {k: dict(v) for k, v in s["prior"].items()}, list(s["rows"])


def _eval_points(cfg: Config) -> list[int]:
    """Tracked iterations: 0 and ``n_evals`` points up to ``iterations``, evenly or log-spaced (rounded, unique)."""
    if cfg.eval_spacing == "log":
        pts = np.concatenate([[0.0], np.geomspace(1, cfg.iterations, cfg.n_evals)])
    else:
        pts = np.linspace(0, cfg.iterations, cfg.n_evals + 1)
    return sorted({int(round(v)) for v in pts})


def _hash(cfg: Config) -> str:
    """The key of the training checkpoint (the runner's settings hash: torch_threads is not part of it)."""
    return settings_hash(cfg)


@orchestrated
def run_seed(config: Any, seed: int, out_dir: Any, *, progress: bool = False) -> pd.DataFrame:
    """Train one seed, tracking IIW; resumable from ``out_dir`` (checkpoint at every tracked point).

    The runner's per-seed path (:func:`ibscope.experiments.train_seed`): the
    phases of :func:`build` trained in order, each with its checkpoint folder
    in ``out_dir`` (the runner's ``seed_<s>/``), then :func:`rows`; the runner
    keeps the finished rows; ``torch_threads`` is set by
    :func:`ibscope.experiments.orchestrated`.
    """
    return _run_seed(_config(config), seed, Path(out_dir), progress=progress)


@orchestrated
def run_seeds(config: Any, seeds: list[int], out_dir: Any, *, progress: bool = False) -> dict[int, pd.DataFrame]:
    """Several seeds trained as one batched network; ``{seed: rows}`` as :func:`run_seed` gives them.

    See the batched-seeds section at the end of this module (rows equal the one-seed path
    up to floating-point reassociation; ``out_dir`` holds the batch's
    checkpoint, so an interrupted batch resumes).
    """
    return _run_batched(_config(config), check_seeds(seeds), Path(out_dir), progress=progress)


def _run_seed(cfg: Config, seed: int, out: Path, *, progress: bool) -> pd.DataFrame:
    from ._build import train_seed

    return train_seed(sys.modules[__name__], cfg, seed, out, progress=progress)


def build(config: Any, seed: int, out_dir: Path) -> dict[str, Any]:
    """The phases of one seed (see :mod:`ibscope.experiments._build`).

    With ``prior='heldout'`` or ``'both'``, phase ``prior``: the seed's
    initialization trained for ``iterations`` SGD steps on the held-out split
    (checkpoint folder ``iiw_seed<seed>_prior-<h>/``, <h> the first 12 hex
    digits of the settings hash: run_seed may be given one folder for several
    configurations); then phase ``train``, built once the prior
    is trained: the tracked training on S from the same initialization, whose
    tracker takes the trained prior (and, for ``'init'`` / ``'both'``, the
    initialization) as the prior means (checkpoint folder
    ``iiw_seed<seed>.ckpt/``, the name it always had).

    Parameters
    ----------
    config : Config
    seed : int
    out_dir : Path
        The seed's folder (unused: the checkpoints are the runner's).

    Returns
    -------
    dict
        Phase name -> :class:`~ibscope.experiments.Setup` or callable.

    References
    ----------
    .. [1] Z. Wang et al., "PAC-Bayes Information Bottleneck", ICLR 2022.
    """
    from ..weights import snapshot_parameters

    cfg = _config(config)
    chash = _hash(cfg)
    d = _load(cfg, seed)
    x, y = torch.as_tensor(d["x_train"]), torch.as_tensor(d["y_train"])
    xt, yt = torch.as_tensor(d["x_test"]), torch.as_tensor(d["y_test"])
    model = _model(cfg, x.shape[1], seed)
    evals = _eval_points(cfg)
    batches = _IterationBatches(x, y, cfg.batch_size, seed, list(np.diff(evals).astype(int).tolist()))
    iiw_data = _iiw_examples(x, y, cfg, seed)
    row = _row_maker(cfg, seed, int(x.shape[0]))
    phases: dict[str, Any] = {}
    if cfg.prior in ("heldout", "both"):
        pm = _model(cfg, x.shape[1], seed)  # same initialization, trained as long on the held-out part
        xp, yp = torch.as_tensor(d["x_prior"]), torch.as_tensor(d["y_prior"])
        phases["prior"] = Setup(pm, nn.CrossEntropyLoss(), _IterationBatches(xp, yp, cfg.batch_size, seed + 7,
                                                                             [cfg.iterations]),
                                _sgd(pm, cfg), epochs=1, checkpoint=f"iiw_seed{seed}_prior-{chash[:12]}",
                                desc=f"iiw seed {seed} prior")

    def train_phase(setups: dict[str, Setup], states: dict[str, Any]) -> Setup:
        def make_prior() -> dict[str, dict[str, torch.Tensor]]:
            """Prior mean per IIW quantity: 'iiw' (the config's prior) and, for prior='both', 'iiw_init'."""
            priors = {}
            if "prior" in setups:
                priors["iiw"] = snapshot_parameters(setups["prior"].model)
            if cfg.prior in ("init", "both"):  # called before the first step: the initialization
                priors["iiw" if cfg.prior == "init" else "iiw_init"] = snapshot_parameters(model)
            return priors

        def evaluate(it: int, priors: dict[str, dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
            return tracked_rows(model, priors, iiw_data, (x, y), (xt, yt), row, it)

        tracker = _Tracker(evaluate, evals, make_prior, chash)
        return Setup(model, nn.CrossEntropyLoss(), batches, _sgd(model, cfg), epochs=len(batches.segments),
                     callbacks=[tracker], checkpoint=f"iiw_seed{seed}.ckpt", desc=f"iiw seed {seed}",
                     context={"tracker": tracker, "row": row})

    phases["train"] = train_phase
    return phases


def rows(config: Any, seed: int, setups: dict[str, Setup], states: dict[str, Any]) -> pd.DataFrame:
    """The seed's rows: the tracked ones and the final ones (module docstring).

    Parameters
    ----------
    config : Config
    seed : int
    setups, states : dict
        The trained phases of :func:`build` and fit's final states, by phase name.

    Returns
    -------
    pandas.DataFrame
    """
    ctx = setups["train"].context
    tracker = ctx["tracker"]
    return final_frame(tracker.rows, list(tracker.prior), ctx["row"], seed)


def _iiw_examples(x: torch.Tensor, y: torch.Tensor, cfg: Config, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The seed's ``iiw_examples`` examples of S (generator ``seed + 5``) in batches of ``iiw_batch_size``."""
    sub = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed + 5))[:cfg.iiw_examples]
    return [(x[sub][i:i + cfg.iiw_batch_size], y[sub][i:i + cfg.iiw_batch_size])
            for i in range(0, sub.numel(), cfg.iiw_batch_size)]


def tracked_rows(model: nn.Module, priors: dict[str, dict[str, torch.Tensor]], iiw_data: list[Any],
                 train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                 row: Callable[..., dict[str, Any]], it: int) -> list[dict[str, Any]]:
    """One tracked point of a seed: IIW per prior quantity (per layer and total), train and test accuracy.

    IIW is measured by :func:`ibscope.weights._tracker.measure_weights`, the code the
    :class:`~ibscope.weights.WeightInformation` callback records with (``quantities=("iiw",)``,
    ``iiw_kwargs={"n_train": |S|}``); each prior's rows are named by its key in ``priors``.
    """
    from ..weights._tracker import measure_weights

    rows = []
    loss = nn.CrossEntropyLoss(reduction="none")
    for quantity, prior in priors.items():
        measured = measure_weights(model, loss, iiw_data, quantities=("iiw",), prior_mean=prior,
                                   iiw_kwargs={"n_train": int(train[0].shape[0])})
        rows += [row(it, q["layer"], quantity, q["value"], q["unit"], q["method"]) for q in measured]
    rows.append(row(it, "total", "train_acc", _accuracy(model, *train), "fraction", "tracked"))
    rows.append(row(it, "total", "test_acc", _accuracy(model, *test), "fraction", "tracked"))
    return rows


def _row_maker(cfg: Config, seed: int, n_train: int) -> Callable[..., dict[str, Any]]:
    """``row(iteration, layer, quantity, value, unit, method)`` -> one result row of ``seed``."""
    settings = {k: getattr(cfg, k) for k in SETTINGS}

    def row(it: int, layer: str, quantity: str, value: float, unit: str, method: str) -> dict[str, Any]:
        return {"seed": seed, "iteration": it, "epoch": it * cfg.batch_size / n_train, "layer": layer,
                "quantity": quantity, "value": float(value), "unit": unit, "method": method,
                **settings}

    return row


def final_frame(tracked: list[dict[str, Any]], quantities: list[str], row: Callable[..., dict[str, Any]],
                seed: int) -> pd.DataFrame:
    """A seed's tracked rows plus its final rows (final IIW per quantity, accuracies, gap, phase)."""
    from ..weights import detect_phase_transition

    rows = list(tracked)
    df = pd.DataFrame(rows)
    last = int(df.iteration.max())

    def final(q: str) -> float:
        return float(df[(df.quantity == q) & (df.iteration == last) & (df.layer == "total")].value.iloc[0])

    acc = {q: final(q) for q in ("train_acc", "test_acc")}
    rows += [row(last, "total", q, final(q), "bits", "final") for q in quantities]
    rows.append(row(last, "total", "train_acc", acc["train_acc"], "fraction", "final"))
    rows.append(row(last, "total", "test_acc", acc["test_acc"], "fraction", "final"))
    rows.append(row(last, "total", "gap", acc["train_acc"] - acc["test_acc"], "fraction", "final"))
    for quantity in quantities:
        suffix = quantity[len("iiw"):]  # '' or '_init'
        tot = df[(df.quantity == quantity) & (df.layer == "total")].sort_values("iteration")
        if len(tot) >= 3:
            ph = detect_phase_transition(tot.epoch.to_numpy(), tot.value.to_numpy(), window=3, seed=seed)
            rows.append(row(last, "total", "phase_epoch" + suffix, ph.epoch if ph.transition else float("nan"),
                            "epoch", "final"))
            rows.append(row(last, "total", "phase_confidence" + suffix, ph.confidence, "fraction", "final"))
    return pd.DataFrame(rows)


def _varied(results: pd.DataFrame) -> list[str]:
    return [k for k in SETTINGS if k in results and results[k].nunique() > 1 and k != "dataset"]


def sweep_points(results: pd.DataFrame) -> pd.DataFrame:
    """Final IIW, accuracies and gap per sweep point (mean over seeds)."""
    fin = results[results.method == "final"]
    keys = [k for k in SETTINGS if k in fin]
    wide = fin.pivot_table(index=[*keys, "seed"], columns="quantity", values="value").reset_index()
    return wide.groupby(keys, dropna=False).mean(numeric_only=True).drop(columns="seed").reset_index()


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Spearman (rank) and Pearson correlation between final IIW and the generalization gap
    across the sweep points (seeds averaged), one row per dataset."""
    from scipy import stats

    pts = sweep_points(results)
    varied = ",".join(_varied(results)) or "none"
    out = []
    for ds, g in pts.groupby("dataset"):
        row = {"dataset": ds, "varied": varied, "n_points": len(g)}
        if len(g) >= 3 and g.iiw.nunique() > 1 and g.gap.nunique() > 1:
            rho, p_rho = stats.spearmanr(g.iiw, g.gap)
            r, p_r = stats.pearsonr(g.iiw, g.gap)
        else:
            rho = p_rho = r = p_r = float("nan")
        row.update({"spearman_rho": float(rho), "spearman_p": float(p_rho), "pearson_r": float(r),
                    "pearson_p": float(p_r)})
        out.append(row)
    return pd.DataFrame(out)


def plot(results: pd.DataFrame, out_dir: Any) -> list[Path]:
    """IIW over training per setting, and final IIW against the generalization gap."""
    from ..plots import pyplot, save_figure

    plt = pyplot()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    varied = _varied(results) or ["batch_size"]
    tracked = results[(results.quantity == "iiw") & (results.layer == "total") & (results.method != "final")]
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, g in tracked.groupby(["dataset", *varied]):
        m = g.groupby("epoch").value.mean()
        ax.plot(m.index, m.values, marker="o", ms=3, label=", ".join(str(k) for k in key))
    ax.set_xlabel("epoch")
    ax.set_ylabel("IIW (bits)")
    ax.set_yscale("log")
    ax.set_title("Information in the weights over training")
    ax.legend(fontsize=7, title=",".join(["dataset", *varied]), title_fontsize=7)
    paths.append(save_figure(fig, out / "iiw_curves.png", dpi=120))
    pts = sweep_points(results)
    summ = summarize(results)
    fig, ax = plt.subplots(figsize=(5, 4))
    for ds, g in pts.groupby("dataset"):
        ax.scatter(g.iiw, g.gap, label=str(ds))
        for _, r in g.iterrows():
            ax.annotate(",".join(str(r[k]) for k in varied), (r.iiw, r.gap), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("final IIW (bits)")
    ax.set_ylabel("generalization gap (train - test accuracy)")
    ax.set_title("; ".join(f"{r.dataset}: Spearman {r.spearman_rho:.2f}" for r in summ.itertuples()), fontsize=9)
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "iiw_vs_gap.png", dpi=120))
    return paths


# --------------------------------------------------------------------------- batched seeds
# run_seeds trains the seeds of one configuration as one BatchedMLP through fit, and the
# held-out priors ("heldout" or "both") as a second one. Each seed keeps what run_seed gives it
# alone: its data split, label noise, initialization (_model(cfg, ..., seed)), its minibatch
# stream (an _IterationBatches seeded `seed`, the prior's `seed + 7`) and its IIW examples. The
# training loss is the sum of the seeds' mean cross entropies, so SGD with momentum (element-wise)
# takes for each seed the step it takes alone. At every tracked iteration each seed is unbatched
# and measured by tracked_rows (weights.measure_weights, the WeightInformation callback's
# measuring code), as in run_seed, so the rows equal run_seed's up to floating-point
# reassociation in the batched products (tested). The IIW estimates (per-example gradients) are
# not batched: batching pays for the training, which a small MLP spends in per-call overhead.
# Resume: out_dir holds fit's checkpoint (every tracked iteration, with the priors and the rows).


class _SeedIterationBatches:
    """The seeds' iteration streams drawn together: the k-th batches stacked ``(S, b, ...)``."""

    def __init__(self, streams: Sequence[Any]):
        self.streams = list(streams)
        self.segments = self.streams[0].segments

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batches in zip(*self.streams, strict=True):
            yield torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])

    def state_dict(self) -> dict[str, Any]:
        return {"streams": [s.state_dict() for s in self.streams]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["streams"]) != len(self.streams):
            raise ValueError("The iiw batch checkpoint holds another number of seeds.")
        for s, st in zip(self.streams, state["streams"], strict=True):
            s.load_state_dict(st)


def _batched_sgd(model: nn.Module, data: _SeedIterationBatches, cfg: Any, **kwargs: Any) -> Any:
    from ..models import batched_cross_entropy

    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    return fit(model, batched_cross_entropy, data, opt, epochs=len(data.segments), **kwargs)


def _run_batched(cfg: Any, seeds: list[int], out: Path, *, progress: bool) -> dict[int, pd.DataFrame]:
    from ..models import BatchedMLP
    from ..weights import snapshot_parameters

    out.mkdir(parents=True, exist_ok=True)
    data = [_load(cfg, s) for s in seeds]
    keys = [k for k in ("x_train", "x_test", "x_prior") if k in data[0]]
    if any(d[k].shape != data[0][k].shape for d in data for k in keys):
        return {s: _run_seed(cfg, s, out / f"seed_{s}", progress=progress) for s in seeds}
    chash = _hash(cfg)
    xs = [torch.as_tensor(d["x_train"]) for d in data]
    ys = [torch.as_tensor(d["y_train"]) for d in data]
    tests = [(torch.as_tensor(d["x_test"]), torch.as_tensor(d["y_test"])) for d in data]
    in_features, n_train = int(xs[0].shape[1]), int(xs[0].shape[0])
    model = BatchedMLP([_model(cfg, in_features, s) for s in seeds])
    evals = _eval_points(cfg)
    segments = list(np.diff(evals).astype(int).tolist())
    batches = _SeedIterationBatches([_IterationBatches(x, y, cfg.batch_size, s, segments)
                                     for x, y, s in zip(xs, ys, seeds, strict=True)])
    iiw_data = [_iiw_examples(x, y, cfg, s) for x, y, s in zip(xs, ys, seeds, strict=True)]
    rows_of = {s: _row_maker(cfg, s, n_train) for s in seeds}

    def make_prior() -> dict[str, dict[str, dict[str, torch.Tensor]]]:
        """Per seed (str key), the prior mean per IIW quantity, as the one-seed path's ``make_prior``."""
        priors: dict[str, dict[str, dict[str, torch.Tensor]]] = {str(s): {} for s in seeds}
        if cfg.prior in ("heldout", "both"):
            pm = BatchedMLP([_model(cfg, in_features, s) for s in seeds])
            streams = [_IterationBatches(torch.as_tensor(d["x_prior"]), torch.as_tensor(d["y_prior"]),
                                         cfg.batch_size, s + 7, [cfg.iterations])
                       for d, s in zip(data, seeds, strict=True)]
            _batched_sgd(pm, _SeedIterationBatches(streams), cfg, progress=False)
            for i, s in enumerate(seeds):
                priors[str(s)]["iiw"] = snapshot_parameters(pm.unbatch(i))
        if cfg.prior in ("init", "both"):
            for i, s in enumerate(seeds):
                priors[str(s)]["iiw" if cfg.prior == "init" else "iiw_init"] = snapshot_parameters(model.unbatch(i))
        return priors

    def evaluate(it: int, priors: dict[str, dict[str, dict[str, torch.Tensor]]]) -> list[dict[str, Any]]:
        return [r for i, s in enumerate(seeds)
                for r in tracked_rows(model.unbatch(i), priors[str(s)], iiw_data[i], (xs[i], ys[i]), tests[i],
                                      rows_of[s], it)]

    # the checkpoint belongs to these seeds of this configuration
    tracker = _Tracker(evaluate, evals, make_prior, config_hash({"config_hash": chash, "seeds": seeds}))
    _batched_sgd(model, batches, cfg, callbacks=[tracker], checkpoint_dir=out,
                 progress=progress, desc=f"iiw {len(seeds)} seeds")
    priors = tracker.prior or {}  # set on train begin, or restored from the checkpoint
    return {s: final_frame([r for r in tracker.rows if r["seed"] == s], list(priors[str(s)]), rows_of[s], s)
            for s in seeds}


__all__ = ["NAME", "Config", "PROFILES", "run_seed", "run_seeds", "build", "rows", "plot", "summarize",
           "sweep_points"]
