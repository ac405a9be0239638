"""Estimate MI after lossy compression of wide variables (Butakov et al. 2024).

kNN and kernel estimators break down in high dimension (hundreds of units,
images), while the information in a layer often lives on a low-dimensional
manifold. Butakov et al. [1]_ therefore compress X and/or Y to a few
dimensions first (PCA or an autoencoder) and run a low-dimensional estimator
(KSG, weighted Kozachenko-Leonenko) on the codes.

Direction of the error: for a deterministic compression map f,
I(f(X); g(Y)) <= I(X; Y) (data-processing inequality), so the compressed
quantity is a lower bound on the original MI, tight when the codes keep the
dependence (f injective on the support, or a sufficient statistic). The
reported number is that lower bound *as estimated by the inner estimator*,
so it carries the inner estimator's own bias too (KSG: low at high MI).
By default the compression map is fitted on the very data being estimated;
it uses each variable alone (never the pairing), so it cannot manufacture
dependence, but with very few samples a flexible autoencoder can overfit.
Butakov et al. fit their compressors on separate data instead:
:func:`fit_pca` / :func:`fit_autoencoder` (a convolutional autoencoder for
images, trained until its held-out reconstruction error converges) give
fitted compressors that :class:`Compressed` takes as ``compressor_x`` /
``compressor_y``; ``whiten=True`` whitens the codes before the inner
estimator (the paper's KL / WKL with k = 5 on whitened codes).

References
----------
.. [1] I. Butakov, A. Tolmachev, S. Malanchuk, A. Neopryatnaya, A. Frolov
   and K. Andreev, "Information bottleneck analysis of deep neural networks
   via lossy compression", ICLR 2024.
.. [2] N. Halko, P.-G. Martinsson and J. A. Tropp, "Finding structure with
   randomness: probabilistic algorithms for constructing approximate matrix
   decompositions", SIAM Review 53(2), 2011.
.. [3] E. Facco, M. d'Errico, A. Rodriguez and A. Laio, "Estimating the
   intrinsic dimension of datasets by a minimal neighborhood information",
   Scientific Reports 7, 12140, 2017.
.. [4] S. Ioffe and C. Szegedy, "Batch normalization: accelerating deep
   network training by reducing internal covariate shift", ICML 2015.
.. [5] A. Kessy, A. Lewin and K. Strimmer, "Optimal whitening and
   decorrelation", The American Statistician 72(4), 2018.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from .._units import to_nats
from .._validation import (
    BOOLEAN,
    NONE,
    InstanceOf,
    Interval,
    Options,
    is_torch,
    resolve_device,
)
from ._knn import centred_eigh
from ._neural import check_hidden
from ._train import batch_generator, seeded, train_early_stopping
from .base import BaseMIEstimator

__all__ = ["Compressed", "PCAKSG", "pca_compress", "autoencoder_compress", "twonn_dimension",
           "FittedAutoencoder", "FittedPCA", "fit_autoencoder", "fit_pca", "whiten_codes"]


_OVERSAMPLE = 20  # extra random directions of the randomized SVD (10 was not enough for flat spectra)
_POWER_ITERATIONS = 2
_GRAM_MAX_DIM = 64  # up to this many columns (and n >= d) the exact d x d eigendecomposition is cheaper
_BLOCK_ROWS = 4096  # rows per block of the passes that would otherwise copy the whole matrix


def _centered_total(t: torch.Tensor, mu: torch.Tensor) -> float:
    """Sum of squared deviations from ``mu``, accumulated in float64 over row blocks (no n x d copy)."""
    total = 0.0
    for i in range(0, t.shape[0], _BLOCK_ROWS):
        total += float(torch.linalg.vector_norm((t[i:i + _BLOCK_ROWS] - mu).to(torch.float64)) ** 2)
    return total


def _gram_basis(t: torch.Tensor, mu: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading ``dim`` eigenvectors (d, dim) and all eigenvalues of the float64 scatter matrix (exact PCA)."""
    d = t.shape[1]
    g = torch.zeros((d, d), dtype=torch.float64, device=t.device)
    for i in range(0, t.shape[0], _BLOCK_ROWS):
        c = t[i:i + _BLOCK_ROWS].to(torch.float64) - mu
        g.addmm_(c.T, c)
    evals, evecs = torch.linalg.eigh(g)  # ascending
    return evecs[:, -dim:].flip(1), evals.flip(0).clamp_(min=0)


def _randomized_basis(t: torch.Tensor, mu: torch.Tensor, dim: int, q: int,
                      niter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Halko-Martinsson-Tropp range finder on the implicitly centred ``t`` (n >= d): (d, dim), singular values.

    The same algorithm and random draw as ``torch.svd_lowrank(t - mu, q, niter)``,
    with (t - 1 mu) Q computed as t Q - 1 (mu Q): no centred copy of ``t``.
    """
    r = torch.randn(t.shape[1], q, dtype=t.dtype, device=t.device)
    mu_row = mu[None, :]

    def right(m: torch.Tensor) -> torch.Tensor:  # (t - 1 mu) m
        return t @ m - mu_row @ m

    def left(m: torch.Tensor) -> torch.Tensor:  # (t - 1 mu)^T m
        return t.T @ m - mu[:, None] * m.sum(dim=0, keepdim=True)

    basis = torch.linalg.qr(right(r)).Q
    for _ in range(niter):
        basis = torch.linalg.qr(left(basis)).Q
        basis = torch.linalg.qr(right(basis)).Q
    _, s, vh = torch.linalg.svd(left(basis).T, full_matrices=False)
    return vh[:dim].T, s


def pca_compress(a: Any, dim: int, *, solver: str = "randomized", seed: int | None = 0,
                 device: Any = None) -> tuple[Any, dict[str, Any]]:
    """Project ``a`` (n, d) onto its first ``dim`` principal components, in torch on ``a``'s device.

    ``solver='randomized'`` (default): the randomized range finder of Halko,
    Martinsson & Tropp [2]_ (the algorithm of ``torch.svd_lowrank`` with
    ``dim + 20`` random directions and 2 power iterations, in float32), about
    7 passes over the data instead of the O(n d min(n, d)) of a full SVD; its
    leading subspace matches the exact one when the spectrum decays past
    ``dim`` and is close to it otherwise (a flat spectrum has no well-defined
    leading subspace; benchmarks/compressed.py compares the values). The data
    are centred implicitly ((A - 1 mu) Q = A Q - 1 (mu Q)), so no centred copy
    of ``a`` is made, unless the mean is so far from the data (more than 100x
    their root-mean-square spread) that float32 cancellation would matter.
    Narrow data (at most 64 columns, n >= d) take the exact float64
    eigendecomposition of the d x d scatter matrix instead, which is then
    cheaper. ``solver='full'``: ``torch.linalg.svd`` of the centred data in
    float64 (exact). Runs on the device of a tensor input (CPU for numpy;
    ``device`` overrides); the randomized solver is deterministic given
    ``seed``. Returns the float64 codes (numpy for numpy input, a tensor
    otherwise; each component has an arbitrary sign) and
    ``{'explained_variance_ratio': ...}``.
    """
    dev = resolve_device(device, like=a)
    n, d = int(a.shape[0]), int(a.shape[1])
    fast = solver != "full" and dim + _OVERSAMPLE < min(n, d)
    if not fast:
        t = a.detach().to(device=dev, dtype=torch.float64) if is_torch(a) else torch.as_tensor(
            np.asarray(a), device=dev).to(torch.float64)
        c = t - t.mean(dim=0)
        total = float((c ** 2).sum())
        _, s, vh = torch.linalg.svd(c, full_matrices=False)
        v = vh[:dim].T
        kept = float((s[:dim] ** 2).sum())
        codes = c @ v
    elif d <= _GRAM_MAX_DIM:
        t = a.detach().to(device=dev) if is_torch(a) else torch.as_tensor(np.asarray(a), device=dev)
        mu = t.to(torch.float64).mean(dim=0)
        v, evals = _gram_basis(t, mu, dim)
        total, kept = float(evals.sum()), float(evals[:dim].sum())
        codes = t.to(torch.float64) @ v - mu @ v
    else:
        t = a.detach().to(device=dev, dtype=torch.float32) if is_torch(a) else torch.as_tensor(
            np.asarray(a), device=dev).to(torch.float32)
        mu = t.mean(dim=0)
        total = _centered_total(t, mu)
        if float(mu.to(torch.float64).square().sum()) * n > 1e4 * total:  # far-off mean: centre explicitly
            t, mu = t - mu, torch.zeros_like(mu)
        q = dim + _OVERSAMPLE
        with seeded(seed, dev):
            if n >= d:
                v, s = _randomized_basis(t, mu, dim, q, _POWER_ITERATIONS)
            else:  # wide data: torch's own routine (it works on the transpose)
                _, s, v = torch.svd_lowrank(t - mu, q=q, niter=_POWER_ITERATIONS)
                v = v[:, :dim]
        kept = float((s[:dim].to(torch.float64) ** 2).sum())
        codes = (t @ v - mu[None, :] @ v).to(torch.float64)
    ratio = min(kept / total, 1.0) if total > 0 else 1.0
    return (codes if is_torch(a) else codes.cpu().numpy()), {"explained_variance_ratio": ratio}


def twonn_dimension(a: Any, *, max_samples: int = 2000, seed: int | None = 0, device: Any = None) -> float:
    """Intrinsic dimension of the rows of ``a`` by TwoNN (Facco et al. [3]_).

    With r1, r2 the distances of a point to its first and second nearest
    neighbours, mu = r2 / r1 is Pareto(d) distributed on a d-dimensional
    manifold of locally uniform density, so the maximum-likelihood estimate
    is d = n / sum_i log mu_i. Rows with a duplicate (r1 = 0) are left out;
    at most ``max_samples`` rows (a seeded random subset) are used, with
    brute-force distances in torch on the input's device (chunked).
    """
    dev = resolve_device(device, like=a)
    t = a.detach().to(device=dev, dtype=torch.float64) if is_torch(a) else torch.as_tensor(
        np.asarray(a), dtype=torch.float64, device=dev)
    n = t.shape[0]
    if n > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
        t = t[torch.as_tensor(idx, device=dev)]
        n = max_samples
    t = t - t.mean(dim=0)
    sq = (t * t).sum(dim=1)
    r12 = []
    for start in range(0, n, 512):
        d2 = (sq[start:start + 512, None] + sq[None, :] - 2.0 * t[start:start + 512] @ t.T).clamp_(min=0)
        d2[torch.arange(d2.shape[0]), torch.arange(start, start + d2.shape[0])] = math.inf
        r12.append(torch.topk(d2, 2, dim=1, largest=False).values)
    r = torch.cat(r12).sqrt()
    ok = r[:, 0] > 0
    if int(ok.sum()) < 3:
        return 1.0
    log_mu = torch.log(r[ok, 1] / r[ok, 0])
    total = float(log_mu.sum())
    return float(ok.sum()) / total if total > 0 else float(t.shape[1])


class _AutoEncoder(nn.Module):
    def __init__(self, d: int, dim: int, hidden: tuple[int, ...]):
        super().__init__()
        enc: list[nn.Module] = []
        d_in = d
        for h in hidden:
            enc += [nn.Linear(d_in, h), nn.ELU()]
            d_in = h
        enc.append(nn.Linear(d_in, dim))
        dec: list[nn.Module] = []
        d_in = dim
        for h in reversed(hidden):
            dec += [nn.Linear(d_in, h), nn.ELU()]
            d_in = h
        dec.append(nn.Linear(d_in, d))
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # the interface FittedAutoencoder.encode uses
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def autoencoder_compress(a: Any, dim: int, *, hidden: tuple[int, ...] = (128, 64), epochs: int = 100,
                         batch_size: int = 128, lr: float = 1e-3, seed: int | None = 0,
                         device: Any = None) -> tuple[Any, dict[str, Any]]:
    """Codes of a small MLP autoencoder (ELU, MSE loss, Adam) trained on ``a`` itself.

    The input is centred per column and divided by one global standard
    deviation (relative column scales, e.g. pixel intensities, are kept).
    Training uses every row for ``epochs`` epochs; on CPU the result is
    deterministic given ``seed``. Returns the encoder outputs (numpy for
    numpy input, a tensor on the input's device otherwise) and
    ``{'model': autoencoder, 'reconstruction_mse': mse (scaled units)}``.
    The loop is the shared training engine (``_train.train_early_stopping``,
    no early stopping: ``patience=None``).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"The 'epochs' of autoencoder_compress must be an int >= 1. Got {epochs!r} instead.")
    dev = resolve_device(device, like=a)
    t = a.to(device=dev, dtype=torch.float32) if is_torch(a) else torch.as_tensor(
        np.asarray(a), dtype=torch.float32, device=dev)
    t = t - t.mean(dim=0)
    scale = float(t.std())
    t = t / (scale if scale > 0 else 1.0)

    def batch_loss(model: nn.Module, batch: torch.Tensor, _: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = ((model(batch) - batch) ** 2).mean()
        return loss, loss.detach()

    # every row trained on for ``epochs`` epochs; one evaluation, after the last (patience=None)
    fit = train_early_stopping(
        lambda: _AutoEncoder(t.shape[1], dim, tuple(hidden)).to(dev), t, t[:, :0], batch_loss,
        lambda model: float(((model(t) - t) ** 2).mean()), lr=lr, batch_size=batch_size,
        max_epochs=epochs, patience=None, eval_every=epochs, minimize=True, seed=seed, device=dev,
        owner="autoencoder_compress", objective="reconstruction MSE")
    model, mse = fit.module, fit.best_value
    with torch.no_grad():
        codes = model.encoder(t)
    codes = codes.to(torch.float64)
    out = codes if is_torch(a) else codes.cpu().numpy()
    return out, {"model": model, "reconstruction_mse": mse}


# ------------------------------------------------------------------ whitening
def whiten_codes(a: Any, *, eps: float = 1e-12) -> Any:
    """Centre the rows of ``a`` (n, d) and whiten them: identity sample covariance (ZCA, Kessy et al. [5]_).

    ``(a - mean) Sigma^{-1/2}`` with ``Sigma`` the sample covariance
    (eigendecomposition in float64; directions with eigenvalue below ``eps``
    times the largest are left unscaled rather than blown up). An
    invertible linear map of one variable leaves I(X;Y) unchanged, so
    whitening x and y separately changes no MI; it makes the codes' kNN
    balls isotropic (Butakov et al. whiten before their KL/WKL entropy
    estimates). Returns float64 (numpy for numpy input, a tensor on the
    input's device otherwise).
    """
    shape = tuple(a.shape) if is_torch(a) else np.shape(a)
    if len(shape) != 2 or shape[0] < 2:
        raise ValueError(f"The codes to whiten must be a 2-D array with at least 2 rows. Got shape "
                         f"{tuple(shape)} instead.")
    c, evals, evecs = centred_eigh(a)
    top = float(evals.max()) if evals.numel() else 0.0
    ok = evals > eps * max(top, 0.0)
    inv_sqrt = torch.where(ok, evals.clamp(min=1e-300).rsqrt(), torch.ones_like(evals))
    out = c @ (evecs * inv_sqrt) @ evecs.T
    return out if is_torch(a) else out.cpu().numpy()


# ------------------------------------------- convolutional autoencoder, fitted apart
def _flush_subnormal(t: torch.Tensor) -> torch.Tensor:
    """Zero float32 values below 1e-30 in magnitude (e.g. the far tails of blob images).

    Subnormal floats carry no information at float32 precision but make CPU
    arithmetic (convolutions, batch norm, their gradients) up to 100 times slower.
    """
    return torch.where(t.abs() < 1e-30, torch.zeros((), dtype=t.dtype, device=t.device), t)


class _ConvAutoEncoder(nn.Module):
    """Conv encoder (conv-BN-LeakyReLU, stride 2) to a tanh bottleneck; mirrored decoder."""

    def __init__(self, side: int, dim: int, channels: tuple[int, ...], dense: int):
        super().__init__()
        self.side, self.channels = side, tuple(channels)
        enc: list[nn.Module] = []
        c_in, s = 1, side
        for c in channels:
            enc += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2)]
            c_in, s = c, (s + 1) // 2
        self.inner_side = s
        flat = c_in * s * s
        enc += [nn.Flatten(), nn.Linear(flat, dense), nn.BatchNorm1d(dense), nn.LeakyReLU(0.2),
                nn.Linear(dense, dim), nn.Tanh()]
        self.encoder = nn.Sequential(*enc)
        self.decode_dense = nn.Sequential(nn.Linear(dim, dense), nn.BatchNorm1d(dense), nn.LeakyReLU(0.2),
                                          nn.Linear(dense, flat), nn.LeakyReLU(0.2))
        dec: list[nn.Module] = []
        rev = list(reversed(channels))
        for c, c_next in zip(rev, rev[1:], strict=False):
            dec += [nn.ConvTranspose2d(c, c_next, 3, stride=2, padding=1, output_padding=1),
                    nn.BatchNorm2d(c_next), nn.LeakyReLU(0.2)]
        dec += [nn.ConvTranspose2d(rev[-1], 1, 3, stride=2, padding=1, output_padding=1)]
        self.decoder_conv = nn.Sequential(*dec)

    def decoder(self, z: torch.Tensor) -> torch.Tensor:
        h = self.decode_dense(z).reshape(-1, self.channels[-1], self.inner_side, self.inner_side)
        out = self.decoder_conv(h)
        return out[:, :, :self.side, :self.side].reshape(z.shape[0], -1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.reshape(-1, 1, self.side, self.side))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))


class FittedAutoencoder:
    """An autoencoder fitted once (on its own data) that encodes any later data the same way.

    Made by :func:`fit_autoencoder`; pass it as ``compressor`` to
    :class:`Compressed` so that the codes of the estimated samples come from
    a map that never saw them (Butakov et al. fit their compressors on
    separate images).

    Attributes
    ----------
    model : torch.nn.Module
        The trained autoencoder (eval mode).
    dim : int
        Code dimension.
    mean, scale : torch.Tensor, float
        The training data's column means and global standard deviation
        (later data is scaled with them).
    history : list of dict
        Per epoch: 'epoch', 'train_mse' (or 'train_mae', the training loss), 'val_mse' (held-out
        reconstruction error, in the scaled units) and 'lr' (the epoch's learning rate).
    epochs : int
        Epochs trained; ``converged`` says whether the stopping rule (not
        ``max_epochs``) ended the training; ``reconstruction_mse`` is the
        held-out MSE of the kept (best) weights.
    """

    def __init__(self, model: nn.Module, dim: int, mean: torch.Tensor, scale: float,
                 history: list[dict[str, float]], converged: bool, d: int):
        self.model, self.dim, self.mean, self.scale = model, dim, mean, scale
        self.history, self.converged, self.d = history, converged, d
        self.epochs = len(history)
        self.reconstruction_mse = min(h["val_mse"] for h in history) if history else math.nan

    def info(self) -> dict[str, Any]:
        """What :class:`Compressed` records in ``compression_``."""
        return {"reconstruction_mse": self.reconstruction_mse, "ae_epochs": self.epochs,
                "ae_converged": self.converged, "ae_history": self.history, "fitted_apart": True,
                "model": self.model}

    def encode(self, a: Any, device: Any = None) -> Any:
        """Codes (float64; numpy for numpy input) of the rows of ``a`` (n, d)."""
        if a.shape[1] != self.d:
            raise ValueError(f"The fitted autoencoder encodes rows of {self.d} columns; got an array of "
                             f"shape {tuple(a.shape)}.")
        dev = next(self.model.parameters()).device
        t = a.detach().to(device=dev, dtype=torch.float32) if is_torch(a) else torch.as_tensor(
            np.asarray(a), dtype=torch.float32, device=dev)
        t = _flush_subnormal((_flush_subnormal(t) - self.mean.to(dev)) / self.scale)
        self.model.eval()
        with torch.no_grad():
            codes = torch.cat([self.model.encode(t[i:i + 4096]) for i in range(0, t.shape[0], 4096)])
        codes = codes.to(torch.float64)
        return codes.to(resolve_device(device, like=a)) if is_torch(a) else codes.cpu().numpy()


class FittedPCA:
    """A PCA projection fitted once (on its own data): :func:`fit_pca`; same interface as FittedAutoencoder.

    Attributes
    ----------
    dim : int
        Code dimension.
    mean, components : torch.Tensor
        The fitting data's column means and the (d, dim) leading principal
        directions (float64, exact SVD).
    explained_variance_ratio : float
        Fraction of the fitting data's variance the codes keep.
    """

    def __init__(self, mean: torch.Tensor, components: torch.Tensor, explained_variance_ratio: float):
        self.mean, self.components = mean, components
        self.dim, self.d = int(components.shape[1]), int(components.shape[0])
        self.explained_variance_ratio = explained_variance_ratio

    def info(self) -> dict[str, Any]:
        """What :class:`Compressed` records in ``compression_``."""
        return {"explained_variance_ratio": self.explained_variance_ratio, "fitted_apart": True}

    def encode(self, a: Any, device: Any = None) -> Any:
        """Codes (float64; numpy for numpy input) of the rows of ``a`` (n, d)."""
        if a.shape[1] != self.d:
            raise ValueError(f"The fitted PCA projects rows of {self.d} columns; got an array of "
                             f"shape {tuple(a.shape)}.")
        dev = resolve_device(device, like=a)
        t = a.detach().to(device=dev, dtype=torch.float64) if is_torch(a) else torch.as_tensor(
            np.asarray(a), dtype=torch.float64, device=dev)
        codes = (t - self.mean.to(dev)) @ self.components.to(dev)
        return codes if is_torch(a) else codes.cpu().numpy()


def fit_pca(train: Any, dim: int) -> FittedPCA:
    """The exact (float64 SVD) projection of ``train`` (n, d) on its first ``dim`` principal components.

    Fitted on separate data and applied later with ``FittedPCA.encode`` (the
    way Butakov et al. [1]_ fit their compressors on separate images).

    Parameters
    ----------
    train : array or tensor, shape (n, d)
    dim : int
        Number of components (at most min(n, d)).

    Returns
    -------
    FittedPCA

    References
    ----------
    .. [1] Butakov et al., ICLR 2024.
    """
    t = train.detach().to(torch.float64).cpu() if is_torch(train) else torch.as_tensor(
        np.asarray(train), dtype=torch.float64)
    if t.ndim != 2 or not torch.isfinite(t).all():
        raise ValueError(f"The 'train' data of fit_pca must be a finite 2-D array. Got shape {tuple(t.shape)}.")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= min(t.shape):
        raise ValueError(f"The 'dim' of fit_pca must be an int in [1, {min(t.shape)}]. Got {dim!r} instead.")
    mean = t.mean(dim=0)
    c = t - mean
    _, s, vh = torch.linalg.svd(c, full_matrices=False)
    total = float((s ** 2).sum())
    ratio = min(float((s[:dim] ** 2).sum()) / total, 1.0) if total > 0 else 1.0
    return FittedPCA(mean, vh[:dim].T.contiguous(), ratio)


def _augmented_forward(model: nn.Module, batch: torch.Tensor, mean: torch.Tensor, scale: float, side: int,
                       zoom: float, input_noise: float, code_noise: float,
                       gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The training forward pass with the zoom-in augmentation and the input / code noise.

    Returns the reconstruction and its target: ``batch`` itself, or with
    ``zoom`` the zoomed images (an augmented image is a new training image,
    input and target alike); the noise is never part of the target.
    """
    dev = batch.device
    x = batch
    if zoom > 0:
        n = x.shape[0]
        raw = (x * scale + mean).reshape(n, 1, side, side)  # zoom the images, not the centred data
        s = 1.0 - zoom * torch.rand((n, 2), generator=gen).to(dev)
        theta = torch.zeros((n, 2, 3), device=dev, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 1, 1] = s[:, 0], s[:, 1]  # sample a centred window of s * side: zoom in
        grid = torch.nn.functional.affine_grid(theta, list(raw.shape), align_corners=False)
        raw = torch.nn.functional.grid_sample(raw, grid, mode="bilinear", padding_mode="zeros",
                                              align_corners=False)
        x = _flush_subnormal((raw.reshape(n, -1) - mean) / scale)
    inp = x
    if input_noise > 0:
        inp = x + (input_noise / scale) * torch.randn(x.shape, generator=gen).to(dev)
    code = model.encode(inp)
    if code_noise > 0:
        code = code + code_noise * torch.randn(code.shape, generator=gen).to(dev)
    out = model.decoder(code)
    return out, x


def fit_autoencoder(train: Any, dim: int, *, architecture: str = "conv", channels: tuple[int, ...] = (16, 32),
                    dense: int = 128, hidden: tuple[int, ...] = (128, 64), max_epochs: int = 200,
                    patience: int | None = 10, min_improvement: float = 0.01, val_fraction: float = 0.1,
                    batch_size: int = 128, lr: float = 1e-3, seed: int | None = 0,
                    device: Any = None, loss: str = "mse", zoom: float = 0.0, input_noise: float = 0.0,
                    code_noise: float = 0.0, lr_decays: int = 0) -> FittedAutoencoder:
    """Fit an autoencoder on ``train`` (n, d) until its held-out reconstruction error converges.

    ``architecture='conv'`` (square single-channel images, d = side^2): the
    encoder is ``len(channels)`` stride-2 3x3 convolutions, each with batch
    normalization [4]_ and LeakyReLU(0.2), then a dense layer of ``dense``
    units and a linear map to ``dim`` units with a tanh bottleneck; the
    decoder mirrors it (transposed convolutions), as in Butakov et al. [1]_.
    ``'mlp'``: the ELU MLP of :func:`autoencoder_compress` (``hidden``).
    Adam on the MSE (or, ``loss='mae'``, the mean absolute error, the loss
    of Butakov et al.'s image autoencoders). A seeded ``val_fraction`` of
    the rows is held out;
    training stops when the best held-out MSE has improved by less than
    ``min_improvement`` (relative) over the last ``patience`` epochs, or at
    ``max_epochs`` (``patience=None``: always ``max_epochs``, as the paper
    trains a fixed number of epochs); the weights of the best held-out epoch
    are kept. With ``lr_decays`` > 0 the stopping rule first divides the
    learning rate by 10 (at most ``lr_decays`` times, each time restarting
    its window from the best weights so far) and only stops training once
    the decays are used up. The data is centred per column and divided by
    one global standard deviation (kept for later data). Deterministic on
    CPU given ``seed``. The loop is the shared training engine
    (``_train.train_early_stopping`` with ``minimize=True``,
    ``stopping='relative'``, ``min_delta=min_improvement``, ``lr_decays``
    and, with augmentation or noise, ``batch_rng``), run on the training
    rows after the seeded held-out split.

    Training-time augmentation and noise, drawn afresh for every minibatch
    of every epoch from a generator seeded by ``seed`` (none of them is
    applied to the held-out rows or when encoding): ``zoom`` > 0 zooms
    every training image in about its centre by a factor 1 / s, with s
    drawn uniformly from [1 - zoom, 1] independently per axis (bilinear
    resampling; Butakov et al.'s blob autoencoder used Keras' RandomZoom
    with factors (-0.2, 0), i.e. ``zoom=0.2``; conv only);
    ``input_noise`` adds Gaussian noise of that standard deviation (in
    the units of ``train``) to the encoder's input and ``code_noise``
    Gaussian noise of that standard deviation to the tanh code before the
    decoder (their blob autoencoder: 0.1 and 0.02).

    Parameters
    ----------
    train : array or tensor, shape (n, d)
        The fitting data (separate from the data to be estimated).
    dim : int
        Code dimension (the bottleneck width).
    architecture : {'conv', 'mlp'}
    channels, dense : tuple of int, int
        Conv channels per stride-2 level and the dense width ('conv').
    hidden : tuple of int
        Hidden sizes ('mlp').
    max_epochs, patience, min_improvement, val_fraction : int, int or None, float, float
        The stopping rule (see above).
    batch_size, lr, seed, device
        Adam training; ``device`` None follows the input.
    loss : {'mse', 'mae'}, default 'mse'
        Training loss (the held-out error and the stopping rule are always
        the MSE).
    zoom : float in [0, 1), default 0.0
        Random zoom-in augmentation (see above); 0 disables it.
    input_noise, code_noise : float >= 0, default 0.0
        Standard deviations of the training-time Gaussian noise on the
        input (units of ``train``) and on the code.
    lr_decays : int >= 0, default 0
        How many times the stopping rule divides the learning rate by 10
        before it stops training.

    Returns
    -------
    FittedAutoencoder
        With the per-epoch ``history``, ``epochs``, ``converged`` and the
        held-out ``reconstruction_mse``.

    References
    ----------
    .. [1] Butakov et al., ICLR 2024.
    .. [4] Ioffe & Szegedy, ICML 2015.
    """
    if architecture not in ("conv", "mlp"):
        raise ValueError(f"The 'architecture' of fit_autoencoder must be 'conv' or 'mlp'. "
                         f"Got {architecture!r} instead.")
    for name, v, lo in (("dim", dim, 1), ("max_epochs", max_epochs, 1), ("patience", patience, 1),
                        ("batch_size", batch_size, 2), ("dense", dense, 1), ("lr_decays", lr_decays, 0)):
        if name == "patience" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"The '{name}' of fit_autoencoder must be an int >= {lo}"
                             f"{' or None' if name == 'patience' else ''}. Got {v!r} instead.")
    if loss not in ("mse", "mae"):
        raise ValueError(f"The 'loss' of fit_autoencoder must be 'mse' or 'mae'. Got {loss!r} instead.")
    for name, v, hi in (("zoom", zoom, 1.0), ("input_noise", input_noise, math.inf),
                        ("code_noise", code_noise, math.inf)):
        if (isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))
                or not (0.0 <= v < hi)):
            raise ValueError(f"The '{name}' of fit_autoencoder must be a number in [0, {hi:g}). "
                             f"Got {v!r} instead.")
    if zoom > 0 and architecture != "conv":
        raise ValueError(f"The 'zoom' augmentation of fit_autoencoder needs architecture='conv' (images). "
                         f"Got zoom={zoom!r} with architecture={architecture!r}.")
    if not (isinstance(lr, (int, float, np.integer, np.floating)) and not isinstance(lr, bool)
            and math.isfinite(lr) and lr > 0):
        raise ValueError(f"The 'lr' of fit_autoencoder must be a finite number > 0. Got {lr!r} instead.")
    if not (0.0 < val_fraction < 1.0):
        raise ValueError(f"The 'val_fraction' of fit_autoencoder must be in (0, 1). Got {val_fraction!r} instead.")
    if not (0.0 <= min_improvement < 1.0):
        raise ValueError(f"The 'min_improvement' of fit_autoencoder must be in [0, 1). "
                         f"Got {min_improvement!r} instead.")
    check_hidden("fit_autoencoder", hidden)
    check_hidden("fit_autoencoder", channels)
    dev = resolve_device(device, like=train)
    t = train.detach().to(device=dev, dtype=torch.float32) if is_torch(train) else torch.as_tensor(
        np.asarray(train), dtype=torch.float32, device=dev)
    if t.ndim != 2 or not torch.isfinite(t).all():
        raise ValueError(f"The 'train' data of fit_autoencoder must be a finite 2-D array. Got shape "
                         f"{tuple(t.shape)}.")
    n, d = t.shape
    side = math.isqrt(d)
    if architecture == "conv" and side * side != d:
        raise ValueError(f"The conv autoencoder needs square images (d = side^2 columns); 'train' has {d}.")
    n_val = max(1, int(round(val_fraction * n)))
    if n - n_val < batch_size:
        raise ValueError(f"The 'train' data of fit_autoencoder needs at least batch_size={batch_size} rows "
                         f"after holding out {n_val}; it has {n}.")
    t = _flush_subnormal(t)
    mean = t.mean(dim=0)
    scale = float((t - mean).std())
    scale = scale if scale > 0 else 1.0
    t = _flush_subnormal((t - mean) / scale)
    augment = zoom > 0 or input_noise > 0 or code_noise > 0

    def build() -> nn.Module:
        return (_ConvAutoEncoder(side, dim, tuple(channels), dense) if architecture == "conv"
                else _AutoEncoder(d, dim, tuple(hidden))).to(dev)

    def batch_loss(model: nn.Module, batch: torch.Tensor, _: torch.Tensor,
                   gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if gen is None:
            out, target = model(batch), batch
        else:
            out, target = _augmented_forward(model, batch, mean, scale, side, zoom, input_noise,
                                             code_noise, gen)
        err = out - target
        train_loss = (err ** 2).mean() if loss == "mse" else err.abs().mean()
        return train_loss, train_loss.detach()

    with seeded(seed, dev):  # the held-out split, then (the engine, seed=None) the same RNG stream
        perm = torch.randperm(n, generator=batch_generator()).to(dev)
        val, tr = t[perm[:n_val]], t[perm[n_val:]]
        fit = train_early_stopping(
            build, tr, tr[:, :0], batch_loss, lambda model: float(((model(val) - val) ** 2).mean()),
            lr=float(lr), batch_size=batch_size, max_epochs=max_epochs, patience=patience,
            min_delta=min_improvement, minimize=True, stopping="relative", lr_decays=lr_decays,
            batch_rng=augment, seed=None, device=dev, owner="fit_autoencoder",
            objective="held-out reconstruction MSE")
    history = [{"epoch": h["epoch"], f"train_{loss}": h["train"], "val_mse": h["test"], "lr": rate}
               for h, rate in zip(fit.history, fit.lrs, strict=True)]
    return FittedAutoencoder(fit.module, dim, mean, scale, history, fit.converged, d)


class Compressed(BaseMIEstimator):
    """Any registered estimator applied to compressed (PCA / autoencoder) x and/or y.

    Parameters
    ----------
    estimator : str or BaseMIEstimator, default 'ksg'
        Registry name of the inner estimator, or an estimator instance.
    estimator_params : dict or None
        Constructor parameters of the inner estimator (only with a name).
    compression : {'pca', 'autoencoder'}, default 'pca'
        How a variable is compressed (named ``compression``, not ``method``,
        so that ``mutual_information(x, y, method="compressed",
        compression="autoencoder")`` reaches it).
    dim_x, dim_y : int, 'auto' or None, default 'auto'
        Target dimension of x / y. 'auto' uses the variable's intrinsic
        dimension estimated from the data (TwoNN, :func:`twonn_dimension`,
        rounded up), so a variable is only compressed when its rows
        lie near a lower-dimensional set; None (or a dimension >= the
        variable's) leaves that variable as it is. Discrete variables
        (labels) are never compressed: their dimension is ignored, so
        ``dim_x=dim_y=4`` can be used for any layer / label pair.
    pca_solver : {'randomized', 'full'}, default 'randomized'
        Randomized low-rank SVD (fast, see :func:`pca_compress`) or the exact SVD.
    hidden : tuple of int, default (128, 64)
        Encoder hidden sizes of the autoencoder (the decoder mirrors them).
    epochs, batch_size, lr : int, int, float
        Autoencoder training (default 100 epochs, batch 128, Adam lr 1e-3).
    seed : int or None, default 0
        Seed of the autoencoder (initialization and batch order) and of the
        randomized PCA.
    device : str, torch.device or None
        Where the compression runs; None follows the input (a CUDA tensor is
        compressed on its GPU, numpy on CPU).
    whiten : bool, default False
        Whiten each variable's codes (:func:`whiten_codes`: centred, identity
        covariance) before the inner estimator, as Butakov et al. [1]_ do
        before their entropy estimates. The paper's configuration is
        ``whiten=True, estimator='kl'`` (code pairs of joint dimension <= 4)
        or ``'wkl'`` (above), with ``estimator_params={'k': 5, 'whiten': True}``:
        the inner estimator then also whitens the joint codes for the joint
        entropy (with its log-determinant correction), as the paper's
        entropy estimator does; that is what keeps the estimate close to the
        truth at high MI. Whitening is an invertible linear map per variable:
        it changes no MI.
    compressor_x, compressor_y : FittedAutoencoder, FittedPCA or None, default None
        A compressor already fitted on separate data (:func:`fit_autoencoder`,
        e.g. the conv one for images, or :func:`fit_pca`): x / y is
        encoded with it instead of being compressed by a map fitted on the
        estimated samples themselves (``compression``, ``dim_x`` / ``dim_y``
        and the training parameters are then not used for that variable).
    unit : {'bits', 'nats'}, default 'bits'

    Attributes
    ----------
    inner_ : BaseMIEstimator
        The inner estimator used by the last call.
    compression_ : dict
        For each compressed variable ('x', 'y'): the code dimension (and,
        with 'auto', the estimated 'intrinsic_dimension') and
        'explained_variance_ratio' (PCA) or 'reconstruction_mse' and the
        'model' (autoencoder).
    flags_ : tuple of str
        The inner estimator's diagnostic flags on the codes.

    Notes
    -----
    Bias: a lower bound on I(X;Y) by the data-processing inequality (MI can
    only decrease under compression), up to the inner estimator's own bias,
    which is added on top (KSG underestimates at high MI; it can also
    overestimate slightly at low MI). Tight when the codes keep the
    dependence; PCA (linear) needs more dimensions than the intrinsic ones
    for nonlinear manifolds such as images: e.g. for ``blobs_image`` with a
    2-D latent, PCA to 2 dims keeps ~70% of 1 bit, PCA to 4 dims ~90%.
    Accuracy on images with 4-D latents: benchmarks/RESULTS.md ("compressed").
    Supports the discrete/continuous combinations of the inner estimator.
    Cost: randomized PCA O(n d dim); autoencoder O(epochs n d h); 'auto'
    adds O(min(n, 2000)^2 d); plus the inner estimator on the codes.

    References
    ----------
    .. [1] Butakov et al., ICLR 2024.
    .. [2] Halko, Martinsson & Tropp, SIAM Review 53(2), 2011.
    .. [3] Facco et al., Scientific Reports 7, 12140, 2017.
    """

    name = "compressed"
    keep_torch = True
    _constraints = {
        "estimator": [InstanceOf((str, BaseMIEstimator), "an estimator name or instance")],
        "estimator_params": [NONE, InstanceOf((dict,), "a dict")],
        "compression": [Options(("pca", "autoencoder"))],
        "dim_x": [NONE, Options(("auto",)), Interval(int, 1, None)],
        "dim_y": [NONE, Options(("auto",)), Interval(int, 1, None)],
        "pca_solver": [Options(("randomized", "full"))],
        "hidden": [InstanceOf((tuple, list), "a tuple of positive ints")],
        "epochs": [Interval(int, 1, None)],
        "batch_size": [Interval(int, 1, None)],
        "lr": [Interval(float, 0, None, closed="neither")],
        "seed": [NONE, Interval(int, 0, None)],
        "device": [NONE, InstanceOf((str, torch.device), "a device name or torch.device")],
        "whiten": [BOOLEAN],
        "compressor_x": [NONE, InstanceOf((FittedAutoencoder, FittedPCA), "a FittedAutoencoder or FittedPCA")],
        "compressor_y": [NONE, InstanceOf((FittedAutoencoder, FittedPCA), "a FittedAutoencoder or FittedPCA")],
    }

    def __init__(self, *, estimator: str | BaseMIEstimator = "ksg",
                 estimator_params: dict | None = None, compression: str = "pca",
                 dim_x: int | str | None = "auto", dim_y: int | str | None = "auto",
                 pca_solver: str = "randomized", hidden: tuple[int, ...] = (128, 64),
                 epochs: int = 100, batch_size: int = 128, lr: float = 1e-3,
                 seed: int | None = 0, device: Any = None, whiten: bool = False,
                 compressor_x: FittedAutoencoder | FittedPCA | None = None,
                 compressor_y: FittedAutoencoder | FittedPCA | None = None, unit: str = "bits"):
        self.estimator = estimator
        self.estimator_params = estimator_params
        self.compression = compression
        self.dim_x = dim_x
        self.dim_y = dim_y
        self.pca_solver = pca_solver
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.device = device
        self.whiten = whiten
        self.compressor_x = compressor_x
        self.compressor_y = compressor_y
        self.unit = unit
        self._check_params()
        check_hidden("Compressed", hidden)
        if isinstance(estimator, BaseMIEstimator) and estimator_params:
            raise ValueError("'estimator_params' can only be given with an estimator name, not an instance.")
        self._inner()  # fail early on an unknown name or bad inner parameters

    def _inner(self) -> BaseMIEstimator:
        if isinstance(self.estimator, BaseMIEstimator):
            return self.estimator
        from . import get

        if self.estimator == "compressed":
            raise ValueError("The 'estimator' parameter of Compressed cannot be 'compressed' itself.")
        return get(self.estimator, **(self.estimator_params or {}))

    def _compress_fitted(self, a: Any, discrete: bool, which: str) -> Any:
        """Encode with the variable's fitted compressor (None: not given, use the usual path)."""
        fitted = getattr(self, f"compressor_{which}", None)
        if fitted is None or discrete:
            return None
        self.compression_[which] = {"dim": fitted.dim, "compressed": True, **fitted.info()}
        return fitted.encode(a, device=self.device)

    def _whitened(self, codes: Any, discrete: bool, which: str) -> Any:
        if not getattr(self, "whiten", False) or discrete:
            return codes
        self.compression_.setdefault(which, {"dim": int(codes.shape[1]), "compressed": False})["whitened"] = True
        return whiten_codes(codes)

    def _compress(self, a: Any, dim: int | str | None, discrete: bool, which: str) -> Any:
        fitted = self._compress_fitted(a, discrete, which)
        if fitted is not None:
            return fitted
        if dim is None:
            return a
        if discrete:  # labels / symbols are never compressed
            self.compression_[which] = {"dim": int(a.shape[1]), "compressed": False, "reason": "discrete"}
            return a
        info: dict[str, Any] = {}
        if dim == "auto":
            intrinsic = twonn_dimension(a, seed=self.seed, device=self.device)
            dim = max(1, math.ceil(intrinsic))  # rounded up: a code too small loses information
            info["intrinsic_dimension"] = intrinsic
        if dim >= a.shape[1]:
            self.compression_[which] = {"dim": int(a.shape[1]), "compressed": False, **info}
            return a
        seed = None if self.seed is None else self.seed + (0 if which == "x" else 1)
        if self.compression == "pca":
            codes, more = pca_compress(a, dim, solver=self.pca_solver, seed=seed, device=self.device)
        else:
            codes, more = autoencoder_compress(a, dim, hidden=tuple(self.hidden), epochs=self.epochs,
                                               batch_size=self.batch_size, lr=self.lr, seed=seed,
                                               device=self.device)
        self.compression_[which] = {"dim": dim, "compressed": True, **info, **more}
        return codes

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        inner = self._inner()
        self.inner_ = inner
        self.compression_: dict[str, Any] = {}
        cx = self._whitened(self._compress(x, self.dim_x, discrete_x, "x"), discrete_x, "x")
        cy = self._whitened(self._compress(y, self.dim_y, discrete_y, "y"), discrete_y, "y")
        value = inner.estimate(cx, cy, discrete_x=discrete_x, discrete_y=discrete_y)
        self._inner_flags = tuple(inner.flags_)
        return to_nats(float(value), inner.unit)

    def _extra_flags(self, x, y, discrete_x, discrete_y) -> tuple[str, ...]:
        return self._inner_flags  # the inner estimator's flags on the codes of this call


class PCAKSG(Compressed):
    """PCA of each continuous variable to at most ``dim_x`` / ``dim_y`` dimensions, then KSG.

    The information plane's default estimator (``InformationPlane`` with no
    ``estimators``), registered under its own name so that the label in its
    tables means one configuration everywhere: ``get("pca_ksg")``,
    ``ibscope.mutual_information(x, y, method="pca_ksg")``, ``ibscope estimate
    --method pca_ksg`` and the plane's ``estimator`` column. It is
    :class:`Compressed` with ``estimator='ksg'`` (``k`` neighbours, KSG's other
    defaults), ``compression='pca'`` and fixed code dimensions; ``compressed``
    by name keeps its own defaults (dimensions chosen by TwoNN).

    Parameters
    ----------
    dim_x, dim_y : int or None, default 4
        PCA target dimension of x / y; a variable of at most that many
        columns, or a discrete one, is left as it is (narrow layers get plain
        KSG); None never compresses that variable.
    k : int, default 3
        Neighbours of KSG.
    pca_solver : {'randomized', 'full'}, default 'randomized'
        See :func:`pca_compress`.
    seed : int or None, default 0
        Seed of the randomized PCA.
    device : str, torch.device or None
        Where the PCA runs; None follows the input.
    unit : {'bits', 'nats'}, default 'bits'

    Notes
    -----
    Bias: a lower bound on I(X;Y) by the data-processing inequality, up to
    KSG's own bias on the codes (see :class:`Compressed`). Measured on
    256-dim image blobs with a 2-D latent: ~0.9 of 1 bit (tests/test_common.py).
    Cost: randomized PCA O(n d dim) plus KSG in dim_x + dim_y dimensions.

    References
    ----------
    .. [1] Butakov et al., ICLR 2024.
    .. [2] A. Kraskov, H. Stoegbauer and P. Grassberger, Phys. Rev. E 69, 066138, 2004.
    """

    name = "pca_ksg"
    _constraints = {
        **{key: c for key, c in Compressed._constraints.items()
           if key in ("dim_x", "dim_y", "pca_solver", "seed", "device")},
        "dim_x": [NONE, Interval(int, 1, None)],
        "dim_y": [NONE, Interval(int, 1, None)],
        "k": [Interval(int, 1, None)],
    }

    def __init__(self, *, dim_x: int | None = 4, dim_y: int | None = 4, k: int = 3,
                 pca_solver: str = "randomized", seed: int | None = 0, device: Any = None,
                 unit: str = "bits"):
        self.dim_x = dim_x
        self.dim_y = dim_y
        self.k = k
        self.pca_solver = pca_solver
        self.seed = seed
        self.device = device
        self.unit = unit
        self._check_params()
        # what Compressed's machinery reads (fixed, not parameters of this name)
        self.estimator = "ksg"
        self.estimator_params = {"k": k}
        self.compression = "pca"
        self.hidden, self.epochs, self.batch_size, self.lr = (128, 64), 100, 128, 1e-3
        self._inner()
