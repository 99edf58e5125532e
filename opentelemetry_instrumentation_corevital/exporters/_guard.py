"""Exporter guards: a backend that is down or slow costs telemetry only, with one warning per exporter.

:func:`guard` wraps an SDK span, log or metric exporter so that its failures
never raise into the application; the OTLP exporters' own per-export warnings
are held back while we call them, and the first one becomes the detail of our
single warning.
"""

from __future__ import annotations

import logging
import threading
from enum import Enum
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.trace.export import SpanExporter

    Exporter = SpanExporter | LogRecordExporter | MetricExporter

_logger = logging.getLogger(__name__)

_guarded = threading.local()


class _QuietInsideGuard(logging.Filter):
    """Holds back the OTLP exporters' own warnings while *our* guarded exporter calls them.

    Without it a dead backend logs a warning and an error per export, forever.
    The first held-back message becomes the detail of our single warning;
    records logged outside our exports (the application's own exporters) pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        once = getattr(_guarded, "once", None)
        if once is None or record.levelno < logging.WARNING:
            return True
        if once.detail is None:
            once.detail = record.getMessage()
        return False


_QUIET = _QuietInsideGuard()


def _quiet(module: str) -> None:
    for name in (module, module.rsplit(".", 1)[0] + ".exporter"):
        logger = logging.getLogger(name)
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)


class Once:
    """One warning per exporter when its data starts being lost."""

    def __init__(self, name: str) -> None:
        self.name, self.failures, self._warned = name, 0, False
        self.detail: str | None = None

    def __enter__(self) -> Once:
        _guarded.once = self
        return self

    def __exit__(self, *exc: object) -> None:
        _guarded.once = None

    def failed(self, signal: str, detail: object) -> None:
        """Count a lost batch; warn the first time only, with the OTLP exporter's own message when it logged one."""
        self.failures += 1
        if not self._warned:
            self._warned = True
            _logger.warning(
                "CoreVital could not export %s to %s (telemetry lost, output unaffected; "
                "further failures of this exporter are not logged): %s",
                signal,
                self.name,
                self.detail or detail,
            )


@overload
def guard(inner: MetricExporter, once: Once, signal: str) -> MetricExporter: ...
@overload
def guard(inner: LogRecordExporter, once: Once, signal: str) -> LogRecordExporter: ...
@overload
def guard(inner: SpanExporter, once: Once, signal: str) -> SpanExporter: ...
def guard(inner: Exporter, once: Once, signal: str) -> Exporter:
    """Wrap an SDK span, log or metric exporter: failures become ``once``'s single warning, never exceptions."""
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    base: type
    success: Enum
    failure: Enum
    if isinstance(inner, MetricExporter):
        base, success, failure = MetricExporter, MetricExportResult.SUCCESS, MetricExportResult.FAILURE
    elif isinstance(inner, LogRecordExporter):
        base, success, failure = LogRecordExporter, LogRecordExportResult.SUCCESS, LogRecordExportResult.FAILURE
    else:
        base, success, failure = SpanExporter, SpanExportResult.SUCCESS, SpanExportResult.FAILURE

    class Guarded(base):
        def __init__(self) -> None:
            if isinstance(inner, MetricExporter):  # the reader asks the exporter for its temporality and aggregation
                MetricExporter.__init__(
                    self,
                    preferred_temporality=inner._preferred_temporality,
                    preferred_aggregation=inner._preferred_aggregation,
                )
            self.inner = inner

        def export(self, data: Any, *args: Any, **kwargs: Any) -> Enum:
            result: Enum
            try:
                with once:
                    result = self.inner.export(data, *args, **kwargs)
            except Exception as exc:
                result, detail = failure, repr(exc)
            else:
                detail = "the exporter reported a failure"
            if result is not success:
                once.failed(signal, detail)
            return result

        def force_flush(self, *args: Any, **kwargs: Any) -> bool:
            try:
                with once:
                    return bool(self.inner.force_flush(*args, **kwargs))
            except Exception:
                return False

        def shutdown(self, *args: Any, **kwargs: Any) -> None:
            try:
                with once:
                    self.inner.shutdown(*args, **kwargs)
            except Exception as exc:
                once.failed(signal, repr(exc))

    _quiet(type(inner).__module__)
    return Guarded()
