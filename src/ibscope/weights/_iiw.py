"""Information in the weights, I(w;S), after the PAC-Bayes information bottleneck.

Setting (Wang et al. [1]_). A training set S of n examples, per-example
negative log-likelihood l_i(w) (nats), posterior p(w|S) ~ N(theta_S, Sigma_S),
prior ("oracle" prior E_S p(w|S)) ~ N(theta_0, Sigma_0). Then

    KL(p(w|S) || p(w)) = 1/2 [ tr(Sigma_0^-1 Sigma_S) - D + log det Sigma_0 - log det Sigma_S
                              + (theta_S - theta_0)^T Sigma_0^-1 (theta_S - theta_0) ]

and IIW = I(w;S) = E_S KL(p(w|S) || p(w)). The Laplace (Bernstein-von Mises)
posterior precision is P = Sigma_S^-1 = Sigma_0^-1 + sum_i grad^2 l_i(theta_S)
~ Sigma_0^-1 + n F, with F the per-example Fisher information.

Constants (derived in docs/weights.md):

* If the prior is consistent with the posteriors (oracle prior: the
  spread of theta_S over training sets is C = Sigma_0 - Sigma_S), the
  expectation over S collapses to I(w;S) = 1/2 log det(Sigma_0 P)
  = 1/2 log det(I + Sigma_0 n F); this is exact for Bayesian linear
  regression (``target="mi"`` of ``gaussian_kl``).
* Under the PAC-Bayes IB approximation Sigma_0 ~ Sigma_S the log-det and
  trace terms cancel and KL = 1/2 dtheta^T P dtheta with
  dtheta = theta_S - theta_0; this is also the first-order term of
  1/2 log det(I + P C) in the spread C. With a flat prior, P = n F and

      IIW ~ (n / 2) * dtheta^T F dtheta = (n / 2) * E_i[(dtheta . grad l_i)^2],

  the estimator of Algorithm 1 of [1]_, here with the factor n/2 written
  out (the Fisher of the whole training set is n F; the 1/2 is the
  Gaussian KL's).

``fisher_quadratic`` computes that last line without forming F: the empirical
Fisher is the mean over examples (or minibatches) of the *squared*
projections (dtheta . grad l_i)^2, never the square of the mean gradient
(which drops the variance and is what the reference code computes). The
projections come from one forward and one backward pass per batch: a forward
hook keeps each parameterized module's input, the backward gives the
per-example output gradient delta_i, and dtheta . grad l_i = sum over modules
of <delta_i, J_module dtheta_module> (a local forward-mode product per
module), so memory stays O(parameters + activations of one batch).

References
----------
.. [1] Z. Wang, S.-L. Huang, E. E. Kuruoglu, J. Sun, X. Chen, Y. Zheng,
   "PAC-Bayes Information Bottleneck", ICLR 2022.
.. [2] A. Achille, G. Paolini, S. Soatto, "Where is the information in a
   deep neural network?", arXiv:1905.12213, 2019.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._units import check_unit, from_nats
from .._validation import check_data_labels, check_exclude
from ._common import (
    check_data,
    check_finite_loss,
    check_positive_float,
    check_positive_int,
    dataset_size,
    group_of,
    iter_batches,
    resolve_prior_mean,
    select_parameters,
    tidy_rows,
)
from ._pergrad import (
    _functional,
    batch_len,
    capture,
    check_output,
    jvp_projections,
    math_attention,
    select_output,
)

__all__ = ["IIWResult", "iiw", "projection_matrix"]

_METHODS = ("fisher_quadratic", "gaussian_kl")


@dataclass(frozen=True)
class IIWResult:
    """Information in the weights: total and per layer (parameter group), in ``unit``.

    ``per_layer[g]`` is the same quantity with dtheta restricted to group ``g``
    (the other weights held at theta_S); per-layer values do not sum to the
    total (cross terms). ``terms`` holds the parts of the estimate (in
    ``unit``) and ``settings`` every option used.
    """

    total: float
    per_layer: dict[str, float]
    unit: str
    method: str
    terms: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    n_examples: int = 0
    n_batches: int = 0

    def rows(self) -> list[dict[str, Any]]:
        """Tidy rows: (layer, quantity, value, unit, method); layer 'total' for the total."""
        return tidy_rows(self.total, self.per_layer, "iiw", self.unit, self.method)


# --------------------------------------------------------------------------- #
# per-example projections dtheta . grad l_i
# --------------------------------------------------------------------------- #
def projection_matrix(model: nn.Module, loss_fn: Callable, data: Any, direction: Mapping[str, torch.Tensor], *,
                      max_batches: int | None = None, engine: str = "hooks", output: Any = None,
                      owner: str = "projection_matrix") -> tuple[torch.Tensor, list[str], list[int], bool]:
    """Per-example directional derivatives of the loss, dtheta . grad l_i, one column per parameter.

    Returns ``(proj, names, batch_sizes, per_example)``: ``proj`` is float64 of
    shape (examples used, parameters) -- or (batches used, parameters) when
    ``loss_fn`` returns a scalar per batch. The model runs in eval mode
    (restored afterwards) on the math attention path (:func:`math_attention`);
    its parameters are not changed. ``output`` selects the prediction from
    the model's output (see :func:`iiw`).
    """
    check_output(output, owner)
    names = list(direction)
    params = dict(model.named_parameters())
    device = params[names[0]].device
    was_training = model.training
    model.eval()
    chunks, sizes, per_example = [], [], True
    try:
        with math_attention():
            for x, y in iter_batches(data, device, max_batches=max_batches, owner=owner):
                if engine == "hooks":
                    cap = capture(model, names, None, x, owner=owner, loss_fn=loss_fn, y=y, output=output)
                    p, per_example = cap.projections(direction), cap.per_example
                else:
                    p, per_example = jvp_projections(model, loss_fn, names, direction, x, y, owner, output=output)
                chunks.append(p)
                sizes.append(batch_len(x))
    finally:
        model.train(was_training)
    return torch.cat(chunks, 0), names, sizes, per_example


# --------------------------------------------------------------------------- #
# the public function
# --------------------------------------------------------------------------- #
def iiw(model: nn.Module, loss_fn: Callable, data: Any, *, prior_mean: Any,
        method: str = "fisher_quadratic", n_train: int | None = None, prior_var: float | None = None,
        max_batches: int | None = None, granularity: str = "example", groups: str = "module",
        include_bias: bool = True, exclude: Any = None, engine: str = "hooks",
        curvature: str = "empirical_fisher", target: str = "kl", max_params: int = 10_000,
        unit: str = "bits", output: Any = None) -> IIWResult:
    """Information in the weights I(w;S) (PAC-Bayes IB [1]_), total and per layer.

    Parameters
    ----------
    model : torch.nn.Module
        The trained network (theta_S). Not modified; evaluated in eval mode,
        attention on PyTorch's math path (:func:`~ibscope.weights._pergrad.math_attention`:
        no fast path, math SDPA kernel; the user's settings are restored).
        Attention models (``nn.TransformerEncoder``, ``nn.MultiheadAttention``,
        Hugging Face GPT-2 / BERT) need no workaround.
    loss_fn : callable
        ``loss_fn(model(x), y)`` -> per-example negative log-likelihoods in nats,
        shape (batch,) (e.g. ``nn.CrossEntropyLoss(reduction="none")``; for
        regression the Gaussian NLL (y - f)^2 / (2 sigma^2)). A scalar (batch
        mean) loss is accepted with ``granularity="batch"``.
    data : iterable of (x, y)
        The training set S in minibatches (DataLoader or list of tensor pairs).
        ``x`` may hold integer token ids (kept as they are) or be a mapping of
        named inputs (``model(**x)``, e.g. ``input_ids`` and ``attention_mask``).
    prior_mean : nn.Module or mapping name -> tensor
        theta_0, from :func:`heldout_prior` (as the paper), :func:`bootstrap_prior`
        or :func:`init_prior`; shapes must match the model's parameters.
    method : {'fisher_quadratic', 'gaussian_kl'}
        'fisher_quadratic' (default, scalable): (n/2) E[(dtheta . grad l)^2]
        (+ |dtheta|^2 / (2 prior_var) when ``prior_var`` is given).
        'gaussian_kl': the closed-form Gaussian KL with an explicit D x D
        curvature (D <= ``max_params``).
    n_train : int, optional
        n, the size of the training set; default ``len(data.dataset)`` or the
        total size of a list of batches. The estimate scales with n.
    prior_var : float, optional
        Prior covariance Sigma_0 = prior_var * I. None: flat-prior / PAC-Bayes IB
        assumption Sigma_0 = Sigma_S (the KL reduces to its quadratic term).
    max_batches : int, optional
        Use only the first ``max_batches`` batches (means are over the batches
        or examples actually used).
    granularity : {'example', 'batch'}
        'example': empirical Fisher = mean over examples of squared per-example
        projections (exact). 'batch': mean over minibatches t of
        B_t (dtheta . grad Lbar_t)^2 with Lbar_t the batch-mean loss; equals the
        per-example version plus (B-1) (dtheta . mean grad)^2, so it is close
        only near a minimum (zero mean gradient).
    groups : {'module', 'parameter'}
        Per-layer keys: owning module ('fc1', weight and bias together) or
        each named parameter ('fc1.weight').
    include_bias, exclude
        Biases are measured unless ``include_bias=False``; ``exclude`` drops
        parameters by name or shell pattern.
    engine : {'hooks', 'jvp'}
        'hooks' (default): one forward + backward per batch; parameters the
        hooks cannot handle (a module returning a tuple, such as
        ``nn.MultiheadAttention``, or called with keyword arguments, or called
        twice, or a weight read outside its module: the attention output
        projection, tied embeddings) get whole-model ``torch.func`` per-example
        gradients instead. 'jvp': one forward-mode pass of the whole model per
        parameter tensor (any model).
    curvature : {'empirical_fisher', 'hessian'}
        gaussian_kl only: n F-hat (sum of per-example gradient outer
        products) or the Hessian of the summed loss (torch.func).
    target : {'kl', 'mi'}
        gaussian_kl only: 'kl' the KL for this training set; 'mi' its
        expectation over training sets under the oracle-prior consistency,
        1/2 log det(I + prior_var * curvature) (needs ``prior_var``).
    max_params : int
        Limit on D for gaussian_kl (D x D matrices); raise it knowingly.
    unit : {'bits', 'nats'}
    output : None, str, int or callable
        How to get the prediction that ``loss_fn`` receives from the model's
        output: None (default) when the model returns a tensor; a key or
        attribute name (``output="logits"`` for a Hugging Face
        ``ModelOutput``); an index (``output=0`` for a tuple); or a
        ``callable(output) -> tensor``. A non-tensor output without it is a
        TypeError naming ``output``.

    Returns
    -------
    IIWResult

    References
    ----------
    .. [1] Z. Wang et al., "PAC-Bayes Information Bottleneck", ICLR 2022.
    """
    owner = "iiw"
    if method not in _METHODS:
        raise ValueError(f"The 'method' parameter of iiw must be one of {_METHODS}. Got {method!r} instead.")
    if not callable(loss_fn):
        raise TypeError(f"The 'loss_fn' parameter of iiw must be callable. Got {type(loss_fn).__name__} instead.")
    for key, value, options in (("granularity", granularity, ("example", "batch")),
                                ("groups", groups, ("module", "parameter")),
                                ("engine", engine, ("hooks", "jvp")),
                                ("curvature", curvature, ("empirical_fisher", "hessian")),
                                ("target", target, ("kl", "mi"))):
        if value not in options:
            raise ValueError(f"The '{key}' parameter of iiw must be one of {options}. Got {value!r} instead.")
    check_unit(unit)
    check_output(output, owner)
    check_data(data, owner)
    max_batches = check_positive_int(max_batches, "max_batches", owner, allow_none=True)
    prior_var = check_positive_float(prior_var, "prior_var", owner, allow_none=True)
    max_params = check_positive_int(max_params, "max_params", owner)
    params = select_parameters(model, include_bias=include_bias, exclude=exclude, owner=owner)
    check_exclude(model, exclude, owner)
    check_data_labels(model, data, owner)
    theta0 = resolve_prior_mean(prior_mean, params, owner=owner)
    delta = {n: (p.detach() - theta0[n]) for n, p in params.items()}
    if n_train is None:
        n_train = dataset_size(data)
        if n_train is None:
            raise ValueError("iiw: cannot tell the training-set size from 'data'; pass n_train=.")
    n_train = check_positive_int(n_train, "n_train", owner)
    settings = {"method": method, "n_train": n_train, "prior_var": prior_var, "max_batches": max_batches,
                "granularity": granularity, "groups": groups, "include_bias": include_bias,
                "exclude": exclude, "engine": engine, "parameters": list(params)}
    if output is not None:
        settings["output"] = output if isinstance(output, (str, int)) else "callable"
    if method == "fisher_quadratic":
        return _fisher_quadratic(model, loss_fn, data, params, delta, n_train=n_train, prior_var=prior_var,
                                 max_batches=max_batches, granularity=granularity, groups=groups,
                                 engine=engine, unit=unit, settings=settings, output=output)
    settings.update({"curvature": curvature, "target": target})
    with math_attention():
        return _gaussian_kl(model, loss_fn, data, params, delta, n_train=n_train, prior_var=prior_var,
                            max_batches=max_batches, groups=groups, curvature=curvature, target=target,
                            max_params=max_params, unit=unit, settings=settings, output=output)


def _group_index(names: list[str], groups: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for j, n in enumerate(names):
        out.setdefault(group_of(n, groups), []).append(j)
    return out


def _fisher_quadratic(model, loss_fn, data, params, delta, *, n_train, prior_var, max_batches,
                      granularity, groups, engine, unit, settings, output=None) -> IIWResult:
    proj, names, sizes, per_example = projection_matrix(model, loss_fn, data, delta, max_batches=max_batches,
                                                        engine=engine, output=output, owner="iiw")
    if granularity == "example" and not per_example:
        raise ValueError("iiw: loss_fn returned a scalar per batch; return per-example losses "
                         "(reduction='none') or pass granularity='batch'.")
    if granularity == "batch":
        if per_example:
            bounds = torch.tensor([0, *sizes], device=proj.device).cumsum(0)
            means = torch.stack([proj[bounds[t]:bounds[t + 1]].mean(0) for t in range(len(sizes))])
        else:
            means = proj
        weights = torch.tensor(sizes, dtype=torch.float64, device=proj.device)[:, None]
    else:
        means, weights = proj, None

    def quad(cols: list[int]) -> float:
        s = means[:, cols].sum(1, keepdim=True) ** 2
        if weights is not None:
            s = s * weights
        return 0.5 * n_train * float(s.mean())  # mean over the units actually used

    def prior_part(cols_names: list[str]) -> float:
        if prior_var is None:
            return 0.0
        return 0.5 * sum(float((delta[n].double() ** 2).sum()) for n in cols_names) / prior_var

    gidx = _group_index(names, groups)
    all_cols = list(range(len(names)))
    fisher_part = quad(all_cols)
    ppart = prior_part(names)
    per_layer = {g: from_nats(quad(c) + prior_part([names[j] for j in c]), unit) for g, c in gidx.items()}
    total = fisher_part + ppart
    return IIWResult(
        total=from_nats(total, unit), per_layer=per_layer, unit=unit, method="fisher_quadratic",
        terms={"fisher": from_nats(fisher_part, unit), "prior": from_nats(ppart, unit)},
        settings=settings, n_examples=int(sum(sizes)), n_batches=len(sizes),
    )


# --------------------------------------------------------------------------- #
# gaussian_kl: explicit curvature, closed-form KL
# --------------------------------------------------------------------------- #
def _flat_curvature(model, loss_fn, data, params, *, max_batches, curvature,
                    output=None) -> tuple[torch.Tensor, int, int]:
    names = list(params)
    shapes = [params[n].shape for n in names]
    numels = [params[n].numel() for n in names]
    flat0 = torch.cat([params[n].detach().reshape(-1) for n in names]).to(torch.float64)
    others = {n: p.detach() for n, p in model.named_parameters() if n not in params}
    buffers = dict(model.named_buffers())
    dtype = next(iter(params.values())).dtype

    def unflat(v: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(v.to(dtype), numels)
        return {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}

    def batch_loss(v: torch.Tensor, x: Any, y: torch.Tensor) -> torch.Tensor:
        out = _functional(model, ({**others, **unflat(v)}, buffers), x)
        return loss_fn(select_output(out, output, "iiw"), y)

    d = flat0.numel()
    mat = torch.zeros(d, d, dtype=torch.float64, device=flat0.device)
    n_used, n_batches = 0, 0
    was_training = model.training
    model.eval()
    try:
        for x, y in iter_batches(data, flat0.device, max_batches=max_batches, owner="iiw"):
            with torch.no_grad():
                lv = batch_loss(flat0, x, y)
            check_finite_loss(lv, "iiw")
            if curvature == "hessian":
                h = torch.func.hessian(lambda v, _x=x, _y=y: batch_loss(v, _x, _y).sum())(flat0)
                mat += h.to(torch.float64)
            else:
                if lv.ndim == 0:
                    raise ValueError("iiw: curvature='empirical_fisher' needs per-example losses (reduction='none').")

                cap = capture(model, names, None, x, owner="iiw", loss_fn=loss_fn, y=y, output=output)
                per = cap.gradients()
                g = torch.cat([per[n].reshape(cap.rows, -1) for n in names], 1).to(torch.float64)
                mat += g.T @ g
            n_used += batch_len(x)
            n_batches += 1
    finally:
        model.train(was_training)
    return mat, n_used, n_batches


def _gaussian_kl(model, loss_fn, data, params, delta, *, n_train, prior_var, max_batches, groups, curvature,
                 target, max_params, unit, settings, output=None) -> IIWResult:
    names = list(params)
    d = sum(p.numel() for p in params.values())
    if d > max_params:
        raise ValueError(
            f"iiw(method='gaussian_kl') forms {d} x {d} matrices; the model has {d} parameters to measure, "
            f"above max_params={max_params}. Use method='fisher_quadratic', or raise max_params knowingly."
        )
    if target == "mi" and prior_var is None:
        raise ValueError("iiw: target='mi' needs prior_var (the prior covariance Sigma_0 = prior_var * I).")
    curv, n_used, n_batches = _flat_curvature(model, loss_fn, data, params, max_batches=max_batches,
                                              curvature=curvature, output=output)
    curv = 0.5 * (curv + curv.T) * (n_train / n_used)  # the curvature of all n examples
    dvec = torch.cat([delta[n].reshape(-1) for n in names]).to(torch.float64)
    offsets, start = {}, 0
    for n in names:
        offsets[n] = (start, start + params[n].numel())
        start += params[n].numel()
    gidx: dict[str, list[int]] = {}
    for n in names:
        gidx.setdefault(group_of(n, groups), []).extend(range(*offsets[n]))

    def kl_terms(idx: torch.Tensor | None) -> dict[str, float]:
        c = curv if idx is None else curv[idx][:, idx]
        dv = dvec if idx is None else dvec[idx]
        k = c.shape[0]
        if prior_var is None:
            quad = float(dv @ c @ dv)
            return {"kl": 0.5 * quad, "quadratic": 0.5 * quad, "log_det": 0.0, "trace": 0.0}
        prec = c + torch.eye(k, dtype=c.dtype, device=c.device) / prior_var  # posterior precision P
        chol, info = torch.linalg.cholesky_ex(prec)
        if int(info) != 0:
            raise ValueError("iiw: the posterior precision (curvature + I/prior_var) is not positive definite "
                             "(an indefinite Hessian away from a minimum); use curvature='empirical_fisher' "
                             "or a smaller prior_var.")
        logdet_p = 2.0 * float(torch.log(torch.diagonal(chol)).sum())
        # tr(Sigma_0^-1 Sigma_S) = tr(P^-1) / prior_var
        tr = float(torch.cholesky_inverse(chol).diagonal().sum()) / prior_var
        log_det = k * math.log(prior_var) + logdet_p  # log det Sigma_0 - log det Sigma_S
        quad = float(dv @ dv) / prior_var
        return {"kl": 0.5 * (tr - k + log_det + quad), "quadratic": 0.5 * quad,
                "log_det": 0.5 * log_det, "trace": 0.5 * (tr - k), "information_gain": 0.5 * log_det}

    key = "kl" if target == "kl" else "information_gain"
    full = kl_terms(None)
    per_layer = {g: from_nats(kl_terms(torch.tensor(ix, device=curv.device))[key], unit) for g, ix in gidx.items()}
    return IIWResult(
        total=from_nats(full[key], unit), per_layer=per_layer, unit=unit, method="gaussian_kl",
        terms={k: from_nats(v, unit) for k, v in full.items()}, settings=settings,
        n_examples=n_used, n_batches=n_batches,
    )
