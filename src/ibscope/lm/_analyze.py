"""``analyze``: layer-wise representation measures of a language model over its training checkpoints.

One forward pass per batch of prompts (``output_hidden_states``-style or
forward hooks on named modules), the per-prompt measures computed at once on
the model's device and only one vector per prompt and layer kept (for the
dataset-level measures), so memory stays under ``max_bytes``. One tidy row
per (checkpoint, layer, measure).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._units import check_unit
from ._measures import (
    LANCZOS_PROBES,
    LANCZOS_STEPS,
    _check_alpha,
    _check_mask,
    _check_method,
    _check_normalization,
    _entropy_nats,
    _erank,
    _masked,
    _normalize,
    _per_prompt,
    _resolve,
    _slq_nats,
    _spectra,
)

__all__ = ["MEASURES", "SOFT_PLANE", "SOFT_MEASURES", "DEFAULT_MEASURES", "RESULTS_FILE", "analyze", "load_checkpoint"]

MEASURES = ("prompt_entropy", "dataset_entropy", "effective_rank", "dataset_effective_rank")
#: the soft-entropy information plane, accepted in ``measures`` besides :data:`MEASURES`
SOFT_PLANE = "soft_plane"
#: the rows that ``measures=("soft_plane",)`` adds (Conklin & Hosking 2026: I(X;T) and I(T;Y) by soft entropy)
SOFT_MEASURES = ("soft_i_xt", "soft_i_ty")
DEFAULT_MEASURES = ("prompt_entropy", "dataset_entropy", "effective_rank")
RESULTS_FILE = "lm_measures.parquet"
SETTINGS_FILE = "lm_measures.json"
FIGURE_FILE = "lm_measures.png"
COLUMNS = ("checkpoint", "step", "layer", "layer_index", "measure", "value", "value_lo", "value_hi",
           "ci_level", "unit", "normalization", "alpha", "n_prompts", "n_tokens", "flags")

FLAG_DESCRIPTIONS = {
    "short_prompts": "prompts with fewer than 2 tokens were left out of this prompt-level measure",
    "rank_capped": "more items than dimensions (N > D): the entropy is capped at log D and the rank at D",
    "zero_representation": "some prompt's representations were all zero; it was left out",
    "few_prompts": "fewer than 2 prompts: no interval",
    "lanczos": "the entropy is a stochastic Lanczos quadrature estimate (Ubaru, Chen & Saad 2017; "
               f"{LANCZOS_PROBES} probes, {LANCZOS_STEPS} steps), not exact eigenvalues: method='lanczos', "
               "or 'auto' above LANCZOS_MIN_SIZE",
}


# --------------------------------------------------------------------------- checkpoints

def load_checkpoint(path: str | os.PathLike) -> torch.nn.Module:
    """Load a Hugging Face checkpoint directory with ``AutoModel.from_pretrained(path, use_safetensors=True)``.

    Only safetensors weights are read (never pickle); a directory without a
    ``*.safetensors`` file raises a ValueError naming it.
    """
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("Loading checkpoint directories needs transformers: "
                          "pip install 'ibscope[hf]'.") from e
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"Checkpoint directory '{p}' not found (argument 'models_or_checkpoints').")
    if not any(p.glob("*.safetensors")):
        raise ValueError(f"Checkpoint directory '{p}' holds no *.safetensors weights; ibscope reads only "
                         f"safetensors (save with save_pretrained(..., safe_serialization=True)).")
    return transformers.AutoModel.from_pretrained(str(p), use_safetensors=True)


def _step_of_dir(p: Path, default: int) -> int:
    state = p / "trainer_state.json"
    if state.is_file():
        try:
            step = json.loads(state.read_text()).get("global_step")
            if isinstance(step, int):
                return step
        except (ValueError, OSError):
            pass
    m = re.search(r"(\d+)$", p.name)
    return int(m.group(1)) if m else default


def _checkpoints(spec: Any) -> list[tuple[str, int, Any]]:
    """(label, step, model-or-path) for every entry, labels unique."""
    if isinstance(spec, (torch.nn.Module, str, os.PathLike)) or (
            isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], (int, np.integer))):
        spec = [spec]
    if not isinstance(spec, (list, tuple)) or not spec:
        raise TypeError("'models_or_checkpoints' must be a model, a checkpoint directory, or a non-empty list "
                        "of them or of (step, model-or-directory) pairs.")
    out = []
    for i, item in enumerate(spec):
        if isinstance(item, tuple):
            if len(item) != 2 or isinstance(item[0], bool) or not isinstance(item[0], (int, np.integer)):
                raise TypeError(f"'models_or_checkpoints'[{i}] must be a (step, model-or-directory) pair "
                                f"with an integer step, got {item!r}.")
            step, obj = int(item[0]), item[1]
        else:
            obj = item
            step = _step_of_dir(Path(obj), i) if isinstance(obj, (str, os.PathLike)) else i
        if isinstance(obj, (str, os.PathLike)):
            label = Path(obj).name if not isinstance(item, tuple) else f"step_{step}"
        elif isinstance(obj, torch.nn.Module):
            label = f"step_{step}"
        else:
            raise TypeError(f"'models_or_checkpoints'[{i}] must be a torch.nn.Module or a directory, "
                            f"got {type(obj).__name__}.")
        out.append((label, step, obj))
    labels = [c[0] for c in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"'models_or_checkpoints' names the same checkpoint twice: {labels}.")
    return out


# --------------------------------------------------------------------------- activations

class _Layers:
    """Which representations to read: hidden-state indices (None / ints) or module names (glob patterns)."""

    def __init__(self, model: torch.nn.Module, layers: Any):
        self.patterns: list[str] | None = None
        self.indices: list[int] | None = None
        if layers is None:
            pass
        elif isinstance(layers, str):
            self.patterns = [layers]
        elif isinstance(layers, Sequence) and layers and all(isinstance(x, str) for x in layers):
            self.patterns = list(layers)
        elif isinstance(layers, Sequence) and layers and all(
                isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in layers):
            self.indices = [int(x) for x in layers]
        else:
            raise TypeError("'layers' must be None (every hidden state), a list of hidden-state indices "
                            "(0 = embeddings) or module names / glob patterns (e.g. 'transformer.h.*').")
        if self.patterns is not None:
            from ..tracking._recorder import resolve_layers

            names = [n for n, _ in model.named_modules()]
            self.names = resolve_layers(self.patterns, names)
            if not self.names:
                raise ValueError(f"'layers' {self.patterns} matches no module of the model.")
        else:
            self.names = None

    def forward(self, model, ids, mask) -> list[tuple[str, int, torch.Tensor]]:
        if self.names is None:
            try:
                out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            except TypeError as e:
                raise ValueError("The model does not take output_hidden_states; name its layers with module "
                                 "patterns (argument 'layers', e.g. 'transformer.h.*').") from e
            hs = getattr(out, "hidden_states", None)
            if hs is None:
                raise ValueError("The model returned no hidden_states; name its layers with module patterns "
                                 "(argument 'layers').")
            idx = self.indices if self.indices is not None else list(range(len(hs)))
            bad = [i for i in idx if not -len(hs) <= i < len(hs)]
            if bad:
                raise ValueError(f"'layers' indices {bad} out of range: the model has {len(hs)} hidden states "
                                 f"(0 = embeddings).")
            return [(f"hidden_states.{i % len(hs)}", i % len(hs), hs[i]) for i in idx]
        got: dict[str, torch.Tensor] = {}
        mods = dict(model.named_modules())
        handles = []
        for name in self.names:
            def hook(_m, _inp, output, name=name):
                t = output[0] if isinstance(output, (tuple, list)) else output
                if not isinstance(t, torch.Tensor) or t.ndim != 3:
                    raise ValueError(f"Layer '{name}' does not output (batch, sequence, hidden) tensors.")
                got[name] = t.detach()
            handles.append(mods[name].register_forward_hook(hook))
        try:
            model(input_ids=ids, attention_mask=mask)
        finally:
            for h in handles:
                h.remove()
        return [(n, i, got[n]) for i, n in enumerate(self.names)]


def _as_long(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor or numpy array, got {type(x).__name__}.")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"'{name}' must be 2-D (prompts, positions) and non-empty, got shape {tuple(x.shape)}.")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool and name == "input_ids":
        raise TypeError(f"'{name}' must hold integers, got dtype {x.dtype}.")
    return x.long()


def _fingerprint(ids: torch.Tensor, mask: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(ids.cpu().numpy().tobytes())
    h.update(mask.cpu().numpy().astype(np.int8).tobytes())
    h.update(str(tuple(ids.shape)).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- intervals

def _percentile(stats: torch.Tensor, level: float) -> tuple[float, float]:
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=stats.dtype)
    lo, hi = torch.quantile(stats.cpu(), q).tolist()
    return lo, hi


def _boot_mean(v: torch.Tensor, level: float, n_boot: int, gen: torch.Generator) -> tuple[float, float]:
    idx = torch.randint(0, len(v), (n_boot, len(v)), generator=gen)
    return _percentile(v.cpu()[idx].mean(1), level)


def _boot_dataset(pooled: torch.Tensor, level: float, n_boot: int, gen: torch.Generator, alpha: float,
                  normalization: str, unit: str, which: str, lanczos_seed: int | None = None) -> tuple[float, float]:
    # a resample that takes row i c_i times has Z_b^T Z_b = Z^T diag(c) Z = (diag(sqrt c) Z)^T (diag(sqrt c) Z):
    # the nonzero spectrum of Z_b Z_b^T is that of diag(sqrt c) Z, an (n, D) matrix, whatever the duplicates
    n, d = pooled.shape
    counts = torch.stack([torch.bincount(torch.randint(0, n, (n,), generator=gen), minlength=n)
                          for _ in range(n_boot)]).to(pooled.device, pooled.dtype)
    if lanczos_seed is not None:               # one resample at a time: (n, D) matrices, never n x n
        stats = torch.stack([_slq_nats(pooled * c.sqrt()[:, None], alpha, LANCZOS_PROBES, LANCZOS_STEPS,
                                       lanczos_seed)[0] for c in counts])
        return _percentile(_normalize(stats, n, d, normalization, unit), level)
    zb = pooled[None] * counts.sqrt()[..., None]
    lam = _spectra(zb)
    if which == "dataset_entropy":
        p = lam / lam.sum(-1, keepdim=True)
        stats = _normalize(_entropy_nats(p, alpha), n, d, normalization, unit)
    else:
        stats = _erank(lam)
    return _percentile(stats, level)


# --------------------------------------------------------------------------- the analysis

def _check_settings(measures, batch_size, max_bytes, ci, n_boot) -> tuple[str, ...]:
    if isinstance(measures, str):
        measures = (measures,)
    measures = tuple(measures)
    bad = [m for m in measures if m not in (*MEASURES, SOFT_PLANE)]
    if not measures or bad:
        raise ValueError(f"'measures' must name some of {(*MEASURES, SOFT_PLANE)}; unknown: {bad or measures}.")
    for name, v in (("batch_size", batch_size), ("max_bytes", max_bytes), ("n_boot", n_boot)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"The '{name}' parameter must be a positive integer. Got {v!r}.")
    if ci is not None and (isinstance(ci, bool) or not isinstance(ci, float) or not 0 < ci < 1):
        raise ValueError(f"The 'ci' parameter must be None or a level in (0, 1), e.g. 0.95. Got {ci!r}.")
    return measures


def _soft_items(h: torch.Tensor, ids: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states with a real next token, and that next token: (items, D) float32 on CPU, (items,) int64."""
    pair = m[:, :-1] & m[:, 1:]
    return h[:, :-1][pair].float().cpu(), ids[:, 1:][pair].cpu()


def _run_one(model, label, step, ids, mask, layer_spec, measures, alpha, normalization, unit, batch_size,
             max_bytes, ci, n_boot, seed, device, soft=None, method="exact") -> list[dict]:
    was_training = model.training
    model.eval()
    layers = _Layers(model, layer_spec)
    dev = device if device is not None else next(model.parameters()).device
    n = ids.shape[0]
    per: dict[tuple[str, int], dict[str, list]] = {}
    start, bs = 0, None
    try:
        with torch.no_grad():
            while start < n:
                if bs is None:  # probe one prompt: bytes of its representations fix the batch size
                    b_ids, b_mask = ids[:1].to(dev), mask[:1].to(dev)
                    reps = layers.forward(model, b_ids, b_mask)
                    per_prompt = sum(t.numel() * t.element_size() for _, _, t in reps)
                    pooled_bytes = n * sum(t.shape[-1] * 4 for _, _, t in reps)
                    if soft is not None:  # soft_plane keeps every token state with a next token
                        n_pairs = int((mask[:, :-1].bool() & mask[:, 1:].bool()).sum())
                        pooled_bytes += n_pairs * sum(t.shape[-1] * 4 + 8 for _, _, t in reps)
                    if per_prompt + pooled_bytes > max_bytes:
                        raise ValueError(
                            f"max_bytes={max_bytes} is below the representations of one prompt "
                            f"({per_prompt} bytes) plus the pooled vectors of all prompts ({pooled_bytes} "
                            f"bytes); raise 'max_bytes', pass fewer layers or shorter prompts.")
                    bs = max(1, min(batch_size, (max_bytes - pooled_bytes) // per_prompt))
                    stop = 1
                else:
                    stop = min(n, start + bs)
                    b_ids, b_mask = ids[start:stop].to(dev), mask[start:stop].to(dev)
                    reps = layers.forward(model, b_ids, b_mask)
                m = b_mask.bool()
                for name, idx, h in reps:
                    if h.shape[:2] != m.shape:
                        raise ValueError(f"Layer '{name}' returned shape {tuple(h.shape)}, not (batch, "
                                         f"positions, hidden) matching 'input_ids'.")
                    h = h.float() if h.dtype != torch.float64 else h
                    acc = per.setdefault((name, idx), {"ent": [], "er": [], "n": [], "ok": [], "pooled": [],
                                                       "tok": [], "y": [], "lanczos": False})
                    if "prompt_entropy" in measures:
                        acc["lanczos"] |= _resolve(method, alpha, h.shape[1], h.shape[2]) == "lanczos"
                    try:
                        ent, er, cnt, ok = _per_prompt(
                            h, m, alpha, normalization, unit,
                            method if "prompt_entropy" in measures else "exact", seed=seed,
                            need_rank="effective_rank" in measures)
                    except ValueError as e:
                        raise ValueError(f"Layer '{name}' of checkpoint '{label}': {e}") from None
                    acc["ent"].append(ent.cpu())
                    acc["er"].append(er.cpu())
                    acc["n"].append(cnt.cpu())
                    acc["ok"].append(ok.cpu())
                    acc["pooled"].append(_masked(h, m).sum(1) / m.sum(1, keepdim=True).to(h.dtype))
                    if soft is not None:
                        tok, y = _soft_items(h, b_ids, m)
                        acc["tok"].append(tok)
                        acc["y"].append(y)
                start = stop
    finally:
        model.train(was_training)

    gen = torch.Generator().manual_seed(int(seed))
    rows = []
    for (name, idx), acc in per.items():
        ent, er = torch.cat(acc["ent"]), torch.cat(acc["er"])
        cnt, ok = torch.cat(acc["n"]), torch.cat(acc["ok"])
        pooled = torch.cat(acc["pooled"])
        d = pooled.shape[1]
        use = ok & (cnt >= 2)
        for measure in measures:
            if measure == "soft_plane":
                rows.extend(_soft_rows(acc, soft, label, step, name, idx, unit, seed))
                continue
            flags, lo, hi = [], math.nan, math.nan
            n_items, n_tok = int(use.sum()), int(cnt[use].sum())
            if measure in ("prompt_entropy", "effective_rank"):
                if (cnt < 2).any():
                    flags.append("short_prompts")
                if (~ok).any():
                    flags.append("zero_representation")
                if bool((cnt[use] > d).any()):
                    flags.append("rank_capped")
                if measure == "prompt_entropy" and acc["lanczos"]:
                    flags.append("lanczos")
                v = (ent if measure == "prompt_entropy" else er)[use].double()
                value = float(v.mean()) if len(v) else math.nan
                if ci is not None and len(v) >= 2:
                    lo, hi = _boot_mean(v, ci, n_boot, gen)
            else:
                keep = ok
                z = pooled[keep.to(pooled.device)]
                n_items, n_tok = int(keep.sum()), int(cnt[keep].sum())
                if (~ok).any():
                    flags.append("zero_representation")
                if n_items > d:
                    flags.append("rank_capped")
                lanczos = measure == "dataset_entropy" and n_items and \
                    _resolve(method, alpha, n_items, d) == "lanczos"
                if lanczos:
                    flags.append("lanczos")
                    lam = z.pow(2).sum().reshape(1)    # only its sign is used below: the trace
                else:
                    lam = _spectra(z) if n_items else torch.zeros(1)
                undefined = measure == "dataset_entropy" and normalization in ("logN", "max") and n_items < 2
                if n_items and lam.sum() > 0 and not undefined:
                    if lanczos:
                        value = float(_normalize(_slq_nats(z, alpha, LANCZOS_PROBES, LANCZOS_STEPS, seed)[0],
                                                 n_items, d, normalization, unit))
                        if ci is not None and n_items >= 2:
                            lo, hi = _boot_dataset(z, ci, n_boot, gen, alpha, normalization, unit, measure,
                                                   lanczos_seed=seed)
                    elif measure == "dataset_entropy":
                        value = float(_normalize(_entropy_nats(lam / lam.sum(), alpha), n_items, d,
                                                 normalization, unit))
                    else:
                        value = float(_erank(lam))
                    if ci is not None and n_items >= 2:
                        lo, hi = _boot_dataset(z, ci, n_boot, gen, alpha, normalization, unit, measure)
                else:
                    value = math.nan
            if ci is not None and n_items < 2:
                flags.append("few_prompts")
            is_entropy = measure.endswith("entropy")
            rows.append({
                "checkpoint": label, "step": int(step), "layer": name, "layer_index": int(idx),
                "measure": measure, "value": value, "value_lo": lo, "value_hi": hi,
                "ci_level": float(ci) if ci is not None else math.nan,
                "unit": (unit if normalization == "none" else f"fraction of {normalization}") if is_entropy
                else "dimensions",
                "normalization": normalization if is_entropy else "none",
                "alpha": alpha if is_entropy else math.nan,
                "n_prompts": n_items, "n_tokens": n_tok, "flags": ";".join(flags),
            })
    return rows


def _soft_rows(acc, soft, label, step, name, idx, unit, seed) -> list[dict]:
    from ._soft import soft_information_plane

    tok = torch.cat(acc["tok"]) if acc["tok"] else torch.zeros(0, 1)
    y = torch.cat(acc["y"]) if acc["y"] else torch.zeros(0, dtype=torch.long)
    flags = []
    if len(tok) < 2:
        vals, flags = (math.nan, math.nan), ["short_prompts"]
    else:
        vals = soft_information_plane(tok, y, n_bins=soft["bins"], temperature=soft["temperature"],
                                      n_draws=soft["draws"], seed=seed, unit=unit)
    return [{"checkpoint": label, "step": int(step), "layer": name, "layer_index": int(idx), "measure": m,
             "value": float(v), "value_lo": math.nan, "value_hi": math.nan, "ci_level": math.nan, "unit": unit,
             "normalization": "none", "alpha": math.nan, "n_prompts": int((torch.cat(acc["n"]) >= 2).sum()),
             "n_tokens": int(len(tok)), "flags": ";".join(flags)} for m, v in zip(SOFT_MEASURES, vals, strict=True)]


def analyze(models_or_checkpoints: Any, input_ids: Any, attention_mask: Any = None, *,
            layers: Any = None, measures: Iterable[str] = DEFAULT_MEASURES, alpha: float = 1.0,
            normalization: str = "none", batch_size: int = 16, max_bytes: int = 2 ** 30, unit: str = "bits",
            ci: float | None = None, n_boot: int = 200, seed: int = 0, device: Any = None,
            out_dir: str | os.PathLike | None = None, figure: bool = True, soft_bins: int = 32,
            soft_temperature: float = 0.1, soft_draws: int = 8, method: str = "auto") -> pd.DataFrame:
    """Layer-wise prompt entropy, dataset entropy and effective rank of a language model over checkpoints.

    The measures of Skean et al. [1]_ (see :mod:`ibscope.lm` for their
    definitions): for every checkpoint and layer, the token representations
    of each prompt (padding excluded by ``attention_mask``) give a prompt
    entropy and an effective rank [2]_, averaged over prompts; the prompts'
    mean-pooled representations give the dataset entropy (and the dataset
    effective rank). Prompts stream in batches; only one vector per prompt and
    layer is kept.

    Parameters
    ----------
    models_or_checkpoints : model, directory, or list of them / of (step, model-or-directory) pairs
        torch modules taking ``input_ids`` and ``attention_mask`` (Hugging
        Face models), or checkpoint directories loaded with
        ``transformers.AutoModel.from_pretrained(path, use_safetensors=True)``
        (safetensors only), one at a time. A directory's step is its
        ``trainer_state.json`` ``global_step``, else the number ending its
        name (``checkpoint-500``), else its position; its label is its name.
        A model's label is ``step_<step>``.
    input_ids : tensor or array of int, shape (n_prompts, positions)
    attention_mask : tensor or array of 0/1, same shape, optional
        Padding (0) may be on either side; it never enters a Gram matrix or a
        mean. All ones by default.
    layers : None, list of int, or str / list of str
        None: every ``output_hidden_states`` tensor (index 0 the embeddings,
        L the last block's output, after the final layer norm in GPT-2);
        ints select among them; strings are module names or glob patterns
        (``'transformer.h.*'``) read by forward hooks.
    measures : iterable of str
        Among ``'prompt_entropy'``, ``'dataset_entropy'``, ``'effective_rank'``
        (per prompt, averaged), ``'dataset_effective_rank'`` and
        ``'soft_plane'``: the soft-entropy information plane of Conklin &
        Hosking [3]_ (:func:`ibscope.lm.soft_information_plane`) over every
        token that has a real next token, T its state at the layer, Y the next
        token; it adds two rows per layer, ``soft_i_xt`` = I(X;T) = H_soft(T)
        and ``soft_i_ty`` = I(T;Y) = H_soft(T) - H_soft(T|Y), in ``unit``
        (no interval: ``value_lo``/``value_hi`` NaN). Those token states are
        kept (float32) until the layer is done and count in ``max_bytes``.
    alpha : float, default 1
        Renyi order of the entropies.
    normalization : {'none', 'logN', 'logD', 'max'}, default 'none'
        As in :func:`ibscope.lm.matrix_entropy`; per prompt, N is its own token count.
    batch_size : int, default 16
        Prompts per forward pass (lowered to fit ``max_bytes``).
    max_bytes : int, default 1 GiB
        Cap on the representations held at once (one batch of every layer's
        token representations plus the pooled vectors of all prompts); a
        ValueError when a single prompt does not fit.
    unit : {'bits', 'nats'}, default 'bits'
    ci : float, optional
        Level of percentile-bootstrap intervals over prompts (``value_lo``,
        ``value_hi``). For the dataset-level measures a resample repeats
        prompts, which lowers the entropy: read that interval as sampling
        variability, not as bias-corrected.
    n_boot : int, default 200
    seed : int, default 0
        Seed of the bootstrap.
    device : torch device, optional
        Where inputs go; default the model's device.
    out_dir : path, optional
        Write ``lm_measures.parquet`` (atomically, after every checkpoint),
        ``lm_measures.json`` (the settings) and the figure
        ``lm_measures.png``. A checkpoint already in the table is skipped; an
        ``out_dir`` holding other settings or other data raises a ValueError.
    figure : bool, default True
        With ``out_dir``, draw the figure.
    soft_bins, soft_temperature, soft_draws : int, float, int
        ``n_bins``, ``temperature`` and ``n_draws`` of the soft quantiser
        (``'soft_plane'`` only; the draws are seeded by ``seed``).
    method : {'auto', 'exact', 'lanczos'}, default 'auto'
        How the prompt and dataset entropies are computed, as in
        :func:`ibscope.lm.matrix_entropy`: 'auto' uses stochastic Lanczos
        quadrature (Ubaru, Chen & Saad [4]_; probes seeded by ``seed``) for a
        matrix with min(N, D) > :data:`ibscope.lm.LANCZOS_MIN_SIZE` (N the
        padded prompt length, or the number of prompts) when alpha >= 1,
        exact float32 eigenvalues otherwise. A row computed by Lanczos carries
        the flag ``lanczos``. Effective ranks are always exact.

    Returns
    -------
    pandas.DataFrame
        One row per (checkpoint, layer, measure): columns ``checkpoint``,
        ``step``, ``layer``, ``layer_index``, ``measure``, ``value``,
        ``value_lo``, ``value_hi``, ``ci_level``, ``unit`` (bits / nats,
        ``fraction of <normalization>``, or ``dimensions`` for ranks),
        ``normalization``, ``alpha``, ``n_prompts``, ``n_tokens``, ``flags``
        (';'-separated, '' when healthy; see ``FLAG_DESCRIPTIONS``).

    References
    ----------
    .. [1] O. Skean et al., "Layer by Layer: Uncovering Hidden Representations
       in Language Models", ICML 2025, arXiv:2502.02013.
    .. [2] O. Roy and M. Vetterli, "The effective rank: a measure of effective
       dimensionality", EUSIPCO 2007.
    .. [3] H. Conklin and T. Hosking, "Learning is Forgetting: LLM Training as
       Lossy Compression", ICLR 2026, arXiv:2604.07569.
    .. [4] S. Ubaru, J. Chen and Y. Saad, "Fast estimation of tr(f(A)) via
       stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017.
    """
    alpha, normalization = _check_alpha(alpha), _check_normalization(normalization)
    check_unit(unit)
    method = _check_method(method, alpha)
    measures = _check_settings(measures, batch_size, max_bytes, ci, n_boot)
    soft = None
    if "soft_plane" in measures:
        from ._soft import _check_soft

        b, t, d, _ = _check_soft(soft_bins, soft_temperature, soft_draws, seed)
        soft = {"bins": b, "temperature": t, "draws": d}
    ids = _as_long(input_ids, "input_ids")
    if attention_mask is not None:
        attention_mask = _as_long(attention_mask, "attention_mask")
    mask = _check_mask(attention_mask, tuple(ids.shape), ids.device).long()
    ckpts = _checkpoints(models_or_checkpoints)
    if device is not None:
        from .._validation import resolve_device

        device = resolve_device(device)

    done = pd.DataFrame(columns=list(COLUMNS))
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        from ..store import atomic_write_json, atomic_write_parquet, read_json

        out.mkdir(parents=True, exist_ok=True)
        settings = {"measures": list(measures), "alpha": alpha, "normalization": normalization, "unit": unit,
                    "layers": layers if layers is None or isinstance(layers, str) else list(map(str, layers)),
                    "ci": ci, "n_boot": n_boot, "seed": seed, "data": _fingerprint(ids, mask)}
        if soft is not None:
            settings["soft"] = soft
        if method != "auto":                   # absent for 'auto': directories written before stay resumable
            settings["method"] = method
        sp = out / SETTINGS_FILE
        if sp.exists():
            old = read_json(sp, what="lm settings file")
            if old != json.loads(json.dumps(settings)):
                diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                raise ValueError(f"out_dir '{out}' holds an analysis with other settings ({diff}); use another "
                                 f"out_dir or delete it.")
        else:
            atomic_write_json(sp, settings)
        if (out / RESULTS_FILE).exists():
            done = pd.read_parquet(out / RESULTS_FILE)
    frames = [done] if len(done) else []
    have = set(done["checkpoint"]) if len(done) else set()
    for label, step, obj in ckpts:
        if label in have:
            continue
        model = load_checkpoint(obj) if isinstance(obj, (str, os.PathLike)) else obj
        if device is not None:
            model = model.to(device)
        rows = _run_one(model, label, step, ids, mask, layers, measures, alpha, normalization, unit, batch_size,
                        max_bytes, ci, n_boot, seed, device, soft, method)
        frames.append(pd.DataFrame(rows, columns=list(COLUMNS)))
        if out is not None:
            atomic_write_parquet(out / RESULTS_FILE, pd.concat(frames, ignore_index=True))
    result = pd.concat(frames, ignore_index=True) if frames else done
    wanted = {c[0] for c in ckpts}
    result = result[result["checkpoint"].isin(wanted)].sort_values(
        ["step", "checkpoint", "measure", "layer_index"], kind="stable").reset_index(drop=True)
    if out is not None and figure and len(result):
        from ._plot import plot_lm_measures

        full = pd.read_parquet(out / RESULTS_FILE) if (out / RESULTS_FILE).exists() else result
        plot_lm_measures(full, out / FIGURE_FILE)
    return result

