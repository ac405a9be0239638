"""Gradient-flow predictions of infinite ensembles of infinitely wide networks.

An infinitely wide network trained by gradient flow on the mean squared error

    L(theta) = 1 / (2 n k) * sum_{i, c} (f_c(x_i; theta) - y_ic)**2

(the mean over the ``n k`` entries of the ``(n, k)`` target matrix, as
neural-tangents' ``predict.gradient_descent_mse`` and ``0.5 *
torch.nn.functional.mse_loss``) evolves as its linearization around the
initialization [1]_, whose function is a Gaussian process with the NNGP kernel
``K``. Over the random initializations the output at time ``t`` on inputs
``x*`` is therefore Gaussian, each output independently, with [1]_ (eq. 16)

    A_t    = Theta(x*, X) Theta^-1 (I - exp(-Theta t / (n k)))
    mean_t = A_t Y
    cov_t  = K(x*, x*) - A_t K(X, x*) - K(x*, X) A_t' + A_t K(X, X) A_t'

with ``Theta = Theta(X, X) + diag_reg * I`` on the training inputs ``X``.
One symmetric eigendecomposition ``Theta = V diag(lam) V'`` turns every
matrix function into a scalar one, ``g_t(lam) = (1 - exp(-lam t / (n k))) /
lam``, so many times cost one ``eigh`` plus a few matrix products each;
``t = inf`` gives ``g = 1 / lam`` (kernel regression with the NTK).

References
----------
.. [1] J. Lee, L. Xiao, S. Schoenholz, Y. Bahri, R. Novak, J. Sohl-Dickstein
   and J. Pennington, "Wide neural networks of any depth evolve as linear
   models under gradient descent", NeurIPS 2019.
.. [2] R. Shwartz-Ziv and A. A. Alemi, "Information in infinite ensembles of
   infinitely-wide neural networks", Symposium on Advances in Approximate
   Bayesian Inference (AABI), PMLR 118, 2020.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validation import BOOLEAN, NONE, Interval, check_array, is_torch, validate_params
from ._kernels import Kernels, _as_tensor

__all__ = ["GaussianPrediction", "GradientFlowMSE", "check_times", "gradient_flow_predict"]


@dataclass(frozen=True)
class GaussianPrediction:
    """The Gaussian distribution of an infinite ensemble's outputs at several times.

    Attributes
    ----------
    t : numpy.ndarray, shape (T,)
        Training times (``inf`` allowed).
    mean : shape (T, m, k)
        Ensemble mean of the ``k`` outputs on the ``m`` points.
    var : shape (T, m)
        Variance of each output on each point (the same for all ``k`` outputs).
    cov : shape (T, m, m) or None
        Covariance between points (shared by the ``k`` independent outputs);
        None unless ``full_cov=True``.

    ``mean``, ``var`` and ``cov`` are numpy arrays when the kernels were numpy
    arrays, otherwise float64 torch tensors on the kernels' device.
    """

    t: np.ndarray
    mean: Any
    var: Any
    cov: Any = None


def check_times(t: Any) -> np.ndarray:
    """Validate training times: a scalar or 1-D sequence of floats in [0, inf]."""
    arr = np.atleast_1d(np.asarray(t.detach().cpu() if is_torch(t) else t, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"'t' must be a non-negative number or a 1-D sequence of them; got shape {arr.shape}.")
    if np.isnan(arr).any() or (arr < 0).any():
        raise ValueError(f"'t' must hold times in [0, inf]; got {arr[np.isnan(arr) | (arr < 0)][:5].tolist()}.")
    return arr


class GradientFlowMSE:
    """Gradient-flow (MSE) predictions of an infinite ensemble from one ``eigh``.

    Parameters
    ----------
    k_train : Kernels
        ``kernels(x_train)``: NNGP and NTK on the training inputs, shape (n, n).
    y_train : array-like of shape (n,) or (n, k)
        Regression targets.
    diag_reg : float, default 0.0
        Ridge added to the training NTK before it is inverted:
        ``Theta + diag_reg * mean(diag(Theta)) * I`` (relative to the mean
        diagonal, as neural-tangents does), or ``+ diag_reg * I`` with
        ``diag_reg_absolute_scale=True``.
    diag_reg_absolute_scale : bool, default False

    Attributes
    ----------
    eigenvalues_ : torch.Tensor, shape (n,)
        Eigenvalues of the regularized training NTK (ascending).
    eigenvectors_ : torch.Tensor, shape (n, n)
    normalization_ : int
        ``n * k``: the time scale of the loss (see the module docstring).

    Raises
    ------
    ValueError
        If the regularized training NTK is not (numerically) positive definite.

    References
    ----------
    .. [1] J. Lee et al., "Wide neural networks of any depth evolve as linear
       models under gradient descent", NeurIPS 2019.
    """

    def __init__(self, k_train: Kernels, y_train: Any, *, diag_reg: float = 0.0,
                 diag_reg_absolute_scale: bool = False) -> None:
        self.k_train = k_train
        self.y_train = y_train
        self.diag_reg = diag_reg
        self.diag_reg_absolute_scale = diag_reg_absolute_scale
        validate_params(
            "GradientFlowMSE",
            {"diag_reg": diag_reg, "diag_reg_absolute_scale": diag_reg_absolute_scale},
            {"diag_reg": [Interval(float, 0, None)], "diag_reg_absolute_scale": [BOOLEAN]},
        )
        if not isinstance(k_train, Kernels):
            raise TypeError(f"'k_train' must be a Kernels object (from ibscope.ntk.kernels); got {type(k_train).__name__}.")
        self.torch_out_ = is_torch(k_train.ntk)
        kt = k_train.to_torch()
        ntk, nngp = kt.ntk, kt.nngp
        if ntk.ndim != 2 or ntk.shape[0] != ntk.shape[1] or nngp.shape != ntk.shape:
            raise ValueError(f"'k_train' must hold square (n, n) kernels on the training inputs; got shape {tuple(ntk.shape)}.")
        n = ntk.shape[0]
        y = _as_tensor(check_array(y_train, "y_train", min_samples=1, keep_torch=True), ntk.device)
        if y.shape[0] != n:
            raise ValueError(f"'y_train' has {y.shape[0]} rows but the training kernel is {n} x {n}.")
        self.device_ = ntk.device
        self.n_train_, self.n_outputs_ = n, y.shape[1]
        self.normalization_ = n * y.shape[1]
        reg = float(diag_reg) * (1.0 if diag_reg_absolute_scale else float(torch.diagonal(ntk).mean()))
        sym = 0.5 * (ntk + ntk.T)
        sym.diagonal().add_(reg)
        lam, vec = torch.linalg.eigh(sym)
        lam_max = float(lam[-1])
        tol = n * torch.finfo(torch.float64).eps * max(abs(lam_max), 1.0)
        if not lam_max > 0 or float(lam[0]) <= tol:
            raise ValueError(
                f"The training NTK{' plus diag_reg' if reg else ''} is not positive definite "
                f"(smallest eigenvalue {float(lam[0]):.3g}, largest {lam_max:.3g}); duplicated or "
                f"degenerate training inputs make it singular. Pass a diagonal regularizer, e.g. "
                f"diag_reg=1e-4 (relative to the mean diagonal)."
            )
        self.eigenvalues_, self.eigenvectors_ = lam, vec
        self._ntk, self._nngp, self._vty = ntk, nngp, vec.T @ y
        self._kt_rot = None  # V' K(X, X) V, computed when a covariance is first asked for

    # ------------------------------------------------------------------ #
    def _g(self, t: np.ndarray, learning_rate: float | None = None) -> torch.Tensor:
        """g_t(lam) for every time: shape (T, n).

        Gradient flow: ``(1 - exp(-lam t / N)) / lam``. Gradient descent with
        step ``lr`` after ``s = t / lr`` steps: ``(1 - (1 - lr lam / N)**s) / lam``.
        """
        lam = self.eigenvalues_
        tt = torch.as_tensor(t, dtype=torch.float64, device=self.device_)[:, None]
        finite = torch.isfinite(tt)
        t0 = torch.where(finite, tt, torch.zeros_like(tt))
        if learning_rate is None:
            g = -torch.expm1(-t0 * lam[None, :] / self.normalization_) / lam[None, :]
        else:
            steps = torch.round(t0 / learning_rate)
            if not torch.allclose(steps * learning_rate, t0, rtol=1e-9, atol=0.0):
                raise ValueError("With 'learning_rate', every finite 't' must be a whole number of steps "
                                 "times the learning rate.")
            factor = 1.0 - learning_rate * lam / self.normalization_
            if bool((factor.abs() >= 1.0).any()) and bool((~finite).any()):
                raise ValueError("Gradient descent with this 'learning_rate' diverges (lr * lambda_max / (n k) "
                                 ">= 2), so t = inf has no limit.")
            g = (1.0 - torch.pow(factor[None, :], steps)) / lam[None, :]
        return torch.where(finite, g, (1.0 / lam)[None, :].expand_as(g))

    def predict(self, t: Any, k_test_train: Kernels | None = None, nngp_test: Any = None, *,
                compute_cov: bool = True, full_cov: bool = True,
                learning_rate: float | None = None) -> GaussianPrediction:
        """Ensemble mean (and covariance) at times ``t`` on test points.

        Parameters
        ----------
        t : float or 1-D array of floats in [0, inf]
        k_test_train : Kernels, optional
            ``kernels(x_test, x_train)``, shape (m, n). Default: predict on the
            training points themselves.
        nngp_test : array of shape (m, m) or (m,), optional
            NNGP kernel among the test points (full matrix, or only its
            diagonal ``kernels(x_test, diagonal=True).nngp`` when
            ``full_cov=False``). Required for the covariance on test points.
        compute_cov : bool, default True
            If False only the mean is computed (``var`` is None).
        full_cov : bool, default True
            If False only the variances (diagonal) are computed: O(T m n**2)
            instead of O(T m n (m + n)) and no (T, m, m) array.
        learning_rate : float, optional
            If given, the prediction of discrete full-batch gradient descent
            with this step after ``t / learning_rate`` steps (``t`` must be
            whole multiples) instead of gradient flow: ``exp(-lam t / N)``
            becomes ``(1 - learning_rate lam / N) ** (t / learning_rate)``.

        Returns
        -------
        GaussianPrediction
        """
        validate_params("GradientFlowMSE.predict", {"compute_cov": compute_cov, "full_cov": full_cov},
                        {"compute_cov": [BOOLEAN], "full_cov": [BOOLEAN]})
        ts = check_times(t)
        n = self.n_train_
        if k_test_train is None:
            theta_sx, k_sx = self._ntk, self._nngp
            k_ss = self._nngp if full_cov else torch.diagonal(self._nngp)
        else:
            if not isinstance(k_test_train, Kernels):
                raise TypeError(f"'k_test_train' must be a Kernels object; got {type(k_test_train).__name__}.")
            kst = k_test_train.to_torch(self.device_)
            theta_sx, k_sx = kst.ntk, kst.nngp
            if theta_sx.ndim != 2 or theta_sx.shape[1] != n:
                raise ValueError(
                    f"'k_test_train' must have shape (m, {n}) (test x train); got {tuple(theta_sx.shape)}."
                )
            k_ss = None
            if compute_cov:
                if nngp_test is None:
                    raise ValueError("'nngp_test' (the NNGP kernel among the test points) is needed for the covariance; "
                                     "pass it or compute_cov=False.")
                k_ss = _as_tensor(nngp_test.nngp if isinstance(nngp_test, Kernels) else nngp_test, self.device_)
                m = theta_sx.shape[0]
                if full_cov and tuple(k_ss.shape) != (m, m):
                    raise ValueError(f"'nngp_test' must have shape ({m}, {m}) for full_cov=True; got {tuple(k_ss.shape)}.")
                if not full_cov:
                    if tuple(k_ss.shape) == (m, m):
                        k_ss = torch.diagonal(k_ss)
                    elif tuple(k_ss.shape) != (m,):
                        raise ValueError(f"'nngp_test' must have shape ({m},) or ({m}, {m}); got {tuple(k_ss.shape)}.")

        _check_lr(learning_rate)
        g = self._g(ts, learning_rate)                    # (T, n)
        vec = self.eigenvectors_
        b = theta_sx @ vec                                # (m, n)
        mean = torch.einsum("mj,tj,jk->tmk", b, g, self._vty)
        var = cov = None
        if compute_cov:
            if self._kt_rot is None:
                self._kt_rot = vec.T @ self._nngp @ vec
            c = k_sx @ vec                                # (m, n)
            covs, variances = [], []
            for gi in g:
                bg = b * gi[None, :]
                bgk = bg @ self._kt_rot
                if full_cov:
                    cross = bg @ c.T
                    s = k_ss - cross - cross.T + bgk @ bg.T
                    s = 0.5 * (s + s.T)
                    covs.append(s)
                    variances.append(torch.diagonal(s).clamp(min=0.0))
                else:
                    v = k_ss - 2.0 * (bg * c).sum(dim=1) + (bgk * bg).sum(dim=1)
                    variances.append(v.clamp(min=0.0))
            var = torch.stack(variances)
            cov = torch.stack(covs) if full_cov else None
        if not self.torch_out_:
            mean = mean.cpu().numpy()
            var = None if var is None else var.cpu().numpy()
            cov = None if cov is None else cov.cpu().numpy()
        return GaussianPrediction(t=ts, mean=mean, var=var, cov=cov)

    def linearized(self, t: Any, f0_train: Any, f0_test: Any = None,
                   k_test_train: Kernels | None = None, *, learning_rate: float | None = None) -> Any:
        """Outputs of one linearized network started at ``f0`` (not the ensemble mean).

        ``f_t(x*) = f0(x*) + Theta(x*, X) Theta^-1 (I - exp(-Theta t / (n k))) (Y - f0(X))``:
        what a wide network with initial outputs ``f0`` predicts after
        training for time ``t`` [1]_. Comparing a finite network with this
        removes the ensemble's sampling noise from the comparison.

        Parameters
        ----------
        t : float or 1-D array of floats in [0, inf]
        f0_train : array of shape (n, k)
            The network's outputs on the training inputs at initialization.
        f0_test : array of shape (m, k), optional
            Its initial outputs on the test inputs; default: predict on the
            training inputs (then ``f0_test = f0_train``).
        k_test_train : Kernels, optional
            ``kernels(x_test, x_train)`` (required with ``f0_test``).
        learning_rate : float, optional
            Discrete gradient descent instead of gradient flow (see :meth:`predict`).

        Returns
        -------
        array of shape (T, m, k)
            numpy or torch like the training kernels.
        """
        ts = check_times(t)
        _check_lr(learning_rate)
        n, k = self.n_train_, self.n_outputs_
        f0x = _as_tensor(check_array(f0_train, "f0_train", min_samples=1, keep_torch=True), self.device_)
        if tuple(f0x.shape) != (n, k):
            raise ValueError(f"'f0_train' must have shape ({n}, {k}); got {tuple(f0x.shape)}.")
        if f0_test is None:
            if k_test_train is not None:
                raise ValueError("'f0_test' is needed with 'k_test_train'.")
            theta_sx, f0s = self._ntk, f0x
        else:
            if not isinstance(k_test_train, Kernels):
                raise TypeError("'k_test_train' (a Kernels object, test x train) is needed with 'f0_test'.")
            theta_sx = k_test_train.to_torch(self.device_).ntk
            f0s = _as_tensor(check_array(f0_test, "f0_test", min_samples=1, keep_torch=True), self.device_)
            if theta_sx.ndim != 2 or theta_sx.shape[1] != n or tuple(f0s.shape) != (theta_sx.shape[0], k):
                raise ValueError(f"'k_test_train' must be (m, {n}) and 'f0_test' (m, {k}); got "
                                 f"{tuple(theta_sx.shape)} and {tuple(f0s.shape)}.")
        vty = self._vty - self.eigenvectors_.T @ f0x
        out = f0s[None] + torch.einsum("mj,tj,jk->tmk", theta_sx @ self.eigenvectors_, self._g(ts, learning_rate), vty)
        return out if self.torch_out_ else out.cpu().numpy()


def _check_lr(learning_rate: Any) -> None:
    validate_params("GradientFlowMSE", {"learning_rate": learning_rate},
                    {"learning_rate": [NONE, Interval(float, 0, None, closed="neither")]})


def gradient_flow_predict(k_train: Kernels, y_train: Any, t: Any, k_test_train: Kernels | None = None,
                          nngp_test: Any = None, *, diag_reg: float = 0.0, compute_cov: bool = True,
                          full_cov: bool = True) -> GaussianPrediction:
    """Functional form of :class:`GradientFlowMSE`: ``GradientFlowMSE(...).predict(...)``.

    See :class:`GradientFlowMSE` for the formulas and parameters. Reuse a
    ``GradientFlowMSE`` object to predict on several test sets from one
    eigendecomposition.
    """
    flow = GradientFlowMSE(k_train, y_train, diag_reg=diag_reg)
    return flow.predict(t, k_test_train, nngp_test, compute_cov=compute_cov, full_cov=full_cov)
