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

import contextlib
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vmap
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves, tree_map

__all__ = ["Capture", "capture", "is_fast", "per_example_loss", "vmap_gradients", "jvp_projections",
           "math_attention", "select_output", "check_output", "call_model", "batch_len", "track_use"]


# --------------------------------------------------------------------------- #
# attention models: the math path, model outputs, token and dict inputs
# --------------------------------------------------------------------------- #
@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Run attention on PyTorch's differentiable reference ("math") path, then restore the settings.

    For its duration the ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``
    fast path is off (``torch.backends.mha.set_fastpath_enabled(False)``;
    its fused ``aten::_transformer_encoder_layer_fwd`` and
    ``_native_multi_head_attention`` support neither forward-mode AD nor
    ``torch.func`` transforms) and ``F.scaled_dot_product_attention`` may
    only use the math backend (:func:`torch.nn.attention.sdpa_kernel` with
    ``SDPBackend.MATH``; the flash / memory-efficient kernels lack forward AD
    and vmap rules). Every weight-information computation runs inside it; the
    user's fast-path flag and SDPA backends are restored afterwards, also
    when the computation raises. The math path computes the same function
    (to floating-point rounding), only without fused kernels.

    Examples
    --------
    >>> import torch
    >>> before = torch.backends.mha.get_fastpath_enabled()
    >>> with math_attention():
    ...     torch.backends.mha.get_fastpath_enabled()
    False
    >>> torch.backends.mha.get_fastpath_enabled() == before
    True
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


_OUTPUT_HELP = ("pass output= to say which part is the prediction: a key or attribute name (output='logits' "
                "for Hugging Face models), an index (output=0 for a tuple) or a callable(output) -> tensor")


def check_output(output: Any, owner: str) -> None:
    """The ``output`` selector must be None, a str, an int or a callable."""
    if output is None or isinstance(output, str) or callable(output):
        return
    if isinstance(output, numbers.Integral) and not isinstance(output, bool):
        return
    raise TypeError(f"The 'output' parameter of {owner} must be None, a key/attribute name (str), an index (int) "
                    f"or a callable(output) -> tensor. Got {type(output).__name__} instead.")


def select_output(out: Any, output: Any, owner: str) -> torch.Tensor:
    """The prediction tensor of a model's output: ``out`` itself when ``output`` is None, else
    ``out[output]`` / ``getattr(out, output)`` (str), ``out[output]`` (int) or ``output(out)``."""
    if output is None:
        if isinstance(out, torch.Tensor):
            return out
        raise TypeError(f"{owner}: the model returned a {type(out).__name__}, not a tensor; {_OUTPUT_HELP}.")
    if isinstance(output, str):
        if isinstance(out, Mapping) and output in out:
            sel = out[output]
        elif hasattr(out, output):
            sel = getattr(out, output)
        else:
            raise ValueError(f"{owner}: output={output!r}, but the model's {type(out).__name__} has no key or "
                             f"attribute {output!r}.")
    elif callable(output):
        sel = output(out)
    else:
        if not isinstance(out, (tuple, list)) or not -len(out) <= int(output) < len(out):
            raise ValueError(f"{owner}: output={output!r} indexes the model's output, but it is a "
                             f"{type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (tuple, list))
                                                         else "") + ".")
        sel = out[int(output)]
    if not isinstance(sel, torch.Tensor):
        raise TypeError(f"{owner}: output={output!r} selects a {type(sel).__name__}, not a tensor.")
    return sel


def call_model(model: nn.Module, x: Any) -> Any:
    """``model(**x)`` for a mapping of named inputs (e.g. ``input_ids``, ``attention_mask``), else ``model(x)``."""
    return model(**x) if isinstance(x, Mapping) else model(x)


def _functional(model: nn.Module, tensors: Any, x: Any) -> Any:
    if isinstance(x, Mapping):
        return functional_call(model, tensors, (), dict(x))
    return functional_call(model, tensors, (x,))


def batch_len(x: Any) -> int:
    """Number of examples in a batch: rows of a tensor, or of the first tensor of a mapping."""
    if isinstance(x, Mapping):
        for v in x.values():
            if isinstance(v, torch.Tensor) and v.ndim:
                return int(v.shape[0])
        return 0
    return int(x.shape[0]) if x.ndim else 0


def _rows(x: Any, i: int, j: int) -> Any:
    return {k: v[i:j] for k, v in x.items()} if isinstance(x, Mapping) else x[i:j]


class _UseTracker(TorchFunctionMode):
    """Which measured parameters are used by code outside their own module's forward.

    A stack of running modules (forward pre-hooks / hooks) and a torch-function
    mode that sees every torch call with its arguments: a parameter passed to a
    call while the innermost running module is not its owner (the output
    projection read directly by ``nn.MultiheadAttention``, a tied embedding
    used by a language-model head) cannot be differentiated through its own
    module's hooks.
    """

    def __init__(self, owner_of: dict[int, str]):
        super().__init__()
        self.owner_of, self.stack, self.foreign = owner_of, [], set()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.owner_of:
            current = self.stack[-1] if self.stack else None
            for a in tree_leaves((args, kwargs)):
                if isinstance(a, torch.Tensor):
                    owner = self.owner_of.get(id(a))
                    if owner is not None and owner != current:
                        self.foreign.add(owner)
        return func(*args, **kwargs)


@contextlib.contextmanager
def track_use(model: nn.Module, names: Sequence[str]) -> Iterator[_UseTracker]:
    """Context: ``tracker.foreign`` collects the owning modules (names) of those ``names`` whose
    parameter is used outside that module's own forward (see :class:`_UseTracker`)."""
    params = dict(model.named_parameters())
    owner_of = {id(params[n]): n.rpartition(".")[0] for n in names}
    # a parameter held by two different modules (tied weights) is used by more than one module
    holders: dict[int, set[int]] = {}
    for mod in model.modules():
        for p in mod.parameters(recurse=False):
            holders.setdefault(id(p), set()).add(id(mod))
    tracker = _UseTracker(owner_of)
    tracker.foreign |= {owner_of[i] for i, ms in holders.items() if len(ms) > 1 and i in owner_of}
    def enter(name: str) -> Callable:
        def pre_hook(module: nn.Module, args: Any) -> None:
            tracker.stack.append(name)
        return pre_hook

    def leave(module: nn.Module, args: Any, out: Any) -> None:
        if tracker.stack:
            tracker.stack.pop()

    handles = []
    for name, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(enter(name)))
        handles.append(mod.register_forward_hook(leave))
    try:
        with tracker:
            yield tracker
    finally:
        for h in handles:
            h.remove()


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


def _as_gradient_direction(module: nn.Module, local: str, direction: torch.Tensor) -> torch.Tensor:
    """The direction as autograd's gradient sees the parameter: an ``nn.Embedding``'s ``padding_idx``
    row gets no gradient (by PyTorch's convention), so its component is dropped before a forward-mode
    product (which would otherwise count it)."""
    if isinstance(module, nn.Embedding) and local == "weight" and module.padding_idx is not None:
        direction = direction.clone()
        direction[module.padding_idx] = 0
    return direction


def _detach_tree(tree: Any) -> Any:
    return tree_map(lambda a: a.detach() if isinstance(a, torch.Tensor) else a, tree)


class Capture:
    """Inputs and output gradients of the measured modules for one batch (see the module notes).

    Built by :func:`capture`. ``rows`` is the number of examples (or 1 when
    the loss was a scalar for the whole batch: then every quantity is that of
    the batch loss). Column j of every result belongs to ``names[j]``.
    """

    def __init__(self, model: nn.Module, names: list[str], rows: int, per_example: bool,
                 records: dict[str, list[tuple[Any, Any, torch.Tensor]]], owner: str,
                 whole: Sequence[str] = (), fallback: Mapping[str, Any] | None = None):
        self.model, self.names, self.rows, self.per_example = model, names, rows, per_example
        self.records, self.owner = records, owner
        # parameters differentiated through the whole model (torch.func), see capture()
        self.whole = [n for n in names if n in set(whole)]
        self._fallback = fallback
        self._whole_grads: dict[str, torch.Tensor] | None = None
        self._whole_set = set(self.whole)
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

    def _whole_gradients(self) -> dict[str, torch.Tensor]:
        """Per-example gradients of the ``whole`` parameters by ``torch.func`` on the whole model
        (``vmap(grad)`` over examples; one example at a time where vmap cannot trace the model)."""
        if self._whole_grads is not None:
            return self._whole_grads
        fb = self._fallback
        assert fb is not None
        model, loss_fn, output, owner = self.model, fb["loss_fn"], fb["output"], self.owner
        sel = {n: fb["params"][n] for n in self.whole}
        rest = {n: v for n, v in fb["params"].items() if n not in sel}
        buffers = fb["buffers"]

        def loss_at(p: dict[str, torch.Tensor], xx: Any, yy: torch.Tensor) -> torch.Tensor:
            out = select_output(_functional(model, ({**rest, **p}, buffers), xx), output, owner)
            return loss_fn(out, yy).sum()

        x, y = fb["x"], fb["y"]
        if not self.per_example:
            g = grad(loss_at)(sel, x, y)
            self._whole_grads = {n: g[n].unsqueeze(0) for n in sel}
            return self._whole_grads

        def one(p: dict[str, torch.Tensor], xi: Any, yi: torch.Tensor) -> torch.Tensor:
            return loss_at(p, tree_map(lambda t: t.unsqueeze(0), xi), yi.unsqueeze(0))

        try:
            g = vmap(grad(one), in_dims=(None, 0, 0))(sel, x, y)
        except (RuntimeError, ValueError, TypeError, NotImplementedError):
            # data-dependent control flow (e.g. mask construction) that vmap cannot trace
            rows = [grad(loss_at)(sel, _rows(x, i, i + 1), y[i:i + 1]) for i in range(self.rows)]
            g = {n: torch.stack([r[n] for r in rows]) for n in sel}
        self._whole_grads = {n: g[n].detach() for n in sel}
        return self._whole_grads

    # ---------------------------------------------------------------- results
    def gradients(self) -> dict[str, torch.Tensor]:
        """Per-example gradients ``name -> (rows, *param.shape)`` (model dtype); calls are summed."""
        out = {n: torch.zeros(self.rows, *self._params[n].shape, dtype=self._params[n].dtype,
                              device=self._params[n].device) for n in self.names}
        for name in self.names:
            if name in self._whole_set:
                out[name] += self._whole_gradients()[name].to(out[name].dtype)
                continue
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
        if any(len(self.records[self._split(n)[0]]) > 1 for n in self.names if n not in self._whole_set):
            return None
        cols = []
        for name in self.names:
            if name in self._whole_set:
                d = self._whole_gradients()[name].to(torch.float64)
                cols.append(d.pow(2).reshape(d.shape[0], -1).sum(1))
                continue
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
            d = direction[name]
            if name in self._whole_set:  # <d, g_i> from the whole-model per-example gradients
                with torch.set_grad_enabled(track):
                    gr = self._whole_gradients()[name]
                    cols[j] = cols[j] + (gr * d).reshape(gr.shape[0], -1).sum(1).to(torch.float64)
                continue
            mod_name, local, module = self._split(name)
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
                        dg = _as_gradient_direction(module, local, d)

                        def f(w: torch.Tensor, _local: str = local, _m: nn.Module = module, _a: Any = args,
                              _k: Any = kwargs, _fr: dict = frozen) -> torch.Tensor:
                            return functional_call(_m, {**_fr, _local: w}, _a, _k)
                        with torch.no_grad():
                            _, t = jvp(f, (frozen[local],), (dg,))
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


def _hookable(module: nn.Module, recs: list[tuple[Any, Any, Any]], rows: int, per_example: bool) -> bool:
    """Whether the recorded calls of ``module`` can be differentiated through its hooks."""
    for args, kwargs, o in recs:
        if not isinstance(o, torch.Tensor):
            return False
        if per_example:
            if kwargs or o.ndim == 0 or o.shape[0] != rows:
                return False
            if not all(isinstance(a, torch.Tensor) and a.ndim and a.shape[0] == rows for a in args):
                return False
    return True


def capture(model: nn.Module, names: Sequence[str], loss_of_output: Callable[[Any], torch.Tensor] | None,
            x: Any, *, owner: str = "capture", loss_fn: Callable | None = None, y: Any = None,
            output: Any = None) -> Capture:
    """Run ``model(x)`` once with hooks and backpropagate ``loss_of_output(output)`` to the
    outputs of the modules owning ``names``.

    ``loss_of_output`` returns per-example losses (shape (batch,), summed for
    the backward pass: examples must be independent, so run the model in
    eval mode) or a scalar for the whole batch (then ``rows == 1``). The
    model's parameters are not changed and no parameter gradient is
    accumulated. ``x`` is a tensor (``model(x)``) or a mapping of named
    inputs (``model(**x)``); ``output`` selects the prediction from the
    model's output (:func:`select_output`).

    With ``loss_fn`` and ``y`` (``loss_of_output(out) == loss_fn(out, y)``;
    ``loss_of_output`` may then be None) the parameters that the hooks cannot
    handle -- of a module returning a tuple (``nn.MultiheadAttention``), called
    with keyword or non-batched arguments, called more than once, or whose
    parameter is read outside the module's own forward (the attention output
    projection, tied embeddings) -- are differentiated through the whole model
    with ``torch.func`` (``Capture.whole``). Without them such a parameter is a
    ValueError naming its module.
    """
    names = list(names)
    fallback_ok = loss_fn is not None and y is not None
    if loss_of_output is None:
        if not fallback_ok:
            raise TypeError(f"{owner}: capture needs loss_of_output, or loss_fn and y.")
        loss_of_output = lambda out: loss_fn(out, y)  # noqa: E731
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
            with track_use(model, names) as use:
                out = select_output(call_model(model, x), output, owner)
                loss = loss_of_output(out)
            state["on"] = False
            if not isinstance(loss, torch.Tensor):
                raise TypeError(f"{owner}: loss_fn must return a tensor; got {type(loss).__name__}.")
            if not bool(torch.isfinite(loss.detach()).all()):
                raise ValueError(
                    f"{owner}: the loss is NaN or infinite on a batch; check the model's outputs, the targets "
                    f"and loss_fn (a diverged model has no meaningful information in its weights).")
            per_example = loss.ndim >= 1
            batch = out.shape[0] if out.ndim else None
            if per_example and (loss.ndim != 1 or (batch is not None and loss.shape[0] != batch)):
                raise ValueError(f"{owner}: loss_fn returned shape {tuple(loss.shape)}; expected ({batch},) "
                                 f"per-example losses or a scalar.")
            rows = int(loss.shape[0]) if per_example else 1
            whole_modules = set()
            for mod_name, recs in raw.items():
                module = model.get_submodule(mod_name)
                if mod_name in use.foreign or not _hookable(module, recs, rows, per_example) or (
                        fallback_ok and len(recs) > 1):
                    whole_modules.add(mod_name)
            if whole_modules and not fallback_ok:
                bad = sorted(whole_modules)[0]
                kinds = {type(o).__name__ for _, _, o in raw[bad] if not isinstance(o, torch.Tensor)}
                what = (f"returns a {kinds.pop()}, not a tensor" if kinds else
                        "has a parameter used outside its own forward (shared or read by another module)"
                        if bad in use.foreign else "is called with keyword or non-batched arguments")
                if kinds or bad in use.foreign:
                    raise ValueError(f"{owner}: module '{bad}' {what}; its per-example gradients need the "
                                     "whole-model engine (engine='jvp' for iiw, engine='vmap' for fisher).")
                whole_modules = set()  # the generic-module path raises a precise error if it is used
            outputs, keys = [], []
            for mod_name, recs in raw.items():
                if mod_name in whole_modules:
                    continue
                for k, (_, _, o) in enumerate(recs):
                    if o.requires_grad:
                        outputs.append(o)
                        keys.append((mod_name, k))
            grads = torch.autograd.grad(loss.sum(), outputs, allow_unused=True) if outputs else []
    finally:
        state["on"] = False
        for h in handles:
            h.remove()
    got = dict(zip(keys, grads, strict=True))
    records = {m: [(_detach_tree(a), _detach_tree(k), o.detach(),
                    None if got.get((m, i)) is None else got[(m, i)].detach())
                   for i, (a, k, o) in enumerate(recs)] for m, recs in raw.items() if m not in whole_modules}
    whole = [n for n in names if n.rpartition(".")[0] in whole_modules]
    fallback = None
    if whole:
        fallback = {"loss_fn": loss_fn, "output": output, "x": _detach_tree(x), "y": y,
                    "params": {n: p.detach().clone() for n, p in model.named_parameters()},
                    "buffers": {n: b.detach() for n, b in model.named_buffers()}}
    return Capture(model, names, rows, per_example, records, owner, whole=whole, fallback=fallback)


def vmap_gradients(model: nn.Module, names: Sequence[str], loss_one: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   x: Any, y: torch.Tensor, *, output: Any = None,
                   owner: str = "vmap_gradients") -> dict[str, torch.Tensor]:
    """Whole-model reference engine: ``vmap(grad)`` per-example gradients ``name -> (batch, *shape)``.

    ``loss_one(output, target)`` gets a batch of one example and returns a
    scalar (any layer type; memory ~ batch x parameters). ``x`` is a tensor
    or a mapping of named inputs; ``output`` selects the prediction
    (:func:`select_output`).
    """
    names = list(names)
    named = dict(model.named_parameters())
    sel = {n: named[n].detach() for n in names}
    others = {n: p.detach() for n, p in named.items() if n not in sel}
    buffers = dict(model.named_buffers())

    def one(p: dict[str, torch.Tensor], xi: Any, yi: torch.Tensor) -> torch.Tensor:
        out = _functional(model, ({**others, **p}, buffers), tree_map(lambda t: t.unsqueeze(0), xi))
        return loss_one(select_output(out, output, owner), yi.unsqueeze(0)).sum()

    return vmap(grad(one), in_dims=(None, 0, 0))(sel, x, y)


def jvp_projections(model: nn.Module, loss_fn: Callable, names: Sequence[str],
                    direction: Mapping[str, torch.Tensor], x: Any, y: torch.Tensor,
                    owner: str, *, output: Any = None) -> tuple[torch.Tensor, bool]:
    """Whole-model forward-mode engine: one ``jvp`` of the loss per parameter tensor.

    Returns ``(proj, per_example)`` with ``proj`` float64 of shape (batch,
    len(names)), or (1, len(names)) when ``loss_fn`` returns a scalar.
    """
    names = list(names)
    named = dict(model.named_parameters())
    base = {n: named[n].detach() for n in names}
    with torch.no_grad():
        loss0 = loss_fn(select_output(call_model(model, x), output, owner), y)
    if not isinstance(loss0, torch.Tensor):
        raise TypeError(f"{owner}: loss_fn must return a tensor; got {type(loss0).__name__}.")
    if not bool(torch.isfinite(loss0).all()):
        raise ValueError(f"{owner}: the loss is NaN or infinite on a batch; check the model's outputs, the "
                         f"targets and loss_fn (a diverged model has no meaningful information in its weights).")
    per_example = loss0.ndim >= 1
    rows = batch_len(x) if per_example else 1
    device = next(iter(base.values())).device
    proj = torch.zeros(rows, len(names), dtype=torch.float64, device=device)
    for j, name in enumerate(names):
        def f(w: torch.Tensor, _name: str = name) -> torch.Tensor:
            return loss_fn(select_output(_functional(model, {**base, _name: w}, x), output, owner), y)
        mod_name, _, local = name.rpartition(".")
        d = _as_gradient_direction(model.get_submodule(mod_name), local, direction[name])
        with torch.no_grad():
            _, t = jvp(f, (base[name],), (d,))
        proj[:, j] = t.detach().to(torch.float64).reshape(rows)
    return proj, per_example
