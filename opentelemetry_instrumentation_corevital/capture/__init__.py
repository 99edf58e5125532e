"""Device-side capture: per-step recording inside ``generate`` and one transfer at the end."""

from ._clock import StepClock
from ._session import SERIES, CaptureResult, CaptureSession
from ._stats import STAT_COLUMNS, TOP_K, chosen_surprisal, logit_stats

__all__ = [
    "SERIES",
    "STAT_COLUMNS",
    "TOP_K",
    "CaptureResult",
    "CaptureSession",
    "StepClock",
    "chosen_surprisal",
    "logit_stats",
]
