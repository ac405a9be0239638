"""MNIST from the standard IDX files (no download: files are read from a path).

On these machines only the 10,000 MNIST *test* images exist
(``t10k-images-idx3-ubyte.gz``); :func:`mnist_8k_2k` splits them into 8,000
training and 2,000 held-out images, and every result made with it must say so.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ._paths import data_dir, require_file

__all__ = ["read_idx", "load_mnist_idx", "mnist_8k_2k"]

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array."""
    p = require_file(path, "IDX file")
    fix = "Download or copy the file again."
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # a cut-off or damaged .gz
        raise ValueError(f"IDX file '{p}' is truncated or corrupt (gzip: {e}). {fix}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or raw[3] == 0:
        raise ValueError(f"'{p}' is not an IDX file (bad magic number; {len(raw)} bytes).")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(f"IDX file '{p}' is truncated: its header needs {offset} bytes for {ndim} dimensions, "
                         f"the file has {len(raw)}. {fix}")
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    dtype = np.dtype(_DTYPES[raw[2]])
    if (dims < 0).any():
        raise ValueError(f"IDX file '{p}' is corrupt: negative dimension in its header {dims.tolist()}. {fix}")
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - offset != expected:
        what = "header only, no data" if len(raw) == offset else f"{len(raw) - offset} data bytes"
        raise ValueError(f"IDX file '{p}' is truncated or corrupt: {what}; its header "
                         f"{tuple(dims.tolist())} needs {expected}. {fix}")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(tuple(dims))


def load_mnist_idx(data_dir_: str | os.PathLike | None = None, *, split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST images (uint8, (n, 28, 28)) and labels (int64, (n,)) from IDX files.

    ``data_dir_`` is the directory holding ``mnist/<split>-images-idx3-ubyte.gz``
    (or the ``mnist`` directory itself); default :func:`ibscope.data.data_dir`.
    """
    base = Path(data_dir_) if data_dir_ is not None else data_dir()
    folder = base / "mnist" if (base / "mnist").is_dir() else base
    images = read_idx(_find(folder, f"{split}-images-idx3-ubyte"))
    labels = read_idx(_find(folder, f"{split}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST files in '{folder}' do not match: images {images.shape}, labels {labels.shape}.")
    return images.astype(np.uint8), labels.astype(np.int64)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return require_file(folder / (stem + ".gz"), f"MNIST file '{stem}(.gz)'", argument="data_dir")


def mnist_8k_2k(data_dir_: str | os.PathLike | None = None, *, seed: int = 0, n_train: int = 8000) -> dict[str, np.ndarray]:
    """MNIST-8k/2k: the 10k test images split (stratified, seeded) into train and held-out.

    Returns a dict with float32 ``x_train`` (n, 784) scaled to [0, 1], int64
    ``y_train`` and likewise ``x_test``, ``y_test``.
    """
    from ._split import train_test_split

    images, labels = load_mnist_idx(data_dir_)
    x = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
    split = train_test_split(labels.shape[0], train_fraction=n_train / labels.shape[0], seed=seed, stratify=labels)
    return {"x_train": x[split.train], "y_train": labels[split.train],
            "x_test": x[split.test], "y_test": labels[split.test]}
