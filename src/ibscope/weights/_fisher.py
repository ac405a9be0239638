"""Fisher information trace, total and per layer, from per-example gradients.

For a classifier with logits f(x; w) and temperature T, p_T(c|x) = softmax(f/T)_c:

    F     = E_x E_{c ~ p_T(.|x)} [ g g^T ],   g = grad_w log p_T(c|x)     (kind="model")
    F_emp = E_{(x,y) in data}     [ g g^T ],   g = grad_w log p_T(y|x)     (kind="empirical")

and tr F = E |g|^2, estimated with per-example gradients (the shared engine
of :mod:`ibscope.weights._pergrad`) -- never with a batch-mean gradient,
whose square misses the variance and is biased low. Labels are sampled from the model (``n_samples``
per example, seeded) or, with ``n_samples=None``, the expectation over
classes is taken exactly (C gradient evaluations per example).

Temperature. As training drives the logits to saturation, p(c|x) tends to a
one-hot vector and grad log p(c|x) to zero for the likely class, so the raw
Fisher trace falls late in training whatever happens to the information in
the weights (Achille et al. [1]_). Evaluating it at T > 1 (softened
logits) measures the curvature without that saturation effect; report both.

References
----------
.. [1] A. Achille, M. Rovere, S. Soatto, "Critical learning periods in deep
   networks", ICLR 2019; A. Achille, G. Paolini, S. Soatto, "Where is the
   information in a deep network?", arXiv:1905.12213, 2019.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_data_labels, check_exclude
from ._common import (
    check_finite_loss,
    check_positive_float,
    check_positive_int,
    group_of,
    iter_batches,
    select_parameters,
    tidy_rows,
)
from ._pergrad import (
    batch_len,
    call_model,
    capture,
    check_output,
    math_attention,
    select_output,
    vmap_gradients,
)

__all__ = ["FisherResult", "fisher"]

FISHER_UNIT = "nats^2"  # squared gradient of a log-likelihood in nats, per example


@dataclass(frozen=True)
class FisherResult:
    """Trace of the (per-example) Fisher information, total and per layer."""

    trace: float
    per_layer: dict[str, float]
    kind: str
    temperature: float
    n_examples: int
    unit: str = FISHER_UNIT
    settings: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        return tidy_rows(self.trace, self.per_layer, "fisher_trace", self.unit, f"{self.kind}_T{self.temperature:g}")


def fisher(model: nn.Module, data: Any, *, kind: str = "model", temperature: float = 1.0,
           n_samples: int | None = 1, max_batches: int | None = None, groups: str = "module",
           include_bias: bool = True, exclude: Any = None, seed: int = 0,
           chunk_size: int = 256, engine: str = "auto", output: Any = None) -> FisherResult:
    """Fisher-information trace (mean over examples) and per-layer traces.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits of shape (batch, classes), or (batch,
        positions..., classes) for a sequence model (a language model's
        next-token logits): the per-example log-likelihood is then the sum
        over positions, log p(c|x) = sum_t log p(c_t|x). Not modified; run in
        eval mode with attention on PyTorch's math path
        (:func:`~ibscope.weights._pergrad.math_attention`; the user's settings
        are restored).
    data : iterable of (x, y)
        Minibatches (DataLoader or list of tensor pairs); ``y`` is used only by
        ``kind="empirical"`` (shape (batch, positions...) for sequence logits).
        ``x`` may hold integer token ids or be a mapping of named inputs
        (``model(**x)``).
    kind : {'model', 'empirical'}
        'model': labels drawn from the model's own predictive distribution
        (the Fisher information); 'empirical': the true labels.
    temperature : float
        Logits are divided by it before the softmax (see the module notes).
    n_samples : int or None
        Sampled labels per example for kind='model'; None: exact expectation
        over the classes (C times the cost, no sampling noise).
    max_batches : int, optional
        Use only the first batches; the trace is the mean over examples used.
    groups : {'module', 'parameter'}
    include_bias, exclude
        Which parameters (biases included unless excluded).
    seed : int
        Seed of the label sampling.
    chunk_size : int
        Examples per gradient call (vmap engine: memory ~ chunk_size x parameters).
    engine : {'auto', 'hooks', 'vmap'}
        'hooks': per-example squared norms from layer inputs and output
        gradients (the engine of :mod:`ibscope.weights._pergrad`: closed forms
        for Linear and zero-padded Conv2d layers, grouped ones included,
        ``torch.func`` on the single module for other layers; one forward and
        one backward pass per chunk); 'vmap': whole-model ``vmap(grad)``
        per-example gradients; 'auto' (default) uses hooks where they apply
        and whole-model ``vmap(grad)`` gradients for the other parameters (a
        layer run more than once, an attention module returning a tuple, a
        weight read outside its module).
    output : None, str, int or callable
        Which part of the model's output holds the logits: None (a tensor
        output), a key or attribute name (``"logits"`` for a Hugging Face
        ``ModelOutput``), an index (tuples) or a ``callable(output) -> tensor``.
    """
    owner = "fisher"
    if engine not in ("auto", "hooks", "vmap"):
        raise ValueError(f"The 'engine' parameter of fisher must be 'auto', 'hooks' or 'vmap'. Got {engine!r} instead.")
    if kind not in ("model", "empirical"):
        raise ValueError(f"The 'kind' parameter of fisher must be 'model' or 'empirical'. Got {kind!r} instead.")
    if groups not in ("module", "parameter"):
        raise ValueError(f"The 'groups' parameter of fisher must be 'module' or 'parameter'. Got {groups!r} instead.")
    temperature = check_positive_float(temperature, "temperature", owner)
    n_samples = check_positive_int(n_samples, "n_samples", owner, allow_none=True)
    max_batches = check_positive_int(max_batches, "max_batches", owner, allow_none=True)
    chunk_size = check_positive_int(chunk_size, "chunk_size", owner)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"The 'seed' parameter of fisher must be an int. Got {seed!r} instead.")
    check_output(output, owner)
    params = select_parameters(model, include_bias=include_bias, exclude=exclude, owner=owner)
    check_exclude(model, exclude, owner)
    if kind == "empirical":  # only then are the labels used
        check_data_labels(model, data, owner)
    names = list(params)
    device = next(iter(params.values())).device
    gen = torch.Generator(device=device).manual_seed(seed)

    def nll(logits: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        """Per-example negative log-likelihood at temperature T, summed over positions: (batch,)."""
        per = F.cross_entropy((logits / temperature).movedim(-1, 1), yi, reduction="none")
        return per.reshape(per.shape[0], -1).sum(1)

    def sq_norms(x: Any, y: torch.Tensor) -> torch.Tensor:
        if engine != "vmap":
            if engine == "auto":  # hooks where they apply, whole-model torch.func for the rest
                cap = capture(model, names, None, x, owner=owner, loss_fn=nll, y=y, output=output)
            else:
                cap = capture(model, names, lambda out: nll(out, y), x, owner=owner, output=output)
            fast = cap.sq_norms()
            if fast is not None:
                return fast
            if engine == "hooks":
                raise ValueError("fisher: engine='hooks' cannot handle a layer called more than once; "
                                 "use engine='vmap' (or 'auto').")
        g = vmap_gradients(model, names, lambda o, t: nll(o, t).sum(), x, y, output=output, owner=owner)
        n = batch_len(x)
        return torch.stack([g[k].to(torch.float64).pow(2).reshape(n, -1).sum(1) for k in names], 1)

    totals = torch.zeros(len(names), dtype=torch.float64, device=device)
    n_examples = 0
    was_training = model.training
    model.eval()
    try:
        with math_attention():
            for xb, yb in iter_batches(data, device, max_batches=max_batches, owner=owner):
                for s in range(0, batch_len(xb), chunk_size):
                    x = {k: v[s:s + chunk_size] for k, v in xb.items()} if isinstance(xb, Mapping) \
                        else xb[s:s + chunk_size]
                    y = yb[s:s + chunk_size]
                    rows = batch_len(x)
                    with torch.no_grad():
                        logits = select_output(call_model(model, x), output, owner)
                    if logits.ndim < 2 or logits.shape[0] != rows:
                        raise ValueError("fisher: the model must return logits of shape (batch, classes) or "
                                         f"(batch, positions..., classes); got {tuple(logits.shape)}.")
                    check_finite_loss(logits, owner)
                    probs = torch.softmax(logits.double() / temperature, dim=-1)
                    acc = torch.zeros(rows, len(names), dtype=torch.float64, device=device)
                    if kind == "empirical":
                        target = y.long()
                        if logits.ndim == 2:
                            target = target.reshape(-1)
                        if tuple(target.shape) != tuple(logits.shape[:-1]):
                            raise ValueError(f"fisher: kind='empirical' needs labels of shape "
                                             f"{tuple(logits.shape[:-1])} for logits of shape "
                                             f"{tuple(logits.shape)}; got {tuple(y.shape)}.")
                        acc = sq_norms(x, target)
                    elif n_samples is None:
                        if logits.ndim > 2:
                            raise ValueError("fisher: n_samples=None (the exact expectation over classes) needs "
                                             f"logits of shape (batch, classes); got {tuple(logits.shape)}. "
                                             "Pass n_samples (labels sampled per position).")
                        for c in range(logits.shape[1]):
                            yc = torch.full((rows,), c, dtype=torch.long, device=device)
                            acc += probs[:, c:c + 1] * sq_norms(x, yc)
                    else:
                        flat = probs.reshape(-1, probs.shape[-1])
                        for _ in range(n_samples):
                            yc = torch.multinomial(flat, 1, generator=gen).reshape(logits.shape[:-1])
                            acc += sq_norms(x, yc)
                        acc /= n_samples
                    totals += acc.sum(0)
                    n_examples += rows
    finally:
        model.train(was_training)
    means = totals / n_examples
    per_layer: dict[str, float] = {}
    for j, n in enumerate(names):
        g = group_of(n, groups)
        per_layer[g] = per_layer.get(g, 0.0) + float(means[j])
    return FisherResult(
        trace=float(means.sum()), per_layer=per_layer, kind=kind, temperature=temperature, n_examples=n_examples,
        settings={"kind": kind, "temperature": temperature, "n_samples": n_samples, "max_batches": max_batches,
                  "engine": engine, "output": output if output is None or isinstance(output, (str, int))
                  else "callable",
                  "groups": groups, "include_bias": include_bias, "exclude": exclude, "seed": seed,
                  "parameters": names},
    )
