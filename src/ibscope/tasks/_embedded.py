"""A low-dimensional Gaussian pair embedded non-linearly in a high-dimensional space.

The setting of latent-MI approximation (Gowri et al. [1]_): high ambient
dimension, low intrinsic dimension of the dependence.
"""

from __future__ import annotations

import numpy as np

from .._units import LN2
from .._validation import NONE, Interval
from ._base import BaseTask
from ._gaussian import GaussianSplit, random_orthogonal

__all__ = ["EmbeddedGaussian"]


class EmbeddedGaussian(BaseTask):
    """A ``gaussian_split`` pair (u, v) of dimension ``latent_dim`` mapped injectively into ``ambient_dim``.

    Each variable is embedded as x = Q [u, tanh(W u + c), e] with a fixed
    random W of shape (h, latent_dim), h = ambient_dim - latent_dim -
    noise_dim (entries N(0, 1)), c uniform on (-1, 1), e a vector of
    ``noise_dim`` independent N(0, 1) nuisance coordinates drawn afresh for
    every row (independent of everything else) and a Haar-random orthogonal Q
    (ambient_dim square); likewise y from v with independent draws.
    [u, tanh(W u + c)] contains u and Q is invertible, so x determines (u, e);
    MI is invariant under injective maps of each variable and independent
    nuisance adds nothing (I((U, E_x); (V, E_y)) = I(U;V) for (E_x, E_y)
    independent of each other and of (U, V); Cover & Thomas [2]_), so
    I(X;Y) = I(U;V) = ``mi`` bits exactly. The dependence has dimension
    ``latent_dim``; a kNN estimator in the ambient dimension sees mostly
    the non-linear features and the nuisance.

    Parameters
    ----------
    latent_dim : int >= 1, default 2
    mi : float >= 0, default 1.0
        I(X;Y) in bits.
    ambient_dim : int > latent_dim + noise_dim, default 50
    noise_dim : int >= 0, default 24
        Independent nuisance coordinates of each variable.
    mixing_seed : int or None, default 0
        Seed of the embeddings (and of the orthogonal mixing of the latent
        pair); None: no mixing and W = 1, c = 0 (still injective).

    References
    ----------
    .. [1] G. Gowri, X.-K. Lun, A. M. Klein and P. Yin, "Approximating mutual
       information of high-dimensional variables using learned
       representations", NeurIPS 2024.
    .. [2] T. M. Cover and J. A. Thomas, "Elements of Information Theory",
       2nd ed., 2006.
    """

    task_name = "embedded_gaussian"
    _param_order = ("latent_dim", "mi", "ambient_dim", "noise_dim", "mixing_seed")
    _constraints = {
        "latent_dim": [Interval(int, 1, None)],
        "mi": [Interval(float, 0, None)],
        "ambient_dim": [Interval(int, 2, None)],
        "noise_dim": [Interval(int, 0, None)],
        "mixing_seed": [NONE, Interval(int, 0, None)],
    }

    def __init__(self, latent_dim: int = 2, mi: float = 1.0, ambient_dim: int = 50,
                 noise_dim: int = 24, mixing_seed: int | None = 0):
        self.latent_dim, self.mi, self.ambient_dim = latent_dim, mi, ambient_dim
        self.noise_dim, self.mixing_seed = noise_dim, mixing_seed
        self._check_params()
        if ambient_dim <= latent_dim + noise_dim:
            raise ValueError(f"The 'ambient_dim' parameter of task 'embedded_gaussian' must exceed "
                             f"latent_dim + noise_dim = {latent_dim + noise_dim}. "
                             f"Got {ambient_dim!r} instead.")
        self._latent = GaussianSplit(dim=latent_dim, mi=mi, mixing_seed=mixing_seed)
        self.dim_x = self.dim_y = ambient_dim
        h = ambient_dim - latent_dim - noise_dim
        self._maps = []
        for j in range(2):
            if mixing_seed is None:
                w, c, q = np.ones((h, latent_dim)), np.zeros(h), np.eye(ambient_dim)
            else:
                rng = np.random.default_rng([mixing_seed, 7919, j])
                w = rng.standard_normal((h, latent_dim))
                c = rng.uniform(-1.0, 1.0, h)
                q = random_orthogonal(ambient_dim, int(rng.integers(0, 2**31)))
            self._maps.append((w, c, q))

    def embed(self, u: np.ndarray, which: int, noise: np.ndarray) -> np.ndarray:
        """x (``which=0``) or y (1) from latent rows ``u`` and nuisance rows ``noise`` ((n, noise_dim))."""
        w, c, q = self._maps[which]
        return np.hstack([u, np.tanh(u @ w.T + c), noise]) @ q.T

    def _mi_nats(self) -> float:
        return float(self.mi) * LN2

    def _sample(self, n, rng):
        u, v = self._latent._sample(n, rng)
        e = rng.standard_normal((2, n, self.noise_dim))
        return self.embed(u, 0, e[0]), self.embed(v, 1, e[1])
