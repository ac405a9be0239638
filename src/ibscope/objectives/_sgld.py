"""Stochastic-gradient Langevin dynamics and a posterior ensemble of its samples.

Convention (one, stated): the loss handed to ``backward()`` is a potential
U(w); :class:`SGLD` then simulates the Langevin diffusion whose stationary
distribution is proportional to ``exp(-U(w) / T)``:

    w <- w - lr_t * grad U(w) + sqrt(2 * lr_t * T) * N(0, I)        (1)

(Welling & Teh [1]_ write the same update with step epsilon_t = 2 lr_t and
T = 1.) With ``temperature=0`` the noise vanishes and (1) is exactly
``torch.optim.SGD`` without momentum. Examples of potentials:

* the Bayesian posterior of a model with likelihood p(y|x, w) and prior p(w):
  U(w) = -sum_i log p(y_i|x_i, w) - log p(w) at T = 1. With a minibatch B of a
  training set of size N, use the unbiased estimate
  (N / |B|) * sum_{i in B} nll_i - log p(w);
* the Gibbs posterior of the PAC-Bayes information bottleneck [3]_,
  p(w|S) ~ p(w) exp(-L_S(w) / beta): U = L_S(w) - beta * log p(w) at T = beta,
  with L_S the mean training loss.

The step size may decay, lr_t = a (b + t)^-gamma (:class:`PolynomialDecay`,
gamma in (0.5, 1] gives the convergence guarantee of [1]_), and the update
may be preconditioned by an RMSprop estimate (pSGLD, Li et al. [2]_):

    V <- alpha V + (1 - alpha) g*g,   G = 1 / (eps + sqrt(V))
    w <- w - lr_t * G*g + sqrt(2 * lr_t * T * G) * N(0, I)            (2)

pSGLD's exact drift also has a correction term lr_t * T * sum_j dG_ij/dw_j,
which this implementation omits, as Li et al. do in their experiments: it is
small when alpha is close to 1 (V changes slowly) and its computation needs
second derivatives. Omitting it biases the stationary distribution slightly;
plain SGLD (``precondition=False``, the default) has no such bias beyond the
discretization.

:class:`PosteriorEnsemble` keeps the samples after a burn-in, one every
``thin`` steps, in memory or atomically on disk, and predicts with the
average of their predictive distributions (softmax probabilities, never
averaged logits).

References
----------
.. [1] M. Welling and Y. W. Teh, "Bayesian learning via stochastic gradient
   Langevin dynamics", ICML 2011.
.. [2] C. Li, C. Chen, D. Carlson and L. Carin, "Preconditioned stochastic
   gradient Langevin dynamics for deep neural networks", AAAI 2016.
.. [3] Z. Wang, S.-L. Huang, E. E. Kuruoglu, J. Sun, X. Chen and Y. Zheng,
   "PAC-Bayes information bottleneck", ICLR 2022.
"""

from __future__ import annotations

import copy
import io
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._validation import BOOLEAN, NONE, InstanceOf, Interval, validate_params
from ..store import load_tensor_file

__all__ = ["SGLD", "PolynomialDecay", "polynomial_decay", "PosteriorEnsemble"]


def polynomial_decay(step: int, a: float, b: float, gamma: float) -> float:
    """The step size a * (b + step)^-gamma of Welling & Teh (2011).

    Parameters
    ----------
    step : int
        Number of updates done so far (>= 0).
    a, b : float
        Scale (> 0) and offset (> 0).
    gamma : float
        Decay exponent in [0, 1]; (0.5, 1] satisfies sum lr = inf, sum lr^2 < inf.
    """
    validate_params("polynomial_decay", {"step": step, "a": a, "b": b, "gamma": gamma}, {
        "step": [Interval(int, 0, None)],
        "a": [Interval(float, 0, None, closed="neither")],
        "b": [Interval(float, 0, None, closed="neither")],
        "gamma": [Interval(float, 0, 1)],
    })
    return float(a) * (float(b) + step) ** (-float(gamma))


class PolynomialDecay(torch.optim.lr_scheduler.LRScheduler):
    """lr_t = lr_0 * (1 + t / b)^-gamma, i.e. a (b + t)^-gamma with a = lr_0 b^gamma.

    A ``torch.optim.lr_scheduler`` (call ``step()`` after every optimizer
    step), so it works with :class:`SGLD` and with any other optimizer.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
    b : float
        Offset (> 0): the number of steps over which the rate stays near lr_0.
    gamma : float
        Exponent in [0, 1] (0.55 is the usual choice; (0.5, 1] is needed for
        the asymptotic guarantee of SGLD).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, b: float = 1000.0, gamma: float = 0.55,
                 last_epoch: int = -1):
        validate_params("PolynomialDecay", {"b": b, "gamma": gamma}, {
            "b": [Interval(float, 0, None, closed="neither")],
            "gamma": [Interval(float, 0, 1)],
        })
        self.b, self.gamma = float(b), float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t = max(self.last_epoch, 0)
        factor = (1.0 + t / self.b) ** (-self.gamma)
        return [base * factor for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()


_SAMPLE_NAME = re.compile(r"sample_\d{6,}\.pt")

_SGLD_CONSTRAINTS = {
    "lr": [Interval(float, 0, None, closed="neither")],
    "temperature": [Interval(float, 0, None)],
    "precondition": [BOOLEAN],
    "alpha": [Interval(float, 0, 1, closed="left")],
    "eps": [Interval(float, 0, None, closed="neither")],
    "weight_decay": [Interval(float, 0, None)],
    "seed": [NONE, Interval(int, 0, None)],
}


class SGLD(torch.optim.Optimizer):
    """Stochastic-gradient Langevin dynamics as a ``torch.optim.Optimizer``.

    The loss passed to ``backward`` is the potential U(w); the chain's
    stationary distribution is proportional to exp(-U(w)/T) (see the module
    docstring for the update and the conventions).

    Parameters
    ----------
    params : iterable of tensors or dicts
        As for any torch optimizer (parameter groups may override ``lr``,
        ``temperature`` and ``weight_decay``).
    lr : float
        Step size lr > 0 of update (1) (combine with :class:`PolynomialDecay`
        or any ``lr_scheduler`` for a schedule).
    temperature : float
        T >= 0. T = 0 is plain SGD (no noise), exactly.
    precondition : bool
        Use the RMSprop preconditioner of pSGLD (Li et al. 2016), without its
        correction term (documented above).
    alpha, eps : float
        pSGLD's moving-average factor and stabilizer.
    weight_decay : float
        Adds ``weight_decay * w`` to the gradient, i.e. a Gaussian prior
        term ``weight_decay/2 * ||w||^2`` in U (same semantics as SGD's).
    seed : int or None
        Seed of the optimizer's own noise generator (one per device), so a
        chain is reproducible independently of the global RNG.

    Examples
    --------
    >>> opt = SGLD(model.parameters(), lr=1e-4, temperature=1.0, seed=0)  # doctest: +SKIP
    >>> opt.zero_grad(); potential(model).backward(); opt.step()          # doctest: +SKIP
    """

    def __init__(self, params: Iterable[Any], lr: float, temperature: float = 1.0, *,
                 precondition: bool = False, alpha: float = 0.99, eps: float = 1e-5,
                 weight_decay: float = 0.0, seed: int | None = None):
        validate_params("SGLD", {"lr": lr, "temperature": temperature, "precondition": precondition,
                                 "alpha": alpha, "eps": eps, "weight_decay": weight_decay,
                                 "seed": seed}, _SGLD_CONSTRAINTS)
        defaults = {"lr": float(lr), "temperature": float(temperature), "weight_decay": float(weight_decay),
                    "precondition": bool(precondition), "alpha": float(alpha), "eps": float(eps)}
        super().__init__(params, defaults)
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(int(self.seed))
            self._generators[key] = gen
        return gen

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update (1) or (2) of every parameter with a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, temp, wd = group["lr"], group["temperature"], group["weight_decay"]
            for name, v in (("lr", lr), ("temperature", temp)):  # groups may be edited later
                if not (isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0):
                    raise ValueError(f"The '{name}' of an SGLD parameter group must be a finite float >= 0. Got {v!r} instead.")
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("SGLD does not support sparse gradients.")
                if wd != 0:
                    grad = grad.add(p, alpha=wd)
                if group["precondition"]:
                    state = self.state[p]
                    if "square_avg" not in state:
                        state["square_avg"] = torch.zeros_like(p)
                    v = state["square_avg"]
                    v.mul_(group["alpha"]).addcmul_(grad, grad, value=1.0 - group["alpha"])
                    g_pre = 1.0 / (group["eps"] + v.sqrt())
                    p.addcmul_(g_pre, grad, value=-lr)
                    if temp > 0:
                        noise = torch.randn(p.shape, dtype=p.dtype, device=p.device,
                                            generator=self._generator(p.device))
                        p.addcmul_(g_pre.sqrt(), noise, value=math.sqrt(2.0 * lr * temp))
                else:
                    p.add_(grad, alpha=-lr)
                    if temp > 0:
                        noise = torch.randn(p.shape, dtype=p.dtype, device=p.device,
                                            generator=self._generator(p.device))
                        p.add_(noise, alpha=math.sqrt(2.0 * lr * temp))
        return loss

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["generators"] = {k: g.get_state() for k, g in self._generators.items()}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        gens = state_dict.pop("generators", {})
        super().load_state_dict(state_dict)
        for key, st in gens.items():
            gen = self._generator(torch.device(key))
            if gen is not None:
                gen.set_state(st)


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class PosteriorEnsemble:
    """The retained samples of a chain and the average of their predictions.

    Call :meth:`update` once after every sampler step: the first ``burn_in``
    steps are discarded, then one sample is kept every ``thin`` steps (at
    most ``max_samples``; the oldest are dropped first). Samples live in
    memory, or with ``directory`` on disk, one file per sample written
    atomically (temp file + rename) plus an index; an ensemble created on an
    existing directory resumes from it.

    Parameters
    ----------
    model : torch.nn.Module
        The network being sampled; its architecture is copied to evaluate
        the samples (the live model is never modified).
    burn_in : int
        Sampler steps discarded before the first sample.
    thin : int
        Keep one sample every ``thin`` steps after burn-in.
    max_samples : int or None
        Keep at most this many (the most recent).
    directory : path-like or None
        Store samples there instead of in memory.
    output : {'logits', 'probs'}
        What ``model(x)`` returns; logits are turned into softmax probabilities.

    Attributes
    ----------
    n_steps_ : int
        Steps seen by :meth:`update`.
    """

    def __init__(self, model: nn.Module, *, burn_in: int = 0, thin: int = 1,
                 max_samples: int | None = None, directory: str | os.PathLike | None = None,
                 output: str = "logits"):
        from .._validation import Options

        validate_params("PosteriorEnsemble", {"model": model, "burn_in": burn_in, "thin": thin,
                                              "max_samples": max_samples, "output": output}, {
            "model": [InstanceOf((nn.Module,), "a torch.nn.Module")],
            "burn_in": [Interval(int, 0, None)],
            "thin": [Interval(int, 1, None)],
            "max_samples": [NONE, Interval(int, 1, None)],
            "output": [Options(("logits", "probs"))],
        })
        self.model = model
        self.burn_in, self.thin, self.max_samples, self.output = burn_in, thin, max_samples, output
        self.directory = None if directory is None else Path(directory)
        self._template = copy.deepcopy(model)
        self._memory: list[dict[str, torch.Tensor]] = []
        self._files: list[str] = []
        self._counter = 0
        self.n_steps_ = 0
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            index = self.directory / "index.json"
            if index.exists():
                from ..store import DamagedFile, read_json

                hint = "Delete the directory (or use another) to start the samples afresh."
                meta = read_json(index, what="the SGLD sample index", hint=hint,
                                 required={"files": list, "counter": int, "n_steps": int})
                bad = [f for f in meta["files"] if not (isinstance(f, str) and _SAMPLE_NAME.fullmatch(f))]
                if bad:  # names from the file are joined to the directory (read, then deleted): never a path
                    raise DamagedFile(f"The SGLD sample index '{index}' is damaged: it names {bad[0]!r}, not a "
                                      f"sample file (sample_<n>.pt). {hint}")
                self._files = [f for f in meta["files"] if (self.directory / f).exists()]
                self._counter = int(meta["counter"])
                self.n_steps_ = int(meta["n_steps"])

    # ------------------------------------------------------------------ store
    def __len__(self) -> int:
        return len(self._files) if self.directory is not None else len(self._memory)

    def update(self) -> bool:
        """Count one sampler step; keep the current weights if due. Returns True if kept."""
        self.n_steps_ += 1
        after = self.n_steps_ - self.burn_in
        keep = after > 0 and (after - 1) % self.thin == 0
        if keep:
            self.add(self.model)
        elif self.directory is not None:
            self._write_index()
        return keep

    def add(self, model_or_state: nn.Module | dict[str, torch.Tensor]) -> None:
        """Keep one sample (a module's current weights or a state dict)."""
        state = (_clone_state(model_or_state) if isinstance(model_or_state, nn.Module)
                 else {k: v.detach().clone() for k, v in model_or_state.items()})
        if self.directory is None:
            self._memory.append(state)
            if self.max_samples is not None and len(self._memory) > self.max_samples:
                self._memory.pop(0)
            return
        from ..store import atomic_write_bytes

        name = f"sample_{self._counter:06d}.pt"
        self._counter += 1
        buf = io.BytesIO()
        torch.save({k: v.cpu() for k, v in state.items()}, buf)
        atomic_write_bytes(self.directory / name, buf.getvalue())
        self._files.append(name)
        dropped = []
        if self.max_samples is not None and len(self._files) > self.max_samples:
            dropped = self._files[:-self.max_samples]
            self._files = self._files[-self.max_samples:]
        self._write_index()
        for f in dropped:  # only after the index no longer names them
            (self.directory / f).unlink(missing_ok=True)

    def _write_index(self) -> None:
        from ..store import atomic_write_json

        atomic_write_json(self.directory / "index.json",
                          {"files": self._files, "counter": self._counter, "n_steps": self.n_steps_,
                           "burn_in": self.burn_in, "thin": self.thin})

    def samples(self) -> Iterator[dict[str, torch.Tensor]]:
        """The kept state dicts, oldest first."""
        if self.directory is None:
            yield from self._memory
            return
        for f in self._files:
            yield load_tensor_file(self.directory / f, what="SGLD sample")

    # -------------------------------------------------------------- predict
    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """Average over samples of the predictive distributions p(y | x, w_s).

        Returns an (n, n_classes) tensor of probabilities on ``x``'s device.
        """
        if len(self) == 0:
            raise ValueError(
                f"The PosteriorEnsemble holds no samples yet ({self.n_steps_} steps seen, "
                f"burn_in={self.burn_in}); sample longer or lower 'burn_in'."
            )
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"'x' must be a torch.Tensor, got {type(x).__name__}.")
        net = self._template.to(x.device)
        net.eval()
        total = None
        count = 0
        for state in self.samples():
            net.load_state_dict(state)
            probs = self._probs(net, x, batch_size)
            total = probs if total is None else total + probs
            count += 1
        return total / count

    def _probs(self, net: nn.Module, x: torch.Tensor, batch_size: int | None) -> torch.Tensor:
        chunks = [x] if batch_size is None else torch.split(x, batch_size)
        outs = []
        for chunk in chunks:
            out = net(chunk)
            outs.append(torch.softmax(out.double(), dim=-1) if self.output == "logits" else out.double())
        return torch.cat(outs)

    def predict(self, x: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """Class with the highest ensemble-averaged probability."""
        return self.predict_proba(x, batch_size=batch_size).argmax(dim=-1)
