"""Record the activations of named modules of any ``torch.nn.Module``.

Forward hooks are attached only while a snapshot is taken, so training runs
at full speed between snapshots. Each snapshot can be written to its own file
(atomically), so memory does not grow with the number of snapshots and an
interrupted run keeps every snapshot it finished.

What the recorder handles:

* **inputs** as one tensor, a tuple of tensors (a model with several inputs,
  called ``model(*batch)``), a mapping of tensors such as a Hugging Face
  ``BatchEncoding`` (called ``model(**batch)``) or a DataLoader / re-iterable
  of batches (a batch is a tensor, a tuple or a mapping; with
  ``labels_in_batches=True`` the label is a tuple's last element or a
  mapping's ``'labels'`` (or ``'label'``) entry, which is not passed to the
  model);
* **layers by name or glob pattern**: ``'transformer.h.*'`` matches the
  modules ``transformer.h.0``, ``transformer.h.1``, ... in module order
  (``*``, ``?`` and ``[...]`` match within one dot-separated component, as
  :func:`fnmatch.fnmatchcase`; a component ``**`` matches any number of
  components). A pattern that matches nothing is an error naming it;
* **modules that return tuples, dicts or ModelOutputs** (GRU, attention,
  transformer blocks): ``output=`` selects the tensor (an index, a key, or a
  callable), for all layers or per layer. Without ``output=`` a container
  holding exactly one tensor gives that tensor (a Hugging Face attention
  module's ``(hidden_states, None)``, a block of an older transformers
  version returning ``(hidden_states, (key, value))``, a ``ModelOutput``
  with one tensor);
  with several tensors (a GRU's ``(output, h_n)``) the choice is ambiguous
  and an error asks for ``output=``. A global selector also applies to
  layers that return a tensor when it is a callable (``output=lambda o:
  o[:, -1]`` takes the last position of every layer); a global index or key
  on a tensor layer is refused (it would index samples). Selectors are
  applied or refused, never ignored;
* **token-level layers**: ``pool='last' | 'mean' | 'cls'`` (global or per
  layer) reduces a ``(batch, seq, hidden)`` output to ``(batch, hidden)``,
  respecting the ``attention_mask`` of mapping inputs (``'last'``: the last
  non-padded position, for left and right padding; ``'mean'``: the mean over
  non-padded positions, as in Sentence-BERT [3]_; ``'cls'``: position 0, the
  [CLS] token of BERT [2]_, refused where it is padding). Without pooling,
  a token-level layer is recorded at its full flattened width seq x hidden;
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
* **memory**: with ``max_bytes`` the activations held by one :meth:`capture`
  (the recorded layers, after pooling and projection, not the flattened
  inputs) never exceed it: the pass stops with a ValueError naming the layer
  that would pass it;
* **devices**: batches are moved to the model's device and, with
  :meth:`capture`, the activations stay there (torch tensors), so
  estimators that run on CUDA never copy them to the host.

References
----------
.. [1] S. Dasgupta and A. Gupta, "An elementary proof of a theorem of Johnson
   and Lindenstrauss", Random Structures & Algorithms 22(1), 2003.
.. [2] J. Devlin, M.-W. Chang, K. Lee and K. Toutanova, "BERT: Pre-training of
   deep bidirectional transformers for language understanding", NAACL 2019.
.. [3] N. Reimers and I. Gurevych, "Sentence-BERT: Sentence embeddings using
   Siamese BERT-networks", EMNLP 2019.
"""

from __future__ import annotations

import fnmatch
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

from .._validation import check_schedule
from ..store import atomic_write_bytes

__all__ = ["ActivationRecorder", "INPUT", "PAD_ID", "resolve_layers"]

log = logging.getLogger(__name__)

_SNAPSHOT = re.compile(r"^epoch_(\d+)\.npz$")
_CALLS = ("first", "last", "all")
_POOLS = ("last", "mean", "cls")
_GLOB = re.compile(r"[*?\[]")
LABEL_KEYS = ("labels", "label")  # where a mapping batch holds its labels (not passed to the model)
MASK_KEY = "attention_mask"  # the entry of a mapping batch that says which positions are tokens
PAD_ID = -1  # the id of a padded position in the flattened inputs (INPUT) of mapping inputs
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


def _is_glob(name: str) -> bool:
    return bool(_GLOB.search(name))


def _glob_match(pattern: str, name: str) -> bool:
    """Whether module ``name`` matches ``pattern`` component by component (``**``: any number of them)."""
    pat, parts = pattern.split("."), name.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(parts)
        if pat[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(parts) + 1))
        return j < len(parts) and fnmatch.fnmatchcase(parts[j], pat[i]) and match(i + 1, j + 1)

    return match(0, 0)


def resolve_layers(layers: Sequence[str], names: Sequence[str]) -> list[str]:
    """Expand names and glob patterns against module ``names`` (in module order); errors name the culprit.

    Parameters
    ----------
    layers : sequence of str
        Module names (``'encoder.layer.0'``) or patterns (``'encoder.layer.*'``).
    names : sequence of str
        The model's module names, in ``named_modules()`` order.

    Returns
    -------
    list of str
        The layers: each exact name where it stands, each pattern's matches in
        module order; a module matched again by a later pattern is kept once.
    """
    exact = [n for n in layers if not _is_glob(n)]
    if len(set(exact)) != len(exact):
        raise ValueError(f"'layers' names a module twice: {list(layers)}.")
    missing = [n for n in exact if n not in names]
    if missing:
        raise ValueError(f"Layer name(s) {missing} not found in the model (argument 'layers'). "
                         f"Available: {[n for n in names if n]}.")
    out: list[str] = []
    for entry in layers:
        hits = [entry] if not _is_glob(entry) else [n for n in names if n and _glob_match(entry, n)]
        if not hits:
            raise ValueError(f"Layer pattern '{entry}' (argument 'layers') matches no module of the model; "
                             f"'*' matches within one dot-separated component. Available: "
                             f"{[n for n in names if n]}.")
        out += [n for n in hits if n not in out]
    return out


def _per_layer(value: Any, layers: Sequence[str], name: str) -> tuple[dict[str, Any], set[str]]:
    """``value`` for every layer and the layers it names explicitly.

    A mapping is per layer: its keys are recorded layer names or glob patterns
    over them (an exact name wins over a pattern; two patterns giving one layer
    different values, or a key that names no recorded layer, are errors).
    Anything else is global.
    """
    if not isinstance(value, Mapping):
        return {n: value for n in layers}, set()
    out: dict[str, Any] = {n: None for n in layers}
    source: dict[str, str] = {}
    for key, v in value.items():
        if not isinstance(key, str):
            raise TypeError(f"'{name}' as a mapping must have layer names as keys; got {key!r}.")
        if _is_glob(key):
            hits = [n for n in layers if _glob_match(key, n)]
        else:
            hits = [key] if key in layers else []
        if not hits:
            raise ValueError(f"'{name}' maps name(s) ['{key}'] that are not recorded layers {list(layers)}"
                             f"{' (the pattern matches none)' if _is_glob(key) else ''}.")
        for n in hits:
            if n in source:
                if not _is_glob(source[n]):
                    continue  # an exact name wins over a pattern
                if _is_glob(key) and not (out[n] is v or out[n] == v):
                    raise ValueError(f"'{name}' gives layer '{n}' two values (keys '{source[n]}' and "
                                     f"'{key}'); name it exactly to choose.")
            out[n], source[n] = v, key
    return out, set(source)


def _single_tensor(name: str, out: Any) -> torch.Tensor:
    """The one tensor of a tuple / list / mapping / ModelOutput; an error when none or several."""
    items = list(out.values()) if isinstance(out, Mapping) else list(out) if isinstance(out, (tuple, list)) \
        else []
    tensors = [o for o in items if isinstance(o, torch.Tensor)]
    if len(tensors) == 1:
        return tensors[0]
    which = "holds no tensor at its top level" if not tensors else \
        f"holds {len(tensors)} tensors, so which one to record is ambiguous"
    raise TypeError(
        f"Layer '{name}' returns {_describe(out)}, not a tensor, and {which}; pass output= (an index such "
        f"as output=0, a key, or a function), e.g. output={{'{name}': 0}}, or record a submodule."
    )


def _pool_tokens(name: str, how: str, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Pool a (batch, seq, hidden) output over its non-padded positions (``mask`` != 0; None: all)."""
    if t.ndim != 3:
        raise ValueError(f"pool={how!r} for layer '{name}' needs a (batch, seq, hidden) output, but the layer "
                         f"returns {_describe(t)}; set pool=None for it (e.g. pool={{'{name}': None, ...}}).")
    valid = None
    if mask is not None:
        if mask.ndim != 2 or tuple(mask.shape) != tuple(t.shape[:2]):
            raise ValueError(f"The 'attention_mask' of the batch has shape {tuple(mask.shape)} but layer "
                             f"'{name}' returns {_describe(t)}: pool={how!r} needs a (batch, seq) mask "
                             f"matching the layer's first two dimensions.")
        valid = mask.to(t.device) != 0
        if not bool(valid.any(1).all()):
            raise ValueError(f"pool={how!r} for layer '{name}': a sequence of the batch has no non-padded "
                             f"position (its 'attention_mask' row is all zeros).")
    if how == "cls":
        if valid is not None and not bool(valid[:, 0].all()):
            raise ValueError(f"pool='cls' for layer '{name}' takes position 0, which is padding in some "
                             f"sequences (left padding); pad on the right or use pool='last' / 'mean'.")
        return t[:, 0]
    if valid is None:
        return t[:, -1] if how == "last" else t.mean(1)
    if how == "last":
        pos = torch.arange(t.shape[1], device=t.device).expand_as(valid)
        last = torch.where(valid, pos, torch.full_like(pos, -1)).max(1).values
        return t[torch.arange(t.shape[0], device=t.device), last]
    w = valid.to(t.dtype).unsqueeze(-1)
    return (t * w).sum(1) / w.sum(1)


def _pop_labels(batch: dict[str, Any], what: str) -> Any:
    """The labels entry of a mapping batch, removed from it (so the model does not get it)."""
    for key in LABEL_KEYS:
        if key in batch:
            return batch.pop(key)
    raise TypeError(f"With labels taken from the batches, {what} must hold the labels under "
                    f"{' or '.join(repr(k) for k in LABEL_KEYS)}; it has keys {list(batch)}. Pass 'labels'.")


def _no_labels(batch: Mapping[str, Any], what: str) -> None:
    """Labels given separately: a labels entry would reach the model (a causal LM reads it as targets)."""
    found = [k for k in LABEL_KEYS if k in batch]
    if found:
        raise ValueError(f"{what} has a {found[0]!r} entry, which would be passed to the model, and the "
                         f"labels are given separately: drop the entry, or pass labels=None to take the "
                         f"labels from it.")


def _rows(item: tuple[Any, ...] | dict[str, Any]) -> int | None:
    """Samples in one batch: the first dimension of its first tensor (input_ids for a mapping)."""
    values = list(item.values()) if isinstance(item, dict) else list(item)
    if isinstance(item, dict) and isinstance(item.get("input_ids"), torch.Tensor):
        values.insert(0, item["input_ids"])
    return next((int(v.shape[0]) for v in values if isinstance(v, torch.Tensor) and v.ndim), None)


class _Batches:
    """The evaluation set as a re-iterable of (model inputs: tuple or dict, labels or None)."""

    def __init__(self, inputs: Any, batch_size: int | None, labels_in_batches: bool):
        self.labels_in_batches = bool(labels_in_batches)
        self.batch_size = batch_size
        self.mapping: dict[str, torch.Tensor] | None = None
        self.mapping_labels: Any = None
        if isinstance(inputs, Mapping):  # one evaluation set given as keyword inputs (a BatchEncoding)
            mapping = dict(inputs)
            if self.labels_in_batches:
                self.mapping_labels = torch.as_tensor(_pop_labels(mapping, "the mapping 'inputs'"))
            else:
                _no_labels(mapping, "the mapping 'inputs'")
            if not mapping:
                raise ValueError("'inputs' is an empty mapping: give the model's keyword inputs.")
            bad = [k for k, v in mapping.items() if not isinstance(v, torch.Tensor) or v.ndim < 1]
            if bad:
                raise TypeError(f"'inputs' as a mapping must hold tensors with a sample dimension (the model is "
                                f"called model(**batch)); the entries {bad} are not.")
            n = {k: int(v.shape[0]) for k, v in mapping.items()}
            if self.mapping_labels is not None:
                n["labels"] = int(self.mapping_labels.shape[0])
            if len(set(n.values())) != 1:
                raise ValueError(f"'inputs' entries have different numbers of samples: {n}.")
            self.n = next(iter(n.values()))
            if self.n < 1:
                raise ValueError("'inputs' must hold at least one sample.")
            self.mapping, self.tensors, self.loader = mapping, None, None
            return
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
        if self.n is None and isinstance(inputs, list):  # batches in memory: count their samples now
            rows = [_rows(b) for b, _ in self]
            self.n = sum(rows) if all(r is not None for r in rows) else None

    def __iter__(self) -> Iterator[tuple[tuple[Any, ...] | dict[str, Any], Any]]:
        if self.mapping is not None:
            bs = self.batch_size or self.n
            lab = self.mapping_labels
            for start in range(0, self.n, bs):
                yield ({k: v[start:start + bs] for k, v in self.mapping.items()},
                       None if lab is None else lab[start:start + bs])
            return
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
            elif isinstance(item, Mapping):
                batch = dict(item)
                if not self.labels_in_batches:
                    _no_labels(batch, "a batch of 'inputs'")
                lab = _pop_labels(batch, "every batch of 'inputs'") if self.labels_in_batches else None
                yield batch, lab
            else:
                raise TypeError(f"Every batch of 'inputs' must be a tensor, a tuple of tensors or a mapping of "
                                f"tensors; got {type(item).__name__}.")

    def first(self) -> tuple[tuple[Any, ...] | dict[str, Any], Any]:
        return next(iter(self))


def _place(item: tuple[Any, ...] | dict[str, Any], device: torch.device
           ) -> tuple[tuple[Any, ...], dict[str, Any], tuple[Any, ...], torch.Tensor | None]:
    """A batch on ``device`` as (positional args, keyword args, the tensors of X, attention mask)."""
    def move(b: Any) -> Any:
        return b.to(device, non_blocking=True) if isinstance(b, torch.Tensor) else b

    if isinstance(item, dict):
        kwargs = {k: move(v) for k, v in item.items()}
        mask = kwargs.get(MASK_KEY)
        mask = mask if isinstance(mask, torch.Tensor) else None
        ids = kwargs.get("input_ids")
        if isinstance(ids, torch.Tensor):
            if mask is not None and tuple(mask.shape) == tuple(ids.shape):
                ids = torch.where(mask != 0, ids, torch.full_like(ids, PAD_ID))
            return (), kwargs, (ids,), mask
        return (), kwargs, tuple(v for v in kwargs.values() if isinstance(v, torch.Tensor)), mask
    args = tuple(move(b) for b in item)
    return args, {}, args, None


class ActivationRecorder:
    """Snapshots of layer activations on a fixed evaluation set.

    Parameters
    ----------
    model : torch.nn.Module
    inputs : torch.Tensor, tuple of tensors, mapping of tensors, or DataLoader
        The fixed evaluation set (see the module docstring). A mapping (a
        dict or a Hugging Face ``BatchEncoding``) is called
        ``model(**batch)``. A DataLoader must not shuffle.
    layers : str or sequence of str, optional
        Names from ``model.named_modules()`` or glob patterns over them
        (``'transformer.h.*'``: ``*`` stays within one dot-separated
        component, ``**`` spans components); default ``model.layer_names``
        if the model has it (ibscope's MLP/ConvNet), else every leaf module.
    out_dir : path-like or None
        Where :meth:`record` writes snapshots (``epoch_000123.npz``, one array
        per layer). None keeps nothing on disk.
    schedule : iterable of int, optional
        Epochs at which :meth:`maybe_record` takes a snapshot (0 = the
        initialization, the convention of :func:`ibscope.training.fit`).
    dtype : numpy dtype, default float32
        Storage type of the activations written by :meth:`record`.
    batch_size : int or None
        Evaluate tensor or mapping inputs in batches of this size (None: all
        at once).
    output : None, int, str, callable, or a mapping layer -> selector
        How to get the tensor out of a module's output: an index, a key or a
        function of the output. None: a tensor as it is, and a tuple, list,
        dict or ``ModelOutput`` holding exactly one tensor gives that tensor
        (an error when it holds several). A global callable applies to
        every layer, tensor outputs included; a global index or key applies
        to non-tensor outputs and is refused (ValueError naming the layer)
        on a layer that returns a tensor. A mapping (keys: layer names or
        glob patterns; a key naming no recorded layer is a ValueError)
        applies to its layers whatever they return; the others get None. A
        selector that fails on a layer's output raises a ValueError naming
        the layer.
    call : None, 'first', 'last', 'all', or a mapping layer -> one of these
        For a module run several times per forward. None (default): raise a
        ValueError naming the module and its number of calls. 'all': the
        outputs of the calls side by side (sample i's row holds its k calls).
    pool : None, 'last', 'mean', 'cls', or a mapping layer -> one of these
        Pooling of ``(batch, seq, hidden)`` outputs over the sequence (after
        ``output``, before ``call='all'`` joins calls), respecting the
        ``attention_mask`` entry of mapping inputs (no mask: every position
        counts): 'last' = the last non-padded position (left or right
        padding), 'mean' = the mean over non-padded positions, 'cls' =
        position 0 (a ValueError where it is padding). A layer with a pool
        whose output is not 3-D is a ValueError. None (default): the output
        flattened per sample (seq x hidden units for a token-level layer).
    max_features : int or None
        Layers (and, with ``capture(inputs=True)``, the flattened inputs)
        wider than this are reduced on the fly by a fixed random projection
        to ``max_features`` dimensions. None: never.
    max_bytes : int or None
        Most bytes of recorded layer activations one :meth:`capture` may hold
        (counted as they are kept, batch by batch, after pooling and
        projection; the flattened inputs are not counted). Passing it is a
        ValueError naming the layer and the remedies, raised before the batch
        that would pass it is kept. None: no limit.
    seed : int, default 0
        Seed of the random projections.
    labels_in_batches : bool, default False
        With a DataLoader: the label is the last element of every tuple batch
        or the ``'labels'`` (or ``'label'``) entry of every mapping batch
        (returned by :meth:`capture`, never passed to the model), the rest the
        model's inputs. With a mapping evaluation set: its ``'labels'`` entry.

    Attributes
    ----------
    reduction_ : dict
        For every reduced variable: ``{'method': 'random_projection',
        'from': d, 'to': k, 'seed': s}``.

    Notes
    -----
    The flattened inputs (:data:`INPUT`, the X of I(X;T)) are all model
    inputs side by side: the tensors of a tuple in order. For mapping inputs
    with ``input_ids``, X is one column per position: the token id where the
    ``attention_mask`` is nonzero and :data:`PAD_ID` (-1) where it is padding,
    so the ids and the mask that delimits the sequence are one variable
    without the mask's constant columns; ``token_type_ids`` and
    ``position_ids`` are left out (functions of the tokenized text in the
    common case). A mapping without ``input_ids`` (``inputs_embeds``): all its
    tensor entries side by side, in the mapping's order.
    """

    def __init__(self, model: nn.Module, inputs: Any, *, layers: str | Sequence[str] | None = None,
                 out_dir: str | os.PathLike | None = None, schedule: Iterable[int] = (),
                 dtype: Any = np.float32, batch_size: int | None = None, output: Any = None,
                 call: Any = None, pool: Any = None, max_features: int | None = None,
                 max_bytes: int | None = None, seed: int = 0, labels_in_batches: bool = False):
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
        bad = [n for n in layers if not isinstance(n, str)]
        if bad:
            raise TypeError(f"'layers' must hold module names or patterns (str); got {bad}.")
        if not layers:
            raise ValueError("'layers' is empty: name at least one module to record.")
        layers = resolve_layers(layers, list(modules))
        self.output, self._explicit = _per_layer(output, layers, "output")
        for n, sel in self.output.items():
            if isinstance(sel, bool) or (sel is not None and not (callable(sel) or isinstance(sel, (int, str)))):
                raise TypeError(f"'output' for layer '{n}' must be an int index, a str key or a callable; "
                                f"got {sel!r}.")
        self.call, _ = _per_layer(call, layers, "call")
        for n, c in self.call.items():
            if c is not None and c not in _CALLS:
                raise ValueError(f"'call' for layer '{n}' must be None, 'first', 'last' or 'all'; got {c!r}.")
        self.pool, _ = _per_layer(pool, layers, "pool")
        for n, how in self.pool.items():
            if how is not None and how not in _POOLS:
                raise ValueError(f"'pool' for layer '{n}' must be None, 'last', 'mean' or 'cls'; got {how!r}.")
        if max_features is not None and (isinstance(max_features, bool) or not isinstance(max_features, int)
                                         or max_features < 1):
            raise ValueError(f"'max_features' must be a positive int or None, got {max_features!r}.")
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)
                                      or max_bytes < 1):
            raise ValueError(f"'max_bytes' must be a positive int or None, got {max_bytes!r}.")
        self.model = model
        self.inputs = inputs
        self.layers = layers
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None and self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"'out_dir' must be a directory for the snapshots, but '{self.out_dir}' is a file.")
        self.schedule = set(check_schedule(schedule, "schedule", "ActivationRecorder", allow_none=False,
                                           allow_empty=True))
        self.dtype = np.dtype(dtype)
        self.batch_size = batch_size
        self.max_features = max_features
        self.max_bytes = max_bytes
        self.seed = int(seed)
        self.reduction_: dict[str, dict[str, Any]] = {}
        self._projections: dict[str, torch.Tensor] = {}
        self._modules = {n: modules[n] for n in layers}
        self._mask: torch.Tensor | None = None  # the attention_mask of the batch being recorded
        self._seen: dict[str, int] = {}  # width of every variable in the capture under way
        self._held = 0  # bytes of layer activations kept by the capture under way

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
        if sel is None:
            return out if isinstance(out, torch.Tensor) else _single_tensor(name, out)
        if isinstance(out, torch.Tensor) and not callable(sel) and name not in self._explicit:
            raise ValueError(
                f"The global 'output' selector {sel!r} is an index or key, but layer '{name}' returns "
                f"{_describe(out)}: indexing it would pick samples, not a part of the output. Give the "
                f"selector per layer (e.g. output={{'<layer returning a tuple>': {sel!r}}}) or a function "
                f"of the output that applies to every layer."
            )
        try:
            out = sel(out) if callable(sel) else out[sel]
        except (IndexError, KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise ValueError(f"'output' selector {sel!r} does not apply to the output of layer '{name}' "
                             f"({_describe(out)}): {e}") from None
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"Layer '{name}' returns {_describe(out)} after the 'output' selector {sel!r}, not a tensor; "
                f"pass output= (an index such as output=0, a key, or a function), e.g. "
                f"output={{'{name}': 0}}, or record a submodule."
            )
        return out

    def _pool(self, name: str, out: torch.Tensor) -> torch.Tensor:
        how = self.pool[name]
        return out if how is None else _pool_tokens(name, how, out, self._mask)

    def _project(self, name: str, flat: torch.Tensor, index: int) -> torch.Tensor:
        d = flat.shape[1]
        seen = self._seen.setdefault(name, int(d))
        if seen != d:
            what = "the flattened inputs" if name == INPUT else f"layer '{name}'"
            raise ValueError(
                f"The batches give {what} different widths ({seen} and {d}): their sequence lengths differ "
                f"(dynamic padding). Pad every batch to one length, or pool the token-level layers "
                f"(pool='last', 'mean' or 'cls')."
            )
        out = self._reduce(name, flat, index)
        if name != INPUT and self.max_bytes is not None:
            size = out.numel() * out.element_size()
            if self._held + size > self.max_bytes:
                raise ValueError(
                    f"Recording layer '{name}' would hold more than max_bytes={self.max_bytes} bytes of "
                    f"activations ({self._held + size} bytes so far, at width {out.shape[1]}). Reduce wide "
                    f"layers with max_features (a random projection), pool token-level layers "
                    f"(pool='last', 'mean' or 'cls'), record fewer layers at once, or raise max_bytes."
                )
            self._held += size
        return out

    def _reduce(self, name: str, flat: torch.Tensor, index: int) -> torch.Tensor:
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
        unknown = [n for n in names if n not in self._modules]
        if unknown:
            raise ValueError(f"capture: {unknown} are not recorded layers {self.layers} (argument 'layers').")
        index = {n: i for i, n in enumerate(self.layers)}
        self._seen, self._held = {}, 0
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        if inputs:
            parts[INPUT] = []
        label_parts: list[torch.Tensor] = []
        calls: dict[str, list[torch.Tensor]] = {n: [] for n in names}

        def hook_for(name: str) -> Callable:
            def hook(_module, _inp, out):
                calls[name].append(self._pool(name, self._select(name, out)))
            return hook

        handles = [self._modules[n].register_forward_hook(hook_for(n)) for n in names]
        was_training = self.model.training
        self.model.eval()
        device = self._device()
        try:
            for item, lab in self.batches:
                args, kwargs, batch, self._mask = _place(item, device)
                rows = next((int(b.shape[0]) for b in batch if isinstance(b, torch.Tensor) and b.ndim), None)
                for n in names:
                    calls[n].clear()
                self.model(*args, **kwargs)
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
            self._mask = None
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
        saved_bytes, self.max_bytes = self.max_bytes, None  # one batch at full width, whatever the budget
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
            self.batches, self.max_features, self.max_bytes = saved_batches, saved, saved_bytes
        self._widths = {n: int(a.shape[1]) for n, a in acts.items()}
        self._element_sizes = {n: int(a.element_size()) for n, a in acts.items()}
        return self._widths

    def element_sizes(self) -> dict[str, int]:
        """Bytes per recorded value of every layer (its dtype: 4 for float32, 8 for float64)."""
        self.widths()
        return self._element_sizes

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
