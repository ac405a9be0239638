"""Neural variational lower bounds on mutual information: MINE, NWJ, InfoNCE.

A critic network f(x, y) is trained to maximize a variational lower bound on
I(X;Y); the bound, evaluated with the trained critic on held-out samples, is
the estimate. On a batch of b pairs the score matrix S_ij = f(x_i, y_j) gives
the joint term from its diagonal and the product-of-marginals term from its
b(b-1) off-diagonal entries (all pairs, as in Poole et al. [4]_). In nats:

* Donsker-Varadhan / MINE [1]_:  E_p[f] - log E_{p(x)p(y)}[e^f]
* NWJ / f-GAN KL [2]_ [3]_:      E_p[f] - e^{-1} E_{p(x)p(y)}[e^f]
* InfoNCE [5]_ [4]_:             E_i[S_ii - log sum_j e^{S_ij}] + log b  (<= log b)

MINE trains through the DV bound with the moving-average correction of the
biased minibatch gradient of log E[e^f] (Belghazi et al., section 3.2): the
denominator E[e^f] of that gradient is replaced by an exponential moving
average over batches. NWJ and InfoNCE have unbiased minibatch gradients and
train on the bound itself.

Protocol (shared): continuous inputs are standardized with the training
split's mean and std; a discrete variable is one-hot encoded (rows of a
2-D discrete input are joint symbols, one category each). The rows are split
at random (``seed``; after sorting the rows into a canonical order, so the
estimate does not depend on the order of the rows) into a training part and
a held-out part (``test_fraction``); the critic is trained with Adam on minibatches of the
training part, the bound is evaluated on the held-out part after every epoch,
training stops after ``patience`` epochs without improvement (or at
``max_epochs``), and the critic of the best held-out epoch is kept. The
estimate is that critic's held-out bound, clipped at 0 (a lower bound on a
non-negative quantity). Picking the best of many noisy held-out values has a
small upward selection bias, of the order of the held-out bound's standard
error.
The training loop is the engine shared with the flows and latent KSG,
``_train.train_early_stopping``.

References
----------
.. [1] M. I. Belghazi et al., "Mutual information neural estimation",
   ICML 2018.
.. [2] X. Nguyen, M. J. Wainwright and M. I. Jordan, "Estimating divergence
   functionals and the likelihood ratio by convex risk minimization",
   IEEE Trans. Information Theory 56(11), 2010.
.. [3] S. Nowozin, B. Cseke and R. Tomioka, "f-GAN: training generative
   neural samplers using variational divergence minimization", NeurIPS 2016.
.. [4] B. Poole, S. Ozair, A. van den Oord, A. A. Alemi and G. Tucker,
   "On variational bounds of mutual information", ICML 2019.
.. [5] A. van den Oord, Y. Li and O. Vinyals, "Representation learning with
   contrastive predictive coding", arXiv:1807.03748, 2018.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from .._validation import (
    NONE,
    InstanceOf,
    Interval,
    Options,
    check_random_state,
    discrete_symbols,
    is_torch,
    resolve_device,
)
from ._train import (  # seeded, batch_generator: re-exported for the modules that import them here
    batch_generator,  # noqa: F401
    history_in_unit,
    seeded,  # noqa: F401
    train_early_stopping,
)
from .base import BaseMIEstimator

__all__ = ["MINE", "NWJ", "InfoNCE", "Critic", "dv_bound", "nwj_bound", "infonce_bound"]


# --------------------------------------------------------------------------- #
# Bounds on a score matrix (pure functions, nats, differentiable)
# --------------------------------------------------------------------------- #
def _offdiag_logmeanexp(scores: torch.Tensor) -> torch.Tensor:
    b = scores.shape[0]
    mask = ~torch.eye(b, dtype=torch.bool, device=scores.device)
    return torch.logsumexp(scores[mask], dim=0) - math.log(b * (b - 1))


def dv_bound(scores: torch.Tensor) -> torch.Tensor:
    """Donsker-Varadhan bound (nats) of a (b, b) score matrix S_ij = f(x_i, y_j), b >= 2."""
    return torch.diagonal(scores).mean() - _offdiag_logmeanexp(scores)


def nwj_bound(scores: torch.Tensor) -> torch.Tensor:
    """NWJ (f-GAN KL) bound (nats): mean diag - exp(log mean_offdiag e^S - 1)."""
    return torch.diagonal(scores).mean() - torch.exp(_offdiag_logmeanexp(scores) - 1.0)


def infonce_bound(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE bound (nats): mean_i [S_ii - logsumexp_j S_ij] + log b, at most log b."""
    b = scores.shape[0]
    return (torch.diagonal(scores) - torch.logsumexp(scores, dim=1)).mean() + math.log(b)


# --------------------------------------------------------------------------- #
# Critic
# --------------------------------------------------------------------------- #
_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "gelu": nn.GELU}


def _mlp(d_in: int, hidden: tuple[int, ...], d_out: int, activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), _ACTIVATIONS[activation]()]
        d_in = h
    layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


class Critic(nn.Module):
    """A small MLP critic f(x, y) that scores every pair of a batch.

    ``kind='concat'``: f(x, y) = MLP([x, y]) (most expressive, b^2 MLP
    evaluations per batch). ``kind='separable'``: f(x, y) = g(x) . h(y) with two
    MLPs into ``embed_dim`` dimensions (2b evaluations per batch).
    ``forward(x, y)`` returns the (b, b) matrix S_ij = f(x_i, y_j).
    """

    def __init__(self, dim_x: int, dim_y: int, *, kind: str = "concat",
                 hidden: tuple[int, ...] = (64, 64), embed_dim: int = 32,
                 activation: str = "relu"):
        super().__init__()
        self.kind = kind
        if kind == "concat":
            self.net = _mlp(dim_x + dim_y, hidden, 1, activation)
        else:
            self.g = _mlp(dim_x, hidden, embed_dim, activation)
            self.h = _mlp(dim_y, hidden, embed_dim, activation)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "concat":
            b = x.shape[0]
            pairs = torch.cat(
                [x[:, None, :].expand(b, b, x.shape[1]), y[None, :, :].expand(b, b, y.shape[1])], dim=2
            )
            return self.net(pairs).squeeze(-1)
        return self.g(x) @ self.h(y).T


def check_hidden(owner: str, hidden: Any) -> None:
    """Raise unless ``hidden`` is a tuple/list of positive ints (MLP hidden sizes)."""
    if isinstance(hidden, bool) or not isinstance(hidden, (tuple, list)) or not all(
        isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1 for h in hidden
    ):
        raise ValueError(f"The 'hidden' parameter of {owner} must be a tuple of positive ints. "
                         f"Got {hidden!r} instead.")


def _as_numpy(a: Any) -> np.ndarray:
    return (a.detach().cpu().numpy() if is_torch(a) else np.asarray(a)).astype(np.float64)


# --------------------------------------------------------------------------- #
# Estimators
# --------------------------------------------------------------------------- #
_COMMON_PARAMS = """
    critic : {'concat', 'separable'}, default %(critic)r
        Critic architecture (see :class:`Critic`).
    hidden : tuple of int, default (64, 64)
        Hidden layer sizes of the critic MLP(s).
    embed_dim : int, default 32
        Embedding size of the separable critic.
    activation : {'relu', 'elu', 'tanh', 'gelu'}, default 'relu'
    batch_size : int, default %(batch_size)r
        Training minibatch size; also the largest held-out evaluation batch.
    lr : float, default 1e-3
        Adam learning rate.
    max_epochs : int, default %(max_epochs)r
    patience : int, default 10
        Stop after this many epochs without a better held-out bound.
    test_fraction : float in (0, 1), default 0.3
        Share of the rows held out to evaluate the bound.
    seed : int or None, default 0
        Seeds the split, the critic initialization and the minibatch order.
        On CPU the estimate is deterministic given the seed.
    device : str, torch.device or None
        Where to train; None follows the input tensor (CUDA if it is there),
        CPU for numpy input.
    unit : {'bits', 'nats'}, default 'bits'

    Attributes
    ----------
    critic_ : Critic
        The trained critic (best held-out epoch), in eval mode. It takes the
        preprocessed inputs: standardized continuous columns (``x_mean_``,
        ``x_std_``, ``y_mean_``, ``y_std_``) or one-hot codes.
    history_ : list of dict
        One entry per epoch: ``{'epoch', 'train', 'test'}`` with the mean
        training-batch bound and the held-out bound, in ``unit``.
    best_epoch_ : int
        Epoch whose critic was kept.
    converged_ : bool
        False when training used all ``max_epochs`` and still improved within
        the last ``patience`` epochs (flag ``critic_not_converged``).
    flags_ : tuple of str
        Diagnostic flags of the last call (see ``FLAG_DESCRIPTIONS``).
"""

# the settings every trained estimator (neural bounds, flows) shares: network width, optimizer, early stopping
TRAINING_CONSTRAINTS = {
    "hidden": [InstanceOf((tuple, list), "a tuple of positive ints")],
    "batch_size": [Interval(int, 2, None)],
    "lr": [Interval(float, 0, None, closed="neither")],
    "max_epochs": [Interval(int, 1, None)],
    "patience": [Interval(int, 1, None)],
    "test_fraction": [Interval(float, 0, 1, closed="neither")],
    "seed": [NONE, Interval(int, 0, None)],
    "device": [NONE, InstanceOf((str, torch.device), "a device name or torch.device")],
}

_NEURAL_CONSTRAINTS = {
    "critic": [Options(("concat", "separable"))],
    "embed_dim": [Interval(int, 1, None)],
    "activation": [Options(tuple(_ACTIVATIONS))],
    **TRAINING_CONSTRAINTS,
}

_MIN_SPLIT = 8  # fewest rows accepted in either part of the split


def held_out_split(x: Any, y: Any, test_fraction: float, seed: int | None, owner: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) of a trained estimator: canonical row order, then a seeded permutation.

    The rows are first put in lexicographic order of their values, so the
    estimate depends on the set of rows, not on their order. Each part must
    hold at least 8 rows (a ValueError naming ``owner`` says how many).
    """
    n = x.shape[0]
    n_test = int(round(test_fraction * n))
    if n_test < _MIN_SPLIT or n - n_test < _MIN_SPLIT:
        raise ValueError(
            f"{owner} needs at least {_MIN_SPLIT} training and {_MIN_SPLIT} held-out "
            f"samples; n = {n} with test_fraction = {test_fraction} gives {n - n_test} and "
            f"{n_test}. Pass more samples or change 'test_fraction'."
        )
    canon = np.lexsort(np.concatenate([_as_numpy(x), _as_numpy(y)], axis=1).T[::-1])
    perm = canon[check_random_state(seed).permutation(n)]
    return perm[n_test:], perm[:n_test]


class _NeuralBound(BaseMIEstimator):
    bound = "lower"
    keep_torch = True
    min_samples = 2 * _MIN_SPLIT
    diagnostics = frozenset({"labels"})  # a discrete partner caps the value at H(Y)
    _constraints = _NEURAL_CONSTRAINTS
    _default_critic = "concat"

    def __init__(self, *, critic: str | None = None, hidden: tuple[int, ...] = (64, 64),
                 embed_dim: int = 32, activation: str = "relu", batch_size: int = 128,
                 lr: float = 1e-3, max_epochs: int = 100, patience: int = 10,
                 test_fraction: float = 0.3, seed: int | None = 0, device: Any = None,
                 unit: str = "bits"):
        self.critic = self._default_critic if critic is None else critic
        self.hidden = hidden
        self.embed_dim = embed_dim
        self.activation = activation
        self.batch_size = batch_size
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.test_fraction = test_fraction
        self.seed = seed
        self.device = device
        self.unit = unit
        self._check_params()
        check_hidden(type(self).__name__, hidden)

    # ----------------------------------------------------------- the bound
    def _bound(self, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _loss(self, scores: torch.Tensor) -> torch.Tensor:
        """Training loss of one batch (minus the bound unless overridden)."""
        return -self._bound(scores)

    def _start_training(self) -> None:
        """Reset any state kept across training batches."""

    def _evaluate(self, critic: Critic, x: torch.Tensor, y: torch.Tensor) -> float:
        """Held-out bound (nats) over nearly equal chunks of at most ``batch_size`` rows."""
        n = x.shape[0]
        chunks = torch.tensor_split(torch.arange(n, device=x.device), math.ceil(n / self.batch_size))
        with torch.no_grad():
            return self._pooled([critic(x[c], y[c]) for c in chunks])

    def _pooled(self, score_mats: list[torch.Tensor]) -> float:
        """Combine the score matrices of several evaluation chunks into one bound (nats)."""
        raise NotImplementedError

    # ---------------------------------------------------------- preprocess
    @staticmethod
    def _encode(a: Any, discrete: bool, train_idx: np.ndarray, device: torch.device
                ) -> tuple[torch.Tensor, Any, Any]:
        if discrete:
            arr = a.cpu().numpy() if is_torch(a) else np.asarray(a)
            ids, m = discrete_symbols(arr)
            onehot = torch.nn.functional.one_hot(torch.as_tensor(ids, device=device), max(m, 2))
            return onehot.to(torch.float32), None, None
        t = a.to(device=device, dtype=torch.float32) if is_torch(a) else torch.as_tensor(
            np.asarray(a), dtype=torch.float32, device=device)
        tr = t[torch.as_tensor(train_idx, device=device)]
        mean = tr.mean(dim=0)
        std = tr.std(dim=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return (t - mean) / std, mean, std

    # ------------------------------------------------------------- fitting
    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        train_idx, test_idx = held_out_split(x, y, self.test_fraction, self.seed, type(self).__name__)
        like = x if is_torch(x) else y
        device = resolve_device(self.device, like=like)
        xt, self.x_mean_, self.x_std_ = self._encode(x, discrete_x, train_idx, device)
        yt, self.y_mean_, self.y_std_ = self._encode(y, discrete_y, train_idx, device)
        tr = torch.as_tensor(train_idx, device=device)
        te = torch.as_tensor(test_idx, device=device)
        x_tr, y_tr, x_te, y_te = xt[tr], yt[tr], xt[te], yt[te]

        def build() -> Critic:
            return Critic(xt.shape[1], yt.shape[1], kind=self.critic, hidden=tuple(self.hidden),
                          embed_dim=self.embed_dim, activation=self.activation).to(device)

        def batch_loss(critic: Critic, xb: torch.Tensor, yb: torch.Tensor):
            scores = critic(xb, yb)
            return self._loss(scores), self._bound(scores.detach())

        self._start_training()
        fit = train_early_stopping(
            build, x_tr, y_tr, batch_loss, lambda critic: self._evaluate(critic, x_te, y_te),
            lr=self.lr, batch_size=self.batch_size, max_epochs=self.max_epochs,
            patience=self.patience, seed=self.seed, device=device, owner=type(self).__name__,
            objective="held-out bound")
        self.critic_ = fit.module
        self.history_ = history_in_unit(fit.history, self.unit, ("train", "test"))
        self.best_epoch_ = fit.best_epoch
        self.converged_ = fit.converged
        return max(fit.best_value, 0.0)

    def _extra_flags(self, x, y, discrete_x, discrete_y) -> tuple[str, ...]:
        return () if self.converged_ else ("critic_not_converged",)


_DOC_TAIL = """
    Notes
    -----
    %(bias)s
    Discrete x or y is one-hot encoded (one category per distinct row); every
    discrete/continuous combination is accepted. Cost: O(epochs * n * b) critic
    evaluations for the concatenated critic (b = batch size), O(epochs * n)
    for the separable one. Needs at least 8 training and 8 held-out rows.

    References
    ----------
%(refs)s"""


class MINE(_NeuralBound):
    name = "mine"

    def __init__(self, *, ma_rate: float = 0.01, critic: str | None = None,
                 hidden: tuple[int, ...] = (64, 64), embed_dim: int = 32, activation: str = "relu",
                 batch_size: int = 128, lr: float = 1e-3, max_epochs: int = 100, patience: int = 10,
                 test_fraction: float = 0.3, seed: int | None = 0, device: Any = None,
                 unit: str = "bits"):
        self.ma_rate = ma_rate
        super().__init__(critic=critic, hidden=hidden, embed_dim=embed_dim, activation=activation,
                         batch_size=batch_size, lr=lr, max_epochs=max_epochs, patience=patience,
                         test_fraction=test_fraction, seed=seed, device=device, unit=unit)

    _constraints = {**_NEURAL_CONSTRAINTS, "ma_rate": [Interval(float, 0, 1, closed="right")]}

    def _bound(self, scores):
        return dv_bound(scores)

    def _start_training(self) -> None:
        self._log_ma: torch.Tensor | None = None

    def _loss(self, scores):
        # Gradient of log E[e^f] is E[grad f e^f] / E[e^f]; MINE replaces the
        # batch denominator by a moving average m (kept in log space). The
        # surrogate exp(log mean e^f - log m) has exactly that gradient.
        log_mean = _offdiag_logmeanexp(scores)
        lm = log_mean.detach()
        r = float(self.ma_rate)
        if self._log_ma is None or r == 1.0:
            self._log_ma = lm
        else:
            self._log_ma = torch.logaddexp(self._log_ma + math.log1p(-r), lm + math.log(r))
        return -(torch.diagonal(scores).mean() - torch.exp(log_mean - self._log_ma))

    def _pooled(self, score_mats):
        diag = torch.cat([torch.diagonal(s) for s in score_mats])
        off = [s[~torch.eye(s.shape[0], dtype=torch.bool, device=s.device)] for s in score_mats]
        off_all = torch.cat(off)
        return float(diag.mean() - (torch.logsumexp(off_all, 0) - math.log(off_all.numel())))


MINE.__doc__ = (
    """Mutual Information Neural Estimation (Belghazi et al. 2018): the Donsker-Varadhan bound.

    I(X;Y) >= E_p[f] - log E_{p(x)p(y)}[e^f], maximized over a critic f, with
    the moving-average correction of the biased minibatch gradient.

    Parameters
    ----------
    ma_rate : float in (0, 1], default 0.01
        Rate of the exponential moving average of E[e^f] used in the gradient
        (1 gives the plain, biased minibatch gradient).""" + _COMMON_PARAMS % {
        "critic": "concat", "batch_size": 128, "max_epochs": 100}
    + _DOC_TAIL % {
        "bias": "Bias: a lower bound in expectation for any critic; the finite-sample DV value\n"
                "    (log of a sample mean) is itself slightly biased, and the estimate is low when\n"
                "    the critic is under-trained. High variance when I(X;Y) is large\n"
                "    (McAllester & Stratos 2020: any such bound needs ~e^I samples).",
        "refs": "    .. [1] Belghazi et al., ICML 2018.\n    .. [2] Poole et al., ICML 2019.",
    }
)


class NWJ(_NeuralBound):
    name = "nwj"

    def _bound(self, scores):
        return nwj_bound(scores)

    def _pooled(self, score_mats):
        diag = torch.cat([torch.diagonal(s) for s in score_mats])
        off_all = torch.cat([s[~torch.eye(s.shape[0], dtype=torch.bool, device=s.device)] for s in score_mats])
        return float(diag.mean() - torch.exp(torch.logsumexp(off_all, 0) - math.log(off_all.numel()) - 1.0))


NWJ.__doc__ = (
    """Nguyen-Wainwright-Jordan (f-GAN KL) variational lower bound.

    I(X;Y) >= E_p[f] - e^{-1} E_{p(x)p(y)}[e^f], maximized over a critic f.
    Unbiased minibatch gradients; the optimum is f = 1 + log p(x,y)/(p(x)p(y)).

    Parameters
    ----------""" + _COMMON_PARAMS % {"critic": "concat", "batch_size": 128, "max_epochs": 100}
    + _DOC_TAIL % {
        "bias": "Bias: a lower bound (in expectation) for any critic; low when the critic is\n"
                "    under-trained. Its variance grows like e^I (Poole et al. 2019; Song & Ermon\n"
                "    2020), so it is unreliable beyond a few bits.",
        "refs": "    .. [1] Nguyen, Wainwright & Jordan, IEEE Trans. Inf. Theory 56(11), 2010.\n"
                "    .. [2] Nowozin, Cseke & Tomioka, NeurIPS 2016.\n    .. [3] Poole et al., ICML 2019.",
    }
)


class InfoNCE(_NeuralBound):
    name = "infonce"
    _default_critic = "separable"

    def _bound(self, scores):
        return infonce_bound(scores)

    def eval_ceiling_nats(self, n_test: int) -> float:
        """The cap of the held-out bound (nats): the mean over held-out rows of log(chunk size).

        The held-out rows are scored in ceil(n_test / batch_size) nearly equal
        chunks and each row's InfoNCE term is at most log of its chunk's size.
        """
        sizes = [len(c) for c in np.array_split(np.arange(n_test), math.ceil(n_test / self.batch_size))]
        return float(sum(s * math.log(s) for s in sizes) / n_test)

    def _ceilings_nats(self, x, y, discrete_x, discrete_y):
        caps = super()._ceilings_nats(x, y, discrete_x, discrete_y)
        n_test = int(round(self.test_fraction * x.shape[0]))  # as in _estimate_nats
        return {**caps, "ceiling_infonce": self.eval_ceiling_nats(n_test)}

    def _pooled(self, score_mats):
        rows = torch.cat([torch.diagonal(s) - torch.logsumexp(s, dim=1) + math.log(s.shape[0])
                          for s in score_mats])
        return float(rows.mean())


InfoNCE.__doc__ = (
    """InfoNCE / contrastive predictive coding lower bound (van den Oord et al. 2018).

    I(X;Y) >= E[ f(x_i, y_i) - log (1/b) sum_j e^{f(x_i, y_j)} ] over batches of b
    pairs. The bound can never exceed log b: **the estimate is capped at
    log(batch_size)** (held-out chunks have at most ``batch_size`` rows), e.g.
    7 bits for b = 128. Use it when I(X;Y) << log b, or raise ``batch_size``.

    Parameters
    ----------""" + _COMMON_PARAMS % {"critic": "separable", "batch_size": 128, "max_epochs": 100}
    + _DOC_TAIL % {
        "bias": "Bias: a lower bound, low variance, but saturating at log b: it underestimates\n"
                "    badly once I(X;Y) approaches log(batch_size).",
        "refs": "    .. [1] van den Oord, Li & Vinyals, arXiv:1807.03748, 2018.\n"
                "    .. [2] Poole et al., ICML 2019.",
    }
)
