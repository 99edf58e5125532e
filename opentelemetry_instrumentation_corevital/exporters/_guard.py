"""Exporter guards: a backend that is down, slow or blocked costs telemetry only, with one warning per exporter.

:func:`guard` wraps an SDK span, log or metric exporter so that its exports
run on a thread of its own behind a bounded queue (:mod:`._worker`) and its
failures never raise into the application; the OTLP exporters' own
per-export warnings are held back while we call them, and the first one
becomes the detail of our single warning. Failures and drops are counted
(:mod:`.losses`).
"""

from __future__ import annotations

import logging
import threading
from enum import Enum
from typing import TYPE_CHECKING, Any, overload

from ._worker import ExportWorker
from .losses import EXPORT_FAILED, Losses

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

    def __init__(self, name: str, losses: Losses | None = None) -> None:
        self.name, self.failures, self._warned = name, 0, False
        self.losses = losses if losses is not None else Losses()
        self.workers: list[ExportWorker] = []  # the threads its guarded exporters write on
        self.detail: str | None = None

    def __enter__(self) -> Once:
        _guarded.once = self
        return self

    def __exit__(self, *exc: object) -> None:
        _guarded.once = None

    def failed(self, signal: str, detail: object) -> None:
        """Count a lost batch; warn the first time only, with the OTLP exporter's own message when it logged one."""
        self.failures += 1
        self.losses.error(self.name, signal)
        if not self._warned and not any(worker.closed for worker in self.workers):  # shutdown already said so
            self._warned = True
            _logger.warning(
                "CoreVital could not export %s to %s (telemetry lost, output unaffected; "
                "further failures of this exporter are not logged): %s",
                signal,
                self.name,
                self.detail or detail,
            )


@overload
def guard(inner: MetricExporter, once: Once, signal: str, timeout: float = ...) -> MetricExporter: ...
@overload
def guard(inner: LogRecordExporter, once: Once, signal: str, timeout: float = ...) -> LogRecordExporter: ...
@overload
def guard(inner: SpanExporter, once: Once, signal: str, timeout: float = ...) -> SpanExporter: ...
def guard(inner: Exporter, once: Once, signal: str, timeout: float = 2.0) -> Exporter:
    """Wrap an SDK span, log or metric exporter: exports queued for our thread, failures counted, never raised.

    ``timeout``: how long ``shutdown()`` waits for what is queued before dropping (and counting) it.
    """
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    base: type
    success: Enum
    failure: Enum
    metrics = isinstance(inner, MetricExporter)
    if metrics:
        base, success, failure = MetricExporter, MetricExportResult.SUCCESS, MetricExportResult.FAILURE
    elif isinstance(inner, LogRecordExporter):
        base, success, failure = LogRecordExporter, LogRecordExportResult.SUCCESS, LogRecordExportResult.FAILURE
    else:
        base, success, failure = SpanExporter, SpanExportResult.SUCCESS, SpanExportResult.FAILURE

    def export_now(data: Any) -> None:
        result: Enum
        try:
            with once:
                result = inner.export(data)
        except Exception as exc:
            result, detail = failure, repr(exc)
        else:
            detail = "the exporter reported a failure"
        if result is not success:
            once.failed(signal, detail)
            once.losses.drop(once.name, signal, EXPORT_FAILED, 1 if metrics else len(data))

    def stop() -> None:
        try:
            with once:
                inner.shutdown()
        except Exception as exc:
            once.failed(signal, repr(exc))

    class Guarded(base):
        def __init__(self) -> None:
            if isinstance(inner, MetricExporter):  # the reader asks for its temporality and aggregation
                MetricExporter.__init__(
                    self,
                    preferred_temporality=inner._preferred_temporality,
                    preferred_aggregation=inner._preferred_aggregation,
                )
            self.inner = inner
            self.worker = ExportWorker(once.name, signal, export_now, stop, once.losses)
            once.workers.append(self.worker)

        def export(self, data: Any, *args: Any, **kwargs: Any) -> Enum:
            """Queue the batch for our thread; FAILURE (counted) when the queue is full or closed."""
            count = 1 if metrics else len(data)
            return success if self.worker.submit(data, count) else failure

        def force_flush(self, timeout_millis: float = 30_000, *args: Any, **kwargs: Any) -> bool:
            return self.worker.flush(timeout_millis / 1000)

        def shutdown(self, *args: Any, **kwargs: Any) -> None:
            self.worker.close(timeout)

    _quiet(type(inner).__module__)
    return Guarded()
