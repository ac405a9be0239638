"""A small reader of the MNIST IDX files (no download, no extra dependency).

The IDX format (LeCun et al. [1]_) is a big-endian header -- two zero bytes,
a type code (0x08: unsigned byte) and the number of dimensions -- followed by
one 32-bit size per dimension and the raw values. Files may be gzip-compressed.

References
----------
.. [1] Y. LeCun, C. Cortes and C. J. C. Burges, "The MNIST database of
   handwritten digits", http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["default_data_dir", "load_mnist_idx", "read_idx"]

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def default_data_dir() -> Path:
    """``$IBSCOPE_DATA`` if set, else ``<repository>/../shared/data``."""
    env = os.environ.get("IBSCOPE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally ``.gz``) into an array of its stored shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()}).")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[raw[2]])
    count = int(np.prod(shape, dtype=np.int64))
    offset = 4 + 4 * ndim
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"{path} is truncated or corrupt: expected {count * dtype.itemsize} data bytes "
                         f"for shape {shape}, found {len(raw) - offset}.")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)


def load_mnist_idx(data_dir: str | os.PathLike | None = None, *, split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST images and labels from the IDX files.

    Parameters
    ----------
    data_dir : path, optional
        A folder holding ``<split>-images-idx3-ubyte[.gz]`` and
        ``<split>-labels-idx1-ubyte[.gz]``, directly or in a ``mnist/``
        subfolder. Default: :func:`default_data_dir` (``$IBSCOPE_DATA`` or
        ``<repository>/../shared/data``).
    split : {'t10k', 'train'}
        Which files to read (the 10,000 test images or the 60,000 training images).

    Returns
    -------
    images : numpy.ndarray of uint8, shape (n, 28, 28)
    labels : numpy.ndarray of int64, shape (n,)
    """
    if split not in ("t10k", "train"):
        raise ValueError(f"The 'split' parameter must be 't10k' or 'train'. Got {split!r} instead.")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    names = (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte")
    found = []
    for name in names:
        candidates = [d / (name + ext) for d in (root, root / "mnist") for ext in (".gz", "")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            raise FileNotFoundError(
                f"MNIST file {name}[.gz] not found in {root} or {root / 'mnist'}. Put the IDX files "
                f"there or point the environment variable IBSCOPE_DATA at the folder holding mnist/."
            )
        found.append(hit)
    images, labels = read_idx(found[0]), read_idx(found[1])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"Inconsistent MNIST files: images {images.shape}, labels {labels.shape}.")
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)
