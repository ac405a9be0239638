"""Recording activations during training: hooks, snapshot schedules, storage."""

from ._recorder import ActivationRecorder
from ._schedule import linear_schedule, log_schedule

__all__ = ["ActivationRecorder", "linear_schedule", "log_schedule"]
