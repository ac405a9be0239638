"""A high-dimensional image task: correlated latents rendered as Gaussian blobs.

As in Butakov et al. [1]_: a low-dimensional pair of correlated latents
(u, v) from :class:`~ibscope.tasks.GaussianSplit` is rendered into two
``size x size`` images; each image is flattened to ``size * size`` columns.

Rendering of one latent vector z (dimension 1 to 4): each coordinate goes
through the standard normal CDF (a strictly increasing bijection R -> (0, 1))
and sets one blob parameter:

* z_1 -> horizontal centre c_x in [2, size - 3],
* z_2 -> vertical centre c_y in the same range (image centre if latent_dim = 1),
* z_3 -> width s in [1, 3] pixels (2 if latent_dim < 3),
* z_4 -> amplitude A in [0.5, 1] (1 if latent_dim < 4),

pixel (i, j) = A exp(-((j - c_x)^2 + (i - c_y)^2) / (2 s^2)).

The rendering is injective: the log of the pixel values is a quadratic
polynomial in (i, j) whose coefficients determine (c_x, c_y, s, A) and hence
z (three pixels along each axis suffice; in float64 no pixel underflows,
exp(-225) at worst). Injective smooth maps do not change mutual information,
so I(image_x; image_y) = I(u; v) = ``mi`` bits exactly (up to the float64
saturation of the normal CDF beyond |z| ~ 8, probability < 1e-15).

References
----------
.. [1] I. Butakov et al., "Information bottleneck analysis of deep neural
   networks via lossy compression", ICLR 2024.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from .._validation import NONE, Interval
from ._base import BaseTask
from ._gaussian import GaussianSplit

__all__ = ["BlobsImage", "render_blobs"]


def render_blobs(z: np.ndarray, size: int) -> np.ndarray:
    """Render latents z (n, d), 1 <= d <= 4, as (n, size*size) blob images (float64)."""
    z = np.asarray(z, dtype=np.float64)
    n, d = z.shape
    u = ndtr(z)
    lo, hi = 2.0, size - 3.0
    cx = lo + (hi - lo) * u[:, 0]
    cy = lo + (hi - lo) * u[:, 1] if d >= 2 else np.full(n, (size - 1) / 2.0)
    s = 1.0 + 2.0 * u[:, 2] if d >= 3 else np.full(n, 2.0)
    amp = 0.5 + 0.5 * u[:, 3] if d >= 4 else np.ones(n)
    grid = np.arange(size, dtype=np.float64)
    gx = np.exp(-((grid[None, :] - cx[:, None]) ** 2) / (2.0 * s[:, None] ** 2))  # (n, size) columns
    gy = np.exp(-((grid[None, :] - cy[:, None]) ** 2) / (2.0 * s[:, None] ** 2))  # (n, size) rows
    img = amp[:, None, None] * gy[:, :, None] * gx[:, None, :]
    return img.reshape(n, size * size)


class BlobsImage(BaseTask):
    """Correlated latents (gaussian_split) rendered as ``size x size`` Gaussian-blob images.

    Parameters
    ----------
    latent_dim : int in [1, 4], default 2
    mi : float, default 1.0
        MI of the latents in bits (= MI of the images, see the module docstring).
    size : int >= 8, default 16
    mixing_seed : int or None, default 0
        Passed to the latent gaussian_split task.
    """

    task_name = "blobs_image"
    _param_order = ("latent_dim", "mi", "size", "mixing_seed")
    _constraints = {
        "latent_dim": [Interval(int, 1, 4)],
        "mi": [Interval(float, 0, None)],
        "size": [Interval(int, 8, None)],
        "mixing_seed": [NONE, Interval(int, 0, None)],
    }

    def __init__(self, latent_dim: int = 2, mi: float = 1.0, size: int = 16,
                 mixing_seed: int | None = 0):
        self.latent_dim, self.mi, self.size, self.mixing_seed = latent_dim, mi, size, mixing_seed
        self._check_params()
        self.latent_task = GaussianSplit(dim=latent_dim, mi=mi, mixing_seed=mixing_seed)
        self.dim_x = self.dim_y = size * size

    def _mi_nats(self) -> float:
        return self.latent_task.mutual_information_nats

    def sample_latents(self, n: int, seed=None) -> tuple[np.ndarray, np.ndarray]:
        """The latents that ``sample(n, seed)`` renders (same seed, same draws)."""
        return self.latent_task.sample(n, seed)

    def _sample(self, n, rng):
        u, v = self.latent_task._sample(n, rng)
        return render_blobs(u, self.size), render_blobs(v, self.size)
