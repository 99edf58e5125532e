"""Builds what ``exporters=`` names: SDK pipelines, a Prometheus endpoint, ddtrace spans, report exporters.

Shared by ``instrument(exporters=...)`` and ``corevital run --exporter``.

* ``otlp``, ``otlp-json``, ``console``, ``datadog`` get one SDK
  ``TracerProvider``, ``MeterProvider`` and ``LoggerProvider`` between them
  (CoreVital's own; yours are left alone). ``datadog`` is OTLP/HTTP protobuf
  with **delta** temporality for counters and histograms, which the Datadog
  Agent's and Datadog's OTLP intake need.
* ``prometheus`` serves CoreVital's metrics for scraping.
* ``ddtrace`` creates CoreVital's spans through ddtrace's OpenTelemetry API
  support, so they are ddtrace spans sent to the Datadog Agent.
* ``dogstatsd``, ``sqlite``, ``wandb`` receive each finished report on a
  background thread (:mod:`.dispatch`).

Every exporter is wrapped so that a backend that is down or slow costs
telemetry only: nothing raises into ``generate()``, queues are bounded by
the SDK processors and the dispatcher, and one warning per exporter says that
data is being lost.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .._errors import ConfigurationError, OutputError
from .settings import ExporterSettings

_logger = logging.getLogger(__name__)

SDK_EXPORTERS = ("otlp", "otlp-json", "console", "datadog")
TRACE_EXPORTERS = SDK_EXPORTERS + ("ddtrace",)
REPORT_EXPORTERS = ("dogstatsd", "sqlite", "wandb")
_EXTRAS = {"prometheus": "prometheus", "wandb": "wandb", "ddtrace": "ddtrace"}


def _missing(name: str, exc: ImportError) -> ConfigurationError:
    extra = _EXTRAS.get(name, "cli")
    return ConfigurationError(
        f"exporter {name!r} needs a package that is not installed ({exc.name or exc}); "
        f'install it with pip install "opentelemetry-instrumentation-corevital[{extra}]"'
    )


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


class _Once:
    """One warning per exporter when its data starts being lost."""

    def __init__(self, name: str) -> None:
        self.name, self.failures, self._warned = name, 0, False
        self.detail: str | None = None

    def __enter__(self) -> "_Once":
        _guarded.once = self
        return self

    def __exit__(self, *exc: object) -> None:
        _guarded.once = None

    def failed(self, signal: str, detail: object) -> None:
        self.failures += 1
        if not self._warned:
            self._warned = True
            _logger.warning(
                "CoreVital could not export %s to %s (telemetry lost, output unaffected; "
                "further failures of this exporter are not logged): %s",
                signal, self.name, self.detail or detail,
            )


def _guard(inner: Any, once: _Once, signal: str) -> Any:
    """Wrap an SDK span, log or metric exporter: failures become ``once``'s single warning, never exceptions."""
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    if isinstance(inner, MetricExporter):
        base: type = MetricExporter
        success, failure = MetricExportResult.SUCCESS, MetricExportResult.FAILURE
    elif isinstance(inner, LogRecordExporter):
        base, success, failure = LogRecordExporter, LogRecordExportResult.SUCCESS, LogRecordExportResult.FAILURE
    else:
        base, success, failure = SpanExporter, SpanExportResult.SUCCESS, SpanExportResult.FAILURE

    class Guarded(base):  # type: ignore[valid-type, misc]
        def __init__(self) -> None:
            if base is MetricExporter:  # the reader asks the exporter for its temporality and aggregation
                MetricExporter.__init__(
                    self,
                    preferred_temporality=inner._preferred_temporality,
                    preferred_aggregation=inner._preferred_aggregation,
                )
            self.inner = inner

        def export(self, data: Any, *args: Any, **kwargs: Any) -> Any:
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


def delta_temporality() -> dict[type, Any]:
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


def _otlp_exporters(protocol: str, temporality: dict | None = None) -> tuple[Any, Any, Any]:
    """OTLP exporters; endpoints, headers and timeouts come from the standard OTEL_EXPORTER_OTLP_* variables."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        raise ConfigurationError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use grpc or http/protobuf"
        )
    metric_kwargs = {"preferred_temporality": temporality} if temporality else {}
    return OTLPSpanExporter(), OTLPMetricExporter(**metric_kwargs), OTLPLogExporter()


@dataclass
class Pipeline:
    """What ``build_pipeline`` made; ``shutdown()`` flushes and stops all of it."""

    names: tuple[str, ...] = ()
    sdk: bool = False  # an SDK pipeline (otlp, otlp-json, console, datadog) carries all three signals
    tracer_provider: Any = None  # CoreVital's own (SDK or ddtrace); None: use the caller's
    meter_provider: Any = None  # the SDK pipeline's (Prometheus reader included), or Prometheus' own
    logger_provider: Any = None
    prometheus: Any = None  # a PrometheusEndpoint
    dispatcher: Any = None  # a ReportDispatcher
    files: list[Path] = field(default_factory=list)
    _sdk: list[Any] = field(default_factory=list)

    def submit(self, report: Any) -> None:
        if self.dispatcher is not None:
            self.dispatcher.submit(report)

    def flush(self, timeout: float = 30.0) -> None:
        for provider in self._sdk:
            try:
                provider.force_flush()
            except Exception:
                pass
        if self.dispatcher is not None:
            self.dispatcher.flush(timeout)

    def shutdown(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.shutdown()
        for provider in self._sdk:
            try:
                provider.shutdown()
            except Exception as exc:
                _logger.debug("shutting down %r failed: %r", provider, exc)
        if self.prometheus is not None:
            self.prometheus.shutdown()


def _sdk_pipeline(pipeline: Pipeline, names: Sequence[str], settings: ExporterSettings, resource: Any,
                  readers: list[Any]) -> None:
    try:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        raise _missing(names[0], exc) from exc

    tracer_provider = TracerProvider(resource=resource)
    logger_provider = LoggerProvider(resource=resource)
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

            folder = settings.otlp_json_dir
            ensure_writable(folder)
            rotation = Rotation(settings.otlp_json_max_bytes, settings.otlp_json_backups)
            files = [folder / TRACES_FILE, folder / METRICS_FILE, folder / LOGS_FILE]
            pipeline.files.extend(files)
            spans: Any = OTLPJsonSpanExporter(files[0], rotation=rotation)
            metrics: Any = OTLPJsonMetricExporter(files[1], rotation=rotation)
            logs: Any = OTLPJsonLogExporter(files[2], rotation=rotation)
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
        once = _Once(name)
        span_exporter = _guard(spans, once, "spans")
        log_exporter = _guard(logs, once, "log records")
        if simple:
            tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
            logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
        else:
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
            logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
        readers.append(PeriodicExportingMetricReader(_guard(metrics, once, "metrics")))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    pipeline.sdk = True
    pipeline.tracer_provider = tracer_provider
    pipeline.meter_provider = meter_provider
    pipeline.logger_provider = logger_provider
    # Metrics first: their final export happens while spans and logs can still be flushed.
    pipeline._sdk.extend([meter_provider, tracer_provider, logger_provider])


def ensure_writable(folder: Path, label: str = "") -> Path:
    """Create ``folder`` if needed and prove we can write in it, or raise one clear error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".corevital-write-test"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to {label}{folder}: {exc.strerror or type(exc).__name__}") from exc
    return folder


def _ddtrace_provider() -> Any:
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


def _resource(names: Sequence[str]) -> Any:
    """The SDK resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), when an SDK part is built."""
    if not any(n in SDK_EXPORTERS or n == "prometheus" for n in names):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
    except ImportError as exc:
        raise _missing(names[0], exc) from exc
    return Resource.create()


def build_pipeline(names: Sequence[str], settings: ExporterSettings) -> Pipeline:
    """Build every exporter in ``names``; raise ConfigurationError/OutputError before anything starts half-way."""
    names = tuple(names)
    pipeline = Pipeline(names=names)
    sdk = [n for n in names if n in SDK_EXPORTERS]
    if sdk and "ddtrace" in names:
        raise ConfigurationError(
            f"exporters: 'ddtrace' and {sdk[0]!r} both want CoreVital's spans; choose one trace destination"
        )
    built: list[Any] = []
    try:
        resource = _resource(names)
        readers: list[Any] = []
        if "prometheus" in names:
            try:
                from .prometheus import PrometheusEndpoint

                # With an SDK pipeline the endpoint serves that pipeline's MeterProvider (one set of measurements).
                pipeline.prometheus = PrometheusEndpoint(
                    settings.prometheus_host, settings.prometheus_port, resource, own_provider=not sdk
                )
            except ImportError as exc:
                raise _missing("prometheus", exc) from exc
            readers.append(pipeline.prometheus.reader)
            pipeline.meter_provider = pipeline.prometheus.meter_provider
        if sdk:
            _sdk_pipeline(pipeline, sdk, settings, resource, readers)
        if "ddtrace" in names:
            pipeline.tracer_provider = _ddtrace_provider()
        for name in (n for n in names if n in REPORT_EXPORTERS):
            built.append(_report_exporter(name, settings))
        if built:
            from .dispatch import ReportDispatcher

            pipeline.dispatcher = ReportDispatcher(built, settings.export_queue_size)
    except BaseException:
        for exporter in built:
            try:
                exporter.shutdown()
            except Exception:
                pass
        pipeline.shutdown()
        raise
    return pipeline


def _report_exporter(name: str, settings: ExporterSettings) -> Any:
    if name == "sqlite":
        from .sqlite import SQLiteReportExporter

        try:
            return SQLiteReportExporter(settings.sqlite_path)
        except Exception as exc:
            raise OutputError(f"cannot open the SQLite store {settings.sqlite_path}: {exc}") from exc
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
