"""Information in the weights: PAC-Bayes IIW, Fisher information, information Lagrangian.

* :func:`iiw` -- I(w;S) after the PAC-Bayes information bottleneck (Wang et al. 2022),
  ``method="fisher_quadratic"`` (scalable) or ``"gaussian_kl"`` (explicit, small models);
* :func:`init_prior`, :func:`heldout_prior`, :func:`bootstrap_prior` -- the prior mean theta_0;
* :func:`fisher` -- Fisher-information trace per layer from per-example gradients;
* :func:`information_lagrangian` -- KL of learned diagonal weight noise (Achille et al. 2019);
* :class:`WeightInformation` -- a training callback recording them at scheduled epochs
  (inside :func:`ibscope.training.fit` or from your own loop);
* :func:`detect_phase_transition` -- the epoch where smoothed IIW peaks, with a confidence.

See docs/weights.md for the formulas, their constants and the prior-mean trade-offs.
"""

from ._common import bootstrap_prior, heldout_prior, init_prior, snapshot_parameters
from ._fisher import FisherResult, fisher
from ._iiw import IIWResult, iiw, projection_matrix
from ._lagrangian import LagrangianResult, diagonal_gaussian_kl, information_lagrangian
from ._phase import PhaseTransition, detect_phase_transition, moving_average
from ._tracker import WeightInformation

__all__ = [
    "FisherResult", "IIWResult", "LagrangianResult", "PhaseTransition", "WeightInformation",
    "bootstrap_prior", "detect_phase_transition", "diagonal_gaussian_kl", "fisher", "heldout_prior",
    "iiw", "information_lagrangian", "init_prior", "moving_average", "projection_matrix",
    "snapshot_parameters",
]
