"""Results storage: tidy tables written atomically, readable while a run goes on.

Every file is written to a temporary name in the same directory, flushed
and fsync'ed, then renamed over the target (``os.replace`` is atomic on
POSIX), so a crash leaves either the old or the new file, never half of one.

A :class:`TableWriter` holds the rows of one table of one (run, seed); it
reloads what is on disk when created (resume) and rewrites its Parquet file
atomically on :meth:`~TableWriter.flush`.

A finished result is written with :func:`write_checked_parquet`: the Parquet
file and a small JSON sidecar (row count, size, sha256), so that
:func:`checked_parquet_ok` tells a complete file from a damaged or partial one
(e.g. copied half-way, or truncated by a full disk). :func:`concat_parquet_files`
compacts many such files into one table without holding them all in memory,
and :class:`DirectoryLock` keeps two processes from writing one directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_parquet",
    "config_hash", "read_parquet_files", "TableWriter",
    "write_checked_parquet", "checked_parquet_ok", "concat_parquet_files",
    "DirectoryLock", "DirectoryLocked", "read_json", "require_keys", "DamagedFile", "safe_name", "load_tensor_file",
    "UnsafeTensorFile", "checked_parquet_state", "PartedTable", "read_parted_parquet",
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


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore at once (a brief window, on the restrictive side)
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    The file gets the mode of an ordinary new file (``0o666`` less the
    umask, e.g. 0644), not the 0600 of a bare temporary file, so that
    collaborators can read results as they read figures.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


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


class DamagedFile(ValueError):
    """A file of a run or sweep directory is unreadable (truncated, edited, not what it should be)."""


def read_json(path: str | os.PathLike, *, what: str, hint: str = "", expect: type | None = dict,
              required: Mapping[str, type | tuple[type, ...]] | None = None) -> Any:
    """Read a JSON file of a run or sweep directory as untrusted data; a damaged file raises a message naming it.

    Parameters
    ----------
    path : path-like
    what : str
        What the file is, for the message (e.g. "the run's config").
    hint : str
        What the user can do about a damaged file (e.g. "delete it to ...").
    expect : type or None, default dict
        The type the top-level value must have.
    required : mapping of str to type (or tuple of types), optional
        Keys the top-level object must hold, each with a value of the given
        type(s) (``bool`` is never taken for ``int`` or ``float``).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    DamagedFile (a ValueError)
        The file is empty, not UTF-8, not JSON, not of type ``expect``, or
        lacks a ``required`` key (or holds it with another type); the message
        names the file and the key.
    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
        if not text.strip():
            raise ValueError("the file is empty")
        value = json.loads(text)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what[:1].upper() + what[1:]} '{p}' does not exist.") from None
    except (UnicodeDecodeError, ValueError) as e:
        reason = str(e) if isinstance(e, ValueError) and not isinstance(e, UnicodeDecodeError) else "not UTF-8 text"
        raise DamagedFile(_damaged(p, what, f"not valid JSON ({reason})", hint)) from None
    if expect is not None and not isinstance(value, expect):
        raise DamagedFile(_damaged(p, what, f"holds a JSON {type(value).__name__}, not a {expect.__name__}", hint))
    if required:
        require_keys(value, required, path=p, what=what, hint=hint)
    return value


def require_keys(value: Any, required: Mapping[str, type | tuple[type, ...]], *, path: str | os.PathLike,
                 what: str, hint: str = "", where: str = "") -> Any:
    """Check that a value read from ``path`` is an object holding ``required`` keys of the given types.

    For nested records of a JSON file read with :func:`read_json`
    (``where`` names the nesting, e.g. ``"verdict"``). ``bool`` is never
    taken for ``int`` or ``float``; ``int`` is taken for ``float``.

    Parameters
    ----------
    value : Any
    required : mapping of str to type or tuple of types
    path : path-like
        The file, named in the message.
    what, hint : str
        As for :func:`read_json`.
    where : str
        The key path of ``value`` inside the file ('' for the top level).

    Returns
    -------
    The value (unchanged).

    Raises
    ------
    DamagedFile (a ValueError)
        Naming the file and the missing or mistyped key.
    """
    p = Path(path)
    prefix = f"{where}." if where else ""
    if not isinstance(value, dict):
        raise DamagedFile(_damaged(p, what, f"{where or 'the top level'} holds a JSON "
                                            f"{_JSON_NAMES.get(type(value), type(value).__name__)}, not an object",
                                   hint))
    for key, types in required.items():
        if key not in value:
            raise DamagedFile(_damaged(p, what, f"it lacks the key {prefix + key!r}", hint))
        types = types if isinstance(types, tuple) else (types,)
        if float in types and int not in types:
            types = (*types, int)
        v = value[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            names = " or ".join(dict.fromkeys(_JSON_NAMES.get(t, t.__name__) for t in types))
            raise DamagedFile(_damaged(p, what, f"its key {prefix + key!r} holds a JSON "
                                                f"{_JSON_NAMES.get(type(v), type(v).__name__)}, not a {names}", hint))
    return value


_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


class UnsafeTensorFile(DamagedFile):
    """A ``.pt`` file of a run directory holds pickled objects that ``weights_only=True`` refuses."""


def _damaged(p: Path, what: str, reason: str, hint: str) -> str:
    msg = (f"{what[:1].upper() + what[1:]} '{p}' is damaged: {reason}. ibscope writes it atomically, so it "
           f"was truncated or edited outside ibscope (a full disk, a partial copy).")
    return f"{msg} {hint}" if hint else msg


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,79}")


def safe_name(value: Any, *, what: str = "value") -> str:
    """A file-name component made from data (a table cell, a config value): never a path.

    A value made only of letters, digits and ``_ . + -`` (not starting with
    a dot or a dash, at most 80 characters, never ``..`` in it) is returned unchanged
    (``"mnist"`` -> ``"mnist"``), so the names of ordinary values stay
    readable. Anything else (a path separator, ``..``, a leading dot,
    spaces, control or non-ASCII characters, a long value) becomes a slug
    of its safe characters plus the first 10 hex digits of the sha256 of
    ``str(value)`` (``"../../x"`` -> ``"x-<hash>"``): distinct values keep
    distinct names, and the result never leaves the directory it is joined to.

    Parameters
    ----------
    value : Any
        The data; ``str(value)`` is used.
    what : str
        What the value is (kept for symmetry with the other helpers; the
        result never fails).

    Returns
    -------
    str
        A non-empty name without ``/``, ``\\``, NUL or ``..``, not starting with ``.``.
    """
    text = str(value)
    if _SAFE_NAME.fullmatch(text) and ".." not in text:
        return text
    slug = re.sub(r"[^A-Za-z0-9_+-]+", "_", text).strip("_-")[:40] or what.replace(" ", "_")[:20] or "value"
    return f"{slug}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def load_tensor_file(path: str | os.PathLike, *, what: str = "tensor file", hint: str = "",
                     map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with a refusal that names the file.

    Every ``.pt`` file ibscope reads (checkpoints, priors, SGLD samples) goes
    through here: the file is data from a run directory, so only tensors
    and plain containers are accepted (``weights_only=True``: no code runs,
    see ``torch.load``). A file that is not such a tensor file (a planted
    pickle, a truncated or edited file) raises :class:`DamagedFile` naming
    it, instead of torch's own error.

    Parameters
    ----------
    path : path-like
    what : str
        What the file is, for the message (e.g. "the weight-information prior").
    hint : str
        What the user can do (e.g. "delete it to recompute it").
    map_location : optional
        Passed to ``torch.load``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    UnsafeTensorFile (a DamagedFile)
        ``path`` holds pickled objects other than tensors and plain
        containers (refused; nothing in it ran), or is no torch file.
    DamagedFile (a ValueError)
        ``path`` is a truncated or edited torch file.
    """
    import pickle
    import zipfile

    import torch

    p = Path(path)
    if not p.is_file():
        if p.exists():
            raise DamagedFile(f"{what[:1].upper() + what[1:]} '{p}' is not a regular file. {hint}".strip())
        raise FileNotFoundError(f"{what[:1].upper() + what[1:]} '{p}' does not exist.")
    name = f"{what[:1].upper() + what[1:]} '{p}'"
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests loading the file with weights_only=False: never pass that on
        msg = (f"{name} is not a tensor file that ibscope wrote: it holds Python objects other than tensors and "
               "plain containers (which could run code when loaded), or bytes that are no torch file at all. "
               "ibscope reads run files as data only; it refused the file and ran nothing in it.")
        raise UnsafeTensorFile(f"{msg} {hint}" if hint else msg) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, AttributeError, KeyError, TypeError,
            UnicodeDecodeError, OSError) as e:
        if isinstance(e, (FileNotFoundError, PermissionError)):
            raise
        msg = (f"{name} is not a tensor file that ibscope wrote: it is truncated or was edited outside "
               f"ibscope ({type(e).__name__}).")
        raise DamagedFile(f"{msg} {hint}" if hint else msg) from None


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


# --------------------------------------------------------------------------- checked results


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def write_checked_parquet(path: str | os.PathLike, df: pd.DataFrame,
                          meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``df`` as Parquet atomically, then a sidecar ``<stem>.json`` that vouches for it.

    The sidecar holds the row count, byte size and sha256 of the Parquet file
    (plus ``meta``). It is written after the data, so a file without a valid
    sidecar is never taken for a finished result. Returns the sidecar record.
    """
    import io

    path = Path(path)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    record = {**dict(meta or {}), "file": path.name, "rows": int(len(df)), "bytes": len(data),
              "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_json(_sidecar(path), record)
    return record


def checked_parquet_ok(path: str | os.PathLike, *, expect: Mapping[str, Any] | None = None) -> bool:
    """True iff ``path`` and its sidecar exist and the file's size and sha256 match the sidecar.

    ``expect``: sidecar entries that must also match (e.g. ``{"config_hash": h}``),
    so a result of another configuration counts as not finished.
    """
    return checked_parquet_state(path, expect=expect)[0] == "ok"


def checked_parquet_state(path: str | os.PathLike, *,
                          expect: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """The state of a result written by :func:`write_checked_parquet`, with the reason.

    Parameters
    ----------
    path : path-like
        The Parquet file (its sidecar is ``<stem>.json``).
    expect : mapping, optional
        Sidecar entries that must match (e.g. ``{"config_hash": h}``).

    Returns
    -------
    (state, reason) : (str, str)
        ``"ok"``: the file matches its sidecar. ``"absent"``: no sidecar
        (never written, or a write that did not finish: the sidecar is
        written last). ``"other"``: a valid sidecar for other ``expect``
        values (a result of another configuration). ``"damaged"``: the
        sidecar is unreadable, or vouches for a file that is missing or has
        another size or sha256 (truncated, edited, partly copied).
    """
    path = Path(path)
    side = _sidecar(path)
    if not side.exists() and not side.is_symlink():
        return "absent", f"'{side}' does not exist"
    try:
        record = read_json(side, what="result sidecar", required={"bytes": int, "sha256": str})
    except (OSError, ValueError) as e:
        return "damaged", str(e)
    if any(record.get(k) != v for k, v in (expect or {}).items()):
        return "other", f"'{side}' records another configuration"
    try:
        data = path.read_bytes()
    except OSError as e:
        return "damaged", f"'{path}' is unreadable although its sidecar '{side.name}' vouches for it ({e})"
    if record["bytes"] != len(data):
        return "damaged", (f"'{path}' has {len(data)} bytes, its sidecar '{side.name}' records {record['bytes']} "
                           "(truncated or edited)")
    if record["sha256"] != hashlib.sha256(data).hexdigest():
        return "damaged", f"the sha256 of '{path}' differs from the one its sidecar '{side.name}' records (edited)"
    return "ok", ""


def concat_parquet_files(sources: Iterable[tuple[str | os.PathLike, Mapping[str, Any]]],
                         path: str | os.PathLike,
                         transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                         clash_prefix: str = "config_", identity: Iterable[str] = (),
                         identity_prefix: str = "experiment_") -> int:
    """Concatenate Parquet files into one, atomically, one file in memory at a time.

    Parameters
    ----------
    sources : iterable of (path, columns)
        Each file and constant columns to prepend to its rows (e.g. its task id).
        A constant whose name is already a column of the file is kept as is if
        the file agrees, else added as ``<clash_prefix><name>`` (the file's own
        column keeps the name), unless the name is in ``identity``.
    path : path-like
        The output Parquet file (replaced atomically; not written if no rows).
    transform : callable, optional
        Applied to each frame after the constant columns are added.
    identity : iterable of str
        Constant columns that always take their name (e.g. ``config_hash`` of
        the run): a file column of that name with other values is kept as
        ``<identity_prefix><name>`` (e.g. an experiment's own hash of its settings).

    Returns
    -------
    int
        Rows written. Column types are unified across files (a column missing in
        one file is null there; int and float columns become float).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    identity = set(identity)

    def frames():
        for src, cols in sources:
            df = pd.read_parquet(src)
            front = []
            for k, v in dict(cols).items():
                if k in df.columns:
                    if (df[k] == v).all():  # the file already says the same
                        front.append(k)
                        continue
                    if k in identity:
                        df = df.rename(columns={k: f"{identity_prefix}{k}"})
                    else:
                        k = f"{clash_prefix}{k}"
                df[k] = [v] * len(df)
                front.append(k)
            df = df[front + [c for c in df.columns if c not in front]]
            if transform is not None:
                df = transform(df)
            if len(df):
                yield pa.Table.from_pandas(df, preserve_index=False)

    sources = list(sources)
    # pass 1: the unified schema; pass 2: write. Each reads one file at a time.
    schema = None
    for t in frames():
        s = t.schema.remove_metadata()
        schema = s if schema is None else pa.unify_schemas([schema, s], promote_options="permissive")
    if schema is None:
        return 0
    rows = 0
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for t in frames():
                for f in schema:
                    if f.name not in t.column_names:
                        t = t.append_column(f.name, pa.nulls(len(t), f.type))
                t = t.select(schema.names).cast(schema)
                writer.write_table(t)
                rows += len(t)
    return rows


# --------------------------------------------------------------------------- locking


class DirectoryLocked(RuntimeError):
    """Another process holds the lock of this directory."""


class DirectoryLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``<directory>/.lock``.

    The lock dies with its process (even on SIGKILL), so no stale lock is
    ever left behind. The holder's pid, host and start time are written into
    the file to make the refusal message useful.

    Parameters
    ----------
    directory : path-like
    what : str
        Named in the error message (e.g. "sweep").
    blocking : bool
        Wait for the lock instead of failing at once.
    """

    def __init__(self, directory: str | os.PathLike, *, what: str = "directory", blocking: bool = False):
        self.directory = Path(directory)
        self.what = what
        self.blocking = blocking
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.directory / ".lock"

    def acquire(self) -> DirectoryLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            raise OSError("Directory locks need fcntl.flock (Linux, macOS, other POSIX systems).") from None
        self.directory.mkdir(parents=True, exist_ok=True)
        # never through a planted link: O_NOFOLLOW refuses a symlink, fstat anything but a regular file
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK, 0o644)
        except OSError as e:
            if self.path.is_symlink():
                raise ValueError(f"The lock file '{self.path}' of the {self.what} directory is a symbolic link "
                                 f"(to '{os.readlink(self.path)}'); ibscope never writes through a link. "
                                 "Remove it and run again.") from None
            raise OSError(f"Cannot open the lock file '{self.path}': {e}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ValueError(f"The lock file '{self.path}' of the {self.what} directory is not a regular file; "
                             "remove it and run again.")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            try:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown process"
            finally:
                os.close(fd)
            raise DirectoryLocked(
                f"The {self.what} directory '{self.directory}' is in use by another process ({holder}). "
                f"Wait for it to finish or stop it; two processes must not write one {self.what}. "
                f"(The lock is released automatically when that process ends; lock file: {self.path}.)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# --------------------------------------------------------------------------- append-only tables


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _file_record(data: bytes, rows: int) -> dict[str, Any]:
    return {"rows": int(rows), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class PartedTable:
    """A checked Parquet table grown by appending parts: no snapshot rewrites the older rows.

    The table is ``path`` (the compacted rows, possibly absent) plus the
    parts listed in the JSON sidecar ``<stem>.json``, each a Parquet file
    in ``<stem>.parts/``. :meth:`append` writes one new part atomically,
    then the sidecar listing it (file, rows, bytes, sha256), so a part the
    sidecar does not list (a crash between the two writes) is never read,
    and appending the same part name again replaces it: a crash loses at
    most the part being written and duplicates nothing. :meth:`compact`
    rewrites ``path`` as the whole table (atomically; the sidecar records
    the new file's sha256 under ``compacting`` first, so a crash between
    the table and the sidecar is recognised on read) and then removes the
    parts. The sidecar's ``rows`` / ``bytes`` / ``sha256`` describe
    ``path`` as in :func:`write_checked_parquet`.

    Parameters
    ----------
    path : path-like
        The compacted Parquet file (e.g. ``information_plane.parquet``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.sidecar = _sidecar(self.path)
        self.parts_dir = self.path.with_name(self.path.stem + ".parts")

    def record(self) -> dict[str, Any]:
        """The sidecar as on disk ({} when absent); the one this object last wrote is not read again."""
        try:
            st = self.sidecar.stat()
        except FileNotFoundError:
            return {}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = getattr(self, "_cached", None)
        if cached is not None and cached[0] == key:
            return json.loads(cached[1])
        return read_json(self.sidecar, what="table sidecar")

    def _write_sidecar(self, rec: Mapping[str, Any]) -> None:
        atomic_write_json(self.sidecar, rec)
        st = self.sidecar.stat()
        self._cached = ((st.st_ino, st.st_mtime_ns, st.st_size), json.dumps(rec, default=_json_default))

    def _settled(self) -> dict[str, Any]:
        """The sidecar, first finishing a compaction a crash interrupted (before appending or compacting)."""
        rec = self.record()
        pending = rec.pop("compacting", None)
        if pending is None:
            return rec
        if self.path.exists() and hashlib.sha256(self.path.read_bytes()).hexdigest() == pending.get("sha256"):
            old_parts = rec.get("parts", [])
            rec.update({"file": self.path.name, **pending, "parts": []})
            self._write_sidecar(rec)
            for entry in old_parts:
                with contextlib.suppress(OSError):
                    (self.path.parent / entry["file"]).unlink()
        else:  # the table was not replaced: the parts still hold their rows
            self._write_sidecar(rec)
        return rec

    def exists(self) -> bool:
        """True when the table has a compacted file or listed parts."""
        if self.path.exists():
            return True
        try:
            return bool(self.sidecar.exists() and self.record().get("parts"))
        except ValueError:  # a damaged sidecar: let the reader say so
            return True

    def _read_checked(self, path: Path, entry: Mapping[str, Any] | None) -> pd.DataFrame:
        import io

        try:
            data = path.read_bytes()
        except OSError as e:
            raise ValueError(f"'{path}', a part of the table '{self.path}', is unreadable ({e}).") from None
        if entry is not None and entry.get("sha256") not in (None, hashlib.sha256(data).hexdigest()):
            raise ValueError(f"'{path}' does not match its sha256 in '{self.sidecar}' (damaged or replaced).")
        try:
            return pd.read_parquet(io.BytesIO(data))
        except Exception as e:  # pyarrow raises its own types for a damaged file
            raise ValueError(f"'{path}' is not a readable Parquet table ({type(e).__name__}: {e}).") from None

    def frames(self, record: Mapping[str, Any] | None = None) -> list[pd.DataFrame]:
        """The compacted rows and each listed part, in order (sha256-checked against the sidecar)."""
        rec = dict(self.record() if record is None else record)
        out = []
        if self.path.exists():
            data_sha = hashlib.sha256(self.path.read_bytes()).hexdigest()
            pending = rec.get("compacting")
            if pending and pending.get("sha256") == data_sha:  # a compaction ended before its sidecar
                return [self._read_checked(self.path, None)]
            out.append(self._read_checked(self.path, rec if "sha256" in rec else None))
        elif "sha256" in rec:
            raise ValueError(f"'{self.path}' is missing but its sidecar '{self.sidecar}' lists it.")
        for entry in rec.get("parts", []):
            out.append(self._read_checked(self.path.parent / entry["file"], entry))
        return out

    def read(self) -> pd.DataFrame:
        """The whole table: the compacted file and the listed parts, concatenated."""
        frames = [f for f in self.frames() if len(f.columns)]
        if not frames:
            return pd.DataFrame()
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def append(self, df: pd.DataFrame, name: str, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write ``df`` as the part ``name`` (atomically), then the sidecar listing it; returns the sidecar."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"'name' must be a plain file stem, got {name!r}.")
        rec = self._settled()
        data = _parquet_bytes(df)
        rel = f"{self.parts_dir.name}/{name}.parquet"
        atomic_write_bytes(self.path.parent / rel, data)
        parts = [p for p in rec.get("parts", []) if p.get("file") != rel]
        parts.append({"file": rel, **_file_record(data, len(df))})
        rec = {**rec, **dict(meta or {}), "parts": parts}
        self._write_sidecar(rec)
        return rec

    def compact(self, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Rewrite ``path`` as the whole table and drop the parts; returns the sidecar."""
        rec = self._settled()
        if not rec.get("parts") and self.path.exists() and "compacting" not in rec:
            if meta:
                rec = {**rec, **dict(meta)}
                self._write_sidecar(rec)
            return rec
        frames = [f for f in self.frames(rec) if len(f.columns)]
        if not frames:
            return rec
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else (frames[0] if frames else pd.DataFrame())
        data = _parquet_bytes(df)
        new = _file_record(data, len(df))
        self._write_sidecar({**rec, **dict(meta or {}), "compacting": new})
        atomic_write_bytes(self.path, data)
        old_parts = rec.get("parts", [])
        rec = {k: v for k, v in {**rec, **dict(meta or {})}.items() if k != "compacting"}
        rec.update({"file": self.path.name, **new, "parts": []})
        self._write_sidecar(rec)
        for entry in old_parts:
            with contextlib.suppress(OSError):
                (self.path.parent / entry["file"]).unlink()
        self._remove_strays()
        return rec

    def _remove_strays(self) -> None:
        """Delete part files no sidecar lists (left by a crash) and the parts folder once empty."""
        if not self.parts_dir.is_dir():
            return
        listed = {self.path.parent / p["file"] for p in self.record().get("parts", [])}
        for f in self.parts_dir.iterdir():
            if f not in listed:
                with contextlib.suppress(OSError):
                    f.unlink()
        with contextlib.suppress(OSError):
            self.parts_dir.rmdir()

    def remove(self) -> None:
        """Delete the table, its parts and its sidecar."""
        import shutil

        for f in (self.path, self.sidecar):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        shutil.rmtree(self.parts_dir, ignore_errors=True)


def read_parted_parquet(path: str | os.PathLike) -> pd.DataFrame:
    """The rows of a :class:`PartedTable` (the file at ``path`` plus the parts its sidecar lists)."""
    return PartedTable(path).read()
