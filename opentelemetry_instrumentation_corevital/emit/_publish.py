"""A finished generation on the live path: its span's attributes and events, its metrics and step logs.

The report comes complete; ``detail`` (``full`` or ``summary``) says how much of it to emit, so ``on_risk``
below its threshold emits the summary set without the report being cut down first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry._logs import Logger
from opentelemetry.context import Context
from opentelemetry.trace import Span

from .. import names as n
from .._config import CaptureMode, Options
from ..report import ContentPolicy, Report
from ._genai_events import emit_genai_events
from ._metrics import Instruments, metric_attributes
from ._span import (
    corevital_attributes,
    eviction_order,
    fit_json,
    flattens_sequences,
    genai_attributes,
    span_name,
    value_length_limit,
)
from ._steps import add_step_events, emit_step_logs


def publish(
    report: Report,
    detail: str,
    span: Span,
    context: Context,
    instruments: Instruments,
    logger: Logger,
    options: Options,
    content: ContentPolicy,
    extra: Mapping[str, Any],
    provider: str = n.PROVIDER,
    response_id: str | None = None,
) -> None:
    """Emit one generation at ``detail``, content where ``content`` allows; metrics in ``context`` (for exemplars)."""
    span.update_name(span_name(report.request.operation, report.model.name))
    attrs: dict[str, Any] = {}
    if report.perf is not None:
        attrs.update({n.PERF_PREFIX + k: v for k, v in vars(report.perf).items()})
    if options.capture is not CaptureMode.OFF:
        attrs.update(corevital_attributes(report, options.max_span_steps, detail))
        if detail == "full" and options.step_events:
            attrs.update(add_step_events(span, report, content.span))
    else:
        attrs[n.CAPTURE_MODE] = options.capture.value
        timing = corevital_attributes(report, options.max_span_steps, detail)
        attrs.update({k: v for k, v in timing.items() if k.startswith(n.CV + "timing.")})
    if flattens_sequences(span):  # one ddtrace tag per value: the arrays travel in the report and the logs instead
        attrs = {k: v for k, v in attrs.items() if not isinstance(v, (list, tuple))}
    # One call, in the order we can best lose them: the SDK evicts the oldest attributes first, GenAI keys last.
    genai = genai_attributes(report, content.span, provider, response_id)
    span.set_attributes(eviction_order(attrs) | dict(extra) | fit_json(genai, value_length_limit(span)))
    base = metric_attributes(report.request.operation, report.model.name, provider)
    token = otel_context.attach(context)
    try:
        genai = {**extra, **genai_attributes(report, False, provider, response_id)}
        emit_genai_events(logger, report, context, genai, content, provider)
        instruments.record(report, base)
        if detail == "full":
            if options.layer_metrics:
                instruments.record_layers(report, base, options.layer_groups)
            if options.step_logs:
                emit_step_logs(logger, report, context, getattr(span, "start_time", None), content.events)
    finally:
        otel_context.detach(token)
