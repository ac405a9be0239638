"""Fingerprints of what a tracker measures: model structure, settings, evaluation data.

A tracker directory (``information_plane.*``, ``weight_information.*``) is
resumed only when the run that opens it measures the same thing as the run
that wrote it. :func:`fingerprint` reduces everything that decides the
numbers to one sha256: the model's structure (module names and classes,
parameter and buffer names, shapes and dtypes; not their values, which change
with training), the layers, the estimators and their parameters, and the
evaluation inputs and labels (their bytes, shapes and dtypes).

Only the standard library, numpy and torch are used; the function is pure.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["fingerprint", "module_structure", "array_digest"]


def module_structure(model: nn.Module) -> list[list[Any]]:
    """Per named module: name, class, and (name, shape, dtype) of its own parameters and buffers."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"'model' must be a torch.nn.Module, got {type(model).__name__}.")
    out = []
    for name, m in model.named_modules():
        cls = f"{type(m).__module__}.{type(m).__qualname__}"
        params = [[p, list(t.shape), str(t.dtype)] for p, t in m.named_parameters(recurse=False)]
        buffers = [[b, list(t.shape), str(t.dtype)] for b, t in m.named_buffers(recurse=False)
                   if t is not None]
        out.append([name, cls, params, buffers])
    return out


def array_digest(a: Any) -> dict[str, Any]:
    """sha256 of an array's or tensor's bytes, with its shape and dtype (a tensor is read on the host)."""
    if isinstance(a, torch.Tensor):
        t = a.detach()
        dtype = str(t.dtype)
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its bit pattern
            t = t.view(torch.int16)
        arr = t.cpu().contiguous().numpy()
    else:
        arr = np.ascontiguousarray(np.asarray(a))
        dtype = str(arr.dtype)
        if arr.dtype == object:
            raise TypeError("array_digest needs a numeric array, got dtype object.")
    return {"shape": list(arr.shape), "dtype": dtype, "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}


def _canonical(v: Any) -> Any:
    if isinstance(v, nn.Module):
        return {"module": module_structure(v)}
    if isinstance(v, (torch.Tensor, np.ndarray)):
        return {"array": array_digest(v)}
    if isinstance(v, Mapping):
        return {str(k): _canonical(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, (list, tuple)):
        return [_canonical(x) for x in v]
    if isinstance(v, (bool, str)) or v is None:
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return repr(f) if not math.isfinite(f) else f
    return repr(v)


def fingerprint(**parts: Any) -> str:
    """One sha256 (hex) of named parts: modules, arrays/tensors, mappings, sequences, scalars.

    Mappings are hashed independently of key order; arrays and tensors by
    their bytes, shape and dtype; modules by :func:`module_structure`; any
    other object by its ``repr``.

    Examples
    --------
    >>> import torch
    >>> a = fingerprint(model=torch.nn.Linear(2, 3), layers=["x"], inputs=torch.zeros(4, 2))
    >>> a == fingerprint(layers=["x"], inputs=torch.zeros(4, 2), model=torch.nn.Linear(2, 3))
    True
    >>> a == fingerprint(model=torch.nn.Linear(2, 4), layers=["x"], inputs=torch.zeros(4, 2))
    False
    """
    text = json.dumps(_canonical(parts), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
