"""Device-side capture: taps inside ``generate``, one reduce per step and one transfer at the end."""

from ._attention import ATTENTION_COLUMNS, PROMPT_COLUMNS
from ._clock import StepClock
from ._hidden import HIDDEN_COLUMNS
from ._moe import MOE_COLUMNS
from ._plan import CapturePlan
from ._session import SERIES, CaptureResult, CaptureSession
from ._stats import STAT_COLUMNS, TOP_K, chosen_surprisal, logit_stats

__all__ = [
    "ATTENTION_COLUMNS",
    "HIDDEN_COLUMNS",
    "MOE_COLUMNS",
    "PROMPT_COLUMNS",
    "SERIES",
    "STAT_COLUMNS",
    "TOP_K",
    "CapturePlan",
    "CaptureResult",
    "CaptureSession",
    "StepClock",
    "chosen_surprisal",
    "logit_stats",
]
