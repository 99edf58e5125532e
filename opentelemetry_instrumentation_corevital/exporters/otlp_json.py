"""OTLP JSON Lines file exporters for spans, metrics and log records.

The format is the OpenTelemetry file-exporter format, the one the Collector's
``file`` exporter writes and its ``otlpjsonfile`` receiver reads: one
``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest`` /
``ExportLogsServiceRequest`` per line in OTLP/JSON encoding (lowerCamelCase
keys, hex trace and span ids, 64-bit integers as strings, enums as numbers).

We encode with the SDK's own OTLP protobuf encoders and protobuf's JSON
mapping, then turn the base64 ids into hex, so the field set is exactly what
the OTLP exporters send over the wire. A write that fails (disk full, folder
removed) loses that batch and logs one warning; it never raises into the
application. Files can rotate by size (``rotation=``, see :mod:`.rotation`).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.metrics.view import Aggregation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .rotation import Rotation, append_line

_logger = logging.getLogger(__name__)

TRACES_FILE = "traces.jsonl"
METRICS_FILE = "metrics.jsonl"
LOGS_FILE = "logs.jsonl"

_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


def _hex_ids(node: Any) -> Any:
    """Rewrite protobuf-JSON base64 ids (traceId, spanId, parentSpanId) as lowercase hex, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)
    return node


def to_otlp_json(message: Message) -> dict[str, Any]:
    """An OTLP protobuf request as an OTLP/JSON dictionary."""
    return _hex_ids(MessageToDict(message, use_integers_for_enums=True))


class _JsonLinesExporter:
    """One OTLP request per line, to a path or a text stream, thread-safely: the body of the three exporters below."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        stream: IO[str] | None = None,
        rotation: Rotation | None = None,
    ) -> None:
        if (path is None) == (stream is None):
            raise ValueError("give exactly one of path or stream")
        self.path = Path(path) if path is not None else None
        self._stream = stream
        self._rotation = rotation
        self._lock = threading.Lock()
        self._warned = False

    def _write(self, request: Message) -> bool:
        """Append ``request`` as one line; False (and one warning per exporter) when the write fails."""
        line = json.dumps(to_otlp_json(request), separators=(",", ":"), ensure_ascii=False) + "\n"
        try:
            with self._lock:
                if self.path is not None:
                    append_line(self.path, line, self._rotation)
                elif self._stream is not None:
                    self._stream.write(line)
                    self._stream.flush()
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                _logger.warning("CoreVital could not write telemetry to %s: %s", self.path or "stream", exc)
            return False

    def force_flush(self, *args: Any, **kwargs: Any) -> bool:
        """Nothing is buffered: every batch is written when exported."""
        return True

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to close: every write opens and closes the file."""
        return None


class OTLPJsonSpanExporter(_JsonLinesExporter, SpanExporter):
    """Spans, one ``ExportTraceServiceRequest`` per line."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the batch as one line; a failed write loses it and returns FAILURE, never raises."""
        ok = not spans or self._write(encode_spans(spans))
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


class OTLPJsonLogExporter(_JsonLinesExporter, LogRecordExporter):
    """Log records, one ``ExportLogsServiceRequest`` per line."""

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Write the batch as one line; a failed write loses it and returns FAILURE, never raises."""
        ok = not batch or self._write(encode_logs(batch))
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE


class OTLPJsonMetricExporter(_JsonLinesExporter, MetricExporter):
    """Metrics, one ``ExportMetricsServiceRequest`` per line (temporality and aggregation as the reader asks)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        stream: IO[str] | None = None,
        preferred_temporality: dict[type, AggregationTemporality] | None = None,
        preferred_aggregation: dict[type, Aggregation] | None = None,
        rotation: Rotation | None = None,
    ) -> None:
        MetricExporter.__init__(
            self, preferred_temporality=preferred_temporality, preferred_aggregation=preferred_aggregation
        )
        _JsonLinesExporter.__init__(self, path, stream, rotation)

    def export(self, metrics_data: MetricsData, *args: Any, **kwargs: Any) -> MetricExportResult:
        """Write the batch as one line; a failed write loses it and returns FAILURE, never raises."""
        ok = not metrics_data.resource_metrics or self._write(encode_metrics(metrics_data))
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE
