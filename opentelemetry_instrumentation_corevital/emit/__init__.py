"""From a report to OpenTelemetry: span attributes, metrics and log records."""

from . import _names as names
from ._logs import emit_report
from ._metrics import Instruments, metric_attributes
from ._span import corevital_attributes, genai_attributes, output_messages, span_name

__all__ = [
    "Instruments",
    "corevital_attributes",
    "emit_report",
    "genai_attributes",
    "metric_attributes",
    "names",
    "output_messages",
    "span_name",
]
