"""Language models: layer-wise representation measures over training checkpoints.

Measures (pure torch functions, :mod:`ibscope.lm._measures`), after Skean et
al., "Layer by Layer" (ICML 2025, arXiv:2502.02013):

* :func:`matrix_entropy` -- matrix-based Renyi alpha-entropy of the unit-trace
  Gram matrix Z Z^T of N representations (linear kernel), in bits by default,
  optionally normalised by log N, log D or min(log N, log D);
* :func:`prompt_entropy` -- that entropy over one prompt's tokens (padding
  excluded), averaged over prompts; :func:`dataset_entropy` -- over the
  prompts' mean-pooled representations (:func:`mean_pool`);
* :func:`effective_rank` -- Roy & Vetterli (EUSIPCO 2007): exp of the Shannon
  entropy of the normalised singular values.
* :func:`lanczos_entropy` -- the matrix entropy (alpha >= 1) by stochastic
  Lanczos quadrature (Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl. 2017) with
  a standard error, from products with Z only; ``method='auto'`` in the
  entropies and :func:`analyze` uses it above min(N, D) = :data:`LANCZOS_MIN_SIZE`.

:func:`analyze` runs them layer by layer over a model or its checkpoints
(tidy table, intervals, flags, resumable output directory);
:func:`plot_lm_measures` draws measure by layer, one line per checkpoint.
A synthetic language with a known entropy rate (:class:`MarkovSource`), a
tiny GPT-2 trained here on it or on the Python documentation
(:func:`tiny_gpt`, :func:`train_tiny_gpt`, :func:`python_docs_corpus`) and
its held-out cross-entropy (:func:`next_token_cross_entropy`) give ground
truth for the next-token information. transformers is needed only to load checkpoint directories; the measures and
``analyze`` on an in-memory model need only torch. See docs/language_models.md.
"""

from ._analyze import (
    DEFAULT_MEASURES,
    FLAG_DESCRIPTIONS,
    MEASURES,
    RESULTS_FILE,
    SOFT_MEASURES,
    SOFT_PLANE,
    analyze,
    load_checkpoint,
)
from ._measures import (
    LANCZOS_MIN_SIZE,
    METHODS,
    NORMALIZATIONS,
    LanczosEntropy,
    dataset_entropy,
    effective_rank,
    gram_spectrum,
    lanczos_entropy,
    matrix_entropy,
    mean_pool,
    prompt_entropy,
)
from ._plot import plot_lm_measures
from ._soft import soft_entropy, soft_information_plane
from ._synthetic import MarkovSource
from ._tiny import chunk, next_token_cross_entropy, python_docs_corpus, tiny_gpt, train_tiny_gpt

__all__ = [
    "DEFAULT_MEASURES",
    "FLAG_DESCRIPTIONS",
    "LANCZOS_MIN_SIZE",
    "LanczosEntropy",
    "METHODS",
    "MarkovSource",
    "MEASURES",
    "NORMALIZATIONS",
    "RESULTS_FILE",
    "SOFT_MEASURES",
    "SOFT_PLANE",
    "analyze",
    "chunk",
    "dataset_entropy",
    "effective_rank",
    "gram_spectrum",
    "lanczos_entropy",
    "load_checkpoint",
    "matrix_entropy",
    "mean_pool",
    "next_token_cross_entropy",
    "plot_lm_measures",
    "prompt_entropy",
    "python_docs_corpus",
    "soft_entropy",
    "soft_information_plane",
    "tiny_gpt",
    "train_tiny_gpt",
]
