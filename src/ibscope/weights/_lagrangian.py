"""The information Lagrangian of Achille, Paolini and Soatto.

For trained weights w* and a Gaussian perturbation w ~ N(w*, Sigma),
Sigma = diag(sigma^2), the information Lagrangian is [1]_

    C(Sigma) = E_{w ~ N(w*, Sigma)} [ L(w) ] + beta * KL( N(w*, Sigma) || N(0, lambda^2 I) ),

with L the mean per-example loss (nats) on the data. The KL, per weight,

    KL = 1/2 [ sigma^2 / lambda^2 + w*^2 / lambda^2 - 1 - log(sigma^2 / lambda^2) ],

at the minimizing Sigma is the "information in the weights": the
weights whose perturbation does not hurt the loss get a large sigma (little
information), the others a small one. beta trades the two (beta = 1/n, n
the training-set size, makes C the negative ELBO per example); more beta,
less information.

The log-variances are learned with Adam (one per weight, or one per row of a
linear layer / filter of a convolution, the bias of a unit sharing its
unit's variance) on a *functional copy* of the weights: the caller's model is
never modified. The expectation uses the local reparameterization trick
(Kingma, Salimans, Welling 2015): for a linear map z = W a + b with
independent Gaussian weights, z is Gaussian with mean W* a + b* and variance
(sigma_W^2)(a^2) + sigma_b^2 (the same with a convolution for conv layers),
so the output is sampled instead of the weights (lower-variance gradients).
That applies to Linear and Conv1d/2d/3d layers called once per forward pass
through their own forward. Every other parameter (embeddings, layer norms,
the in-projection of ``nn.MultiheadAttention`` and its output projection,
which the attention module reads directly, Hugging Face ``Conv1D``, a tied or
shared weight) is perturbed in weight space, w = w* + sigma * eps with eps
drawn once per noise sample and shared by the batch (unbiased, with more
variance). Attention runs on PyTorch's math path
(:func:`~ibscope.weights._pergrad.math_attention`).

References
----------
.. [1] A. Achille, G. Paolini, S. Soatto, "Where is the information in a deep
   neural network?", arXiv:1905.12213, 2019.
.. [2] D. P. Kingma, T. Salimans, M. Welling, "Variational dropout and the
   local reparameterization trick", NeurIPS 2015.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._units import check_unit, from_nats
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
    _functional,
    call_model,
    check_output,
    math_attention,
    select_output,
    track_use,
)

__all__ = ["LagrangianResult", "information_lagrangian", "diagonal_gaussian_kl"]

_CONV = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


@dataclass(frozen=True)
class LagrangianResult:
    """KL(N(w*, Sigma) || N(0, lambda^2 I)) at the learned Sigma, total and per layer, in ``unit``."""

    total: float
    per_layer: dict[str, float]
    unit: str
    beta: float
    prior_std: float
    expected_loss: float  # E_w[L(w)] at the end, nats per example
    log_variances: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    history: list[float] = field(repr=False, default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        return tidy_rows(self.total, self.per_layer, "lagrangian_kl", self.unit, f"lagrangian_beta{self.beta:g}")


def diagonal_gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor, prior_std: float) -> torch.Tensor:
    """sum_j KL(N(mean_j, exp(log_var_j)) || N(0, prior_std^2)) in nats (log_var broadcasts to mean)."""
    lv = log_var.expand_as(mean)
    ratio = torch.exp(lv) / prior_std**2
    return 0.5 * (ratio + mean**2 / prior_std**2 - 1.0 - (lv - 2.0 * math.log(prior_std))).sum()


def _noise_hook(module: nn.Module, sig2: Callable[[], tuple[torch.Tensor, torch.Tensor | None]],
                gen: torch.Generator) -> Callable:
    def hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        a = args[0]
        var_w, var_b = sig2()
        if isinstance(mod, nn.Linear):
            var = F.linear(a * a, var_w, var_b)
        else:
            conv = _CONV[type(mod)]
            var = conv(a * a, var_w, var_b, mod.stride, mod.padding, mod.dilation, mod.groups)
        eps = torch.randn(output.shape, generator=gen, device=output.device, dtype=output.dtype)
        return output + torch.sqrt(var.clamp_min(1e-30)) * eps
    return hook


def information_lagrangian(model: nn.Module, loss_fn: Callable, data: Any, beta: float, *,
                           prior_std: float = 1.0, granularity: str = "weight", steps: int = 300,
                           lr: float = 0.1, init_std: float = 1e-2, n_mc: int = 1,
                           include_bias: bool = True, exclude: Any = None, groups: str = "module",
                           seed: int = 0, unit: str = "bits", output: Any = None) -> LagrangianResult:
    """Learn the diagonal noise of the information Lagrangian and return the KL in the weights.

    Parameters
    ----------
    model : torch.nn.Module
        Trained network (w*); only read: a functional copy is perturbed.
    loss_fn : callable
        ``loss_fn(outputs, y)``: per-example losses or their mean (nats).
    data : iterable of (x, y)
        Minibatches cycled through for ``steps`` optimizer steps (``x`` a
        tensor, integer token ids included, or a mapping of named inputs).
    beta : float
        Weight of the KL (>= 0); beta = 1/n is the variational-Bayes scale.
    prior_std : float
        lambda, the standard deviation of the prior N(0, lambda^2 I).
    granularity : {'weight', 'row', 'filter'}
        One log-variance per weight, or per output unit ('row' of a linear
        layer, 'filter' of a convolution; the two names are synonyms).
    steps, lr : int, float
        Adam steps on the log-variances and their learning rate.
    init_std : float
        Initial sigma, as a fraction of ``prior_std``.
    n_mc : int
        Noise samples per step.
    include_bias, exclude, groups
        Which parameters get noise (biases unless excluded) and per-layer keys.
    seed : int
        Seed of the noise.
    unit : {'bits', 'nats'}
    output : None, str, int or callable
        Which part of the model's output ``loss_fn`` receives: None (a tensor
        output), a key or attribute name (``"logits"`` for a Hugging Face
        ``ModelOutput``), an index (tuples) or a ``callable(output) -> tensor``.
    """
    owner = "information_lagrangian"
    if not callable(loss_fn):
        raise TypeError(f"The 'loss_fn' parameter of {owner} must be callable. Got {type(loss_fn).__name__} instead.")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"The 'beta' parameter of {owner} must be a float in [0, inf). Got {beta!r} instead.")
    if granularity not in ("weight", "row", "filter"):
        raise ValueError(f"The 'granularity' parameter of {owner} must be 'weight', 'row' or 'filter'. Got {granularity!r} instead.")
    if groups not in ("module", "parameter"):
        raise ValueError(f"The 'groups' parameter of {owner} must be 'module' or 'parameter'. Got {groups!r} instead.")
    prior_std = check_positive_float(prior_std, "prior_std", owner)
    init_std = check_positive_float(init_std, "init_std", owner)
    lr = check_positive_float(lr, "lr", owner)
    steps = check_positive_int(steps, "steps", owner)
    n_mc = check_positive_int(n_mc, "n_mc", owner)
    check_unit(unit)
    check_output(output, owner)
    params = select_parameters(model, include_bias=include_bias, exclude=exclude, owner=owner)
    check_exclude(model, exclude, owner)
    check_data_labels(model, data, owner)
    device = next(iter(params.values())).device
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    batches = list(iter_batches(data, device, owner=owner))
    # which layers take the local reparameterization: Linear / Conv called once, through their own forward
    owners = {n.rpartition(".")[0] for n in params}
    calls = dict.fromkeys(owners, 0)

    def count(mod_name: str) -> Callable:
        def hook(mod: nn.Module, args: tuple, out: Any) -> None:
            calls[mod_name] += 1
        return hook

    was_training = model.training
    model.eval()
    handles = [model.get_submodule(m).register_forward_hook(count(m)) for m in owners]
    try:
        with math_attention(), torch.no_grad(), track_use(model, list(params)) as use:
            select_output(call_model(model, batches[0][0]), output, owner)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    # one log-variance tensor per selected parameter
    init = 2.0 * math.log(init_std * prior_std)
    log_vars: dict[str, torch.Tensor] = {}
    modules: dict[str, nn.Module] = {}
    weight_noise: list[str] = []  # perturbed in weight space
    for name in params:
        mod_name, _, local = name.rpartition(".")
        mod = model.get_submodule(mod_name)
        if (isinstance(mod, (nn.Linear, *_CONV)) and local in ("weight", "bias") and calls[mod_name] == 1
                and mod_name not in use.foreign):
            modules[mod_name] = mod
        else:
            weight_noise.append(name)
        shape = base[name].shape
        if granularity == "weight":
            lv_shape = shape
        else:
            lv_shape = (shape[0],) + (1,) * (len(shape) - 1)
        log_vars[name] = torch.full(lv_shape, init, dtype=base[name].dtype, device=device, requires_grad=True)
    alias: dict[str, str] = {}
    if granularity != "weight":  # a unit's bias shares its row / filter variance
        for mod_name in modules:
            w, b = f"{mod_name}.weight", f"{mod_name}.bias"
            if w in log_vars and b in log_vars:
                alias[b] = w
                del log_vars[b]
    trainable = list(log_vars.values())
    names = list(params)

    def lv(name: str) -> torch.Tensor:
        return log_vars[alias[name]].reshape(-1) if name in alias else log_vars[name]

    def variances(mod_name: str) -> Callable[[], tuple[torch.Tensor, torch.Tensor | None]]:
        def f() -> tuple[torch.Tensor, torch.Tensor | None]:
            w, b = f"{mod_name}.weight", f"{mod_name}.bias"
            var_w = torch.exp(lv(w)).expand_as(base[w]) if w in params else torch.zeros_like(base[w])
            var_b = None
            if b in base:
                var_b = torch.exp(lv(b)).expand_as(base[b]) if b in params else torch.zeros_like(base[b])
            return var_w, var_b
        return f

    def kl_of(which: list[str]) -> torch.Tensor:
        return sum((diagonal_gaussian_kl(base[n], lv(n), prior_std) for n in which),
                   torch.zeros((), dtype=torch.float64, device=device))

    gen = torch.Generator(device=device).manual_seed(int(seed))
    handles = [m.register_forward_hook(_noise_hook(m, variances(n), gen)) for n, m in modules.items()]

    def perturbed() -> dict[str, torch.Tensor]:
        """The weights of one noise sample: w* + sigma * eps for the weight-space parameters."""
        if not weight_noise:
            return base
        out = dict(base)
        for n in weight_noise:
            eps = torch.randn(base[n].shape, generator=gen, device=device, dtype=base[n].dtype)
            out[n] = base[n] + torch.exp(0.5 * lv(n)).expand_as(base[n]) * eps
        return out

    opt = torch.optim.Adam(trainable, lr=lr)
    history: list[float] = []
    model.eval()
    last_losses: list[float] = []
    try:
        with math_attention():
            for step in range(steps):
                x, y = batches[step % len(batches)]
                loss = 0.0
                for _ in range(n_mc):
                    out = select_output(_functional(model, (perturbed(), buffers), x), output, owner)
                    per_ex = loss_fn(out, y)
                    check_finite_loss(per_ex, owner)
                    loss = loss + per_ex.mean() / n_mc
                obj = loss + beta * kl_of(names)
                opt.zero_grad(set_to_none=True)
                obj.backward()
                opt.step()
                history.append(float(obj.detach()))
                last_losses.append(float(loss.detach()))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    with torch.no_grad():
        per_layer: dict[str, float] = {}
        for n in names:
            g = group_of(n, groups)
            per_layer[g] = per_layer.get(g, 0.0) + float(diagonal_gaussian_kl(base[n], lv(n), prior_std))
        total = float(kl_of(names))
    tail = last_losses[-max(1, len(batches)):]
    return LagrangianResult(
        total=from_nats(total, unit), per_layer={k: from_nats(v, unit) for k, v in per_layer.items()}, unit=unit,
        beta=float(beta), prior_std=prior_std, expected_loss=float(sum(tail) / len(tail)),
        log_variances={n: lv(n).detach().clone() for n in names}, history=history,
        settings={"granularity": granularity, "steps": steps, "lr": lr, "init_std": init_std, "n_mc": n_mc,
                  "include_bias": include_bias, "exclude": exclude, "groups": groups, "seed": seed,
                  "parameters": names, "weight_space_noise": weight_noise},
    )
