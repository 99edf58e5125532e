"""The OTLP JSON Lines exporters write the Collector file-exporter format."""

from __future__ import annotations

import io
import json

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from opentelemetry_instrumentation_corevital.exporters.otlp_json import (
    OTLPJsonLogExporter,
    OTLPJsonMetricExporter,
    OTLPJsonSpanExporter,
)


def test_span_line_format(tmp_path):
    path = tmp_path / "traces.jsonl"
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPJsonSpanExporter(path)))
    tracer = provider.get_tracer("scope-x", "1.2")
    with tracer.start_as_current_span("parent") as parent:
        with tracer.start_as_current_span("child", attributes={"n": 7, "xs": [1.5, 2.5], "ok": True}):
            pass
    provider.shutdown()
    lines = path.read_text().splitlines()
    assert len(lines) == 2  # SimpleSpanProcessor: one export, one line, per span
    child = json.loads(lines[0])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    ctx = parent.get_span_context()
    assert child["name"] == "child"
    assert child["traceId"] == f"{ctx.trace_id:032x}"
    assert child["parentSpanId"] == f"{ctx.span_id:016x}"
    assert child["kind"] == 1
    assert isinstance(child["startTimeUnixNano"], str) and int(child["startTimeUnixNano"]) > 0
    attrs = {kv["key"]: kv["value"] for kv in child["attributes"]}
    assert attrs == {
        "n": {"intValue": "7"},
        "ok": {"boolValue": True},
        "xs": {"arrayValue": {"values": [{"doubleValue": 1.5}, {"doubleValue": 2.5}]}},
    }
    scope = json.loads(lines[0])["resourceSpans"][0]["scopeSpans"][0]["scope"]
    assert scope == {"name": "scope-x", "version": "1.2"}


def test_metric_and_log_lines(tmp_path):
    stream = io.StringIO()
    reader = PeriodicExportingMetricReader(OTLPJsonMetricExporter(stream=stream), export_interval_millis=3_600_000)
    meter_provider = MeterProvider(metric_readers=[reader])
    meter_provider.get_meter("m").create_counter("things", unit="{thing}").add(3, {"k": "v"})
    meter_provider.shutdown()
    (metric,) = json.loads(stream.getvalue())["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    assert metric["name"] == "things" and metric["unit"] == "{thing}"
    (point,) = metric["sum"]["dataPoints"]
    assert point["asInt"] == "3" and metric["sum"]["aggregationTemporality"] == 2 and metric["sum"]["isMonotonic"]

    logs = tmp_path / "logs.jsonl"
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPJsonLogExporter(logs)))
    logger_provider.get_logger("l").emit(event_name="corevital.test", body="hello", attributes={"a": 1})
    logger_provider.shutdown()
    (record,) = json.loads(logs.read_text())["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert record["eventName"] == "corevital.test"
    assert record["body"] == {"stringValue": "hello"}


def test_write_failure_loses_telemetry_without_raising(tmp_path, caplog):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPJsonSpanExporter(blocked / "traces.jsonl")))
    tracer = provider.get_tracer("t")
    for _ in range(3):
        with tracer.start_as_current_span("s"):
            pass
    provider.shutdown()
    warnings = [r for r in caplog.records if "could not write telemetry" in r.getMessage()]
    assert len(warnings) == 1
