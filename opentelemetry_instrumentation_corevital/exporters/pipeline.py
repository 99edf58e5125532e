"""Builds what ``configure(exporters=...)`` names into a :class:`~..configuration.Configuration`.

* ``otlp``, ``otlp-json``, ``console``, ``datadog`` get one SDK
  ``TracerProvider``, ``MeterProvider`` and ``LoggerProvider`` between them.
  ``datadog`` is OTLP/HTTP protobuf with **delta** temporality for counters
  and histograms, which the Datadog Agent's and Datadog's OTLP intake need.
* ``prometheus`` serves the metrics for scraping: the SDK pipeline's meter
  provider when there is one, else a meter provider of its own.
* ``ddtrace`` supplies a tracer provider whose spans are ddtrace spans sent
  to the Datadog Agent. ddtrace makes every element of a sequence attribute a
  tag of its own, so those spans get the scalar ``corevital.*`` attributes
  only (``emit`` leaves the per-step arrays off any ddtrace span).
* ``dogstatsd``, ``sqlite``, ``wandb`` receive each finished report on a
  background thread (:mod:`.dispatch`), through ``Configuration.on_report``.

Every exporter is guarded (:mod:`._guard`) so that a backend that is down,
slow or blocked costs telemetry only: nothing raises into ``generate()``,
no export runs on the application's thread, every queue is bounded (drops
are counted, :mod:`.losses`), one warning per exporter says that data is
being lost, and :func:`stop` returns within the shutdown timeout.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._config import ExporterSettings
from .._errors import ConfigurationError, OutputError
from ..emit import drain
from ..names import METRIC_INTERNAL_DROPPED
from ._guard import Once, guard
from ._worker import ExportWorker

__all__ = ["ExportWorker", "build", "delta_temporality", "each_quietly", "ensure_writable", "flush", "stop"]

if TYPE_CHECKING:
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import TracerProvider

    from ..configuration import Configuration
    from .dispatch import ReportExporter

_logger = logging.getLogger(__name__)

SDK_EXPORTERS = ("otlp", "otlp-json", "console", "datadog")
REPORT_EXPORTERS = ("dogstatsd", "sqlite", "wandb")
_EXTRAS = {"prometheus": "prometheus", "wandb": "wandb", "ddtrace": "ddtrace"}


def _missing(name: str, exc: ImportError) -> ConfigurationError:
    extra = _EXTRAS.get(name, "cli")
    return ConfigurationError(
        f"exporter {name!r} needs a package that is not installed ({exc.name or exc}); "
        f'install it with pip install "opentelemetry-instrumentation-corevital[{extra}]"'
    )


def delta_temporality() -> dict[type, AggregationTemporality]:
    """Delta for counters and histograms, cumulative for up-down counters: what Datadog asks for."""
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    delta, cumulative = AggregationTemporality.DELTA, AggregationTemporality.CUMULATIVE
    return {
        Counter: delta,
        ObservableCounter: delta,
        Histogram: delta,
        UpDownCounter: cumulative,
        ObservableUpDownCounter: cumulative,
        ObservableGauge: cumulative,
    }


def _otlp_exporters(
    protocol: str, temporality: dict[type, AggregationTemporality] | None = None
) -> tuple[SpanExporter, MetricExporter, LogRecordExporter]:
    """OTLP exporters; endpoints, headers and timeouts come from the standard OTEL_EXPORTER_OTLP_* variables."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

        return GrpcSpans(), GrpcMetrics(preferred_temporality=temporality), GrpcLogs()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(), OTLPMetricExporter(preferred_temporality=temporality), OTLPLogExporter()
    raise ConfigurationError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use grpc or http/protobuf")


def _sdk_pipeline(
    config: Configuration,
    names: Sequence[str],
    settings: ExporterSettings,
    resource: Resource | None,
    readers: list[MetricReader],
) -> None:
    try:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        raise _missing(names[0], exc) from exc

    from .ids import SystemRandomIds

    # Configuration.stop() (registered at exit) stops them within the shutdown timeout; the SDK's own exit
    # handlers would wait for each backend as long as it takes.
    tracer_provider = TracerProvider(resource=resource, id_generator=SystemRandomIds(), shutdown_on_exit=False)
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    for name in names:
        if name == "otlp-json":
            from .otlp_json import (
                LOGS_FILE,
                METRICS_FILE,
                TRACES_FILE,
                OTLPJsonLogExporter,
                OTLPJsonMetricExporter,
                OTLPJsonSpanExporter,
            )
            from .rotation import Rotation

            folder = settings.out
            ensure_writable(folder)
            rotation = Rotation(settings.otlp_json_max_bytes, settings.otlp_json_backups)
            files = [folder / TRACES_FILE, folder / METRICS_FILE, folder / LOGS_FILE]
            config.files.extend(files)
            spans: SpanExporter = OTLPJsonSpanExporter(files[0], rotation=rotation)
            metrics: MetricExporter = OTLPJsonMetricExporter(files[1], rotation=rotation)
            logs: LogRecordExporter = OTLPJsonLogExporter(files[2], rotation=rotation)
            simple = True
        elif name == "console":
            import sys

            from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            spans = ConsoleSpanExporter(out=sys.stdout)
            metrics = ConsoleMetricExporter(out=sys.stdout)
            logs = ConsoleLogRecordExporter(out=sys.stdout)
            simple = True
        else:
            try:
                if name == "datadog":
                    spans, metrics, logs = _otlp_exporters("http/protobuf", delta_temporality())
                else:
                    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip().lower()
                    spans, metrics, logs = _otlp_exporters(protocol)
            except ImportError as exc:
                raise _missing(name, exc) from exc
            simple = False
        once = Once(name, config.losses)
        timeout = settings.shutdown_timeout
        span_exporter = guard(spans, once, "spans", timeout)
        log_exporter = guard(logs, once, "log records", timeout)
        metric_exporter = guard(metrics, once, "metrics", timeout)
        config.workers.extend(once.workers)
        # Simple processors hand each span to our queue at once (one line per span in the files, as before).
        if simple:
            tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
            logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
        else:
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
            logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
        readers.append(PeriodicExportingMetricReader(metric_exporter))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    config.losses.observe(meter_provider)
    config.tracer_provider = tracer_provider
    config.meter_provider = meter_provider
    config.logger_provider = logger_provider
    # Metrics first: their final export happens while spans and logs can still be flushed.
    config.providers.extend([meter_provider, tracer_provider, logger_provider])


def ensure_writable(folder: Path, label: str = "") -> Path:
    """Create ``folder`` if needed and prove we can write in it, or raise one clear error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A fresh, exclusive name: a planted .corevital-write-test symlink cannot redirect the probe.
        handle, probe = tempfile.mkstemp(prefix=".corevital-write-test-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write to {label}{folder}: {exc.strerror or type(exc).__name__}") from exc
    return folder


def _ddtrace_provider() -> TracerProvider:
    try:
        from ddtrace.opentelemetry import TracerProvider
    except ImportError as exc:
        raise _missing("ddtrace", exc) from exc
    if os.environ.get("DD_TRACE_OTEL_ENABLED", "").strip().lower() not in ("1", "true"):
        _logger.warning(
            "exporters=ddtrace: DD_TRACE_OTEL_ENABLED is not true, so generation spans will not be children of "
            "ddtrace's active span; set DD_TRACE_OTEL_ENABLED=true before the application starts"
        )
    return TracerProvider()


def _resource(names: Sequence[str]) -> Resource | None:
    """The SDK resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), when an SDK part is built."""
    if not any(n in SDK_EXPORTERS or n == "prometheus" for n in names):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
    except ImportError as exc:
        raise _missing(names[0], exc) from exc
    return Resource.create()


def build(config: Configuration) -> None:
    """Build every exporter ``config.settings`` names into ``config``; on an error, stop what was started."""
    settings = config.settings
    names = settings.exporters
    sdk = [n for n in names if n in SDK_EXPORTERS]
    if sdk and "ddtrace" in names:
        raise ConfigurationError(
            f"exporters: 'ddtrace' and {sdk[0]!r} both want CoreVital's spans; choose one trace destination"
        )
    built: list[ReportExporter] = []
    try:
        resource = _resource(names)
        readers: list[MetricReader] = []
        if "prometheus" in names:
            try:
                from .prometheus import PrometheusEndpoint

                # With an SDK pipeline the endpoint serves that pipeline's MeterProvider (one set of measurements).
                config.prometheus = PrometheusEndpoint(
                    settings.prometheus_host, settings.prometheus_port, resource, own_provider=not sdk
                )
            except ImportError as exc:
                raise _missing("prometheus", exc) from exc
            readers.append(config.prometheus.reader)
            config.meter_provider = config.prometheus.meter_provider
        if sdk:
            _sdk_pipeline(config, sdk, settings, resource, readers)
        if "ddtrace" in names:
            config.tracer_provider = _ddtrace_provider()
        for name in (n for n in names if n in REPORT_EXPORTERS):
            built.append(_report_exporter(name, settings))
            if name == "sqlite":
                config.files.append(settings.sqlite_file)
        if built:
            from .dispatch import ReportDispatcher

            config.dispatcher = ReportDispatcher(built, settings.export_queue_size, config.losses)
    except BaseException:
        each_quietly(exporter.shutdown for exporter in built)
        config.shutdown()
        raise


def flush(config: Configuration, timeout: float) -> bool:
    """Hand what the providers buffer to our queues, then wait (at most ``timeout`` s) until they are written."""
    deadline = time.monotonic() + timeout
    drain(timeout)  # generations whose telemetry is still being emitted (background_emit) first
    each_quietly(provider.force_flush for provider in config.providers)
    done = all([worker.flush(max(0.0, deadline - time.monotonic())) for worker in config.workers])
    if config.dispatcher is not None:
        done = config.dispatcher.flush(max(0.0, deadline - time.monotonic())) and done
    return done


def stop(config: Configuration, timeout: float) -> None:
    """Stop every exporter, provider and endpoint of ``config`` within ``timeout`` seconds.

    What is still queued then is dropped, counted (``corevital.internal.dropped``) and reported in one warning;
    a backend still busy is left to its own daemon thread, which never keeps the process from exiting.
    """
    deadline = time.monotonic() + timeout
    drain(timeout)  # generations whose telemetry is still being emitted (background_emit) first
    for worker in config.workers:
        worker.deadline = deadline

    def reports() -> None:
        if config.dispatcher is not None:
            config.dispatcher.shutdown(timeout)

    def providers() -> None:
        each_quietly(provider.shutdown for provider in config.providers)
        if config.prometheus is not None:
            config.prometheus.shutdown()

    threads = [threading.Thread(target=part, name="corevital-shutdown", daemon=True) for part in (reports, providers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for worker in config.workers:
        worker.close(0.0)
    items = sum(worker.lost_at_shutdown for worker in config.workers)
    reports_lost = 0
    if config.dispatcher is not None:
        config.dispatcher.abandon()
        reports_lost = config.dispatcher.lost_at_shutdown
    if reports_lost or items or any(thread.is_alive() for thread in threads):
        _logger.warning(
            "CoreVital stopped its exporters after %.1f s (shutdown_timeout): %d reports and %d telemetry items "
            "were not delivered (counted in %s)",
            timeout,
            reports_lost,
            items,
            METRIC_INTERNAL_DROPPED,
        )


def each_quietly(calls: Iterable[Callable[[], object]]) -> None:
    """Make every call even when some fail: one backend that cannot flush or stop must not keep the others from it."""
    for call in calls:
        try:
            call()
        except Exception:
            pass


def _report_exporter(name: str, settings: ExporterSettings) -> ReportExporter:
    if name == "sqlite":
        from .sqlite import SQLiteReportExporter

        try:
            return SQLiteReportExporter(settings.sqlite_file)
        except Exception as exc:
            raise OutputError(f"cannot open the SQLite store {settings.sqlite_file}: {exc}") from exc
    if name == "dogstatsd":
        from .dogstatsd import DogStatsDReportExporter

        return DogStatsDReportExporter(settings.dogstatsd_host, settings.dogstatsd_port)
    if name == "wandb":
        try:
            from .wandb import WandbReportExporter

            return WandbReportExporter(project=settings.wandb_project, run=settings.wandb_run)
        except ImportError as exc:
            raise _missing("wandb", exc) from exc
    raise ConfigurationError(f"unknown report exporter {name!r}")  # pragma: no cover - names are validated first
