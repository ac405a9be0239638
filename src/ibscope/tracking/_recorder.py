"""Record the activations of named modules of any ``torch.nn.Module``.

Forward hooks are attached only while a snapshot is taken, so training runs
at full speed between snapshots. Each snapshot can be written to its own file
(atomically), so memory does not grow with the number of snapshots and an
interrupted run keeps every snapshot it finished.

What the recorder handles:

* **inputs** as one tensor, a tuple of tensors (a model with several inputs,
  called ``model(*batch)``) or a DataLoader / re-iterable of batches (a batch
  is a tensor or a tuple; with ``labels_in_batches=True`` its last element is
  the label and the rest the model's inputs);
* **modules that return tuples or dicts** (GRU, attention): ``output=``
  selects the tensor (an index, a key, or a callable), for all layers or per
  layer;
* **modules run several times per forward** (weight sharing, a cell in a
  loop): by default a clear error naming the module and how many times it
  ran; ``call='first'``, ``'last'`` or ``'all'`` (the calls side by side, one
  row per sample) on request. Rows of different calls are never mixed;
* **wide layers**: with ``max_features=k`` a layer wider than k units is
  reduced, batch by batch as it is recorded, by a fixed Gaussian random
  projection to k dimensions (entries N(0, 1/k), drawn once per layer from
  ``seed`` and kept for every snapshot), so the full-width activations of
  the whole evaluation set never exist at once. The projection preserves
  pairwise distances up to a factor 1 +- eps with eps ~ sqrt(8 log n / k)
  (Johnson-Lindenstrauss; Dasgupta & Gupta [1]_), hence distance-based
  estimates (kNN, KDE, PCA compression) approximately; binning a projected
  layer is a different quantity, so the reduction is reported
  (``reduction_``);
* **devices**: batches are moved to the model's device and, with
  :meth:`capture`, the activations stay there (torch tensors), so
  estimators that run on CUDA never copy them to the host.

References
----------
.. [1] S. Dasgupta and A. Gupta, "An elementary proof of a theorem of Johnson
   and Lindenstrauss", Random Structures & Algorithms 22(1), 2003.
"""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..store import atomic_write_bytes

__all__ = ["ActivationRecorder", "INPUT"]

log = logging.getLogger(__name__)

_SNAPSHOT = re.compile(r"^epoch_(\d+)\.npz$")
_CALLS = ("first", "last", "all")
INPUT = "__input__"  # the name under which capture(..., inputs=True) returns the flattened inputs


def _describe(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, Mapping):
        return f"a {type(out).__name__} with keys {list(out)}"
    if isinstance(out, (tuple, list)):
        inner = ", ".join(tuple(o.shape).__repr__() if isinstance(o, torch.Tensor) else type(o).__name__
                          for o in out)
        return f"a {type(out).__name__} of {len(out)} ({inner})"
    return f"a {type(out).__name__}"


def _per_layer(value: Any, layers: Sequence[str], name: str) -> dict[str, Any]:
    """``value`` for every layer: a mapping is per layer (keys: layer names), anything else global."""
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in layers]
        if unknown:
            raise ValueError(f"'{name}' maps name(s) {unknown} that are not recorded layers {list(layers)}.")
        return {n: value.get(n) for n in layers}
    return {n: value for n in layers}


class _Batches:
    """The evaluation set as a re-iterable of (model inputs tuple, labels or None)."""

    def __init__(self, inputs: Any, batch_size: int | None, labels_in_batches: bool):
        self.labels_in_batches = bool(labels_in_batches)
        self.batch_size = batch_size
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs,)
        # a tuple of tensors is one multi-input evaluation set; a list is a list of batches
        if isinstance(inputs, tuple) and inputs and all(isinstance(t, torch.Tensor) for t in inputs):
            self.tensors: tuple[torch.Tensor, ...] | None = tuple(inputs)
            if any(t.ndim < 1 for t in self.tensors):
                raise ValueError("'inputs' must be tensors with a sample dimension (got a 0-d tensor).")
            n = {int(t.shape[0]) for t in self.tensors}
            if len(n) != 1:
                raise ValueError(f"'inputs' tensors have different numbers of samples: "
                                 f"{[int(t.shape[0]) for t in self.tensors]}.")
            self.n: int | None = n.pop()
            if self.n < 1:
                raise ValueError("'inputs' must hold at least one sample.")
            if self.labels_in_batches:
                raise ValueError("labels can only be taken from the batches of a DataLoader; pass 'labels' "
                                 "with tensor inputs.")
            self.loader = None
            return
        if isinstance(inputs, tuple) or isinstance(inputs, (str, bytes, np.ndarray)) \
                or not isinstance(inputs, Iterable) or (isinstance(inputs, list) and not inputs):
            raise TypeError(f"'inputs' must be a torch.Tensor, a tuple of tensors, a DataLoader or a list of "
                            f"batches; got {type(inputs).__name__}.")
        if iter(inputs) is inputs:
            raise TypeError("'inputs' is a one-shot iterator; pass a DataLoader or a list of batches "
                            "(it is read again at every snapshot).")
        sampler = getattr(inputs, "sampler", None)
        if isinstance(sampler, torch.utils.data.RandomSampler):
            raise ValueError("'inputs' is a DataLoader that shuffles (shuffle=True): every snapshot must "
                             "see the same samples in the same order; build it with shuffle=False.")
        self.tensors, self.loader = None, inputs
        dataset = getattr(inputs, "dataset", None)
        try:
            self.n = len(dataset) if dataset is not None else None
        except TypeError:
            self.n = None

    def __iter__(self) -> Iterator[tuple[tuple[Any, ...], torch.Tensor | None]]:
        if self.tensors is not None:
            n = self.tensors[0].shape[0]
            bs = self.batch_size or n
            for start in range(0, n, bs):
                yield tuple(t[start:start + bs] for t in self.tensors), None
            return
        for item in self.loader:
            if isinstance(item, torch.Tensor):
                if self.labels_in_batches:
                    raise TypeError("'inputs' batches are single tensors, so they hold no labels; pass 'labels'.")
                yield (item,), None
            elif isinstance(item, (tuple, list)):
                if self.labels_in_batches:
                    if len(item) < 2:
                        raise TypeError("With labels taken from the batches, every batch of 'inputs' must be "
                                        "(inputs..., labels).")
                    yield tuple(item[:-1]), item[-1]
                else:
                    yield tuple(item), None
            else:
                raise TypeError(f"Every batch of 'inputs' must be a tensor or a tuple of tensors; got "
                                f"{type(item).__name__}.")

    def first(self) -> tuple[tuple[Any, ...], torch.Tensor | None]:
        return next(iter(self))


class ActivationRecorder:
    """Snapshots of layer activations on a fixed evaluation set.

    Parameters
    ----------
    model : torch.nn.Module
    inputs : torch.Tensor, tuple of tensors, or DataLoader
        The fixed evaluation set (see the module docstring). A DataLoader
        must not shuffle.
    layers : sequence of str, optional
        Names from ``model.named_modules()``; default ``model.layer_names`` if
        the model has it (ibscope's MLP/ConvNet), else every leaf module.
    out_dir : path-like or None
        Where :meth:`record` writes snapshots (``epoch_000123.npz``, one array
        per layer). None keeps nothing on disk.
    schedule : iterable of int, optional
        Epochs at which :meth:`maybe_record` takes a snapshot (0 = the
        initialization, the convention of :func:`ibscope.training.fit`).
    dtype : numpy dtype, default float32
        Storage type of the activations written by :meth:`record`.
    batch_size : int or None
        Evaluate tensor inputs in batches of this size (None: all at once).
    output : None, int, str, callable, or a mapping layer -> selector
        How to get the tensor out of a module that returns a tuple, list or
        dict: an index, a key or a function of the output. A tensor output is
        used as it is (a global selector only applies to non-tensor outputs;
        a per-layer mapping applies to its layers whatever they return).
    call : None, 'first', 'last', 'all', or a mapping layer -> one of these
        For a module run several times per forward. None (default): raise a
        ValueError naming the module and its number of calls. 'all': the
        outputs of the calls side by side (sample i's row holds its k calls).
    max_features : int or None
        Layers (and, with ``capture(inputs=True)``, the flattened inputs)
        wider than this are reduced on the fly by a fixed random projection
        to ``max_features`` dimensions. None: never.
    seed : int, default 0
        Seed of the random projections.
    labels_in_batches : bool, default False
        With a DataLoader: the last element of every batch is the label
        (returned by :meth:`capture`), the others the model's inputs.

    Attributes
    ----------
    reduction_ : dict
        For every reduced variable: ``{'method': 'random_projection',
        'from': d, 'to': k, 'seed': s}``.
    """

    def __init__(self, model: nn.Module, inputs: Any, *, layers: Sequence[str] | None = None,
                 out_dir: str | os.PathLike | None = None, schedule: Iterable[int] = (),
                 dtype: Any = np.float32, batch_size: int | None = None, output: Any = None,
                 call: Any = None, max_features: int | None = None, seed: int = 0,
                 labels_in_batches: bool = False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"'model' must be a torch.nn.Module, got {type(model).__name__}.")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"'batch_size' must be a positive int or None, got {batch_size!r}.")
        self.batches = _Batches(inputs, batch_size, labels_in_batches)
        modules = dict(model.named_modules())
        if layers is None:
            layers = getattr(model, "layer_names", None) or [
                n for n, m in modules.items() if n and not list(m.children())
            ]
        if isinstance(layers, str):
            layers = [layers]
        layers = list(layers)
        missing = [n for n in layers if n not in modules]
        if missing:
            raise ValueError(
                f"Layer name(s) {missing} not found in the model (argument 'layers'). "
                f"Available: {[n for n in modules if n]}."
            )
        if not layers:
            raise ValueError("'layers' is empty: name at least one module to record.")
        if len(set(layers)) != len(layers):
            raise ValueError(f"'layers' names a module twice: {layers}.")
        self.output = _per_layer(output, layers, "output")
        self._explicit = set(output) if isinstance(output, Mapping) else set()
        for n, sel in self.output.items():
            if isinstance(sel, bool) or (sel is not None and not (callable(sel) or isinstance(sel, (int, str)))):
                raise TypeError(f"'output' for layer '{n}' must be an int index, a str key or a callable; "
                                f"got {sel!r}.")
        self.call = _per_layer(call, layers, "call")
        for n, c in self.call.items():
            if c is not None and c not in _CALLS:
                raise ValueError(f"'call' for layer '{n}' must be None, 'first', 'last' or 'all'; got {c!r}.")
        if max_features is not None and (isinstance(max_features, bool) or not isinstance(max_features, int)
                                         or max_features < 1):
            raise ValueError(f"'max_features' must be a positive int or None, got {max_features!r}.")
        self.model = model
        self.inputs = inputs
        self.layers = layers
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None and self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"'out_dir' must be a directory for the snapshots, but '{self.out_dir}' is a file.")
        self.schedule = set(int(e) for e in schedule)
        self.dtype = np.dtype(dtype)
        self.batch_size = batch_size
        self.max_features = max_features
        self.seed = int(seed)
        self.reduction_: dict[str, dict[str, Any]] = {}
        self._projections: dict[str, torch.Tensor] = {}
        self._modules = {n: modules[n] for n in layers}

    @property
    def n_samples(self) -> int | None:
        """Number of evaluation samples (None for a loader without a sized dataset, until recorded)."""
        return self.batches.n

    # ------------------------------------------------------------------ helpers
    def _device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        if p is None:
            p = next(iter(self.model.buffers()), None)
        return p.device if p is not None else torch.device("cpu")

    def _select(self, name: str, out: Any) -> torch.Tensor:
        sel = self.output[name]
        if sel is not None and (not isinstance(out, torch.Tensor) or name in self._explicit):
            try:
                out = sel(out) if callable(sel) else out[sel]
            except (IndexError, KeyError, TypeError) as e:
                raise ValueError(f"'output' selector {sel!r} does not apply to the output of layer '{name}' "
                                 f"({_describe(out)}): {e}") from None
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"Layer '{name}' returns {_describe(out)}, not a tensor; pass output= (an index such as "
                f"output=0, a key, or a function), e.g. output={{'{name}': 0}}, or record a submodule."
            )
        return out

    def _project(self, name: str, flat: torch.Tensor, index: int) -> torch.Tensor:
        d = flat.shape[1]
        k = self.max_features
        if k is None or d <= k:
            return flat
        r = self._projections.get(name)
        if r is None or r.shape[0] != d:
            g = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + index)
            r = torch.randn(d, k, generator=g, dtype=torch.float32) / float(np.sqrt(k))
            self._projections[name] = r
            self.reduction_[name] = {"method": "random_projection", "from": int(d), "to": int(k),
                                     "seed": self.seed}
        r = r.to(flat.device)
        self._projections[name] = r
        return flat.to(r.dtype) @ r

    # ------------------------------------------------------------------ capture
    @torch.no_grad()
    def capture(self, layers: Sequence[str] | None = None, *, inputs: bool = False,
                epoch: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """One pass over the evaluation set with hooks on ``layers`` (default: all).

        Returns ``(activations, labels)``: every layer as a 2-D tensor (n,
        width) on the model's device (reduced where wider than
        ``max_features``), plus with ``inputs=True`` the flattened inputs
        (all model inputs side by side) under :data:`INPUT`; ``labels`` are
        the batches' labels with ``labels_in_batches``, else None. The model
        runs in eval mode (restored after) and no hook outlives the call.
        """
        names = list(self.layers if layers is None else layers)
        index = {n: i for i, n in enumerate(self.layers)}
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        if inputs:
            parts[INPUT] = []
        label_parts: list[torch.Tensor] = []
        calls: dict[str, list[torch.Tensor]] = {n: [] for n in names}

        def hook_for(name: str) -> Callable:
            def hook(_module, _inp, out):
                calls[name].append(self._select(name, out))
            return hook

        handles = [self._modules[n].register_forward_hook(hook_for(n)) for n in names]
        was_training = self.model.training
        self.model.eval()
        device = self._device()
        try:
            for batch, lab in self.batches:
                batch = tuple(b.to(device, non_blocking=True) if isinstance(b, torch.Tensor) else b for b in batch)
                rows = next((int(b.shape[0]) for b in batch if isinstance(b, torch.Tensor) and b.ndim), None)
                for n in names:
                    calls[n].clear()
                self.model(*batch)
                for n in names:
                    parts[n].append(self._project(n, self._resolve_calls(n, calls[n], rows), index[n]))
                if inputs:  # integer/bool inputs (token ids) stay integer: the plane treats them as discrete
                    ts = [b for b in batch if isinstance(b, torch.Tensor)]
                    kind = (torch.int64 if all(not (b.is_floating_point() or b.is_complex()) for b in ts)
                            else torch.float32)
                    flat = torch.cat([b.detach().reshape(b.shape[0], -1).to(kind) for b in ts], dim=1)
                    parts[INPUT].append(self._project(INPUT, flat, len(self.layers)))
                if lab is not None:
                    label_parts.append(lab.detach().reshape(lab.shape[0], -1).squeeze(1) if lab.ndim > 1
                                       and lab.shape[1] == 1 else lab.detach())
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        out = {}
        for name, ps in parts.items():
            if not ps:
                raise ValueError("'inputs' yielded no batch.")
            out[name] = torch.cat(ps) if len(ps) > 1 else ps[0]
        n = next(iter(out.values())).shape[0]
        if self.batches.n is None:
            self.batches.n = int(n)
        labels = None
        if label_parts:
            labels = torch.cat([lp.to(device) for lp in label_parts])
        for name, arr in out.items():
            if name != INPUT and not bool(torch.isfinite(arr).all()):
                where = "" if epoch is None else f" at epoch {epoch}"
                raise FloatingPointError(
                    f"Layer '{name}' has NaN or infinite activations{where}; "
                    f"lower the learning rate or check the inputs."
                )
        return out, labels

    def _resolve_calls(self, name: str, outs: list[torch.Tensor], rows: int | None) -> torch.Tensor:
        if not outs:
            raise RuntimeError(f"Layer '{name}' was not called during the forward pass; it cannot be recorded.")
        policy = self.call[name]
        if len(outs) > 1 and policy is None:
            raise ValueError(
                f"Layer '{name}' ran {len(outs)} times in one forward pass (a shared module, or a cell "
                f"applied in a loop), so its activations are ambiguous. Pass call='first', 'last' or "
                f"'all' (the {len(outs)} outputs side by side per sample), e.g. call={{'{name}': 'all'}}."
            )
        chosen = outs[:1] if policy == "first" else outs[-1:] if policy == "last" else outs
        flats = []
        for o in chosen:
            if o.ndim == 0 or (rows is not None and o.shape[0] != rows):
                raise ValueError(
                    f"Layer '{name}' returned {_describe(o)} for a batch of {rows} samples: its first "
                    f"dimension is not the samples. Select a batch-first tensor with output= (e.g. a "
                    f"function such as output=lambda out: out[1][-1] for a GRU's last hidden state)."
                )
            flats.append(o.detach().reshape(o.shape[0], -1))
        return flats[0] if len(flats) == 1 else torch.cat(flats, dim=1)

    @torch.no_grad()
    def widths(self) -> dict[str, int]:
        """Width of every layer as recorded (before any reduction), from one forward of the first batch."""
        cached = getattr(self, "_widths", None)
        if cached is not None:
            return cached
        saved, self.max_features = self.max_features, None
        saved_batches = self.batches
        try:
            first = saved_batches.first()

            class _One:
                n = saved_batches.n

                def __iter__(self_inner):
                    yield first

            self.batches = _One()  # type: ignore[assignment]
            acts, _ = self.capture()
        finally:
            self.batches, self.max_features = saved_batches, saved
        self._widths = {n: int(a.shape[1]) for n, a in acts.items()}
        return self._widths

    # ------------------------------------------------------------------ record
    def maybe_record(self, epoch: int) -> dict[str, np.ndarray] | None:
        """Record if ``epoch`` is in the schedule; returns the snapshot or None."""
        return self.record(epoch) if epoch in self.schedule else None

    def record(self, epoch: int) -> dict[str, np.ndarray]:
        """Run the evaluation set through the model and capture every named layer (numpy, ``dtype``)."""
        acts, _ = self.capture(epoch=epoch)
        snap = {n: a.cpu().numpy().astype(self.dtype, copy=False) for n, a in acts.items()}
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
