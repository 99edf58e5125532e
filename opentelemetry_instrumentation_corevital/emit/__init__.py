"""From a report to OpenTelemetry: span attributes, metrics and log records."""

from ._background import drain, hand_off
from ._genai_events import emit_failure_details
from ._logs import emit_report
from ._metrics import Instruments, metric_attributes
from ._publish import publish
from ._span import corevital_attributes, genai_attributes, layer_means, output_messages, report_detail, span_name
from ._steps import add_step_events, emit_step_logs, select_steps

__all__ = [
    "Instruments",
    "add_step_events",
    "emit_step_logs",
    "layer_means",
    "select_steps",
    "corevital_attributes",
    "drain",
    "hand_off",
    "emit_failure_details",
    "emit_report",
    "genai_attributes",
    "metric_attributes",
    "output_messages",
    "publish",
    "report_detail",
    "span_name",
]
