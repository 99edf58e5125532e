"""From a report to OpenTelemetry: span attributes, metrics and log records."""

from . import _names as names
from ._logs import FanOutLogger, emit_report, emit_steps
from ._metrics import FanOutInstruments, Instruments, metric_attributes
from ._span import corevital_attributes, genai_attributes, output_messages, span_name

__all__ = [
    "Instruments",
    "corevital_attributes",
    "emit_report",
    "emit_steps",
    "FanOutInstruments",
    "FanOutLogger",
    "genai_attributes",
    "metric_attributes",
    "names",
    "output_messages",
    "span_name",
]
