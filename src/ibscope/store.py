"""Results storage: tidy tables written atomically, readable while a run goes on.

Every file is written to a temporary name in the same directory, flushed
and fsync'ed, then renamed over the target (``os.replace`` is atomic on
POSIX), so a crash leaves either the old or the new file, never half of one.

A :class:`TableWriter` holds the rows of one table of one (run, seed); it
reloads what is on disk when created (resume) and rewrites its Parquet file
atomically on :meth:`~TableWriter.flush`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_parquet",
    "config_hash", "read_parquet_files", "TableWriter",
]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write a DataFrame as Parquet atomically."""
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return atomic_write_bytes(path, buf.getvalue())


def config_hash(config: Mapping[str, Any]) -> str:
    """A short stable hash of a configuration (canonical JSON, sha256, 12 hex digits)."""
    blob = json.dumps(config, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def read_parquet_files(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate Parquet files (skipping none); an empty frame if there are none."""
    frames = [pd.read_parquet(p) for p in sorted(map(str, paths))]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class TableWriter:
    """Rows of one table, persisted atomically to one Parquet file.

    Parameters
    ----------
    path : path-like
        The Parquet file. If it exists its rows are loaded (resume).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._frames: list[pd.DataFrame] = []
        if self.path.exists():
            try:
                self._frames.append(pd.read_parquet(self.path))
            except Exception as e:  # a corrupt file cannot come from an atomic write
                raise ValueError(f"Results file '{self.path}' is unreadable ({e}); delete it to recompute.") from None
        self._dirty = False

    def add(self, rows: pd.DataFrame | list[dict[str, Any]]) -> None:
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        if len(df):
            self._frames.append(df)
            self._dirty = True

    def frame(self) -> pd.DataFrame:
        if not self._frames:
            return pd.DataFrame()
        if len(self._frames) > 1:
            self._frames = [pd.concat(self._frames, ignore_index=True)]
        return self._frames[0]

    def flush(self) -> Path | None:
        """Rewrite the file if rows were added since the last flush."""
        if not self._dirty:
            return None
        self._dirty = False
        return atomic_write_parquet(self.path, self.frame())
