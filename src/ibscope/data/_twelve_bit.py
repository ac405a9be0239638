"""The 12-bit task of Shwartz-Ziv & Tishby (2017), generated or loaded from var_u.mat.

The original data set (``var_u.mat``) holds all 4096 12-bit patterns and a
binary label. The labels follow an exact rule (see ../shared/PAPERS.md,
section 1): bit i sits on vertex v_i of a regular icosahedron on the unit
sphere; with w the Hamming weight and S = ||sum_i x_i v_i||^2,

    y = 1  iff  w >= 8, or (w = 5 and S > 7), or (w = 6 and S > 2.5),
               or (w = 7 and S > 0.5);

i.e. a spherically symmetric function of the 12 points, thresholded. The
generator below reproduces the original file bit for bit (tested), so the
built-in default *is* the original data set.

References
----------
.. [1] R. Shwartz-Ziv and N. Tishby, "Opening the black box of deep neural
   networks via information", arXiv:1703.00810, 2017.
"""

from __future__ import annotations

import os

import numpy as np

from ._paths import require_file

__all__ = ["twelve_bit", "load_twelve_bit_mat", "icosahedron_vertices"]


def icosahedron_vertices() -> np.ndarray:
    """The 12 unit vectors v_0..v_11 of the regular icosahedron used by the task, shape (12, 3)."""
    phi = (1.0 + np.sqrt(5.0)) / 2.0
    a = 1.0 / np.sqrt(1.0 + phi**2)
    b = phi / np.sqrt(1.0 + phi**2)
    return np.array(
        [
            (0, -a, -b), (-a, -b, 0), (0, -a, b), (a, -b, 0), (-b, 0, a), (0, a, -b),
            (-a, b, 0), (a, b, 0), (b, 0, a), (0, a, b), (b, 0, -a), (-b, 0, -a),
        ],
        dtype=np.float64,
    )


def _all_patterns(n_bits: int = 12) -> np.ndarray:
    """Row r is the binary expansion of r, most significant bit first."""
    r = np.arange(2**n_bits, dtype=np.int64)[:, None]
    shifts = np.arange(n_bits - 1, -1, -1, dtype=np.int64)[None, :]
    return ((r >> shifts) & 1).astype(np.uint8)


def twelve_bit() -> tuple[np.ndarray, np.ndarray]:
    """Generate the 12-bit task: ``(x, y)`` with x uint8 (4096, 12) and y int64 (4096,).

    Deterministic; identical to the original ``var_u.mat`` (2118 positives,
    p(y=1) = 0.5171, H(Y) = 0.99916 bits).
    """
    x = _all_patterns(12)
    w = x.sum(axis=1)
    s = np.sum((x.astype(np.float64) @ icosahedron_vertices()) ** 2, axis=1)
    y = (w >= 8) | ((w == 5) & (s > 7.0)) | ((w == 6) & (s > 2.5)) | ((w == 7) & (s > 0.5))
    return x, y.astype(np.int64)


def load_twelve_bit_mat(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load the original ``var_u.mat``: ``(x, y)`` with x uint8 (4096, 12), y int64 (4096,).

    Raises FileNotFoundError for a missing file, TypeError for a ``path``
    that is not a path (for the built-in data set call :func:`twelve_bit`,
    which needs no file) and ValueError for a file that is not a MATLAB file
    with keys ``F`` (n, 12) and ``y`` (1, n) of 0/1.
    """
    import scipy.io

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"'path' must be the path of var_u.mat (str or os.PathLike), got {type(path).__name__}; "
                        f"for the same data without a file call ibscope.data.twelve_bit().")
    p = require_file(path, "The 12-bit data file (var_u.mat)")
    try:
        mat = scipy.io.loadmat(str(p))
    except Exception as e:  # scipy raises several types for malformed files
        raise ValueError(f"'{p}' is not a readable MATLAB .mat file (argument 'path'): {e}") from None
    if "F" not in mat or "y" not in mat:
        raise ValueError(f"'{p}' lacks the keys 'F' and 'y' of the 12-bit task (found {sorted(k for k in mat if not k.startswith('__'))}).")
    x = np.asarray(mat["F"])
    y = np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 2 or x.shape[1] != 12 or y.shape[0] != x.shape[0]:
        raise ValueError(f"'{p}': expected F of shape (n, 12) and y of n labels, got F {x.shape} and y {y.shape}.")
    if not (np.isin(x, (0, 1)).all() and np.isin(y, (0, 1)).all()):
        raise ValueError(f"'{p}': F and y must hold only 0 and 1.")
    return x.astype(np.uint8), y.astype(np.int64)
