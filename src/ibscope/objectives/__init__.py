"""Information-bottleneck training objectives and samplers.

* PIB (Wang et al. 2022): :class:`SGLD` (a ``torch.optim.Optimizer``),
  :class:`PolynomialDecay`, :class:`PosteriorEnsemble`, :class:`PIBLoss`,
  :func:`train_gibbs`;
* VIB (Alemi et al. 2017): :class:`StochasticEncoder`, :class:`VIBClassifier`,
  :class:`VIBLoss`, :func:`vib_bounds`;
* dual IB (Piran et al. 2020): :class:`NoisyLabels`, :class:`DualIBLoss`;
* CS-IB for regression (Yu et al. 2024): :func:`cs_divergence`, :func:`cs_qmi`,
  :class:`CSIBLoss`; matrix-based Renyi entropy as a loss:
  :func:`matrix_renyi_entropy`, :func:`matrix_renyi_mi`;
* :class:`AnnealingSchedule` for any loss weight.

Every loss is an ``nn.Module`` returning ``(loss, terms)`` (``terms`` a dict of
floats with their ``unit``), so it drops into a plain training loop. See
docs/objectives.md.
"""

from ._cs import (
    CSIBLoss,
    cs_divergence,
    cs_qmi,
    cs_qmi_normalized,
    csib_code_loss,
    gaussian_gram,
    kernel_width,
    matrix_renyi_entropy,
    matrix_renyi_mi,
)
from ._dual_ib import DualIBLoss, NoisyLabels
from ._pib import GibbsResult, NonFiniteLossError, PIBLoss, per_example_gradients, train_gibbs
from ._schedule import AnnealingSchedule
from ._sgld import SGLD, PolynomialDecay, PosteriorEnsemble, polynomial_decay
from ._vib import StochasticEncoder, VIBClassifier, VIBLoss, VIBOutput, gaussian_kl, vib_bounds

__all__ = [
    "AnnealingSchedule", "CSIBLoss", "DualIBLoss", "GibbsResult", "NoisyLabels", "NonFiniteLossError",
    "PIBLoss", "PolynomialDecay", "PosteriorEnsemble", "SGLD", "StochasticEncoder", "VIBClassifier",
    "VIBLoss", "VIBOutput", "cs_divergence", "cs_qmi", "cs_qmi_normalized", "csib_code_loss", "gaussian_gram", "gaussian_kl", "kernel_width",
    "matrix_renyi_entropy", "matrix_renyi_mi", "per_example_gradients", "polynomial_decay", "train_gibbs",
    "vib_bounds",
]
