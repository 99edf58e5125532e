"""Device-side capture: capture sources fill one CaptureResult per call (taps, one reduce per step, one transfer).

What other packages use: the plan, the source interface and the ``transformers``
source, the attention interception switch, and the logit statistics the
signals are held to.
"""

from ._graph_pool import clear as forget_graphs
from ._intercept import install as install_attention_interception
from ._intercept import uninstall as uninstall_attention_interception
from ._logprobs import LogprobsSource
from ._plan import CapturePlan
from ._source import CaptureSource
from ._stats import chosen_surprisal, logit_stats
from ._transformers import TransformersSource
from ._vllm_batch import MARKER as VLLM_MARKER
from ._vllm_batch import marker_of as vllm_marker_of
from ._vllm_engine import after_step as vllm_after_step
from ._vllm_engine import finish as finish_vllm_request
from ._vllm_engine import register_model as register_vllm_model
from ._vllm_engine import set_sink as set_vllm_sink
from ._vllm_request import RequestCapture as VLLMRequestCapture

__all__ = [
    "CapturePlan",
    "CaptureSource",
    "LogprobsSource",
    "TransformersSource",
    "VLLMRequestCapture",
    "VLLM_MARKER",
    "finish_vllm_request",
    "forget_graphs",
    "chosen_surprisal",
    "install_attention_interception",
    "logit_stats",
    "register_vllm_model",
    "set_vllm_sink",
    "uninstall_attention_interception",
    "vllm_after_step",
    "vllm_marker_of",
]
