"""Log records: the whole report as one event, for pipelines that keep full detail.

The body is the report's JSON text (schema-validated, exact round trip), sent
with the span's context so backends join it to the trace. Opt-in: a report
is tens of kilobytes for long generations.
"""

from __future__ import annotations

from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.context import Context

from .. import names as n
from ..report import Report


def emit_report(logger: Logger, report: Report, context: Context | None, timestamp: int | None = None) -> None:
    """``timestamp`` (ns since the epoch) defaults to now; ``corevital migrate`` passes the original run's time."""
    logger.emit(
        timestamp=timestamp,
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
