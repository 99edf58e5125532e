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
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
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


def to_otlp_json(message: Any) -> dict[str, Any]:
    """An OTLP protobuf request as an OTLP/JSON dictionary."""
    return _hex_ids(MessageToDict(message, use_integers_for_enums=True))


class _LineWriter:
    """Appends one JSON document per line to a path or a text stream, thread-safely."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        stream: IO[str] | None = None,
        rotation: Rotation | None = None,
    ) -> None:
        if (path is None) == (stream is None):
            raise ValueError("give exactly one of path or stream")
        self.path = os.fspath(path) if path is not None else None
        self._stream = stream
        self._rotation = rotation
        self._lock = threading.Lock()
        self._warned = False

    def write(self, document: dict[str, Any]) -> bool:
        line = json.dumps(document, separators=(",", ":"), ensure_ascii=False) + "\n"
        try:
            with self._lock:
                if self._stream is not None:
                    self._stream.write(line)
                    self._stream.flush()
                else:
                    append_line(Path(self.path), line, self._rotation)  # type: ignore[arg-type]
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                _logger.warning("CoreVital could not write telemetry to %s: %s", self.path or "stream", exc)
            return False


class _JsonLinesExporter:
    """One OTLP request per line: the body shared by the three signal exporters below.

    A subclass names its SDK base class, the encoder of its batch and its result enum.
    """

    _encode: Callable[[Any], Any]
    _result: Any  # SpanExportResult, MetricExportResult or LogRecordExportResult

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        stream: IO[str] | None = None,
        rotation: Rotation | None = None,
    ) -> None:
        self._writer = _LineWriter(path, stream, rotation)

    def export(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        if not (batch.resource_metrics if isinstance(batch, MetricsData) else batch):
            return self._result.SUCCESS
        ok = self._writer.write(to_otlp_json(type(self)._encode(batch)))
        return self._result.SUCCESS if ok else self._result.FAILURE

    def force_flush(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        return None


class OTLPJsonSpanExporter(_JsonLinesExporter, SpanExporter):
    """Spans, one ``ExportTraceServiceRequest`` per line."""

    _encode, _result = encode_spans, SpanExportResult


class OTLPJsonLogExporter(_JsonLinesExporter, LogRecordExporter):
    """Log records, one ``ExportLogsServiceRequest`` per line."""

    _encode, _result = encode_logs, LogRecordExportResult


class OTLPJsonMetricExporter(_JsonLinesExporter, MetricExporter):
    """Metrics, one ``ExportMetricsServiceRequest`` per line (temporality and aggregation as the reader asks)."""

    _encode, _result = encode_metrics, MetricExportResult

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        stream: IO[str] | None = None,
        preferred_temporality: dict | None = None,
        preferred_aggregation: dict | None = None,
        rotation: Rotation | None = None,
    ) -> None:
        MetricExporter.__init__(
            self, preferred_temporality=preferred_temporality, preferred_aggregation=preferred_aggregation
        )
        _JsonLinesExporter.__init__(self, path, stream, rotation)
