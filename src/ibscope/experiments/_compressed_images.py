"""The compressed estimator on synthetic images with known MI, as Butakov et al. (2024, Sec. 5) did it.

Ground truth: a pair of correlated ``latent_dim``-dimensional Gaussian
latents with the MI split equally over the components and randomly mixed
(:class:`ibscope.tasks.GaussianSplit`), rendered into two ``size x size``
images by an injective smooth map, so I(image_x; image_y) equals the
latents' MI. Two image families, the paper's two tasks:

* ``task='blobs'``: Gaussian blobs (:func:`ibscope.tasks.render_blobs`),
  by default a 2-D latent (the blob's centre) at 16x16; ``blob_renderer='paper'``
  draws them as the paper's code does (wider blobs, centres anywhere in the image);
* ``task='rectangles'``: smooth-edged rectangles (:func:`render_rectangles`),
  by default a 4-D latent (centre and half-sizes) at 32x32.

The paper's pipeline [1]_: each image is compressed to a code as wide as the
latent, by PCA or by a convolutional autoencoder (batch norm, LeakyReLU, tanh
bottleneck), both fitted on ``n_fit`` (6000) *separate* images, never on the
estimated samples; the autoencoder is trained until its held-out
reconstruction error converges (:func:`ibscope.estimators._compressed.fit_autoencoder`;
epochs and final MSE are recorded in every row and the per-epoch history in
``compressor_seed<s>_<hash>.json``). The ``ae_*`` settings choose its
training: by default Adam (lr 1e-3, batch 128) on the MSE until the
held-out MSE improves by < 1% over ``ae_patience`` epochs; the paper's blob
autoencoder (Information-v3, "Mutual Information tests (gaussian)") was
trained on the mean absolute error (``ae_loss='mae'``) for a fixed 2000
epochs (``ae_patience=None``, ``ae_max_epochs=2000``) in batches of 5000
(``ae_batch_size``), each epoch on freshly zoomed-in images (Keras
RandomZoom (-0.2, 0): ``ae_zoom=0.2``), with Gaussian noise of std 0.1 on
the encoder's input and 0.02 on the code while training
(``ae_input_noise``, ``ae_code_noise``). ``ae_lr_decays`` lets the
stopping rule divide the learning rate by 10 before it stops (not the
paper's). ``ae_by_task`` sets any of them for one task only (e.g.
``{'blobs': {'ae_loss': 'mae', 'ae_zoom': 0.2}}``); the settings a curve's
autoencoder was trained with are written to its ``compressor_seed*.json``. The codes are whitened and the MI is the
Kozachenko-Leonenko entropy difference with k = 5 neighbours, the weighted
KL of Berrett et al. [2]_ when the joint code dimension exceeds 4
(``estimator='paper'``; ``'ksg'``, ``'kl'``, ``'wkl'`` force one). As in the
paper's code, each of the three entropies -- the joint's included -- is
estimated on its own whitened codes plus 0.5 log det of their covariance
(``whiten_entropies``; ``whiten_for_entropy`` in ``ibscope.estimators._knn``): at high
MI the joint codes lie near a thin sheet that isotropic kNN balls fit badly,
and whitening the joint removes most of that bias (whitened KL k = 5 on the
blob centres themselves, n = 5000: 8.3 nats at a true 10, 6.2 with per-variable
whitening only).

One task (``run_seed``) evaluates one estimate-vs-truth curve: every true MI
of ``mi_nats`` (the paper's grid: linspace(0, 10, 41) nats) for one task and
one compression, on ``n_samples`` (5000) fresh samples per value; the seed
sets the samples, the latent mixing, the fitting images and the
compressor's seed. The compressor is fitted once per curve (the images'
marginal law does not depend on the MI, so one compressor serves x, y and
every MI value). Rows: one per true MI, with ``true_mi``, ``estimate`` and
``error`` (estimate - truth) in ``unit`` (bits by default; ``true_mi_nats``
keeps the grid). Finished cells are stored in ``out_dir`` at once, so an
interrupted task resumes at its first unfinished cell (the compressor is
refitted, deterministically on CPU). ``summarize`` gives the error table
(mean over seeds with its Student-t interval, per task, size, compression
and true MI); ``plot`` the paper's figure (one panel per task).

The seed keeps a ``run_seed`` of its own rather than a declared ``build`` /
``rows`` (:class:`ibscope.experiments.Setup`, issue 22): it trains no network
through :func:`ibscope.training.fit` -- the compressor is fitted inside the
estimator layer (:func:`ibscope.estimators._compressed.fit_autoencoder`, on
the seed's own separate images) -- so there is no model, optimizer or
callback for the runner to own. The runner still owns the seed, the
threads, the result cache and the config hash; the per-cell checkpoints
are keyed by :func:`ibscope.experiments.settings_hash`.

Registry name ``compressed_images`` (module ``_compressed_images``).

References
----------
.. [1] I. Butakov, A. Tolmachev, S. Malanchuk, A. Neopryatnaya, A. Frolov and
   K. Andreev, "Information bottleneck analysis of deep neural networks via
   lossy compression", ICLR 2024.
.. [2] T. B. Berrett, R. J. Samworth and M. Yuan, "Efficient multivariate
   entropy estimation via k-nearest neighbour distances", Annals of
   Statistics 47(1), 288-318, 2019.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr

from .._units import from_nats, nats_to
from .._validation import NONE, Interval, Options
from ..store import atomic_write_json, atomic_write_parquet
from ..tasks._images import BLOB_STYLES
from . import as_config, check_sizes, settings_hash, validate_config

NAME = "compressed_images"
COMPRESSIONS = ("pca", "autoencoder")
TASKS = ("blobs", "rectangles")
ESTIMATORS = ("paper", "ksg", "kl", "wkl")
# the paper's two tasks: image side and latent dimension
PAPER_TASKS = {"blobs": {"size": 16, "latent_dim": 2}, "rectangles": {"size": 32, "latent_dim": 4}}


def render_rectangles(z: np.ndarray, size: int, *, edge: float = 1.0) -> np.ndarray:
    """Render latents z (n, 4) as (n, size*size) smooth-edged rectangles (float64).

    Each coordinate goes through the standard normal CDF (a bijection
    R -> (0, 1)) and sets one parameter: z_1, z_2 the centre (c_x, c_y) in
    [size/4, 3 size/4], z_3, z_4 the half-sizes (h_x, h_y) in [2, size/5 + 2].
    The rectangle is blurred by a Gaussian of ``edge`` pixels, so pixel
    (i, j) = p_y(i) p_x(j) with p(j) = Phi((j - c + h)/edge) - Phi((j - c - h)/edge).
    The map is smooth and injective (the rank-one image gives p_x and p_y up
    to a common scale, and the Gaussian tails of each profile fix both of
    its edges), so it keeps the latents' MI; a hard-edged rectangle on a
    pixel grid would not be injective.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != 4:
        raise ValueError(f"render_rectangles needs latents of shape (n, 4). Got {z.shape} instead.")
    u = ndtr(z)
    lo, hi = size / 4.0, 3.0 * size / 4.0
    c = lo + (hi - lo) * u[:, :2]
    h = 2.0 + (size / 5.0) * u[:, 2:]
    grid = np.arange(size, dtype=np.float64)

    def profile(ci: np.ndarray, hi_: np.ndarray) -> np.ndarray:
        return (ndtr((grid[None, :] - (ci - hi_)[:, None]) / edge)
                - ndtr((grid[None, :] - (ci + hi_)[:, None]) / edge))

    px, py = profile(c[:, 0], h[:, 0]), profile(c[:, 1], h[:, 1])
    return (py[:, :, None] * px[:, None, :]).reshape(len(z), size * size)


def _render(cfg: Config, z: np.ndarray) -> np.ndarray:
    if cfg.task == "rectangles":
        return render_rectangles(z, cfg.size)
    from ..tasks import render_blobs

    return render_blobs(z, cfg.size, style=cfg.blob_renderer)


@dataclass
class Config:
    mi_nats: tuple[float, ...] = tuple(0.25 * i for i in range(41))  # the paper's grid: linspace(0, 10, 41)
    task: str = "blobs"                 # 'blobs' (paper: 16x16, 2-D latent) or 'rectangles' (32x32, 4-D)
    size: int | None = None             # image side; None: the paper's for the task
    latent_dim: int | None = None       # dimension of each latent; None: the paper's for the task
    blob_renderer: str = "ibscope"      # blobs: 'ibscope' (std 2 px, centres in [2, size-3]) or 'paper'
                                        # (Butakov et al.'s exp(-10 r^2) on [0, 1]^2, 2-D latents only)
    compression: str = "pca"            # 'pca' or 'autoencoder'
    dim: int | None = None              # code dimension of each image; None: latent_dim (the paper's)
    n_samples: int = 5000               # samples per estimate (paper: 5000)
    n_fit: int = 6000                   # separate images the compressor is fitted on (paper: 6000)
    estimator: str = "paper"            # 'paper': KL (joint code dim <= 4) / WKL (above); or ksg, kl, wkl
    k: int = 5                          # neighbours of the inner estimator (paper: 5)
    whiten: bool = True                 # whiten each variable's codes (paper: yes)
    whiten_entropies: bool | None = None  # KL / WKL: each entropy (the joint's too) on its own whitened
                                        # codes + 0.5 log det (paper: yes); None: yes unless estimator 'ksg'
    ae_max_epochs: int = 200            # autoencoder: at most this many epochs ...
    ae_patience: int | None = 10        # ... stopping when the held-out MSE improves < 1% over this many
                                        # (None: always ae_max_epochs, the paper's fixed epochs)
    ae_lr_decays: int = 0               # the stopping rule first divides the lr by 10 this many times
    ae_channels: tuple[int, ...] = (16, 32)
    ae_dense: int = 128
    ae_lr: float = 1e-3                 # Adam learning rate (paper: 1e-3)
    ae_batch_size: int = 128            # minibatch size (paper: 5000)
    ae_loss: str = "mse"                # training loss, 'mse' or 'mae' (paper: 'mae')
    ae_zoom: float = 0.0                # random zoom-in of the training images by up to this fraction
                                        # per axis, fresh every epoch (paper, blobs: 0.2)
    ae_input_noise: float = 0.0         # training-time Gaussian noise on the encoder input (paper: 0.1)
    ae_code_noise: float = 0.0          # training-time Gaussian noise on the code (paper: 0.02)
    ae_by_task: dict[str, dict[str, Any]] = field(default_factory=dict)  # per task: ae_* settings that
                                        # replace the ones above for that task, e.g. {'blobs': {'ae_zoom': 0.2}}
    unit: str = "bits"

    def __post_init__(self) -> None:
        self.mi_nats = tuple(float(m) for m in self.mi_nats)
        check_sizes(self.ae_channels, "ae_channels", "compressed_images")  # before the coercion
        self.ae_channels = tuple(int(h) for h in self.ae_channels)
        if self.task in PAPER_TASKS:
            if self.size is None:
                self.size = PAPER_TASKS[self.task]["size"]
            if self.latent_dim is None:
                self.latent_dim = PAPER_TASKS[self.task]["latent_dim"]
            if self.dim is None and isinstance(self.latent_dim, int):
                self.dim = self.latent_dim
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad setting."""
        if not self.mi_nats or any(not math.isfinite(m) or m < 0 for m in self.mi_nats):
            raise ValueError(f"The 'mi_nats' of compressed_images must be a non-empty list of finite MI values "
                             f">= 0 (nats). Got {self.mi_nats!r} instead.")
        validate_config(self, _CONSTRAINTS, "compressed_images")
        allowed = (4,) if self.task == "rectangles" else (1, 2, 3, 4)
        if isinstance(self.latent_dim, bool) or self.latent_dim not in allowed:
            raise ValueError(f"The 'latent_dim' of compressed_images must be one of {allowed} for "
                             f"task {self.task!r}. Got {self.latent_dim!r} instead.")
        if self.task == "blobs" and self.blob_renderer == "paper" and self.latent_dim != 2:
            raise ValueError(f"The 'blob_renderer' 'paper' of compressed_images draws 2-D latents only "
                             f"(the blob's centre). Got latent_dim {self.latent_dim!r}.")
        if self.k >= self.n_samples:
            raise ValueError(f"The 'k' of compressed_images must be below 'n_samples' ({self.n_samples}). "
                             f"Got {self.k!r} instead.")
        if self.dim >= self.size * self.size:
            raise ValueError(f"The 'dim' of compressed_images must be below the pixel count {self.size ** 2}. "
                             f"Got {self.dim!r} instead.")
        if not isinstance(self.whiten, bool):
            raise ValueError(f"The 'whiten' of compressed_images must be a bool. Got {self.whiten!r} instead.")
        if self.whiten_entropies is not None and not isinstance(self.whiten_entropies, bool):
            raise ValueError(f"The 'whiten_entropies' of compressed_images must be a bool or None. Got "
                             f"{self.whiten_entropies!r} instead.")
        if self.whiten_entropies and self.estimator == "ksg":
            raise ValueError("The 'whiten_entropies' of compressed_images applies to the entropy-difference "
                             "estimators (paper, kl, wkl), not to 'ksg'. Set it to False or None.")
        check_sizes(self.ae_channels, "ae_channels", "compressed_images")
        if not isinstance(self.ae_by_task, dict) or not all(
                t in TASKS and isinstance(o, dict) and set(o) <= _AE_FIELDS for t, o in self.ae_by_task.items()):
            raise ValueError(f"The 'ae_by_task' of compressed_images must map tasks {TASKS} to dicts of "
                             f"autoencoder settings {sorted(_AE_FIELDS)}. Got {self.ae_by_task!r} instead.")
        for task in self.ae_by_task:
            try:
                self.ae_settings(task)
            except ValueError as e:
                raise ValueError(f"The 'ae_by_task' of compressed_images, task {task!r}: {e}") from None

    def ae_settings(self, task: str | None = None) -> Config:
        """This config with the ``ae_by_task`` settings of ``task`` (default: its own task) applied."""
        over = self.ae_by_task.get(self.task if task is None else task, {})
        return replace(self, ae_by_task={}, **over) if over else self

    @property
    def inner_params(self) -> dict[str, Any]:
        """The inner estimator's parameters: ``k``, and ``whiten`` for KL / WKL (see ``whiten_entropies``)."""
        per_entropy = self.inner != "ksg" if self.whiten_entropies is None else self.whiten_entropies
        return {"k": self.k, **({"whiten": True} if per_entropy else {})}

    @property
    def inner(self) -> str:
        """The inner estimator's registry name ('paper': KL up to joint code dimension 4, WKL above)."""
        if self.estimator != "paper":
            return self.estimator
        return "kl" if 2 * self.dim <= 4 else "wkl"


_AE_FIELDS = {f.name for f in fields(Config) if f.name.startswith("ae_") and f.name != "ae_by_task"}

_CONSTRAINTS: dict[str, list] = {  # 'task' first: the other defaults follow from it
    "task": [Options(TASKS)], "blob_renderer": [Options(BLOB_STYLES)], "compression": [Options(COMPRESSIONS)], "estimator": [Options(ESTIMATORS)],
    "unit": [Options(("bits", "nats"))],
    **{name: [Interval(int, lo, None)] for name, lo in (("size", 8), ("dim", 1), ("n_samples", 10), ("n_fit", 20),
                                                         ("k", 1), ("ae_max_epochs", 1), ("ae_dense", 1),
                                                         ("ae_batch_size", 2), ("ae_lr_decays", 0))},
    "ae_patience": [Interval(int, 1, None), NONE], "ae_loss": [Options(("mse", "mae"))],
    "ae_lr": [Interval(float, 0, None, closed="neither")], "ae_zoom": [Interval(float, 0, 1, closed="left")],
    "ae_input_noise": [Interval(float, 0, None)], "ae_code_noise": [Interval(float, 0, None)],
}

PROFILES: dict[str, dict[str, Any]] = {
    "test": {"mi_nats": (0.0, 2.0), "n_samples": 200, "n_fit": 300, "ae_max_epochs": 2, "ae_channels": (4,),
             "ae_dense": 8},
    "default": {},
}


def _fit_compressor(cfg: Config, seed: int):
    """The compressor of one curve, fitted on ``n_fit`` separate images of the task's marginal law."""
    from ..estimators._compressed import fit_autoencoder, fit_pca

    # x = Q u with u ~ N(0, I) and Q orthogonal: each image's latent is N(0, I) at every MI and mixing
    z = np.random.default_rng([seed, 7_919]).standard_normal((cfg.n_fit, cfg.latent_dim))
    images = _render(cfg, z)
    if cfg.compression == "pca":
        return fit_pca(images, cfg.dim)
    cfg = cfg.ae_settings()
    return fit_autoencoder(images, cfg.dim, architecture="conv", channels=cfg.ae_channels, dense=cfg.ae_dense,
                           max_epochs=cfg.ae_max_epochs, patience=cfg.ae_patience, lr_decays=cfg.ae_lr_decays,
                           batch_size=cfg.ae_batch_size, lr=cfg.ae_lr, loss=cfg.ae_loss, zoom=cfg.ae_zoom,
                           input_noise=cfg.ae_input_noise, code_noise=cfg.ae_code_noise, seed=seed)


def _compressor_record(compressor) -> dict[str, Any]:
    if hasattr(compressor, "history"):
        return {"kind": "autoencoder", "epochs": compressor.epochs, "converged": compressor.converged,
                "reconstruction_mse": compressor.reconstruction_mse, "history": compressor.history,
                "mse_units": "per pixel, data centred per pixel and divided by its global std"}
    return {"kind": "pca", "explained_variance_ratio": compressor.explained_variance_ratio}


def _cell(cfg: Config, seed: int, index: int, mi_nats: float, compressor) -> dict[str, Any]:
    from .. import estimators, tasks

    latent = tasks.get("gaussian_split", dim=cfg.latent_dim, mi=nats_to(mi_nats, "bits"), mixing_seed=seed)
    # one sample seed per (seed, cell): the cells of a curve are independent draws
    u, v = latent.sample(cfg.n_samples, seed=seed * 100_003 + index)
    x, y = _render(cfg, u), _render(cfg, v)
    est = estimators.get("compressed", estimator=cfg.inner, estimator_params=cfg.inner_params, whiten=cfg.whiten,
                         compressor_x=compressor, compressor_y=compressor, seed=seed, unit="nats")
    t0 = time.process_time()
    value = float(est.estimate(x, y))
    seconds = time.process_time() - t0
    rec = _compressor_record(compressor)
    truth = from_nats(latent.mutual_information_nats, cfg.unit)
    estimate = from_nats(value, cfg.unit)
    return {"experiment": NAME, "task": cfg.task, "size": cfg.size, "compression": cfg.compression,
            "latent_dim": cfg.latent_dim, "dim": cfg.dim, "n": cfg.n_samples, "n_fit": cfg.n_fit,
            "estimator": (f"{cfg.compression}+{'whitened ' if cfg.whiten else ''}{cfg.inner}{cfg.k}"
                          f"{' (per-entropy whitening)' if cfg.inner_params.get('whiten') else ''}"),
            "true_mi_nats": mi_nats, "true_mi": truth, "estimate": estimate, "error": estimate - truth,
            "unit": cfg.unit, "explained_variance_ratio": float(rec.get("explained_variance_ratio", math.nan)),
            "reconstruction_mse": float(rec.get("reconstruction_mse", math.nan)),
            "ae_epochs": int(rec.get("epochs", 0)), "ae_converged": bool(rec.get("converged", False)),
            "flags": ";".join(est.flags_), "cpu_seconds": seconds}


def run_seed(config: Config, seed: int, out_dir: str | Path, *, progress: bool = False) -> pd.DataFrame:
    """Estimate every true MI of ``config.mi_nats`` once (one seed); one row per true MI.

    Each finished estimate is an intermediate checkpoint in ``out_dir`` (the
    runner's ``seed_<s>/``): ``cells/cell<i>_<key>.parquet``, keyed by
    :func:`ibscope.experiments.settings_hash` of the config and seed, so an
    interrupted curve resumes at its first missing cell. The finished rows are
    kept by the runner.
    """
    cfg = as_config(config, Config, "compressed_images")
    out = Path(out_dir)
    chash = settings_hash(cfg, seed=int(seed))  # the key of this curve's intermediate files
    rows = []
    compressor = None
    for i, m in enumerate(cfg.mi_nats):
        cell_file = out / "cells" / f"cell{i:03d}_{chash}.parquet"
        if cell_file.exists():
            rows.append(pd.read_parquet(cell_file))
            continue
        if compressor is None:  # fitted once per curve, only when a cell is left to do
            compressor = _fit_compressor(cfg, seed)
            training = ({f: getattr(cfg.ae_settings(), f) for f in sorted(_AE_FIELDS)}
                        if cfg.compression == "autoencoder" else {})
            atomic_write_json(out / f"compressor_seed{seed}_{chash}.json",
                              {"seed": seed, "config_hash": chash, **_compressor_record(compressor),
                               **({"training": training} if training else {})})
        row = pd.DataFrame([{**_cell(cfg, seed, i, m, compressor), "seed": seed}])
        atomic_write_parquet(cell_file, row)
        rows.append(row)
        if progress:
            print(f"{cfg.task} {cfg.size} {cfg.compression} seed {seed}: true {row['true_mi'].iloc[0]:.3g} "
                  f"estimate {row['estimate'].iloc[0]:.3g} {cfg.unit}", flush=True)
    return pd.concat(rows, ignore_index=True).drop(columns=["config_hash"], errors="ignore")


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """The error table: per (task, size, compression, true MI) the mean estimate and error over seeds (95% t)."""
    from .._intervals import mean_interval

    if results.empty:
        return pd.DataFrame()
    if "task" not in results.columns:  # rows of the earlier blobs-only experiment
        results = results.assign(task="blobs")
    by = ["task", "size", "compression", "true_mi_nats", "true_mi", "unit"]
    s = mean_interval(results, by, ["estimate", "error"])
    s["relative_error"] = s["error"] / s["true_mi"].where(s["true_mi"] > 0)
    return s.rename(columns={"n": "seeds"})


def plot(results: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Estimate against the true MI, one panel per task and image size, one line per compression (95% band)."""
    from ..plots import pyplot, save_figure

    plt = pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = summarize(results)
    if s.empty:
        return []
    unit = str(s["unit"].iloc[0])
    panels = sorted({(str(t), int(z)) for t, z in zip(s["task"], s["size"], strict=True)})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (task, size) in zip(axes[0], panels, strict=True):
        g = s[(s["task"] == task) & (s["size"] == size)]
        top = float(g["true_mi"].max())
        ax.plot([0, top], [0, top], color="0.5", linestyle="--", label="truth")
        for comp, c in g.groupby("compression", sort=True):
            c = c.sort_values("true_mi")
            line, = ax.plot(c["true_mi"], c["estimate"], marker="o", markersize=3, label=str(comp))
            ax.fill_between(c["true_mi"], c["estimate_lo"], c["estimate_hi"], color=line.get_color(), alpha=0.25)
        ax.set_title(f"{size}x{size} {task}")
        ax.set_xlabel(f"true I(X;Y) ({unit})")
        ax.set_ylabel(f"estimate ({unit})")
        ax.legend(fontsize=8)
    return [save_figure(fig, out / "compressed_images.png", dpi=120)]
