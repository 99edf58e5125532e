"""CoreVital's vLLM plugin: ``vllm serve`` (and any vLLM process) instrumented from the environment.

vLLM calls :func:`register` in every process it starts, the API server and
the engine and worker processes alike. With ``OTEL_INSTRUMENTATION_COREVITAL_VLLM``
true, each process configures its exporters and options from the environment
(as ``opentelemetry-instrument`` would) and instruments itself: the API
server marks requests (with the client's ``traceparent``), the engine reports
them. Without it the plugin does nothing, and vLLM runs as if it were absent.
"""

from __future__ import annotations

import logging
import os

from ._config import VLLM_PLUGIN_ENV
from ._values import parse_bool

_logger = logging.getLogger(__name__)


def enabled() -> bool:
    """Whether the environment turns the plugin on."""
    value = os.environ.get(VLLM_PLUGIN_ENV, "").strip()
    if not value:
        return False
    try:
        return parse_bool(value, VLLM_PLUGIN_ENV)
    except Exception:
        _logger.warning("%s=%r is not a boolean: CoreVital stays off in this vLLM process", VLLM_PLUGIN_ENV, value)
        return False


def register() -> None:
    """vLLM's general-plugin hook: instrument this process when the environment says so (once)."""
    if not enabled():
        return
    from .configuration import ZeroCodeInstrumentor

    try:
        ZeroCodeInstrumentor().instrument()
    except Exception as exc:  # a telemetry problem must not stop the server
        _logger.warning("CoreVital could not instrument this vLLM process (it runs without): %r", exc)
