"""OpenTelemetry SDK set-up for the CLI: OTLP JSON files, the console, or OTLP.

The instrumentation itself only needs the API; the CLI brings an SDK so that
people without an OpenTelemetry pipeline still get files they can open,
replay into a Collector, or view with ``corevital view``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import OutputError

EXPORTERS = ("otlp-json", "console", "otlp")


@dataclass
class CliTelemetry:
    tracer_provider: Any
    meter_provider: Any
    logger_provider: Any
    files: list[Path] = field(default_factory=list)

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            try:
                provider.force_flush()
            except Exception:
                pass
            try:
                provider.shutdown()
            except Exception:
                pass


def ensure_writable(folder: Path) -> Path:
    """Create ``folder`` if needed and prove we can write in it, or raise one clear error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".corevital-write-test"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"cannot write to --out {folder}: {reason}") from exc
    return folder


def setup(exporter: str, out: Path, service_name: str = "corevital-cli") -> CliTelemetry:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    resource = Resource.create(attributes)
    files: list[Path] = []
    if exporter == "otlp-json":
        from ..exporters.otlp_json import (
            LOGS_FILE,
            METRICS_FILE,
            TRACES_FILE,
            OTLPJsonLogExporter,
            OTLPJsonMetricExporter,
            OTLPJsonSpanExporter,
        )

        ensure_writable(out)
        files = [out / TRACES_FILE, out / METRICS_FILE, out / LOGS_FILE]
        span_processor: Any = SimpleSpanProcessor(OTLPJsonSpanExporter(files[0]))
        metric_exporter: Any = OTLPJsonMetricExporter(files[1])
        log_processor: Any = SimpleLogRecordProcessor(OTLPJsonLogExporter(files[2]))
    elif exporter == "console":
        from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        span_processor = SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout))
        metric_exporter = ConsoleMetricExporter(out=sys.stdout)
        log_processor = SimpleLogRecordProcessor(ConsoleLogRecordExporter(out=sys.stdout))
    elif exporter == "otlp":
        span_exporter, metric_exporter, log_exporter = _otlp_exporters()
        span_processor = BatchSpanProcessor(span_exporter)
        log_processor = BatchLogRecordProcessor(log_exporter)
    else:  # argparse restricts the choices; this guards library callers
        raise OutputError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(span_processor)
    # One export at shutdown: the interval only matters for long-running processes.
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(log_processor)
    return CliTelemetry(tracer_provider, meter_provider, logger_provider, files)


def _otlp_exporters() -> tuple[Any, Any, Any]:
    """OTLP exporters for the protocol in OTEL_EXPORTER_OTLP_PROTOCOL (default http/protobuf).

    Endpoints, headers and timeouts come from the standard OTEL_EXPORTER_OTLP_*
    variables, which the exporters read themselves.
    """
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip().lower()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        raise OutputError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use grpc or http/protobuf"
        )
    return OTLPSpanExporter(), OTLPMetricExporter(), OTLPLogExporter()
