"""PAC-Bayes information bottleneck (Wang et al., ICLR 2022): the IIW term and a Gibbs-posterior loop.

PIB minimizes E_{p(w|S)}[L_S(w)] + beta * I(w;S). Two tools here:

* :class:`PIBLoss`, the term beta * IIW(w) added to a training loss. IIW is
  the ``fisher_quadratic`` information in the weights of
  :func:`ibscope.weights.iiw` (same constants, same prior-mean objects):
  with dw = w - w0 (w0 the prior mean), n the training-set size and
  grad l_i the per-example loss gradients,

      IIW(w) = (n / 2) * (1/m) sum_i (dw . grad l_i)^2          (nats)

  over m examples: the empirical Fisher as a mean of *squared* per-example
  projections (the reference code squared the mean gradient). The m
  per-example gradients -- the expensive part -- are captured every
  ``interval`` steps at the then-current weights by the engine shared with
  :func:`ibscope.weights.iiw` and :func:`ibscope.weights.fisher`
  (:mod:`ibscope.weights._pergrad`: layer inputs and output gradients, no
  (m, parameters) matrix for Linear / Conv2d layers); in between, the
  quadratic form is evaluated at the current weights with that frozen
  Fisher, so the term is differentiable at every step (gradient n F dw). At a refresh the value equals ``ibscope.weights.iiw(...)`` on the
  same examples (tested). Alternatively any ``iiw_fn(model)`` can be
  plugged in; it is then evaluated every ``interval`` steps (its gradient,
  if it has one, is applied on those steps; the last value is reported in
  between).
* :func:`train_gibbs`, which samples the Gibbs posterior
  p(w|S) ~ exp(-(L_S(w) + beta * IIW(w)) / T) with :class:`SGLD` driven by
  :func:`ibscope.training.fit` (one checkpoint format, resume, the
  non-finite guard: the last good state is kept and saved and
  :class:`NonFiniteLossError` says what to change), keeping the samples
  after burn-in with thinning in a :class:`PosteriorEnsemble`.

References
----------
.. [1] Z. Wang, S.-L. Huang, E. E. Kuruoglu, J. Sun, X. Chen and Y. Zheng,
   "PAC-Bayes information bottleneck", ICLR 2022.
.. [2] M. Welling and Y. W. Teh, "Bayesian learning via stochastic gradient
   Langevin dynamics", ICML 2011.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._units import check_unit, unit_scale
from .._validation import NONE, InstanceOf, Interval, validate_params
from ..training import BatchLoss, Callback, TensorBatches, TrainState, fit
from ..training import NonFiniteLossError as _FitNonFinite
from ..weights import snapshot_parameters
from ..weights._common import resolve_prior_mean
from ..weights._pergrad import Capture, capture, per_example_loss
from ._schedule import AnnealingSchedule, check_weight, resolve_weight
from ._sgld import SGLD, PolynomialDecay, PosteriorEnsemble

__all__ = ["PIBLoss", "NonFiniteLossError", "GibbsResult", "train_gibbs", "per_example_gradients"]


def _named_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _captures(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> list[Capture]:
    """One :class:`~ibscope.weights._pergrad.Capture` per batch, the model in eval mode."""
    names = list(_named_params(model))
    caps = []
    was_training = model.training
    model.eval()
    try:
        for xb, yb in batches:
            caps.append(capture(model, names, lambda out, _y=yb: per_example_loss(loss_fn, out, _y), xb,
                                owner="PIBLoss"))
    finally:
        model.train(was_training)
    if not caps:
        raise ValueError("'batches' yielded no examples; the IIW term needs at least one minibatch.")
    return caps


def per_example_gradients(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                          batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Per-example loss gradients, flattened over every trainable parameter: an (m, P) tensor.

    ``loss_fn(outputs, targets)`` may reduce by mean or return per-example
    values; it is applied to one example at a time. The model runs in eval
    mode (restored afterwards). ``(1/m) G^T G`` is the empirical Fisher.
    Computed by the shared engine of :mod:`ibscope.weights._pergrad` (the
    same per-example gradients as ``torch.func.vmap(grad)``).
    """
    rows = []
    for cap in _captures(model, loss_fn, batches):
        g = cap.gradients()
        rows.append(torch.cat([g[k].reshape(cap.rows, -1) for k in cap.names], dim=1))
    return torch.cat(rows)


class PIBLoss(nn.Module):
    """The PAC-Bayes IB regularizer beta * IIW(w), its Fisher refreshed every ``interval`` calls.

    ``penalty, terms = pib(model)``: ``penalty`` (a differentiable scalar, in
    nats like a cross-entropy loss) is added to the training loss;
    ``terms['iiw']`` is the current IIW in ``unit``.

    Parameters
    ----------
    model : torch.nn.Module
    beta : float or AnnealingSchedule
        Weight >= 0 of the information term.
    n_train : int
        n, the training-set size (IIW scales with it).
    prior_mean : nn.Module, mapping name -> tensor, or None
        w0, as for :func:`ibscope.weights.iiw` (from
        :func:`~ibscope.weights.heldout_prior` as Wang et al. recommend, or
        :func:`~ibscope.weights.bootstrap_prior`); default: the model's
        weights when the loss is built (:func:`~ibscope.weights.init_prior`).
    loss_fn : callable (outputs, targets) -> loss
        Negative log-likelihood in nats (mean or per-example reduction).
    batches : callable returning an iterable of (x, y), or a sequence of (x, y)
        The examples whose gradients estimate the Fisher at each refresh (a
        callable is called anew each time, e.g. to draw fresh examples).
    interval : int
        Refresh the Fisher every ``interval`` calls (>= 1).
    iiw_fn : callable (model) -> scalar tensor or float, or None
        Use this IIW (nats) instead of the built-in one (see module docstring).
    unit : {'bits', 'nats'}
        Unit of the reported ``terms``.
    """

    def __init__(self, model: nn.Module, beta: float | AnnealingSchedule, *, n_train: int | None = None,
                 prior_mean: nn.Module | Mapping[str, torch.Tensor] | None = None,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 batches: Callable[[], Iterable[Any]] | Sequence[Any] | None = None,
                 interval: int = 50, iiw_fn: Callable[[nn.Module], Any] | None = None, unit: str = "bits"):
        super().__init__()
        validate_params("PIBLoss", {"model": model, "interval": interval, "n_train": n_train}, {
            "model": [InstanceOf((nn.Module,), "a torch.nn.Module")],
            "interval": [Interval(int, 1, None)], "n_train": [NONE, Interval(int, 1, None)]})
        check_weight(beta, "beta", "PIBLoss")
        self.unit = check_unit(unit)
        if iiw_fn is None and (loss_fn is None or batches is None or n_train is None):
            raise ValueError("PIBLoss needs 'loss_fn', 'batches' and 'n_train' (to estimate the Fisher), or an 'iiw_fn'.")
        if iiw_fn is not None and not callable(iiw_fn):
            raise TypeError(f"'iiw_fn' must be callable, got {type(iiw_fn).__name__}.")
        params = _named_params(model)
        self._prior = resolve_prior_mean(snapshot_parameters(model) if prior_mean is None else prior_mean,
                                         params, owner="PIBLoss")
        self._model = [model]                   # not a submodule: its weights are not ours
        self.beta, self.loss_fn, self.batches, self.n_train = beta, loss_fn, batches, n_train
        self.interval, self.iiw_fn = interval, iiw_fn
        self.calls_ = 0
        self.step_ = 0
        self.captures_: list[Capture] | None = None
        self.last_iiw_: float = float("nan")    # nats

    def step(self) -> None:
        """Advance the beta schedule by one optimizer step."""
        self.step_ += 1

    def refresh(self) -> None:
        """Recompute the per-example gradients (the Fisher) at the current weights."""
        batches = list(self.batches() if callable(self.batches) else self.batches)
        model = self._model[0]
        self.captures_ = _captures(model, self.loss_fn, batches)
        self._refreshed = {"batches": [(bx.detach(), by.detach()) for bx, by in batches],
                           "weights": {k: v.detach().clone() for k, v in _named_params(model).items()}}

    def checkpoint_state(self) -> dict[str, Any]:
        """Counters, the prior mean and the last refresh (its examples and weights): tensors and
        plain containers (for a checkpoint; see :func:`train_gibbs`)."""
        return {"calls": self.calls_, "step": self.step_, "last_iiw": self.last_iiw_, "prior": self._prior,
                "refreshed": getattr(self, "_refreshed", None)}

    def restore_state(self, s: Mapping[str, Any]) -> None:
        """Undo :meth:`checkpoint_state`: the frozen Fisher is recaptured at the stored weights."""
        self.calls_, self.step_, self.last_iiw_ = int(s["calls"]), int(s["step"]), float(s["last_iiw"])
        self._prior = {k: v.to(self._prior[k].device) for k, v in s["prior"].items()}
        self.captures_ = None
        ref = s["refreshed"]
        if ref is None or self.iiw_fn is not None:
            return
        model = self._model[0]
        params = _named_params(model)
        now = {k: v.detach().clone() for k, v in params.items()}
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(ref["weights"][k])
        try:
            self.captures_ = _captures(model, self.loss_fn, [tuple(b) for b in ref["batches"]])
        finally:
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(now[k])
        self._refreshed = ref

    def quadratic_form(self) -> torch.Tensor:
        """(n/2) mean_i (dw . grad l_i)^2 at the current weights, frozen Fisher (differentiable, nats)."""
        if self.captures_ is None:
            self.refresh()
        params = _named_params(self._model[0])
        dw = {k: p - self._prior[k] for k, p in params.items()}
        proj = torch.cat([c.projections(dw).sum(1) for c in self.captures_])
        dtype = next(iter(params.values())).dtype
        return (0.5 * self.n_train * (proj * proj).mean()).to(dtype)

    def forward(self, model: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        if model is not None and model is not self._model[0]:
            raise ValueError("PIBLoss was built for another model; build one PIBLoss per model.")
        beta = resolve_weight(self.beta, self.step_, "beta")
        due = self.calls_ % self.interval == 0
        self.calls_ += 1
        ref = next(iter(self._model[0].parameters()))
        if self.iiw_fn is None:
            if due:
                self.refresh()
            iiw = self.quadratic_form()
            penalty = beta * iiw
        elif due:
            iiw = self.iiw_fn(self._model[0])
            iiw = iiw if isinstance(iiw, torch.Tensor) else torch.tensor(float(iiw), device=ref.device)
            penalty = beta * iiw if iiw.requires_grad else torch.zeros((), device=ref.device)
        else:
            iiw = torch.tensor(self.last_iiw_, device=ref.device)
            penalty = torch.zeros((), device=ref.device)
        self.last_iiw_ = float(iiw.detach())
        if not math.isfinite(self.last_iiw_):
            raise FloatingPointError(f"The IIW term is {self.last_iiw_} (non-finite) at call {self.calls_}.")
        scale = unit_scale(self.unit)
        return penalty, {"iiw": self.last_iiw_ * scale, "beta": beta, "unit": self.unit}


class NonFiniteLossError(_FitNonFinite):
    """Sampling met a NaN/inf loss or weight; the model holds the last good state (also saved).

    A subclass of :class:`ibscope.training.NonFiniteLossError` (raised by
    :func:`ibscope.training.fit`, which drives the sampler), with the SGLD
    settings to change in its message; attributes ``epoch``, ``step`` and
    ``checkpoint`` (``checkpoint_dir/last_good.pt`` or None).
    """


@dataclass
class GibbsResult:
    """What :func:`train_gibbs` returns."""

    model: nn.Module
    ensemble: PosteriorEnsemble
    history: list[dict[str, Any]] = field(default_factory=list)
    n_steps: int = 0


class _GibbsCallback(Callback):
    """After every SGLD step: the lr schedule, the PIB beta step, the posterior-ensemble update;
    after every epoch: a history record. Its state makes a resumed chain continue exactly."""

    def __init__(self, pib: PIBLoss | None, sched: Any, ensemble: PosteriorEnsemble, temp: float,
                 pib_generator: torch.Generator | None):
        self.pib, self.sched, self.ensemble, self.temp = pib, sched, ensemble, temp
        self.pib_generator = pib_generator
        self.history: list[dict[str, Any]] = []
        self.last_iiw = float("nan")

    def on_train_batch_end(self, state: TrainState) -> None:
        if self.sched is not None:
            self.sched.step()
        if self.pib is not None:
            self.pib.step()
            self.last_iiw = state.terms["iiw"]
        self.ensemble.update()

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch == 0:
            return
        self.history.append({"epoch": state.epoch, "loss": state.metrics["nll"], "iiw": self.last_iiw,
                             "iiw_unit": self.pib.unit if self.pib is not None else None,
                             "lr": state.optimizer.param_groups[0]["lr"], "temperature": self.temp,
                             "n_samples": len(self.ensemble)})
        self.last_iiw = float("nan")

    def state_dict(self) -> dict[str, Any]:
        ens = self.ensemble
        return {"history": self.history,
                "scheduler": self.sched.state_dict() if self.sched is not None else None,
                "pib": self.pib.checkpoint_state() if self.pib is not None else None,
                "pib_generator": self.pib_generator.get_state() if self.pib_generator is not None else None,
                "ensemble": {"n_steps": ens.n_steps_, "counter": ens._counter, "files": list(ens._files),
                             "memory": list(ens._memory)}}

    def load_state_dict(self, s: Mapping[str, Any]) -> None:
        self.history = list(s["history"])
        if self.sched is not None:
            self.sched.load_state_dict(s["scheduler"])
        if self.pib is not None:
            self.pib.restore_state(s["pib"])
        if self.pib_generator is not None:
            self.pib_generator.set_state(s["pib_generator"])
        ens, e = self.ensemble, s["ensemble"]
        ens.n_steps_, ens._counter, ens._files, ens._memory = (int(e["n_steps"]), int(e["counter"]),
                                                               list(e["files"]), list(e["memory"]))


@dataclass
class _GibbsChain:
    """What :func:`train_gibbs` hands to ``fit``: one chain, built in a fixed order of random draws."""

    data: TensorBatches
    optimizer: SGLD
    loss: BatchLoss
    monitor: _GibbsCallback
    ensemble: PosteriorEnsemble
    temperature: float


def _gibbs_chain(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
                 temperature: float | None, beta: float | AnnealingSchedule, pib: PIBLoss | None,
                 pib_interval: int, pib_examples: int, prior_mean: Any, precondition: bool,
                 decay_b: float | None, decay_gamma: float, weight_decay: float, burn_in: int | None,
                 thin: int, max_samples: int | None, ensemble_dir: Any, seed: int) -> _GibbsChain:
    """The minibatches, SGLD, the potential (loss + PIB term), the callback and the ensemble of a chain.

    The one construction of :func:`train_gibbs`'s chain (arguments as there, already
    validated); experiments that let their runner call ``fit`` build the same chain here.
    """
    n = x.shape[0]
    data = TensorBatches((x, y), batch_size, seed=seed)
    total_steps = epochs * len(data)
    temp = 1.0 / n if temperature is None else float(temperature)

    pib_gen = None
    if pib is None and (isinstance(beta, AnnealingSchedule) or beta > 0):
        pib_gen = torch.Generator().manual_seed(seed + 1)

        def draw() -> list[tuple[torch.Tensor, torch.Tensor]]:
            idx = torch.randperm(n, generator=pib_gen)[:pib_examples].to(x.device)
            return [(x[i], y[i]) for i in torch.split(idx, batch_size)]

        pib = PIBLoss(model, beta, n_train=n, prior_mean=prior_mean, loss_fn=loss_fn, batches=draw,
                      interval=pib_interval)

    opt = SGLD(model.parameters(), lr=lr, temperature=temp, precondition=precondition,
               weight_decay=weight_decay, seed=seed)
    sched = PolynomialDecay(opt, b=decay_b, gamma=decay_gamma) if decay_b is not None else None
    ensemble = PosteriorEnsemble(model, burn_in=total_steps // 2 if burn_in is None else burn_in,
                                 thin=thin, max_samples=max_samples, directory=ensemble_dir)
    monitor = _GibbsCallback(pib, sched, ensemble, temp, pib_gen)

    def potential(m: nn.Module, batch: tuple) -> tuple[torch.Tensor, dict[str, Any]]:
        loss = loss_fn(m(batch[0]), batch[1])
        terms: dict[str, Any] = {"nll": loss.detach()}
        if pib is None:
            return loss, terms
        penalty, info = pib(m)
        terms["iiw"] = info["iiw"]
        return loss + penalty, terms

    return _GibbsChain(data, opt, BatchLoss(potential), monitor, ensemble, temp)


def train_gibbs(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int = 128, lr: float = 1e-2,
                temperature: float | None = None, beta: float | AnnealingSchedule = 0.0,
                pib: PIBLoss | None = None, pib_interval: int = 50, pib_examples: int = 256,
                prior_mean: nn.Module | Mapping[str, torch.Tensor] | None = None,
                precondition: bool = False, decay_b: float | None = None, decay_gamma: float = 0.55,
                weight_decay: float = 0.0, burn_in: int | None = None, thin: int = 1,
                max_samples: int | None = None, ensemble_dir: str | os.PathLike | None = None,
                checkpoint_dir: str | os.PathLike | None = None, seed: int = 0,
                progress: bool = False) -> GibbsResult:
    """Sample the PIB Gibbs posterior with SGLD, trained by :func:`ibscope.training.fit`.

    The potential is U(w) = L_B(w) + beta * IIW(w) (+ weight_decay/2 ||w||^2),
    L_B the minibatch mean of ``loss_fn``, so the chain targets
    p(w|S) ~ exp(-(L_S(w) + beta IIW(w)) / T). The default
    ``temperature = 1 / n`` makes exp(-L_S/T) the likelihood of the n
    training examples, i.e. the Bayesian posterior (Gibbs posterior with the
    natural temperature); larger T spreads the posterior.

    :class:`SGLD` is the optimizer that ``fit`` drives; the step-size
    schedule, the beta schedule of the PIB term and the posterior ensemble
    are updated by a callback after every step.

    Parameters
    ----------
    model : nn.Module
        Network returning logits; trained in place (holds the last sample).
    loss_fn : callable (outputs, targets) -> scalar mean loss
    x, y : tensors
        Training inputs and targets (same number of rows), on the model's device.
    epochs, batch_size : int
        The budget: ``epochs`` passes over shuffled minibatches (the last,
        smaller batch included; :class:`ibscope.training.TensorBatches`).
    lr : float
        SGLD step size (optionally decayed: ``decay_b`` enables
        :class:`PolynomialDecay` lr (1 + t/b)^-gamma).
    temperature : float or None
        T >= 0 (None: 1 / len(x)); 0 gives plain SGD.
    beta : float or AnnealingSchedule
        Weight of the IIW term (0: no term). Ignored when ``pib`` is given.
    pib : PIBLoss or None
        A ready term; by default one is built (when beta > 0) with
        ``prior_mean`` (default: the initialization) and the per-example
        gradients of ``pib_examples`` random training examples, refreshed
        every ``pib_interval`` steps.
    precondition : bool
        pSGLD (RMSprop preconditioner).
    burn_in : int or None
        Steps discarded before keeping samples (default: half of all steps).
    thin, max_samples, ensemble_dir
        See :class:`PosteriorEnsemble`.
    checkpoint_dir : path or None
        ``fit``'s checkpoint directory: ``checkpoint.pt`` (weights_only) after
        every epoch, holding the chain, the schedules, the PIB term's state and
        the kept samples (in-memory ensembles) so that a resumed chain
        continues exactly; ``last_good.pt`` on failure. If it holds a
        checkpoint, sampling resumes from it.
    seed : int
        Seeds minibatch order, the IIW minibatches and the SGLD noise.
    progress : bool
        Show a tqdm bar over epochs.

    Returns
    -------
    GibbsResult

    Raises
    ------
    NonFiniteLossError
        When the loss, the IIW term or a weight becomes NaN/inf. The model
        holds the last good state, which is also written to
        ``checkpoint_dir/last_good.pt`` when given.
    """
    validate_params("train_gibbs", {"model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                                    "temperature": temperature, "thin": thin, "burn_in": burn_in, "seed": seed,
                                    "pib_interval": pib_interval, "pib_examples": pib_examples}, {
        "model": [InstanceOf((nn.Module,), "a torch.nn.Module")],
        "epochs": [Interval(int, 1, None)], "batch_size": [Interval(int, 1, None)],
        "lr": [Interval(float, 0, None, closed="neither")], "temperature": [NONE, Interval(float, 0, None)],
        "thin": [Interval(int, 1, None)], "burn_in": [NONE, Interval(int, 0, None)],
        "seed": [Interval(int, 0, None)], "pib_interval": [Interval(int, 1, None)],
        "pib_examples": [Interval(int, 1, None)]})
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("'x' and 'y' must be torch tensors.")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"'x' and 'y' must have the same number of samples; got {x.shape[0]} and {y.shape[0]}.")
    check_weight(beta, "beta", "train_gibbs")
    chain = _gibbs_chain(model, loss_fn, x, y, epochs=epochs, batch_size=batch_size, lr=lr,
                         temperature=temperature, beta=beta, pib=pib, pib_interval=pib_interval,
                         pib_examples=pib_examples, prior_mean=prior_mean, precondition=precondition,
                         decay_b=decay_b, decay_gamma=decay_gamma, weight_decay=weight_decay, burn_in=burn_in,
                         thin=thin, max_samples=max_samples, ensemble_dir=ensemble_dir, seed=seed)
    temp, monitor, ensemble = chain.temperature, chain.monitor, chain.ensemble
    try:
        state = fit(model, chain.loss, chain.data, chain.optimizer, epochs=epochs, callbacks=[monitor],
                    checkpoint_dir=checkpoint_dir, progress=progress, check_weights=True, desc="SGLD")
    except _FitNonFinite as e:
        raise NonFiniteLossError(
            f"train_gibbs {str(e).removeprefix('fit ')} For SGLD also consider a lower 'temperature' "
            f"(now T={temp:g}) or 'beta'.", epoch=e.epoch, step=e.step, checkpoint=e.checkpoint) from e
    return GibbsResult(model=model, ensemble=ensemble, history=monitor.history, n_steps=state.step)
