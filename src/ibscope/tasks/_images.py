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

``style='paper'`` renders the 2-D blobs as the code of Butakov et al. does
(Information-v3, the Gaussian-blob notebook): on the grid [0, 1]^2 sampled at
``size`` points per axis, pixel = exp(-10 ((x - c_x)^2 + (y - c_y)^2)) with
the centre (c_x, c_y) = Phi(z) anywhere in [0, 1]^2 -- in pixels a std of
(size - 1) / sqrt(20) (3.35 at 16x16) and centres over the whole image.
Wider blobs over a wider range make the centre easier to read back from the
pixels; the map is injective for the same reason.

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

__all__ = ["BLOB_STYLES", "BlobsImage", "render_blobs"]


BLOB_STYLES = ("ibscope", "paper")


def render_blobs(z: np.ndarray, size: int, *, style: str = "ibscope") -> np.ndarray:
    """Render latents z (n, d), 1 <= d <= 4, as (n, size*size) blob images (float64).

    ``style``: ``'ibscope'`` (the module docstring's renderer, any d) or
    ``'paper'`` (Butakov et al.'s 2-D blobs, d = 2 only; see the module docstring).
    """
    if style not in BLOB_STYLES:
        raise ValueError(f"The 'style' of render_blobs must be one of {BLOB_STYLES}. Got {style!r} instead.")
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or not 1 <= z.shape[1] <= 4:
        raise ValueError(f"The 'z' of render_blobs must have shape (n, d) with 1 <= d <= 4. Got {z.shape} instead.")
    n, d = z.shape
    u = ndtr(z)
    if style == "paper":
        if d != 2:
            raise ValueError(f"render_blobs(style='paper') needs 2-D latents (the blob's centre). Got d = {d}.")
        grid = np.linspace(0.0, 1.0, size)
        gx = np.exp(-10.0 * (grid[None, :] - u[:, 0, None]) ** 2)  # (n, size) columns
        gy = np.exp(-10.0 * (grid[None, :] - u[:, 1, None]) ** 2)  # (n, size) rows
        return (gy[:, :, None] * gx[:, None, :]).reshape(n, size * size)
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
