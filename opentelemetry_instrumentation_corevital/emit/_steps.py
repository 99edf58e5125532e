"""Per-step detail of a full capture: span events (inline timelines) and log records (the complete record).

Span events show the timeline inside Jaeger or Datadog, but the SDK keeps at
most ``OTEL_SPAN_EVENT_COUNT_LIMIT`` (128) events per span and silently drops
the *oldest*. So when a generation has more steps than fit, we choose which
steps become events ourselves: every anomalous step first (non-finite, above
the high-entropy threshold, a surprisal of 8 bits or more, the onset of a
repetition loop; the highest-entropy ones if even those do not fit), then an
even sample of the rest; the span says so with ``corevital.step_events.sampled``.
Log records have no per-span cap: one per step per sequence. The step's
scalar signals are attributes (filterable in a Collector); the per-layer
values of that step travel in a structured body (``{"layers": {"indices": [...],
"hidden_norm": [...], ...}}``), which the SDK stores without validating every
element, so a thousand records cost milliseconds, not a quarter second.
"""

from __future__ import annotations

import math
import os
from typing import Any

from opentelemetry._logs import Logger
from opentelemetry.context import Context
from opentelemetry.trace import Span

from .. import names as n
from ..report import Report, pause

#: Events left free under the SDK limit for other instrumentation (exceptions, user events).
EVENT_RESERVE = 8
SURPRISAL_SPIKE_BITS = 8.0


def event_budget(span: Span) -> int:
    """How many span events we may add: the SDK's event limit less a reserve for others."""
    limits = getattr(span, "_limits", None)
    limit = getattr(limits, "max_events", None)
    if limit is None:
        try:
            limit = int(os.environ.get("OTEL_SPAN_EVENT_COUNT_LIMIT", "128"))
        except ValueError:
            limit = 128
    return max(0, int(limit) - EVENT_RESERVE)


def _anomaly_score(report: Report, seq_index: int, step: int) -> float | None:
    """How anomalous a step is (higher first), or None for an ordinary step."""
    seq = report.sequences[seq_index]
    entropy = seq.timeline.entropy[step]
    surprisal = seq.timeline.surprisal[step] if step < len(seq.timeline.surprisal) else None
    if entropy is None:
        return math.inf
    if seq.flags.repetition_onset_step == step:
        return 1e6
    if entropy > report.thresholds.high_entropy_bits:
        return entropy
    if surprisal is not None and surprisal >= SURPRISAL_SPIKE_BITS:
        return surprisal
    return None


def select_steps(report: Report, budget: int) -> tuple[list[tuple[int, int]], bool]:
    """(sequence, step) pairs to emit as span events, in order, and whether that is a sample."""
    pairs = [(s, t) for s, seq in enumerate(report.sequences) for t in range(len(seq.timeline.entropy))]
    if len(pairs) <= budget:
        return pairs, False
    scored = [(score, pair) for pair in pairs if (score := _anomaly_score(report, *pair)) is not None]
    scored.sort(key=lambda item: item[0], reverse=True)
    chosen = {pair for _, pair in scored[:budget]}
    rest = [pair for pair in pairs if pair not in chosen]
    room = budget - len(chosen)
    if room > 0 and rest:
        stride = len(rest) / room
        chosen.update(rest[min(int(i * stride), len(rest) - 1)] for i in range(room))
    return sorted(chosen), True


def _step_attributes(report: Report, seq_index: int, step: int, content: bool) -> dict[str, Any]:
    seq = report.sequences[seq_index]
    tl = seq.timeline
    attrs: dict[str, Any] = {n.STEP_INDEX: step}
    if len(report.sequences) > 1:
        attrs[n.SEQUENCE_INDEX] = seq_index
    for name in n.STEP_SERIES:
        values = getattr(tl, name)
        if step < len(values) and values[step] is not None:
            attrs[n.CV + name] = float(values[step])
    attrs[n.STEP_ANOMALOUS] = _anomaly_score(report, seq_index, step) is not None
    if content and seq.token_ids is not None and step < len(seq.token_ids):
        attrs[n.TOKEN_ID] = int(seq.token_ids[step])
    return attrs


def _timestamp(report: Report, start_ns: int | None, step: int) -> int | None:
    ends = report.timings.step_end_s
    if start_ns is None or step >= len(ends):
        return None
    return int(start_ns + ends[step] * 1e9)


def add_step_events(span: Span, report: Report, content: bool) -> dict[str, Any]:
    """Add ``corevital.step`` events to ``span``; returns the span attributes describing the selection."""
    budget = event_budget(span)
    pairs, sampled = select_steps(report, budget)
    start_ns = getattr(span, "start_time", None)
    for seq_index, step in pairs:
        span.add_event(
            n.EVENT_STEP,
            _step_attributes(report, seq_index, step, content),
            timestamp=_timestamp(report, start_ns, step),
        )
    total = sum(len(s.timeline.entropy) for s in report.sequences)
    return {n.STEP_EVENTS_TOTAL: total, n.STEP_EVENTS_SAMPLED: sampled}


def emit_step_logs(logger: Logger, report: Report, context: Context, start_ns: int | None, content: bool) -> int:
    """One ``corevital.generation.step`` log record per step per sequence; returns how many."""
    from opentelemetry._logs import SeverityNumber

    count = 0
    for seq_index, seq in enumerate(report.sequences):
        pause()
        layers = seq.layers
        column = {t: j for j, t in enumerate(layers.steps)} if layers is not None else {}
        matrices = [
            (name, getattr(layers, name))
            for name in n.FULL_LAYER_SERIES
            if layers is not None and getattr(layers, name, None) is not None
        ]
        indices = list(layers.indices) if layers is not None else []
        for step in range(len(seq.timeline.entropy)):
            attrs = _step_attributes(report, seq_index, step, content)
            attrs[n.REQUEST_MODEL] = report.model.name
            attrs[n.OPERATION_NAME] = report.request.operation
            # The generation's risk on every step record: a Collector routes risky generations' steps without a join.
            if report.summary.risk_level is not None:
                attrs[n.RISK_LEVEL] = report.summary.risk_level
            if report.summary.risk_score is not None:
                attrs[n.RISK_SCORE] = float(report.summary.risk_score)
            entropy = attrs.get(n.CV + "entropy")
            summary = f"step {step}" + (f" sequence {seq_index}" if len(report.sequences) > 1 else "")
            summary += f": entropy {entropy:.3f} bits" if entropy is not None else ": non-finite"
            body: dict[str, Any] = {"summary": summary}
            j = column.get(step)
            if j is not None and matrices:
                # None (non-finite) is not an OTLP value: such entries are NaN here
                body["layers"] = {
                    "indices": indices,
                    **{
                        name: [row[j] if row[j] is not None else math.nan for row in matrix]
                        for name, matrix in matrices
                    },
                }
            logger.emit(
                event_name=n.EVENT_STEP_LOG,
                body=body,
                severity_number=SeverityNumber.INFO,
                attributes=attrs,
                context=context,
                timestamp=_timestamp(report, start_ns, step),
            )
            count += 1
    return count
