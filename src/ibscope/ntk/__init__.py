"""Infinite-width analytics: NNGP / NTK kernels and the information of infinite ensembles.

* :func:`kernels` -- closed-form NNGP kernel and NTK of a fully connected
  network (ReLU or erf) in the NTK parameterization (neural-tangents conventions).
* :class:`GradientFlowMSE` / :func:`gradient_flow_predict` -- the Gaussian
  distribution of the ensemble's outputs after gradient flow on the MSE for a
  time ``t`` (``inf`` included), from one eigendecomposition.
* :func:`ensemble_information` / :func:`fisher_trace` -- I(X;Z) bounds, Gibbs
  and Bayes losses, the KL bound on I(Z;D|X) and the Fisher trace over time,
  after Shwartz-Ziv & Alemi (AABI 2020). See docs/ntk.md.
"""

from __future__ import annotations

from ._information import QUANTITIES, EnsembleInformation, ensemble_information, fisher_trace
from ._kernels import ACTIVATIONS, Kernels, kernels
from ._predict import GaussianPrediction, GradientFlowMSE, check_times, gradient_flow_predict

__all__ = [
    "ACTIVATIONS",
    "QUANTITIES",
    "EnsembleInformation",
    "GaussianPrediction",
    "GradientFlowMSE",
    "Kernels",
    "check_times",
    "ensemble_information",
    "fisher_trace",
    "gradient_flow_predict",
    "kernels",
]
