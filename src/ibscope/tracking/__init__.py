"""Recording activations and the information plane: hooks, the InformationPlane callback, schedules."""

from ._plane import InformationPlane, information_plane
from ._recorder import ActivationRecorder
from ._schedule import linear_schedule, log_schedule

__all__ = ["ActivationRecorder", "InformationPlane", "information_plane", "linear_schedule", "log_schedule"]
