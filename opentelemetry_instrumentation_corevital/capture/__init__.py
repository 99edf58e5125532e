"""Device-side capture: capture sources fill one CaptureResult per call (taps, one reduce per step, one transfer).

What other packages use: the plan, the source interface and the ``transformers``
source, the attention interception switch, and the logit statistics the
signals are held to.
"""

from ._intercept import install as install_attention_interception
from ._intercept import uninstall as uninstall_attention_interception
from ._logprobs import LogprobsSource
from ._plan import CapturePlan
from ._source import CaptureSource
from ._stats import chosen_surprisal, logit_stats
from ._transformers import TransformersSource

__all__ = [
    "CapturePlan",
    "CaptureSource",
    "LogprobsSource",
    "TransformersSource",
    "chosen_surprisal",
    "install_attention_interception",
    "logit_stats",
    "uninstall_attention_interception",
]
