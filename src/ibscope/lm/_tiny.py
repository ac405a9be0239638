"""A tiny GPT-2 trained here: random init (no download), CPU training in about a minute, checkpoints.

Needs transformers (the ``hf`` extra); nothing here is imported by ``import
ibscope``. Checkpoints are ``save_pretrained`` directories in safetensors
(``<out_dir>/checkpoint-<step>``), readable by :func:`ibscope.lm.analyze`.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._units import LN2, check_unit

__all__ = ["tiny_gpt", "train_tiny_gpt", "next_token_cross_entropy", "python_docs_corpus", "chunk"]


def _transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("The tiny GPT needs transformers: pip install 'ibscope[hf]'.") from e
    return transformers


def _pos_int(v: Any, name: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
        raise ValueError(f"The '{name}' parameter must be an integer >= {lo}. Got {v!r}.")
    return int(v)


def tiny_gpt(vocab_size: int, *, n_layer: int = 2, n_embd: int = 64, n_head: int = 2, n_positions: int = 128,
             seed: int = 0) -> torch.nn.Module:
    """A randomly initialised ``transformers.GPT2LMHeadModel`` (no download).

    Parameters
    ----------
    vocab_size : int >= 2
    n_layer, n_embd, n_head, n_positions : int
        GPT-2 configuration (defaults: 2 blocks of width 64, 2 heads,
        contexts up to 128 tokens). Dropout is off (deterministic training
        given the seed).
    seed : int
        Seed of the initialisation (``torch.manual_seed`` inside a fork of the RNG).

    References
    ----------
    .. [1] A. Radford, J. Wu, R. Child, D. Luan, D. Amodei and I. Sutskever,
       "Language models are unsupervised multitask learners", OpenAI 2019 (GPT-2).
    """
    transformers = _transformers()
    cfg = transformers.GPT2Config(vocab_size=_pos_int(vocab_size, "vocab_size", 2),
                                  n_layer=_pos_int(n_layer, "n_layer"), n_embd=_pos_int(n_embd, "n_embd"),
                                  n_head=_pos_int(n_head, "n_head"), n_positions=_pos_int(n_positions, "n_positions"),
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0)
    if cfg.n_embd % cfg.n_head:
        raise ValueError(f"'n_embd' ({n_embd}) must be a multiple of 'n_head' ({n_head}).")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_pos_int(seed, "seed", 0))
        return transformers.GPT2LMHeadModel(cfg)


def _tokens(tokens: Any, name: str = "tokens") -> torch.Tensor:
    if isinstance(tokens, np.ndarray):
        tokens = torch.from_numpy(tokens)
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.ndim != 2 or tokens.shape[1] < 2 \
            or tokens.shape[0] < 1:
        raise ValueError(f"'{name}' must be an integer array of shape (sequences, length >= 2); got "
                         f"{getattr(tokens, 'shape', type(tokens).__name__)}.")
    return tokens.long()


def train_tiny_gpt(model: torch.nn.Module, tokens: Any, *, steps: int = 300, batch_size: int = 32,
                   lr: float = 3e-3, warmup: int = 20, checkpoint_steps: Iterable[int] | None = None,
                   out_dir: str | os.PathLike | None = None, seed: int = 0,
                   on_checkpoint: Callable[[int, torch.nn.Module], None] | None = None) -> dict[str, Any]:
    """Train a causal LM on token sequences with AdamW (next-token cross-entropy), saving checkpoints.

    Batches are ``batch_size`` sequences drawn without replacement per epoch
    (a seeded permutation). The learning rate rises linearly over ``warmup``
    steps, then stays at ``lr``.

    Parameters
    ----------
    model : transformers causal LM (e.g. :func:`tiny_gpt`), trained in place
    tokens : int array (sequences, length)
    steps : int, default 300
    batch_size : int, default 32
    lr : float, default 3e-3
    warmup : int, default 20
    checkpoint_steps : iterable of int, optional
        Steps (0 = the initialisation, up to ``steps``) after which the model
        is saved to ``<out_dir>/checkpoint-<step>`` (``save_pretrained``,
        safetensors). Default: 0 and ``steps``.
    out_dir : path, optional
        Where checkpoints and ``train_log.json`` (loss per step, in nats and
        bits) go; without it nothing is written.
    seed : int, default 0
        Seed of the batch order.
    on_checkpoint : callable(step, model), optional
        Called at every checkpoint step (after saving, if ``out_dir``), the
        model in eval mode; training resumes in train mode afterwards.

    Returns
    -------
    dict
        ``{"checkpoints": [paths], "steps": [steps], "loss_bits": [loss per step, bits]}``.
    """
    steps = _pos_int(steps, "steps")
    bs = _pos_int(batch_size, "batch_size")
    warmup = _pos_int(warmup, "warmup", 0)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"The 'lr' parameter must be a finite number > 0. Got {lr!r}.")
    x = _tokens(tokens)
    ck = sorted({0, steps} if checkpoint_steps is None else {int(s) for s in checkpoint_steps})
    if any(s < 0 or s > steps for s in ck):
        raise ValueError(f"'checkpoint_steps' must lie in [0, steps={steps}]; got {ck}.")
    out = Path(out_dir) if out_dir is not None else None
    saved: list[Path] = []

    def save(step: int) -> None:
        if step not in ck:
            return
        if out is not None:
            p = out / f"checkpoint-{step}"
            model.save_pretrained(p, safe_serialization=True)
            saved.append(p)
        if on_checkpoint is not None:
            model.eval()
            on_checkpoint(step, model)
            model.train()

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(_pos_int(seed, "seed", 0))
    opt = torch.optim.AdamW(model.parameters(), lr=float(lr), weight_decay=0.0)
    model.train()
    save(0)
    losses: list[float] = []
    perm, at = torch.randperm(len(x), generator=gen), 0
    for step in range(1, steps + 1):
        if at + bs > len(x):
            perm, at = torch.randperm(len(x), generator=gen), 0
        batch = x[perm[at:at + bs]]
        at += bs
        for g in opt.param_groups:
            g["lr"] = float(lr) * min(1.0, step / max(1, warmup))
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item() / LN2)
        save(step)
    model.eval()
    if out is not None:
        from ..store import atomic_write_json

        atomic_write_json(out / "train_log.json", {"unit": "bits", "loss": losses, "checkpoints": ck,
                                                    "lr": float(lr), "batch_size": bs, "seed": int(seed)})
    return {"checkpoints": saved, "steps": ck, "loss_bits": losses}


def next_token_cross_entropy(model: Any, tokens: Any, *, start: int = 1, batch_size: int = 64,
                             unit: str = "bits") -> float:
    """Mean cross-entropy -log p_model(x_t | x_<t) over positions t >= ``start`` of held-out sequences.

    For a stationary source this is an upper bound on its entropy rate
    H(x_t | x_<t) (cross-entropy = entropy + KL >= entropy; Shannon 1951,
    Cover & Thomas Sec. 4.2), reached when the model predicts the true
    conditional. For an order-k source use ``start >= k``: earlier positions
    have a shorter context, hence a larger conditional entropy.

    Parameters
    ----------
    model : causal LM returning ``logits`` or a checkpoint directory
        (loaded with ``AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)``).
    tokens : int array (sequences, length)
    start : int >= 1, default 1
        First predicted position (position 0 has no context).
    batch_size : int, default 64
    unit : {'bits', 'nats'}

    Returns
    -------
    float, in ``unit``.
    """
    check_unit(unit)
    x = _tokens(tokens)
    start = _pos_int(start, "start")
    if start >= x.shape[1]:
        raise ValueError(f"'start' ({start}) must be below the sequence length {x.shape[1]}.")
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if not any(p.glob("*.safetensors")):
            raise ValueError(f"Checkpoint directory '{p}' holds no *.safetensors weights.")
        model = _transformers().AutoModelForCausalLM.from_pretrained(str(p), use_safetensors=True)
    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for i in range(0, len(x), _pos_int(batch_size, "batch_size")):
                b = x[i:i + batch_size]
                logits = model(input_ids=b).logits[:, start - 1:-1].double()
                nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                        b[:, start:].reshape(-1), reduction="sum")
                total += float(nll)
                count += b[:, start:].numel()
    finally:
        model.train(was)
    h = total / count
    return h / LN2 if unit == "bits" else h


def python_docs_corpus(max_chars: int | None = None) -> tuple[np.ndarray, str]:
    """A real-text corpus already on every machine: the Python documentation topics shipped with CPython.

    The text of ``pydoc_data.topics`` (the Python Language Reference sections
    that ``help()`` shows; about 465,000 characters for CPython 3.11),
    concatenated in sorted topic order, as character tokens. Copyright the
    Python Software Foundation, distributed under the PSF License Version 2
    (the Python documentation licence); nothing is downloaded.

    Parameters
    ----------
    max_chars : int, optional
        Keep only the first ``max_chars`` characters.

    Returns
    -------
    tokens : ndarray of int64, shape (n_chars,)
        Index of each character in ``alphabet``.
    alphabet : str
        The sorted distinct characters (the vocabulary).
    """
    from pydoc_data.topics import topics

    text = "".join(topics[k] for k in sorted(topics))
    if max_chars is not None:
        text = text[:_pos_int(max_chars, "max_chars", 2)]
    alphabet = "".join(sorted(set(text)))
    lookup = {c: i for i, c in enumerate(alphabet)}
    return np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text)), alphabet


def chunk(tokens: Any, length: int) -> np.ndarray:
    """Cut a 1-D token stream into non-overlapping sequences of ``length`` (the remainder dropped)."""
    t = np.asarray(tokens)
    if t.ndim != 1:
        raise ValueError(f"'tokens' must be 1-D; got shape {t.shape}.")
    n = len(t) // _pos_int(length, "length", 2)
    if n == 0:
        raise ValueError(f"'tokens' ({len(t)}) is shorter than one sequence of length {length}.")
    return t[:n * length].reshape(n, length).astype(np.int64)

