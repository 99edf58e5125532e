"""configure() and its settings: clear errors for bad values, Prometheus beside an SDK pipeline, opt-in per-layer
and per-step telemetry, and OTLP JSON lines rotation."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from opentelemetry_instrumentation_corevital import ConfigurationError, CoreVitalInstrumentor, configure, names
from opentelemetry_instrumentation_corevital._config import ExporterSettings, resolve
from opentelemetry_instrumentation_corevital.exporters.rotation import Rotation, append_line, backup_files
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

PROMPT = torch.tensor([[1, 17, 42, 99, 7]])


def generate(model, tokens=5, **kwargs):
    return model.generate(
        PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=tokens, do_sample=False, **kwargs
    )


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        (
            {"exporters": "prometheus,kafka"},
            {},
            "exporters='prometheus,kafka': 'kafka' is not an exporter; use any of otlp",
        ),
        (
            {},
            {"OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS": "sqlite,nope"},
            "OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS='sqlite,nope': 'nope' is not an exporter",
        ),
        (
            {"exporters": "prometheus", "prometheus_port": 70000},
            {},
            "prometheus_port=70000 must be between 0 and 65535",
        ),
        (
            {"exporters": "prometheus"},
            {"OTEL_EXPORTER_PROMETHEUS_PORT": "http"},
            "OTEL_EXPORTER_PROMETHEUS_PORT='http' is not a whole number",
        ),
        ({"exporters": "dogstatsd", "dogstatsd_host": "a b"}, {}, "dogstatsd_host='a b' is not a host name"),
        ({"exporters": "otlp-json", "otlp_json_max_bytes": -1}, {}, "otlp_json_max_bytes=-1 must be >= 0"),
        ({"exporters": "ddtrace,otlp"}, {}, "'ddtrace' and 'otlp' both want CoreVital's spans"),
    ],
)
def test_bad_exporter_options_fail_at_configure_time(kwargs, env, message, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as info:
        configure(**kwargs)
    assert message in str(info.value)


def test_settings_read_standard_variables():
    settings = resolve(
        ExporterSettings,
        {},
        {
            "OTEL_EXPORTER_PROMETHEUS_HOST": "localhost",
            "OTEL_EXPORTER_PROMETHEUS_PORT": "9999",
            "DD_AGENT_HOST": "10.1.2.3",
            "DD_DOGSTATSD_PORT": "8126",
            "WANDB_PROJECT": "p",
        },
    )
    assert (settings.prometheus_host, settings.prometheus_port) == ("127.0.0.1", 9999)
    assert (settings.dogstatsd_host, settings.dogstatsd_port) == ("10.1.2.3", 8126)
    assert settings.wandb_project == "p"
    assert (
        resolve(ExporterSettings, {"prometheus_port": 1234}, {"OTEL_EXPORTER_PROMETHEUS_PORT": "9999"}).prometheus_port
        == 1234
    )


def test_port_in_use_is_a_clear_configuration_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"prometheus_port={port} on 127.0.0.1 is already in use"):
            configure(exporters="prometheus", prometheus_port=port)


def test_prometheus_serves_the_sdk_pipelines_metrics(tiny_llama, tmp_path):
    """exporters="otlp-json,prometheus": one meter provider, read by both the file exporter and the endpoint."""
    from prometheus_client import generate_latest

    with configure(exporters="otlp-json,prometheus", prometheus_port=0, out=tmp_path) as config:
        assert config.prometheus_url == f"http://127.0.0.1:{config.prometheus.port}/metrics"
        CoreVitalInstrumentor().instrument(**config.instrument_kwargs())
        generate(tiny_llama)
        CoreVitalInstrumentor().uninstrument()
        exposition = generate_latest(config.prometheus.registry).decode()
    assert exposition.count("corevital_risk_score_count{") == 1
    metrics = [
        m
        for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
        for rm in json.loads(line)["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for m in sm["metrics"]
    ]
    (risk,) = [m for m in metrics if m["name"] == names.METRIC_RISK_SCORE]
    assert risk["histogram"]["dataPoints"][0]["count"] == "1"


def test_token_entropy_histogram_counts_every_step(tiny_llama):
    with TelemetryCapture() as capture:
        generate(tiny_llama, 7)
    metric = capture.metrics()[names.METRIC_TOKEN_ENTROPY]
    assert metric.unit == "bit"
    (point,) = metric.data.data_points
    entropy = capture.reports[0].sequences[0].timeline.entropy
    assert point.count == 7 and point.sum == pytest.approx(sum(entropy), rel=1e-12)
    assert tuple(point.explicit_bounds) == names.ENTROPY_BUCKETS
    assert names.METRIC_LAYER_PREFIX + "hidden_norm" not in capture.metrics()  # full capture only


def test_step_logs_carry_the_generation_risk_for_routing(tiny_llama):
    """Full capture's per-step records carry the generation's risk level and score (the routing key)."""
    with TelemetryCapture(capture="full", capture_content=True) as capture:
        output = generate(tiny_llama, 4)
    report = capture.reports[0]
    records = [log.log_record for log in capture.logs() if log.log_record.event_name == names.EVENT_STEP_LOG]
    assert len(records) == 4
    span = capture.spans()[0]
    for step, record in enumerate(records):
        attrs = dict(record.attributes)
        assert attrs[names.STEP_INDEX] == step
        assert attrs[names.RISK_LEVEL] == report.summary.risk_level
        assert attrs[names.RISK_SCORE] == report.summary.risk_score
        assert attrs[names.OPERATION_NAME] == "text_completion"
        assert attrs["corevital.entropy"] == report.sequences[0].timeline.entropy[step]
        assert attrs[names.TOKEN_ID] == output[0, PROMPT.shape[1] + step].item()
        assert record.trace_id == span.context.trace_id and record.span_id == span.context.span_id


def test_otlp_json_files_rotate(tiny_llama, tmp_path):
    out = tmp_path / "data"
    instrumentor = CoreVitalInstrumentor()
    with configure(exporters="otlp-json", out=out, otlp_json_max_bytes=6000, otlp_json_backups=2) as config:
        instrumentor.instrument(report_log=True, **config.instrument_kwargs())
        try:
            for _ in range(6):
                generate(tiny_llama, 5)
        finally:
            instrumentor.uninstrument()
    traces = out / "traces.jsonl"
    backups = backup_files(traces)
    assert len(backups) == 2  # older ones were removed
    spans = 0
    for path in [*backups, traces]:
        assert path.stat().st_size <= 6000 or len(path.read_text().splitlines()) == 1
        for line in path.read_text().splitlines():
            spans += len(json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"])
    assert 1 <= spans < 6  # the newest spans survive in whole lines; the oldest rotated away
    assert [p.name.startswith("traces-") and p.suffix == ".jsonl" for p in backups] == [True, True]


def test_rotation_keeps_lines_whole(tmp_path):
    path = tmp_path / "logs.jsonl"
    rotation = Rotation(max_bytes=25, backups=10)
    for i in range(10):
        append_line(path, json.dumps({"i": i, "pad": "x" * 5}) + "\n", rotation)
    files = [*backup_files(path), path]
    lines = [json.loads(line)["i"] for f in files for line in f.read_text().splitlines()]
    assert lines == list(range(10))
    assert all(len(f.read_text().splitlines()) == 1 for f in files)  # each 24-byte line fills a file


def test_configured_ids_do_not_repeat_when_the_application_seeds_random(tmp_path):
    """vLLM seeds Python's random with 0 in every engine process: the SDK's default ids would repeat."""
    import random

    from opentelemetry_instrumentation_corevital import configure

    ids = []
    for _ in range(2):
        with configure(exporters="otlp-json", out=str(tmp_path)) as config:
            random.seed(0)
            tracer = config.instrument_kwargs()["tracer_provider"].get_tracer("test")
            with tracer.start_as_current_span("one") as span:
                context = span.get_span_context()
                ids.append((context.trace_id, context.span_id))
    assert ids[0][0] != ids[1][0] and ids[0][1] != ids[1][1]
