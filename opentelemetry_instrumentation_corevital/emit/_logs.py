"""Log records: the whole report as one event, for pipelines that keep full detail.

The body is the report's JSON text (schema-validated, exact round trip), sent
with the span's context so backends join it to the trace. Opt-in: a report
is tens of kilobytes for long generations.
"""

from __future__ import annotations

import math

from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.context import Context

from ..report import Report
from . import _names as n


def emit_report(logger: Logger, report: Report, context: Context | None) -> None:
    logger.emit(
        event_name=n.EVENT_REPORT,
        body=report.to_json(),
        severity_number=SeverityNumber.INFO,
        attributes={
            n.REQUEST_MODEL: report.model.name,
            n.OPERATION_NAME: report.request.operation,
            n.SCHEMA_VERSION: report.schema_version,
            **({n.RISK_LEVEL: report.summary.risk_level} if report.summary.risk_level else {}),
            **({n.RISK_SCORE: float(report.summary.risk_score)} if report.summary.risk_score is not None else {}),
        },
        context=context,
    )


def emit_steps(logger: Logger, report: Report, context: Context | None) -> int:
    """One record per generated token (``event_name="corevital.generation.step"``); returns how many.

    Opt-in (``step_logs``): the records exist so that a Collector can route a
    risky generation's steps to their own pipeline, or drop them all in
    production, by ``event_name`` and ``corevital.risk.level``. Each carries
    the generation's risk so that routing needs no join. Token ids only with
    content capture (they are the output).
    """
    base: dict[str, object] = {
        n.REQUEST_MODEL: report.model.name,
        n.OPERATION_NAME: report.request.operation,
    }
    if report.summary.risk_level:
        base[n.RISK_LEVEL] = report.summary.risk_level
    if report.summary.risk_score is not None:
        base[n.RISK_SCORE] = float(report.summary.risk_score)
    count = 0
    for sequence in report.sequences:
        timeline = sequence.timeline
        for step in range(len(timeline.entropy)):
            attributes = dict(base)
            attributes[n.SEQUENCE_INDEX] = sequence.index
            attributes[n.STEP_INDEX] = step
            for series in n.STEP_SERIES:
                values = getattr(timeline, series)
                value = values[step] if step < len(values) else None
                if value is not None and math.isfinite(value):
                    attributes[n.STEP_PREFIX + series] = float(value)
            if sequence.token_ids is not None and step < len(sequence.token_ids):
                attributes[n.TOKEN_ID] = int(sequence.token_ids[step])
            logger.emit(
                event_name=n.EVENT_STEP,
                severity_number=SeverityNumber.INFO,
                attributes=attributes,
                context=context,
            )
            count += 1
    return count


class FanOutLogger:
    """Emits every record through several loggers (the caller's and an exporter pipeline's)."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers

    def emit(self, *args: object, **kwargs: object) -> None:
        for logger in self.loggers:
            logger.emit(*args, **kwargs)  # type: ignore[arg-type]
