"""Closed-form NNGP and NTK kernels of infinitely wide fully connected networks.

The network is the one of the neural-tangents library [3]_ written as
``serial(Dense(W, b), phi, ..., Dense(W, b), phi, Dense(1, W, b))`` with
``depth`` hidden layers, all in the NTK parameterization: a Dense layer maps
``h -> weight_std / sqrt(n_in) * W h + bias_std * b`` with ``W, b ~ N(0, 1)``.
Its scalar output is, at infinite width, a Gaussian process with covariance
``K`` (the NNGP kernel [1]_) and its gradient-descent dynamics are governed by
the neural tangent kernel ``Theta`` [2]_. Both follow a layer recursion:

* input: ``K = x . x' / d_in``, ``Theta = 0``;
* Dense: ``K <- weight_std**2 * K + bias_std**2``,
  ``Theta <- weight_std**2 * Theta + K`` (the new ``K``);
* activation: ``K <- T(K)``, ``Theta <- Theta * Tdot(K)`` with
  ``T = E[phi(u) phi(v)]`` and ``Tdot = E[phi'(u) phi'(v)]`` for
  ``(u, v) ~ N(0, [[K11, K12], [K12, K22]])``.

Closed forms of ``T`` and ``Tdot``:

* ReLU (arc-cosine kernels of degree 1 and 0, Cho & Saul [4]_), with
  ``theta = atan2(sqrt(K11 K22 - K12**2), K12)``::

      T    = (sqrt(K11 K22 - K12**2) + (pi - theta) K12) / (2 pi)
      Tdot = (pi - theta) / (2 pi)

  (the ``atan2`` form is the usual ``arccos(K12 / sqrt(K11 K22))`` written
  without the division, so it stays exact on the diagonal and finite for
  zero inputs).
* erf (Williams [5]_)::

      T    = (2 / pi) arcsin(2 K12 / sqrt((1 + 2 K11)(1 + 2 K22)))
      Tdot = (4 / pi) / sqrt((1 + 2 K11)(1 + 2 K22) - 4 K12**2)

Everything is computed in float64 torch on the device of the inputs, the
diagonal recursion first (O(n depth)), then the off-diagonal recursion block by
block, so the temporary memory is O(chunk_size**2) on top of the two outputs.

References
----------
.. [1] J. Lee, Y. Bahri, R. Novak, S. Schoenholz, J. Pennington and
   J. Sohl-Dickstein, "Deep neural networks as Gaussian processes", ICLR 2018.
.. [2] A. Jacot, F. Gabriel and C. Hongler, "Neural tangent kernel: convergence
   and generalization in neural networks", NeurIPS 2018.
.. [3] R. Novak et al., "Neural Tangents: fast and easy infinite neural
   networks in Python", ICLR 2020.
.. [4] Y. Cho and L. K. Saul, "Kernel methods for deep learning", NIPS 2009.
.. [5] C. K. I. Williams, "Computing with infinite networks", NIPS 1996.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validation import (
    BOOLEAN,
    Interval,
    Options,
    check_array,
    is_torch,
    resolve_device,
    validate_params,
)

__all__ = ["ACTIVATIONS", "Kernels", "kernels"]

ACTIVATIONS = ("relu", "erf")
_EPS = float(torch.finfo(torch.float64).eps)

_CONSTRAINTS = {
    "depth": [Interval(int, 0, None)],
    "activation": [Options(ACTIVATIONS)],
    "weight_std": [Interval(float, 0, None, closed="neither")],
    "bias_std": [Interval(float, 0, None)],
    "diagonal": [BOOLEAN],
    "chunk_size": [Interval(int, 1, None)],
}


@dataclass(frozen=True)
class Kernels:
    """The NNGP kernel and the NTK of a network's scalar output.

    Attributes
    ----------
    nngp : numpy.ndarray or torch.Tensor, float64
        ``K``: the covariance of the output at initialization. Shape
        ``(n1, n2)``, or ``(n1,)`` when only the diagonal was asked for.
    ntk : numpy.ndarray or torch.Tensor, float64
        ``Theta``: the neural tangent kernel, same shape as ``nngp``.

    Both are numpy arrays when ``x1`` was not a torch tensor, otherwise torch
    tensors on ``x1``'s device (or the ``device`` asked for). A network with
    ``k`` outputs has the kernels ``K ⊗ I_k`` and ``Theta ⊗ I_k``: the
    outputs are independent and identically distributed.
    """

    nngp: Any
    ntk: Any

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.nngp.shape)

    def to_numpy(self) -> Kernels:
        """The same kernels as numpy arrays."""
        if is_torch(self.nngp):
            return Kernels(self.nngp.detach().cpu().numpy(), self.ntk.detach().cpu().numpy())
        return self

    def to_torch(self, device: Any = None) -> Kernels:
        """The same kernels as float64 torch tensors (on ``device``, default: where they are)."""
        return Kernels(_as_tensor(self.nngp, device), _as_tensor(self.ntk, device))


def _as_tensor(a: Any, device: Any = None) -> torch.Tensor:
    if is_torch(a):
        return a.detach().to(device=device if device is not None else a.device, dtype=torch.float64)
    arr = np.asarray(a, dtype=np.float64)
    if not arr.flags.writeable:  # e.g. np.diag views; torch warns on read-only memory
        arr = arr.copy()
    return torch.as_tensor(arr, dtype=torch.float64, device=device)


# --------------------------------------------------------------------------- #
# Activation maps on the diagonal (K11 = K22 = K12)
# --------------------------------------------------------------------------- #
def _relu_diag(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return 0.5 * k, torch.full_like(k, 0.5)


def _erf_diag(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.asin(2.0 * k / (1.0 + 2.0 * k)) * (2.0 / math.pi)
    tdot = (4.0 / math.pi) / (1.0 + 4.0 * k).sqrt()
    return t, tdot


_DIAG_MAPS = {"relu": _relu_diag, "erf": _erf_diag}


def _diag_recursion(sq: torch.Tensor, depth: int, activation: str, w2: float, b2: float):
    """NNGP / NTK on the diagonal; also the pre-activation variances per layer."""
    k = w2 * sq + b2
    th = k.clone()
    pre = []
    for _ in range(depth):
        pre.append(k)
        t, tdot = _DIAG_MAPS[activation](k)
        th = th * tdot
        k = w2 * t + b2
        th = w2 * th + k
    return k, th, pre


class _Buffers:
    """Scratch blocks reused across blocks of one call (fresh large allocations
    page-fault on every use, which dominates elementwise work on CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._store: dict = {}

    def get(self, shape: tuple[int, int]) -> list[torch.Tensor]:
        if shape not in self._store:
            self._store[shape] = [torch.empty(shape, dtype=torch.float64, device=self.device) for _ in range(4)]
        return self._store[shape]


def _block_recursion(a: torch.Tensor, b: torch.Tensor, pre1: list, pre2: list, activation: str,
                     w2: float, b2: float, bufs: _Buffers) -> tuple[torch.Tensor, torch.Tensor]:
    """Off-diagonal recursion on one block, in place on scratch buffers.

    Returns views of the scratch buffers ``(K, Theta)``: copy them out before
    the next block.
    """
    k, th, u, v = bufs.get((a.shape[0], b.shape[0]))
    torch.matmul(a, b.T, out=k)
    k.mul_(w2 / a.shape[1]).add_(b2)
    th.copy_(k)
    for v1, v2 in zip(pre1, pre2, strict=True):
        if activation == "relu":
            # u = sqrt(K11 K22 - K12^2); v = pi - theta; 2 pi T = u + v K12; 2 pi Tdot = v
            # (1 - 16 eps) snaps determinants below rounding noise to exactly 0, so
            # duplicated inputs give exactly duplicated rows (Tdot is not Lipschitz at 0)
            torch.outer(v1, v2, out=u)
            u.mul_(1.0 - 16.0 * _EPS).addcmul_(k, k, value=-1.0).clamp_(min=0.0).sqrt_()
            torch.atan2(u, k, out=v)
            v.neg_().add_(math.pi)
            th.mul_(v)
            u.addcmul_(v, k)
            torch.mul(u, w2 / (2.0 * math.pi), out=k).add_(b2)
            th.mul_(w2 / (2.0 * math.pi)).add_(k)
        else:
            # u = (1 + 2 K11)(1 + 2 K22); v = 2 K12 / sqrt(u); Tdot = 4 / (pi sqrt(u - 4 K12^2))
            torch.outer(1.0 + 2.0 * v1, 1.0 + 2.0 * v2, out=u)
            torch.sqrt(u, out=v)
            torch.div(k, v, out=v).mul_(2.0).clamp_(-1.0, 1.0)
            u.addcmul_(k, k, value=-4.0).clamp_(min=torch.finfo(torch.float64).tiny).rsqrt_()
            th.mul_(u)
            torch.asin(v, out=v)
            torch.mul(v, w2 * 2.0 / math.pi, out=k).add_(b2)
            th.mul_(w2 * 4.0 / math.pi).add_(k)
    return k, th


def kernels(
    x1: Any,
    x2: Any = None,
    *,
    depth: int = 2,
    activation: str = "relu",
    weight_std: float = 1.0,
    bias_std: float = 0.0,
    diagonal: bool = False,
    chunk_size: int = 2048,
    device: Any = None,
) -> Kernels:
    """NNGP kernel ``K`` and NTK ``Theta`` of an infinitely wide fully connected net.

    The architecture and parameterization are those of neural-tangents'
    ``stax.serial(*[Dense(w, weight_std, bias_std), Relu() or Erf()] * depth,
    Dense(1, weight_std, bias_std))`` with ``parameterization='ntk'`` (see the
    module docstring for the recursion and the closed forms).

    Parameters
    ----------
    x1 : array-like or torch.Tensor of shape (n1, d)
        Inputs (flattened). A torch tensor keeps its device (CUDA runs on CUDA).
    x2 : array-like or torch.Tensor of shape (n2, d), optional
        Second set of inputs; default ``x1`` (then the kernels are symmetric).
    depth : int, default 2
        Number of hidden layers (Dense + activation); 0 gives the linear model.
    activation : {'relu', 'erf'}
    weight_std, bias_std : float
        Standard deviations ``sigma_w`` and ``sigma_b`` of every Dense layer,
        the readout included. The first layer's kernel is
        ``sigma_w**2 * x . x' / d + sigma_b**2``.
    diagonal : bool, default False
        If True only ``K(x, x)`` and ``Theta(x, x)`` for the rows of ``x1`` are
        computed (O(n d), shape ``(n1,)``); ``x2`` must then be None.
    chunk_size : int, default 2048
        Rows and columns per block: temporary memory is about
        ``12 * chunk_size**2`` float64 numbers besides the outputs.
    device : None, str or torch.device
        Where to compute; default: the device of ``x1`` (CPU for numpy input).

    Returns
    -------
    Kernels
        ``nngp`` and ``ntk``, each of shape ``(n1, n2)`` (or ``(n1,)``),
        float64; numpy arrays for numpy input, torch tensors for tensor input.

    References
    ----------
    .. [1] J. Lee et al., "Deep neural networks as Gaussian processes", ICLR 2018.
    .. [2] A. Jacot, F. Gabriel and C. Hongler, "Neural tangent kernel", NeurIPS 2018.
    .. [3] R. Novak et al., "Neural Tangents", ICLR 2020.

    Examples
    --------
    >>> import numpy as np
    >>> k = kernels(np.eye(3), depth=1, activation="relu")
    >>> k.nngp.shape, k.ntk.shape
    ((3, 3), (3, 3))
    """
    validate_params(
        "kernels",
        {"depth": depth, "activation": activation, "weight_std": weight_std,
         "bias_std": bias_std, "diagonal": diagonal, "chunk_size": chunk_size},
        _CONSTRAINTS,
    )
    torch_out = is_torch(x1)
    dev = resolve_device(device, like=x1)
    a = _as_tensor(check_array(x1, "x1", min_samples=1, keep_torch=True), dev)
    if x2 is not None:
        if diagonal:
            raise ValueError("'x2' must be None when diagonal=True (the diagonal is K(x1, x1)).")
        b = _as_tensor(check_array(x2, "x2", min_samples=1, keep_torch=True), dev)
        if b.shape[1] != a.shape[1]:
            raise ValueError(
                f"'x1' and 'x2' must have the same number of features; got {a.shape[1]} and {b.shape[1]}."
            )
    else:
        b = None
    d_in = a.shape[1]
    for key, v in (("weight_std", weight_std), ("bias_std", bias_std)):
        if float(v) > 1e100:
            raise ValueError(f"The '{key}' parameter of kernels is too large for float64 kernels "
                             f"(its square and powers overflow); got {v!r}.")
    w2, b2 = float(weight_std) ** 2, float(bias_std) ** 2

    sq1 = (a * a).sum(dim=1) / d_in
    _check_scale(sq1, "x1", w2, b2, depth)
    if b is not None:
        _check_scale((b * b).sum(dim=1) / d_in, "x2", w2, b2, depth)
    k1, th1, pre1 = _diag_recursion(sq1, depth, activation, w2, b2)
    if diagonal:
        return _wrap(k1, th1, torch_out)

    if b is None:
        b, pre2 = a, pre1
    else:
        sq2 = (b * b).sum(dim=1) / d_in
        _, _, pre2 = _diag_recursion(sq2, depth, activation, w2, b2)

    n1, n2 = a.shape[0], b.shape[0]
    nngp = torch.empty((n1, n2), dtype=torch.float64, device=dev)
    ntk = torch.empty((n1, n2), dtype=torch.float64, device=dev)
    symmetric = x2 is None
    bufs = _Buffers(dev)
    for i0 in range(0, n1, chunk_size):
        i1 = min(i0 + chunk_size, n1)
        rows = [p[i0:i1] for p in pre1]
        j_start = i0 if symmetric else 0
        for j0 in range(j_start, n2, chunk_size):
            j1 = min(j0 + chunk_size, n2)
            k, th = _block_recursion(a[i0:i1], b[j0:j1], rows, [p[j0:j1] for p in pre2],
                                     activation, w2, b2, bufs)
            if symmetric and j0 == i0:
                # a diagonal block: BLAS need not give x_i.x_j and x_j.x_i
                # bit-identically (nor vectorized transcendental functions the
                # same last bit in every lane), so mirror the upper triangle:
                # the kernels are then exactly symmetric by construction
                k.triu_().add_(k.triu(1).T)
                th.triu_().add_(th.triu(1).T)
            nngp[i0:i1, j0:j1] = k
            ntk[i0:i1, j0:j1] = th
            if symmetric and j0 != i0:
                nngp[j0:j1, i0:i1] = k.T
                ntk[j0:j1, i0:i1] = th.T
    if symmetric:  # exact diagonal from the diagonal recursion
        idx = torch.arange(n1, device=dev)
        nngp[idx, idx] = k1
        ntk[idx, idx] = th1
    return _wrap(nngp, ntk, torch_out)


def _check_scale(sq: torch.Tensor, name: str, w2: float, b2: float, depth: int) -> None:
    """Refuse inputs whose kernels overflow float64 (instead of returning inf/nan).

    The NNGP variance of a ReLU net grows like (weight_std^2 / 2)^depth |x|^2 / d
    (erf saturates, so only the first layer matters there); beyond ~1e300 the
    recursion (its products K11 K22) is no longer finite.
    """
    try:
        grow = max(w2, 1.0) ** (depth + 1)
        worst = float(sq.max()) * grow + b2 * (depth + 1) * grow
    except OverflowError:
        worst = math.inf
    if not math.isfinite(worst) or worst > 1e150:
        raise ValueError(
            f"'{name}' is too large for float64 kernels: the largest ||x||^2 / d is "
            f"{float(sq.max()):.3g}, whose layer kernels (and their products) overflow. Rescale "
            f"the inputs (e.g. to unit variance per feature) or lower 'weight_std' / 'bias_std'."
        )


def _wrap(nngp: torch.Tensor, ntk: torch.Tensor, torch_out: bool) -> Kernels:
    if torch_out:
        return Kernels(nngp, ntk)
    return Kernels(nngp.cpu().numpy(), ntk.cpu().numpy())
