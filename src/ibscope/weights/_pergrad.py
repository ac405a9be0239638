"""Per-example gradients of a loss: the one engine behind ``fisher``, ``iiw`` and ``PIBLoss``.

The information in the weights needs, for every example i, the gradient
g_i = grad_w l_i of its loss -- never the batch-mean gradient, whose square
misses the variance. Three quantities are read from them:

* squared norms |g_i|^2 per parameter tensor (the Fisher trace, :func:`fisher`);
* projections <dtheta, g_i> on a direction (the PAC-Bayes IB quadratic form,
  :func:`iiw` and :class:`~ibscope.objectives.PIBLoss`, where the direction is
  w - w0 and the projection must stay differentiable in w);
* the gradients themselves, (examples, parameters) (:func:`iiw` with
  ``method="gaussian_kl"``, :func:`~ibscope.objectives.per_example_gradients`).

Engine (:func:`capture`): one forward pass with a hook on every module that
owns a measured parameter (its inputs and output are kept) and one backward
pass to the module outputs, which gives each example's output gradient
delta_i (the examples are independent: the model runs in eval mode and the
loss is a sum of per-example terms). Nothing of size (examples x
parameters) is formed for the two layer types that are linear in their
weights:

* ``nn.Linear`` (y = W a + b): grad_W l_i = delta_i a_i^T, so
  |grad_W l_i|^2 = |delta_i|^2 |a_i|^2 (inputs of rank 2; for (batch, ...,
  features) inputs the per-example sum over positions is formed),
  |grad_b l_i|^2 = |delta_i|^2 and <dW, grad_W l_i> = <delta_i, dW a_i>;
* ``nn.Conv2d`` with zero padding and G groups: with U_i the unfolded input
  patches (``F.unfold``), grad_W l_i = delta_i U_i^T computed per group (the
  output channels of group k see only the input channels of group k), and
  <dW, grad_W l_i> = <delta_i, conv2d(a_i, dW, groups=G)>.

Any other module with parameters (LayerNorm, BatchNorm in eval mode,
Embedding, a custom layer) uses ``torch.func`` on that module alone: its
per-example parameter gradients are ``vmap(grad(<delta_i, m(a_i; w)>))`` and
its projections the forward-mode product ``jvp`` of m at a_i. Whole-model
``torch.func`` engines remain as references and for the cases hooks cannot
handle (a module called more than once needs the whole-model vmap for
squared norms): :func:`vmap_gradients` and :func:`jvp_projections`.

References
----------
.. [1] I. Goodfellow, "Efficient per-example gradient computations",
   arXiv:1510.01799, 2015 (the outer-product identity for linear layers).
.. [2] A. Rochette, A. Manoel, E. W. Tramel, "Efficient per-example gradient
   computations in convolutional neural networks", arXiv:1912.06015, 2019.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vmap
from torch.utils._pytree import tree_map

__all__ = ["Capture", "capture", "is_fast", "per_example_loss", "vmap_gradients", "jvp_projections"]


def is_fast(module: nn.Module) -> bool:
    """True for the layers with closed-form per-example gradients (Linear, zero-padded Conv2d)."""
    return isinstance(module, nn.Linear) or (
        isinstance(module, nn.Conv2d) and module.padding_mode == "zeros" and not isinstance(module.padding, str))


def per_example_loss(loss_fn: Callable, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``loss_fn`` applied to one example at a time: a (batch,) tensor, differentiable in ``out``.

    For losses that reduce over the batch (``reduction="mean"``) this is what
    the loss of a single example is; ``torch.func.vmap`` evaluates all
    examples at once (a Python loop is the fallback for a loss vmap cannot
    trace).
    """
    def one(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return loss_fn(o.unsqueeze(0), t.unsqueeze(0)).sum()

    try:
        return vmap(one)(out, y)
    except (RuntimeError, ValueError, TypeError, NotImplementedError):
        return torch.stack([one(out[i], y[i]) for i in range(out.shape[0])])


def _detach_tree(tree: Any) -> Any:
    return tree_map(lambda a: a.detach() if isinstance(a, torch.Tensor) else a, tree)


class Capture:
    """Inputs and output gradients of the measured modules for one batch (see the module notes).

    Built by :func:`capture`. ``rows`` is the number of examples (or 1 when
    the loss was a scalar for the whole batch: then every quantity is that of
    the batch loss). Column j of every result belongs to ``names[j]``.
    """

    def __init__(self, model: nn.Module, names: list[str], rows: int, per_example: bool,
                 records: dict[str, list[tuple[Any, Any, torch.Tensor]]], owner: str):
        self.model, self.names, self.rows, self.per_example = model, names, rows, per_example
        self.records, self.owner = records, owner
        self._modules = {m: model.get_submodule(m) for m in records}
        self._params = dict(model.named_parameters())
        # generic modules are differentiated later (lazily): keep their weights as they were at
        # capture time, so that a kept Capture (PIBLoss's frozen Fisher) stays frozen
        self._frozen = {m: {k: v.detach().clone() for k, v in mod.named_parameters(recurse=False)}
                        for m, mod in self._modules.items() if not is_fast(mod)}
        self._cache: dict[tuple[str, int], torch.Tensor] = {}

    # ----------------------------------------------------------------- helpers
    def _split(self, name: str) -> tuple[str, str, nn.Module]:
        mod_name, _, local = name.rpartition(".")
        return mod_name, local, self._modules[mod_name]

    def _fold(self, prod: torch.Tensor, mod_name: str) -> torch.Tensor:
        """Per-row sums of an elementwise product (rows first, or a whole-batch scalar)."""
        if not self.per_example:
            return prod.sum().reshape(1)
        if prod.ndim == 0 or prod.shape[0] != self.rows:
            raise ValueError(f"{self.owner}: module '{mod_name}' output does not keep the batch dimension "
                             f"first; use engine='jvp' (iiw) or engine='vmap' (fisher).")
        return prod.reshape(prod.shape[0], -1).sum(1)

    def _local_grads(self, module: nn.Module, local: str, args: Any, kwargs: Any,
                     g: torch.Tensor, mod_name: str) -> torch.Tensor:
        """torch.func per-example gradient of one parameter of a generic module: (rows, *shape)."""
        frozen = self._frozen[mod_name]
        w = frozen[local]
        fixed = {k: v for k, v in frozen.items() if k != local}
        if not self.per_example:
            def whole(wt: torch.Tensor) -> torch.Tensor:
                return (functional_call(module, {**fixed, local: wt}, args, kwargs) * g).sum()
            return grad(whole)(w).unsqueeze(0)
        if kwargs or not all(isinstance(a, torch.Tensor) and a.ndim and a.shape[0] == self.rows for a in args):
            raise ValueError(f"{self.owner}: module '{mod_name}' ({type(module).__name__}) is called with "
                             "keyword or non-batched arguments; its per-example gradients need the whole-model "
                             "engine (engine='vmap' for fisher, 'jvp' for iiw).")

        def one(wt: torch.Tensor, gi: torch.Tensor, *ai: torch.Tensor) -> torch.Tensor:
            out = functional_call(module, {**fixed, local: wt}, tuple(a.unsqueeze(0) for a in ai))
            return (out * gi.unsqueeze(0)).sum()

        return vmap(grad(one), in_dims=(None, 0, *([0] * len(args))))(w, g, *args)

    # ---------------------------------------------------------------- results
    def gradients(self) -> dict[str, torch.Tensor]:
        """Per-example gradients ``name -> (rows, *param.shape)`` (model dtype); calls are summed."""
        out = {n: torch.zeros(self.rows, *self._params[n].shape, dtype=self._params[n].dtype,
                              device=self._params[n].device) for n in self.names}
        for name in self.names:
            mod_name, local, module = self._split(name)
            for i, (args, kwargs, _, g) in enumerate(self.records[mod_name]):
                if g is None:
                    continue
                out[name] += self._grad_of(module, local, args, kwargs, g, mod_name, i)
        return out

    def _grad_of(self, module: nn.Module, local: str, args: Any, kwargs: Any, g: torch.Tensor,
                 mod_name: str, call: int) -> torch.Tensor:
        if not is_fast(module) or kwargs or len(args) != 1 or local not in ("weight", "bias"):
            key = (f"{mod_name}.{local}", call)
            if key not in self._cache:
                self._cache[key] = self._local_grads(module, local, args, kwargs, g, mod_name)
            return self._cache[key]
        a = args[0]
        if not self.per_example:  # the batch as one row
            a, g = a.unsqueeze(0), g.unsqueeze(0)
        b = a.shape[0]
        if isinstance(module, nn.Linear):
            g3 = g.reshape(b, -1, g.shape[-1])
            if local == "bias":
                return g3.sum(1)
            return torch.einsum("bto,bti->boi", g3, a.reshape(b, -1, a.shape[-1]))
        g3 = g.reshape(b, g.shape[1], -1)  # (b, C_out, P)
        if local == "bias":
            return g3.sum(2)
        u = F.unfold(a, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride)
        groups = module.groups
        gg = g3.reshape(b, groups, -1, g3.shape[2])
        ug = u.reshape(b, groups, -1, u.shape[2])
        return torch.einsum("bgop,bgkp->bgok", gg, ug).reshape(b, *module.weight.shape)

    def sq_norms(self) -> torch.Tensor | None:
        """Per-example squared gradient norms, float64 (rows, len(names)); None when a measured
        module ran more than once (the per-example gradient is then a sum over calls: use
        :func:`vmap_gradients`)."""
        if any(len(self.records[self._split(n)[0]]) > 1 for n in self.names):
            return None
        cols = []
        for name in self.names:
            mod_name, local, module = self._split(name)
            recs = self.records[mod_name]
            if not recs or recs[0][3] is None:
                cols.append(torch.zeros(self.rows, dtype=torch.float64, device=self._params[name].device))
                continue
            args, kwargs, _, g = recs[0]
            fast = is_fast(module) and not kwargs and len(args) == 1 and local in ("weight", "bias")
            if fast and self.per_example and isinstance(module, nn.Linear) and args[0].ndim == 2:
                a, g = args[0].to(torch.float64), g.to(torch.float64)
                g2 = g.pow(2).sum(1)
                cols.append(g2 * a.pow(2).sum(1) if local == "weight" else g2)
            elif fast and self.per_example and isinstance(module, nn.Conv2d):
                a, g = args[0].to(torch.float64), g.to(torch.float64)
                n = a.shape[0]
                g = g.reshape(n, g.shape[1], -1)  # (n, C_out, P)
                if local == "bias":
                    cols.append(g.sum(2).pow(2).sum(1))
                else:
                    u = F.unfold(a, module.kernel_size, dilation=module.dilation, padding=module.padding,
                                 stride=module.stride)
                    if module.groups == 1:
                        cols.append(torch.einsum("nop,nkp->nok", g, u).pow(2).sum((1, 2)))
                    else:
                        gg = g.reshape(n, module.groups, -1, g.shape[2])
                        ug = u.reshape(n, module.groups, -1, u.shape[2])
                        cols.append(torch.einsum("ngop,ngkp->ngok", gg, ug).pow(2).sum((1, 2, 3)))
            else:
                d = self._grad_of(module, local, args, kwargs, g, mod_name, 0).to(torch.float64)
                cols.append(d.pow(2).reshape(d.shape[0], -1).sum(1))
        return torch.stack(cols, 1)

    def projections(self, direction: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """<direction, g_i> per parameter tensor, float64 (rows, len(names)).

        When ``direction`` requires grad (and grad mode is on) the result is
        differentiable in it (``PIBLoss``: the gradient of the quadratic form
        in w); otherwise it is computed without a graph.
        """
        track = torch.is_grad_enabled() and any(direction[n].requires_grad for n in self.names)
        device = next(iter(direction.values())).device
        cols = [torch.zeros(self.rows, dtype=torch.float64, device=device) for _ in self.names]
        for j, name in enumerate(self.names):
            mod_name, local, module = self._split(name)
            d = direction[name]
            for i, (args, kwargs, _, g) in enumerate(self.records[mod_name]):
                if g is None:
                    continue
                with torch.set_grad_enabled(track):
                    t = self._tangent(module, local, args, kwargs, d)
                    if t is None:  # generic module
                        if track:  # differentiable: through its per-example gradients
                            gr = self._grad_of(module, local, args, kwargs, g, mod_name, i)
                            cols[j] = cols[j] + (gr * d).reshape(gr.shape[0], -1).sum(1).to(torch.float64)
                            continue

                        frozen = self._frozen[mod_name]

                        def f(w: torch.Tensor, _local: str = local, _m: nn.Module = module, _a: Any = args,
                              _k: Any = kwargs, _fr: dict = frozen) -> torch.Tensor:
                            return functional_call(_m, {**_fr, _local: w}, _a, _k)
                        with torch.no_grad():
                            _, t = jvp(f, (frozen[local],), (d,))
                    prod = (g * (t if track else t.detach())).to(torch.float64)
                    cols[j] = cols[j] + self._fold(prod, mod_name)
        return torch.stack(cols, 1)

    @staticmethod
    def _tangent(module: nn.Module, local: str, args: Any, kwargs: Any,
                 direction: torch.Tensor) -> torch.Tensor | None:
        """J_module . direction for Linear / Conv2d (linear in their parameters: the layer
        applied with the direction as weight); None for other modules."""
        if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor) or not is_fast(module):
            return None
        a = args[0]
        if isinstance(module, nn.Linear):
            if local == "weight":
                return F.linear(a, direction)
            if local == "bias":  # broadcasts against the output gradient
                return direction
        else:
            if local == "weight":
                return F.conv2d(a, direction, None, module.stride, module.padding, module.dilation, module.groups)
            if local == "bias":
                return direction.reshape(1, -1, 1, 1)
        return None


def capture(model: nn.Module, names: Sequence[str], loss_of_output: Callable[[Any], torch.Tensor],
            x: Any, *, owner: str = "capture") -> Capture:
    """Run ``model(x)`` once with hooks and backpropagate ``loss_of_output(output)`` to the
    outputs of the modules owning ``names``.

    ``loss_of_output`` returns per-example losses (shape (batch,), summed for
    the backward pass: examples must be independent, so run the model in
    eval mode) or a scalar for the whole batch (then ``rows == 1``). The
    model's parameters are not changed and no parameter gradient is
    accumulated.
    """
    names = list(names)
    by_module: dict[str, list[str]] = {}
    for name in names:
        by_module.setdefault(name.rpartition(".")[0], []).append(name)
    raw: dict[str, list[tuple[Any, Any, Any]]] = {m: [] for m in by_module}
    state = {"on": True}
    handles = []

    def make_hook(mod_name: str) -> Callable:
        def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            if state["on"]:
                raw[mod_name].append((args, kwargs, output))
        return hook

    try:
        for mod_name in by_module:
            handles.append(model.get_submodule(mod_name).register_forward_hook(make_hook(mod_name), with_kwargs=True))
        with torch.enable_grad():
            out = model(x)
            loss = loss_of_output(out)
            if not isinstance(loss, torch.Tensor):
                raise TypeError(f"{owner}: loss_fn must return a tensor; got {type(loss).__name__}.")
            if not bool(torch.isfinite(loss.detach()).all()):
                raise ValueError(
                    f"{owner}: the loss is NaN or infinite on a batch; check the model's outputs, the targets "
                    f"and loss_fn (a diverged model has no meaningful information in its weights).")
            per_example = loss.ndim >= 1
            batch = out.shape[0] if isinstance(out, torch.Tensor) and out.ndim else None
            if per_example and (loss.ndim != 1 or (batch is not None and loss.shape[0] != batch)):
                raise ValueError(f"{owner}: loss_fn returned shape {tuple(loss.shape)}; expected ({batch},) "
                                 f"per-example losses or a scalar.")
            outputs, keys = [], []
            for mod_name, recs in raw.items():
                for k, (_, _, o) in enumerate(recs):
                    if not isinstance(o, torch.Tensor):
                        raise ValueError(f"{owner}: module '{mod_name}' returns a {type(o).__name__}, not a tensor; "
                                         f"use engine='jvp' (iiw) or engine='vmap' (fisher).")
                    if o.requires_grad:
                        outputs.append(o)
                        keys.append((mod_name, k))
            grads = torch.autograd.grad(loss.sum(), outputs, allow_unused=True) if outputs else []
        state["on"] = False
    finally:
        for h in handles:
            h.remove()
    got = dict(zip(keys, grads, strict=True))
    records = {m: [(_detach_tree(a), _detach_tree(k), o.detach(),
                    None if got.get((m, i)) is None else got[(m, i)].detach())
                   for i, (a, k, o) in enumerate(recs)] for m, recs in raw.items()}
    rows = int(loss.shape[0]) if per_example else 1
    return Capture(model, names, rows, per_example, records, owner)


def vmap_gradients(model: nn.Module, names: Sequence[str], loss_one: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Whole-model reference engine: ``vmap(grad)`` per-example gradients ``name -> (batch, *shape)``.

    ``loss_one(output, target)`` gets a batch of one example and returns a
    scalar (any layer type; memory ~ batch x parameters).
    """
    names = list(names)
    named = dict(model.named_parameters())
    sel = {n: named[n].detach() for n in names}
    others = {n: p.detach() for n, p in named.items() if n not in sel}
    buffers = dict(model.named_buffers())

    def one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**others, **p}, buffers), (xi.unsqueeze(0),))
        return loss_one(out, yi.unsqueeze(0)).sum()

    return vmap(grad(one), in_dims=(None, 0, 0))(sel, x, y)


def jvp_projections(model: nn.Module, loss_fn: Callable, names: Sequence[str],
                    direction: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                    owner: str) -> tuple[torch.Tensor, bool]:
    """Whole-model forward-mode engine: one ``jvp`` of the loss per parameter tensor.

    Returns ``(proj, per_example)`` with ``proj`` float64 of shape (batch,
    len(names)), or (1, len(names)) when ``loss_fn`` returns a scalar.
    """
    names = list(names)
    named = dict(model.named_parameters())
    base = {n: named[n].detach() for n in names}
    with torch.no_grad():
        loss0 = loss_fn(model(x), y)
    if not isinstance(loss0, torch.Tensor):
        raise TypeError(f"{owner}: loss_fn must return a tensor; got {type(loss0).__name__}.")
    if not bool(torch.isfinite(loss0).all()):
        raise ValueError(f"{owner}: the loss is NaN or infinite on a batch; check the model's outputs, the "
                         f"targets and loss_fn (a diverged model has no meaningful information in its weights).")
    per_example = loss0.ndim >= 1
    rows = x.shape[0] if per_example else 1
    proj = torch.zeros(rows, len(names), dtype=torch.float64, device=x.device)
    for j, name in enumerate(names):
        def f(w: torch.Tensor, _name: str = name) -> torch.Tensor:
            return loss_fn(functional_call(model, {**base, _name: w}, (x,)), y)
        with torch.no_grad():
            _, t = jvp(f, (base[name],), (direction[name],))
        proj[:, j] = t.detach().to(torch.float64).reshape(rows)
    return proj, per_example
