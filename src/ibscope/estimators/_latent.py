"""Latent MI: KSG on learned low-dimensional representations (Gowri et al., NeurIPS 2024).

Latent MI (LMI) approximation [1]_ rests on the data-processing inequality:
for any maps f, g, I(f(X); g(Y)) <= I(X;Y), with equality when f(X) and g(Y)
keep everything X and Y share. High-dimensional variables whose dependence
lives on a low-dimensional structure can therefore be compressed to
low-dimensional embeddings Z_X = f(X), Z_Y = g(Y) first, and a nonparametric
estimator (KSG [2]_) run on the embeddings, where its sample complexity is
that of the latent dimension, not of the ambient one.

Ours (``latent_ksg``): two MLP encoders f, g into ``latent_dim`` dimensions
each (capped at the variable's own dimension), trained on a training split to
make the embeddings of a pair predictive of each other while keeping the
variables reconstructible:

* a contrastive InfoNCE term [3]_ on each minibatch of b pairs with the
  critic S_ij = -exp(a) ||z_x,i - z_y,j||^2 / 2 on batch-standardized
  embeddings (a learned), which pulls the embeddings of a pair together
  (dependence that KSG then sees as a near-diagonal relation);
* ``recon_weight`` times the mean squared error of decoders that reconstruct
  x from z_x and y from z_y (the autoencoder term of the paper's architecture,
  which keeps the encoders from discarding the structure of each variable;
  the paper combines reconstruction with cross-prediction of the other
  variable; we use InfoNCE for the cross term).

Protocol (as the neural bounds and flows: ``_neural.held_out_split``): columns
are standardized with the training split's mean and std, the rows put in a
canonical order and split at random (``seed``) into a training and a
held-out part (``test_fraction``); Adam on training minibatches; after every
epoch the InfoNCE bound is computed on the held-out part; training stops after
``patience`` epochs without improvement (or at ``max_epochs``) and the
encoders of the best held-out epoch are kept. The estimate is KSG (algorithm
1, ``k`` neighbours, max-norm) on the standardized held-out embeddings,
clipped at 0. KSG
never sees a row the encoders were trained on, so the encoders' overfitting
cannot pass for dependence.
The loop is the shared early-stopping engine, ``_train.train_early_stopping``.

References
----------
.. [1] G. Gowri, X.-K. Lun, A. M. Klein and P. Yin, "Approximating mutual
   information of high-dimensional variables using learned representations",
   NeurIPS 2024, arXiv:2409.02732.
.. [2] A. Kraskov, H. Stoegbauer and P. Grassberger, "Estimating mutual
   information", Phys. Rev. E 69, 066138, 2004.
.. [3] A. van den Oord, Y. Li and O. Vinyals, "Representation learning with
   contrastive predictive coding", arXiv:1807.03748, 2018.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from .._validation import Interval, Options, is_torch, resolve_device
from ._knn import ksg1_brute, ksg_mi
from ._neural import (
    _ACTIVATIONS,
    _MIN_SPLIT,
    TRAINING_CONSTRAINTS,
    _mlp,
    check_hidden,
    held_out_split,
)
from ._train import history_in_unit, train_early_stopping
from .base import CONTINUOUS, BaseMIEstimator

__all__ = ["LatentKSG"]


def _standardize_batch(z: torch.Tensor) -> torch.Tensor:
    return (z - z.mean(dim=0)) / (z.std(dim=0) + 1e-6)


class _LatentModel(nn.Module):
    """Encoders f: x -> z_x, g: y -> z_y, decoders back, and the critic's log-scale a."""

    def __init__(self, dx: int, dy: int, kx: int, ky: int, hidden: tuple[int, ...],
                 activation: str):
        super().__init__()
        self.enc_x = _mlp(dx, hidden, kx, activation)
        self.enc_y = _mlp(dy, hidden, ky, activation)
        self.dec_x = _mlp(kx, hidden[::-1], dx, activation)
        self.dec_y = _mlp(ky, hidden[::-1], dy, activation)
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.k = min(kx, ky)  # coordinates compared by the critic

    def scores(self, zx: torch.Tensor, zy: torch.Tensor) -> torch.Tensor:
        a, b = _standardize_batch(zx)[:, :self.k], _standardize_batch(zy)[:, :self.k]
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return -0.5 * torch.exp(self.log_scale) * d2

    def loss(self, x: torch.Tensor, y: torch.Tensor, recon_weight: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, InfoNCE bound in nats) of one batch."""
        zx, zy = self.enc_x(x), self.enc_y(y)
        s = self.scores(zx, zy)
        b = s.shape[0]
        nce = (torch.diagonal(s) - torch.logsumexp(s, dim=1)).mean() + math.log(b)
        total = -nce
        if recon_weight > 0:
            rec = ((self.dec_x(zx) - x) ** 2).mean() + ((self.dec_y(zy) - y) ** 2).mean()
            total = total + recon_weight * rec
        return total, nce


class LatentKSG(BaseMIEstimator):
    """KSG on learned low-dimensional embeddings of X and Y (latent MI, Gowri et al. 2024).

    Trains MLP encoders z_x = f(x), z_y = g(y) into ``latent_dim`` dimensions
    with an InfoNCE contrastive term plus a reconstruction term on a training
    split, then returns KSG on the embeddings of the held-out rows (see the
    module docstring for the objective and the protocol).

    Parameters
    ----------
    latent_dim : int, default 4
        Embedding dimension of each variable (capped at the variable's own
        dimension). Must cover the dimension of the dependence: the value
        cannot exceed I(f(X); g(Y)).
    k : int, default 3
        Neighbours of the KSG estimate on the embeddings.
    recon_weight : float >= 0, default 0.1
        Weight of the reconstruction (autoencoder) term; 0 trains the
        encoders on InfoNCE alone.
    hidden : tuple of int, default (64, 64)
        Hidden sizes of the encoder MLPs (the decoders mirror them).
    activation : {'relu', 'elu', 'tanh', 'gelu'}, default 'relu'
    batch_size : int, default 256
        Training minibatch size (also the contrastive batch: the InfoNCE
        term saturates at log(batch_size), which only limits training).
    lr : float, default 1e-3
        Adam learning rate.
    max_epochs : int, default 300
    patience : int, default 10
        Stop after this many epochs without a higher held-out InfoNCE bound
        (the reconstruction term would keep improving long after the
        embeddings stop gaining shared information).
    test_fraction : float in (0, 1), default 0.4
        Share of the rows held out for early stopping and for the KSG estimate.
    seed : int or None, default 0
        Seeds the split, the initialization and the minibatch order; on CPU
        the estimate is deterministic given the seed.
    device : str, torch.device or None
        Where to train (and, for a CUDA device, where KSG runs, by the
        blocked brute-force engine); None follows the input tensor, CPU for
        numpy input.
    unit : {'bits', 'nats'}, default 'bits'

    Attributes
    ----------
    model_ : torch.nn.Module
        The trained encoders (``enc_x``, ``enc_y``) and decoders of the best
        held-out epoch, in eval mode; they take the standardized inputs.
    history_ : list of dict
        One entry per epoch: ``{'epoch', 'train', 'loss', 'test'}``: minus the
        mean training loss, the held-out loss and the held-out InfoNCE bound
        in ``unit`` (the early-stopping criterion).
    best_epoch_ : int
    converged_ : bool
        False when training used all ``max_epochs`` and the held-out InfoNCE
        bound still improved within the last ``patience`` epochs (flag
        ``critic_not_converged``: the value may still be too low).
    latent_dims_ : tuple of int
        The embedding dimensions used for x and y.
    flags_ : tuple of str

    Notes
    -----
    Bias: a lower bound in the data-processing sense: the population value on
    the embeddings, I(f(X); g(Y)), never exceeds I(X;Y), and falls short by
    whatever the encoders miss (too small ``latent_dim``, too little data or
    training). KSG on the n_test held-out embeddings adds its own
    finite-sample bias, mostly downward for strong dependence (Kraskov et
    al.), so the value reads low rather than high; it is not a guaranteed
    bound. Accurate when the shared information lives on a low-dimensional
    structure that the encoders find; when the dependence is spread over
    many independent directions (e.g. a 20 x 20 Gaussian with MI in every
    canonical pair) a small ``latent_dim`` cannot hold it. Continuous x and
    y only. Needs at least 8 training and 8 held-out rows.

    Cost: O(epochs * n * P) for the P network parameters (a few seconds to
    tens of seconds on CPU for n of a few thousand) plus one KSG search on
    n_test rows in 2 ``latent_dim`` dimensions.

    References
    ----------
    .. [1] G. Gowri, X.-K. Lun, A. M. Klein and P. Yin, "Approximating mutual
       information of high-dimensional variables using learned
       representations", NeurIPS 2024, arXiv:2409.02732.
    .. [2] A. Kraskov, H. Stoegbauer and P. Grassberger, "Estimating mutual
       information", Phys. Rev. E 69, 066138, 2004.
    .. [3] A. van den Oord, Y. Li and O. Vinyals, "Representation learning
       with contrastive predictive coding", arXiv:1807.03748, 2018.
    """

    name = "latent_ksg"
    bound = None  # a data-processing lower bound in the population; KSG's finite-sample bias on top
    keep_torch = True
    min_samples = 2 * _MIN_SPLIT
    supports = frozenset({(CONTINUOUS, CONTINUOUS)})
    _constraints = {
        "latent_dim": [Interval(int, 1, None)],
        "k": [Interval(int, 1, None)],
        "recon_weight": [Interval(float, 0, None)],
        "activation": [Options(tuple(_ACTIVATIONS))],
        **TRAINING_CONSTRAINTS,
    }

    def __init__(self, *, latent_dim: int = 4, k: int = 3, recon_weight: float = 0.1,
                 hidden: tuple[int, ...] = (64, 64), activation: str = "relu",
                 batch_size: int = 256, lr: float = 1e-3, max_epochs: int = 300,
                 patience: int = 10, test_fraction: float = 0.4, seed: int | None = 0,
                 device: Any = None, unit: str = "bits"):
        self.latent_dim = latent_dim
        self.k = k
        self.recon_weight = recon_weight
        self.hidden = hidden
        self.activation = activation
        self.batch_size = batch_size
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.test_fraction = test_fraction
        self.seed = seed
        self.device = device
        self.unit = unit
        self._check_params()
        check_hidden(type(self).__name__, hidden)

    @staticmethod
    def _encode(a: Any, train_idx: np.ndarray, device: torch.device) -> torch.Tensor:
        t = a.to(device=device, dtype=torch.float32) if is_torch(a) else torch.as_tensor(
            np.asarray(a), dtype=torch.float32, device=device)
        tr = t[torch.as_tensor(train_idx, device=device)]
        std = tr.std(dim=0)
        return (t - tr.mean(dim=0)) / torch.where(std > 0, std, torch.ones_like(std))

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        train_idx, test_idx = held_out_split(x, y, self.test_fraction, self.seed, type(self).__name__)
        if len(test_idx) <= self.k + 1:
            raise ValueError(f"LatentKSG needs more than k + 1 = {self.k + 1} held-out rows; "
                             f"got {len(test_idx)}. Pass more samples or raise 'test_fraction'.")
        device = resolve_device(self.device, like=x if is_torch(x) else y)
        xt, yt = self._encode(x, train_idx, device), self._encode(y, train_idx, device)
        tr = torch.as_tensor(train_idx, device=device)
        te = torch.as_tensor(test_idx, device=device)
        kx, ky = min(self.latent_dim, xt.shape[1]), min(self.latent_dim, yt.shape[1])
        self.latent_dims_ = (kx, ky)
        self._train(xt[tr], yt[tr], xt[te], yt[te], kx, ky, device)
        with torch.no_grad():
            zx = self.model_.enc_x(xt[te]).to(torch.float64)
            zy = self.model_.enc_y(yt[te]).to(torch.float64)
        if not (bool(torch.isfinite(zx).all()) and bool(torch.isfinite(zy).all())):
            raise FloatingPointError("LatentKSG: the encoders produced non-finite embeddings; "
                                     "lower 'lr'.")
        zx, zy = _standardize_batch(zx), _standardize_batch(zy)
        if zx.device.type == "cpu":
            value = ksg_mi(zx.numpy(), zy.numpy(), k=self.k)
        else:
            value = ksg1_brute(zx, zy, self.k)
        return max(value, 0.0)  # MI is non-negative (KSG alone can dip below 0)

    def _held_out(self, model: _LatentModel, x_te: torch.Tensor, y_te: torch.Tensor
                  ) -> tuple[float, float]:
        """(loss, InfoNCE nats) on the held-out rows, averaged over chunks of <= batch_size."""
        n = x_te.shape[0]
        chunks = torch.tensor_split(torch.arange(n, device=x_te.device),
                                    max(1, math.ceil(n / self.batch_size)))
        loss = nce = 0.0
        with torch.no_grad():
            for c in chunks:
                lo, nc = model.loss(x_te[c], y_te[c], self.recon_weight)
                loss += float(lo) * len(c) / n
                nce += float(nc) * len(c) / n
        return loss, nce

    def _train(self, x_tr, y_tr, x_te, y_te, kx: int, ky: int, device: torch.device) -> None:
        """Fit the encoders by the shared early-stopping engine (``_train.train_early_stopping``)."""
        def build() -> _LatentModel:
            return _LatentModel(x_tr.shape[1], y_tr.shape[1], kx, ky, tuple(self.hidden),
                                self.activation).to(device)

        def batch_loss(model: _LatentModel, xb: torch.Tensor, yb: torch.Tensor):
            loss, _ = model.loss(xb, yb, self.recon_weight)
            return loss, -loss.detach()

        def held_out(model: _LatentModel) -> tuple[float, dict[str, float]]:
            loss_te, nce = self._held_out(model, x_te, y_te)
            return nce, {"loss": loss_te}

        fit = train_early_stopping(
            build, x_tr, y_tr, batch_loss, held_out, lr=self.lr, batch_size=self.batch_size,
            max_epochs=self.max_epochs, patience=self.patience, seed=self.seed, device=device,
            owner="LatentKSG", objective="held-out bound")
        self.model_ = fit.module
        self.history_ = history_in_unit(fit.history, self.unit, ("test",))
        self.best_epoch_ = fit.best_epoch
        self.converged_ = fit.converged

    def _extra_flags(self, x, y, discrete_x, discrete_y) -> tuple[str, ...]:
        return () if self.converged_ else ("critic_not_converged",)
