"""Where external data files live: ``$IBSCOPE_DATA`` or ``<repo>/../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "require_file"]


def data_dir() -> Path:
    """The directory holding optional real data files (var_u.mat, mnist/...).

    ``$IBSCOPE_DATA`` if set, else ``../shared/data`` relative to the project
    root (the layout of a development checkout). The directory may not exist:
    code that needs a file calls :func:`require_file`.
    """
    env = os.environ.get("IBSCOPE_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def require_file(path: str | os.PathLike, what: str, *, argument: str = "path") -> Path:
    """Return ``path`` as a Path or raise a FileNotFoundError that says how to fix it.

    A ``path`` that is not a path (None, a number) raises a TypeError naming ``argument``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"'{argument}' must be the path of the {what} (str or os.PathLike), "
                        f"got {type(path).__name__}.")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"{what} not found at '{p}' (argument '{argument}'). Pass the file's path explicitly "
            f"or set IBSCOPE_DATA to the directory that holds it."
        )
    return p
