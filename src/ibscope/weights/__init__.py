"""Information in the weights: PAC-Bayes IIW, Fisher information, information Lagrangian.

See docs/weights.md for the formulas, their constants and the prior-mean trade-offs.
"""

from ._common import bootstrap_prior, heldout_prior, init_prior, snapshot_parameters
from ._fisher import FisherResult, fisher
from ._iiw import IIWResult, iiw, projection_matrix
from ._lagrangian import LagrangianResult, diagonal_gaussian_kl, information_lagrangian

__all__ = [
    "FisherResult", "IIWResult", "LagrangianResult", "diagonal_gaussian_kl", "information_lagrangian", "bootstrap_prior", "fisher", "heldout_prior", "iiw", "init_prior",
    "projection_matrix", "snapshot_parameters",
]
