"""The compressed estimator on synthetic images with known MI (Butakov et al. 2024, Sec. 5).

Ground truth: a pair of correlated ``latent_dim``-dimensional Gaussian
latents with the MI split equally over the components and randomly mixed
(:class:`ibscope.tasks.GaussianSplit`), rendered into two ``size x size``
Gaussian-blob images by an injective map (:class:`ibscope.tasks.BlobsImage`),
so I(image_x; image_y) equals the latents' MI exactly. The paper renders
Gaussian blobs (16x16) and rectangles (32x32); ibscope has the blobs only and
uses them at both sizes.

One task (``run_seed``) evaluates one estimate-vs-truth curve: every true MI
of ``mi_nats`` (the paper's grid is in nats, 0 to 10) for one image size and
one compression (``pca`` or ``autoencoder``, to ``dim`` dimensions, then
KSG with ``k`` neighbours: :class:`ibscope.estimators.Compressed`), on
``n_samples`` fresh samples; the seed sets the samples, the latent mixing
and the compression's seed. Rows: one per true MI, with ``true_mi``,
``estimate`` and ``error`` (estimate - truth) in ``unit`` (bits by default;
the paper's grid is converted, ``true_mi_nats`` keeps it). Each finished
cell is stored in ``out_dir`` at once, so an interrupted task resumes at its
first unfinished cell. ``summarize`` gives the error table (mean estimate
over seeds with its Student-t interval, per size, compression and true MI);
``plot`` the paper's figure (estimate against truth, one panel per size).

Registry name ``compressed_images`` (module ``_compressed_images``).

References
----------
.. [1] I. Butakov, A. Tolmachev, S. Malanchuk, A. Neopryatnaya, A. Frolov and
   K. Andreev, "Information bottleneck analysis of deep neural networks via
   lossy compression", ICLR 2024.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .._units import from_nats
from ..store import atomic_write_parquet, config_hash
from . import as_config, check_sizes

NAME = "compressed_images"
COMPRESSIONS = ("pca", "autoencoder")


@dataclass
class Config:
    mi_nats: tuple[float, ...] = tuple(0.25 * i for i in range(41))  # the paper's grid: linspace(0, 10, 41)
    size: int = 16                      # image side (paper: 16 and 32)
    latent_dim: int = 4                 # dimension of each latent (1-4; the blob parameters)
    compression: str = "pca"            # 'pca' or 'autoencoder'
    dim: int = 4                        # code dimension of each image
    n_samples: int = 5000               # samples per estimate (paper: 5000)
    k: int = 3                          # KSG neighbours
    ae_epochs: int = 100                # autoencoder training epochs
    ae_hidden: tuple[int, ...] = (128, 64)
    unit: str = "bits"

    def __post_init__(self) -> None:
        self.mi_nats = tuple(float(m) for m in self.mi_nats)
        check_sizes(self.ae_hidden, "ae_hidden", "compressed_images")  # before the coercion: 2.5 or "a" is refused, not cast
        self.ae_hidden = tuple(int(h) for h in self.ae_hidden)
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad setting."""
        if not self.mi_nats or any(not math.isfinite(m) or m < 0 for m in self.mi_nats):
            raise ValueError(f"The 'mi_nats' of compressed_images must be a non-empty list of finite MI values "
                             f">= 0 (nats). Got {self.mi_nats!r} instead.")
        for name, lo in (("size", 8), ("dim", 1), ("n_samples", 10), ("k", 1), ("ae_epochs", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"The '{name}' of compressed_images must be an int >= {lo}. Got {v!r} instead.")
        if isinstance(self.latent_dim, bool) or self.latent_dim not in (1, 2, 3, 4):
            raise ValueError(f"The 'latent_dim' of compressed_images must be 1, 2, 3 or 4. "
                             f"Got {self.latent_dim!r} instead.")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"The 'compression' of compressed_images must be one of {COMPRESSIONS}. "
                             f"Got {self.compression!r} instead.")
        if self.k >= self.n_samples:
            raise ValueError(f"The 'k' of compressed_images must be below 'n_samples' ({self.n_samples}). "
                             f"Got {self.k!r} instead.")
        check_sizes(self.ae_hidden, "ae_hidden", "compressed_images")
        if self.unit not in ("bits", "nats"):
            raise ValueError(f"The 'unit' of compressed_images must be 'bits' or 'nats'. Got {self.unit!r} instead.")


PROFILES: dict[str, dict[str, Any]] = {
    "test": {"mi_nats": (0.0, 2.0), "n_samples": 200, "ae_epochs": 2, "ae_hidden": (16,)},
    "default": {},
}


def _estimator(cfg: Config, seed: int):
    from .. import estimators

    params: dict[str, Any] = {"estimator": "ksg", "estimator_params": {"k": cfg.k}, "compression": cfg.compression,
                              "dim_x": cfg.dim, "dim_y": cfg.dim, "seed": seed, "unit": "nats"}
    if cfg.compression == "autoencoder":
        params.update(epochs=cfg.ae_epochs, hidden=cfg.ae_hidden)
    return estimators.get("compressed", **params)


def _cell(cfg: Config, seed: int, index: int, mi_nats: float) -> dict[str, Any]:
    from .. import tasks

    task = tasks.get("blobs_image", latent_dim=cfg.latent_dim, mi=mi_nats / math.log(2), size=cfg.size,
                     mixing_seed=seed)
    # one sample seed per (seed, cell): the cells of a curve are independent draws
    x, y = task.sample(cfg.n_samples, seed=seed * 100_003 + index)
    est = _estimator(cfg, seed)
    t0 = time.process_time()
    value = float(est.estimate(x, y))
    seconds = time.process_time() - t0
    info = est.compression_.get("x", {})
    truth = from_nats(task.mutual_information_nats, cfg.unit)
    estimate = from_nats(value, cfg.unit)
    return {"experiment": NAME, "size": cfg.size, "compression": cfg.compression, "latent_dim": cfg.latent_dim,
            "dim": cfg.dim, "n": cfg.n_samples, "estimator": f"{cfg.compression}+ksg", "true_mi_nats": mi_nats,
            "true_mi": truth, "estimate": estimate, "error": estimate - truth, "unit": cfg.unit,
            "explained_variance_ratio": float(info.get("explained_variance_ratio", math.nan)),
            "reconstruction_mse": float(info.get("reconstruction_mse", math.nan)),
            "flags": ";".join(est.flags_), "cpu_seconds": seconds}


def run_seed(config: Config, seed: int, out_dir: str | Path, *, progress: bool = False) -> pd.DataFrame:
    """Estimate every true MI of ``config.mi_nats`` once (one seed); one row per true MI."""
    cfg = as_config(config, Config, "compressed_images")
    out = Path(out_dir)
    chash = config_hash({**asdict(cfg), "seed": seed})
    result_file = out / f"compressed_images_seed{seed}_{chash}.parquet"
    if result_file.exists():
        return pd.read_parquet(result_file)
    rows = []
    for i, m in enumerate(cfg.mi_nats):
        cell_file = out / "cells" / f"cell{i:03d}_{chash}.parquet"
        if cell_file.exists():
            rows.append(pd.read_parquet(cell_file))
            continue
        row = pd.DataFrame([{**_cell(cfg, seed, i, m), "seed": seed, "config_hash": chash}])
        atomic_write_parquet(cell_file, row)
        rows.append(row)
        if progress:
            print(f"size {cfg.size} {cfg.compression} seed {seed}: true {row['true_mi'].iloc[0]:.3g} "
                  f"estimate {row['estimate'].iloc[0]:.3g} {cfg.unit}", flush=True)
    df = pd.concat(rows, ignore_index=True)
    atomic_write_parquet(result_file, df)
    return df


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """The error table: per (size, compression, true MI) the mean estimate and error over seeds (95% t-interval)."""
    from .._intervals import mean_interval

    if results.empty:
        return pd.DataFrame()
    by = ["size", "compression", "true_mi_nats", "true_mi", "unit"]
    s = mean_interval(results, by, ["estimate", "error"])
    s["relative_error"] = s["error"] / s["true_mi"].where(s["true_mi"] > 0)
    return s.rename(columns={"n": "seeds"})


def plot(results: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Estimate against the true MI, one panel per image size, one line per compression (95% band)."""
    from ..plots import pyplot, save_figure

    plt = pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = summarize(results)
    if s.empty:
        return []
    unit = str(s["unit"].iloc[0])
    sizes = sorted(s["size"].unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.8), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        g = s[s["size"] == size]
        top = float(g["true_mi"].max())
        ax.plot([0, top], [0, top], color="0.5", linestyle="--", label="truth")
        for comp, c in g.groupby("compression", sort=True):
            c = c.sort_values("true_mi")
            line, = ax.plot(c["true_mi"], c["estimate"], marker="o", markersize=3, label=f"{comp} + KSG")
            ax.fill_between(c["true_mi"], c["estimate_lo"], c["estimate_hi"], color=line.get_color(), alpha=0.25)
        ax.set_title(f"{size}x{size} blob images")
        ax.set_xlabel(f"true I(X;Y) ({unit})")
        ax.set_ylabel(f"estimate ({unit})")
        ax.legend(fontsize=8)
    return [save_figure(fig, out / "compressed_images.png", dpi=120)]
