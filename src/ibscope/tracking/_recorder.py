"""Record the activations of named modules of any ``torch.nn.Module``.

Forward hooks are attached only while a snapshot is taken, so training runs
at full speed between snapshots. Each snapshot is written to its own file
(atomically), so memory does not grow with the number of snapshots and an
interrupted run keeps every snapshot it finished.
"""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..store import atomic_write_bytes

__all__ = ["ActivationRecorder"]

log = logging.getLogger(__name__)

_SNAPSHOT = re.compile(r"^epoch_(\d+)\.npz$")


class ActivationRecorder:
    """Snapshots of layer activations on a fixed evaluation set.

    Parameters
    ----------
    model : torch.nn.Module
    layers : sequence of str, optional
        Names from ``model.named_modules()``; default ``model.layer_names`` if
        the model has it (ibscope's MLP/ConvNet), else every leaf module.
    inputs : torch.Tensor
        The fixed evaluation set (default in the experiments: the whole data set).
    out_dir : path-like or None
        Where snapshots go (``epoch_000123.npz``, one array per layer). None
        keeps nothing on disk (snapshots are only returned).
    schedule : iterable of int, optional
        Epochs at which :meth:`maybe_record` takes a snapshot.
    dtype : numpy dtype, default float32
        Storage type of the activations.
    batch_size : int or None
        Evaluate the inputs in batches of this size (None: all at once).
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, *, layers: Sequence[str] | None = None,
                 out_dir: str | os.PathLike | None = None, schedule: Iterable[int] = (),
                 dtype: Any = np.float32, batch_size: int | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"'model' must be a torch.nn.Module, got {type(model).__name__}.")
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"'inputs' must be a torch.Tensor, got {type(inputs).__name__}.")
        if inputs.ndim < 1 or inputs.shape[0] < 1:
            raise ValueError(f"'inputs' must hold at least one sample, got shape {tuple(inputs.shape)}.")
        modules = dict(model.named_modules())
        if layers is None:
            layers = getattr(model, "layer_names", None) or [
                n for n, m in modules.items() if n and not list(m.children())
            ]
        layers = list(layers)
        missing = [n for n in layers if n not in modules]
        if missing:
            raise ValueError(
                f"Layer name(s) {missing} not found in the model (argument 'layers'). "
                f"Available: {[n for n in modules if n]}."
            )
        if not layers:
            raise ValueError("'layers' is empty: name at least one module to record.")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise ValueError(f"'batch_size' must be a positive int or None, got {batch_size!r}.")
        self.model = model
        self.inputs = inputs
        self.layers = layers
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None and self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"'out_dir' must be a directory for the snapshots, but '{self.out_dir}' is a file.")
        self.schedule = set(int(e) for e in schedule)
        self.dtype = np.dtype(dtype)
        self.batch_size = batch_size
        self._modules = {n: modules[n] for n in layers}

    # ------------------------------------------------------------------ record
    def maybe_record(self, epoch: int) -> dict[str, np.ndarray] | None:
        """Record if ``epoch`` is in the schedule; returns the snapshot or None."""
        return self.record(epoch) if epoch in self.schedule else None

    @torch.no_grad()
    def record(self, epoch: int) -> dict[str, np.ndarray]:
        """Run the evaluation set through the model and capture every named layer."""
        captured: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}

        def hook_for(name: str):
            def hook(_module, _inp, out):
                if not isinstance(out, torch.Tensor):
                    raise TypeError(f"Layer '{name}' returns {type(out).__name__}, not a tensor; record a submodule instead.")
                captured[name].append(out.detach().reshape(out.shape[0], -1))
            return hook

        handles = [m.register_forward_hook(hook_for(n)) for n, m in self._modules.items()]
        was_training = self.model.training
        self.model.eval()
        try:
            bs = self.batch_size or self.inputs.shape[0]
            for start in range(0, self.inputs.shape[0], bs):
                self.model(self.inputs[start:start + bs])
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        snap = {}
        for name, parts in captured.items():
            if not parts:
                raise RuntimeError(f"Layer '{name}' was not called during the forward pass; it cannot be recorded.")
            arr = torch.cat(parts).cpu().numpy()
            if not np.isfinite(arr).all():
                raise FloatingPointError(
                    f"Layer '{name}' has NaN or infinite activations at epoch {epoch}; "
                    f"lower the learning rate or check the inputs."
                )
            snap[name] = arr.astype(self.dtype, copy=False)
        if self.out_dir is not None:
            self._write(epoch, snap)
        return snap

    def _write(self, epoch: int, snap: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **snap)
        atomic_write_bytes(self.path(epoch), buf.getvalue())

    # -------------------------------------------------------------------- read
    def path(self, epoch: int) -> Path:
        if self.out_dir is None:
            raise ValueError("This recorder keeps no files (out_dir=None).")
        return self.out_dir / f"epoch_{int(epoch):06d}.npz"

    @staticmethod
    def epochs_on_disk(out_dir: str | os.PathLike, *, damaged: list[Path] | None = None) -> list[int]:
        """Epochs whose snapshot files exist in ``out_dir`` and are intact.

        A damaged file (e.g. truncated by a full disk; its zip directory is
        checked, which reads only the end of the file) is left out, logged,
        and appended to ``damaged`` if a list is given, so a resumed run
        records that epoch again.
        """
        d = Path(out_dir)
        if not d.is_dir():
            return []
        epochs = []
        for f in d.iterdir():
            if (m := _SNAPSHOT.match(f.name)) is None:
                continue
            if _intact(f):
                epochs.append(int(m.group(1)))
            else:
                log.warning("Snapshot '%s' is damaged (not a complete .npz file); it is ignored.", f)
                if damaged is not None:
                    damaged.append(f)
        return sorted(epochs)

    @staticmethod
    def load(out_dir: str | os.PathLike, epoch: int) -> dict[str, np.ndarray]:
        """Load one snapshot written by a recorder.

        Raises FileNotFoundError if there is none and ValueError naming the file
        if it is damaged.
        """
        p = Path(out_dir) / f"epoch_{int(epoch):06d}.npz"
        if not p.is_file():
            raise FileNotFoundError(f"No snapshot for epoch {epoch} in '{out_dir}'.")
        try:
            with np.load(p) as z:
                return {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as e:
            raise ValueError(f"Snapshot '{p}' is damaged ({type(e).__name__}: {e}); delete it to recompute "
                             f"that epoch (snapshots are written atomically, so it was truncated or changed "
                             f"outside ibscope).") from None


def _intact(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return bool(z.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False
