"""Adapters to other training stacks and loggers (optional extras).

* :mod:`ibscope.integrations.lightning` (extra ``lightning``):
  ``InformationPlaneCallback`` and ``WeightInformationCallback`` for a
  PyTorch Lightning ``Trainer``, and ``IbscopeCallback`` to run any
  :class:`ibscope.training.Callback` inside Lightning.
* :mod:`ibscope.integrations.tensorboard` (extra ``tensorboard``): per-layer
  scalars and the information-plane figure on a ``SummaryWriter``.
* :mod:`ibscope.integrations.hf_trainer` (extra ``hf``): ``IbscopeTrainerCallback``
  runs :func:`ibscope.lm.analyze` inside a ``transformers.Trainer``.

None is imported by ``import ibscope``; each raises an ImportError naming
the extra to install when its package is missing.
"""

__all__ = ["hf_trainer", "lightning", "tensorboard"]
