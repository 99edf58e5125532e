"""Collector routes. The rotel configurations in collector/rotel run for real: the package sends OTLP to rotel,
which forwards it through a second rotel hop to a local receiver with spans, metrics and logs intact; the
filter drops per-step log records and the high-risk hop keeps only a risky generation's steps.
The OpenTelemetry Collector (contrib) configurations cannot run here (no contrib build with these components is
installable from PyPI, Debian or npm), so their structure is checked against the documented component names."""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, Report, configure, names
from opentelemetry_instrumentation_corevital.emit import emit_step_logs
from opentelemetry_instrumentation_corevital.testing import OTLPSink

from ._services import ROOT, read_env_file, rotel_from_env_file, wait_until
from .conftest import free_port

ROTEL = Path(ROOT) / "collector" / "rotel"
CONTRIB = Path(ROOT) / "collector" / "otelcol-contrib"


def log_records(sink: OTLPSink) -> list[tuple[str, dict]]:
    found = []
    for request in list(sink.requests["logs"]):
        for resource_logs in request.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    attrs = OTLPSink.attributes(record.attributes)
                    found.append((record.event_name, attrs, record))
    return found


def metric_names(sink: OTLPSink) -> set[str]:
    return {
        m.name
        for r in list(sink.requests["metrics"])
        for rm in r.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


@contextmanager
def otlp_env(endpoint: str):
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_generation(model, endpoint: str, extra_steps: Report | None = None, tokens: int = 6) -> list[Report]:
    reports: list[Report] = []
    instrumentor = CoreVitalInstrumentor()
    with otlp_env(endpoint), configure(exporters="otlp") as config:  # leaving flushes the batches into rotel
        instrumentor.instrument(capture="full", report_log=True, **config.instrument_kwargs(on_report=reports.append))
        try:
            prompt = torch.tensor([[1, 17, 42, 99, 7]])
            model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=tokens, do_sample=False)
            if extra_steps is not None:
                logger = config.logger_provider.get_logger("opentelemetry_instrumentation_corevital")
                emit_step_logs(logger, extra_steps, None, None, content=False)
        finally:
            instrumentor.uninstrument()
    return reports


@pytest.mark.slow
def test_two_rotel_hops_keep_spans_metrics_and_logs_intact(tiny_llama, tmp_path):
    with OTLPSink() as sink:
        a_grpc, a_http, b_grpc, b_http = (free_port() for _ in range(4))
        env_file = str(ROTEL / "forward-otlp.env")
        with (
            rotel_from_env_file(env_file, b_grpc, b_http, sink.endpoint, str(tmp_path / "b.log")),
            rotel_from_env_file(env_file, a_grpc, a_http, f"http://127.0.0.1:{b_http}", str(tmp_path / "a.log")),
        ):
            (report,) = run_generation(tiny_llama, f"http://127.0.0.1:{a_http}")
            steps = report.usage.output_tokens
            wait_until(
                lambda: (
                    len([r for r in log_records(sink) if r[0] == names.EVENT_STEP_LOG]) == steps
                    and sink.spans()
                    and names.METRIC_RISK_SCORE in metric_names(sink)
                ),
                timeout=30,
                what="spans, metrics and logs through two rotel hops",
            )
    ((span, attrs),) = sink.spans()
    assert span.trace_id.hex() == report.trace_id and span.span_id.hex() == report.span_id
    assert attrs["corevital.risk.score"] == report.summary.risk_score
    assert attrs["corevital.step.entropy"] == tuple(report.sequences[0].timeline.entropy)
    records = log_records(sink)
    (body,) = [r[2].body.string_value for r in records if r[0] == names.EVENT_REPORT]
    assert Report.from_json(body).to_dict() == report.to_dict()
    step_records = sorted((r for r in records if r[0] == names.EVENT_STEP_LOG), key=lambda r: r[1][names.STEP_INDEX])
    for step, (_, step_attrs, record) in enumerate(step_records):
        assert step_attrs[names.STEP_INDEX] == step
        assert step_attrs["corevital.entropy"] == report.sequences[0].timeline.entropy[step]
        assert step_attrs[names.RISK_LEVEL] == report.summary.risk_level
        assert record.trace_id.hex() == report.trace_id
    assert {names.METRIC_RISK_SCORE, names.METRIC_TOKEN_ENTROPY, names.METRIC_OPERATION_DURATION} <= metric_names(sink)


@pytest.mark.slow
def test_rotel_filter_drops_step_logs_and_keeps_the_report(tiny_llama, tmp_path):
    with OTLPSink() as sink:
        grpc, http = free_port(), free_port()
        with rotel_from_env_file(str(ROTEL / "drop-step-logs.env"), grpc, http, sink.endpoint, str(tmp_path / "r.log")):
            (report,) = run_generation(tiny_llama, f"http://127.0.0.1:{http}")
            wait_until(
                lambda: any(r[0] == names.EVENT_REPORT for r in log_records(sink)) and sink.spans(),
                timeout=30,
                what="the report record through the filtering rotel",
            )
    events = [r[0] for r in log_records(sink)]
    # The SDK exported the report and its steps in one request, processed as one batch: the steps were dropped.
    assert events == [names.EVENT_REPORT]
    assert report.usage.output_tokens == 6


@pytest.mark.slow
def test_rotel_high_risk_hop_keeps_only_risky_steps(tiny_llama, tmp_path):
    with OTLPSink() as sink:
        grpc, http = free_port(), free_port()
        # A second generation whose report says low risk: its step records must not pass.
        low = Report.from_dict({**_any_report(tiny_llama).to_dict()})
        low.summary.risk_level, low.summary.risk_score = "low", 0.05
        with rotel_from_env_file(
            str(ROTEL / "high-risk-steps.env"), grpc, http, sink.endpoint, str(tmp_path / "r.log")
        ):
            (report,) = run_generation(tiny_llama, f"http://127.0.0.1:{http}", extra_steps=low, tokens=5)
            wait_until(lambda: len(log_records(sink)) >= 5, timeout=30, what="step records through the high-risk hop")
    assert report.summary.risk_level == "high"
    records = log_records(sink)
    assert [r[0] for r in records] == [names.EVENT_STEP_LOG] * 5
    assert sorted(r[1][names.STEP_INDEX] for r in records) == [0, 1, 2, 3, 4]
    assert {r[1][names.RISK_LEVEL] for r in records} == {"high"}
    assert {r[2].trace_id.hex() for r in records} == {report.trace_id}


def _any_report(model) -> Report:
    reports: list[Report] = []
    CoreVitalInstrumentor().instrument(on_report=reports.append)
    try:
        prompt = torch.tensor([[1, 5, 6]])
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, do_sample=False)
    finally:
        CoreVitalInstrumentor().uninstrument()
    return reports[0]


# --- OpenTelemetry Collector (contrib) configurations: structure ---------------------------------------------

#: Component types these configs may use, with the signals each handles, from the contrib/core component docs.
RECEIVERS = {"otlp": {"traces", "metrics", "logs"}}
PROCESSORS = {
    "batch": {"traces", "metrics", "logs"},
    "memory_limiter": {"traces", "metrics", "logs"},
    "filter": {"traces", "metrics", "logs"},
    "deltatocumulative": {"metrics"},
}
EXPORTERS = {
    "datadog": {"traces", "metrics", "logs"},
    "prometheus": {"metrics"},
    "prometheusremotewrite": {"metrics"},
    "otlp": {"traces", "metrics", "logs"},
    "otlphttp": {"traces", "metrics", "logs"},
    "file": {"traces", "metrics", "logs"},
}
CONNECTORS = {
    "routing": {("logs", "logs"), ("traces", "traces"), ("metrics", "metrics")},
    "datadog": {("traces", "metrics"), ("traces", "traces")},
}
ROUTES = {
    "otlp-to-datadog.yaml": {"datadog"},
    "otlp-to-prometheus.yaml": {"prometheus", "prometheusremotewrite"},
    "otlp-to-jaeger.yaml": {"otlp"},
    "otlp-to-files.yaml": {"file"},
    "routing-high-risk-steps.yaml": {"otlphttp", "file"},
    "production-drop-step-logs.yaml": {"otlphttp"},
}


def kind(component_id: str) -> str:
    return component_id.split("/", 1)[0]


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_contrib_config_structure(name):
    config = yaml.safe_load((CONTRIB / name).read_text(encoding="utf-8"))
    assert set(config) <= {"receivers", "processors", "exporters", "connectors", "extensions", "service"}
    sections = {"receivers": RECEIVERS, "processors": PROCESSORS, "exporters": EXPORTERS, "connectors": CONNECTORS}
    for section, known in sections.items():
        for component in config.get(section) or {}:
            assert kind(component) in known, f"{name}: unknown {section[:-1]} {component!r}"
    assert "routing" not in {kind(p) for p in config.get("processors") or {}}, "the routing processor was removed"
    pipelines = config["service"]["pipelines"]
    connectors = config.get("connectors") or {}
    used_as_exporter: dict[str, set[str]] = {}
    used_as_receiver: dict[str, set[str]] = {}
    used_exporters = set()
    for pipeline_id, pipeline in pipelines.items():
        signal = kind(pipeline_id)
        assert signal in ("traces", "metrics", "logs"), pipeline_id
        assert pipeline["receivers"] and pipeline["exporters"], pipeline_id
        for receiver in pipeline["receivers"]:
            if receiver in connectors:
                used_as_receiver.setdefault(receiver, set()).add(signal)
            else:
                assert receiver in config["receivers"], (pipeline_id, receiver)
                assert signal in RECEIVERS[kind(receiver)]
        for processor in pipeline.get("processors", []):
            assert processor in config["processors"], (pipeline_id, processor)
            assert signal in PROCESSORS[kind(processor)], (pipeline_id, processor)
        for exporter in pipeline["exporters"]:
            if exporter in connectors:
                used_as_exporter.setdefault(exporter, set()).add(signal)
            else:
                assert exporter in config["exporters"], (pipeline_id, exporter)
                assert signal in EXPORTERS[kind(exporter)], (pipeline_id, exporter)
                used_exporters.add(kind(exporter))
    assert used_exporters == ROUTES[name]
    for connector in connectors:
        pairs = {(a, b) for a in used_as_exporter.get(connector, ()) for b in used_as_receiver.get(connector, ())}
        assert pairs and pairs <= CONNECTORS[kind(connector)], (name, connector, pairs)
    # Every component defined is used, so nothing in the file is decoration.
    referenced = {
        c for p in pipelines.values() for key in ("receivers", "processors", "exporters") for c in p.get(key, [])
    }
    defined = (
        set(config.get("receivers") or {})
        | set(config.get("processors") or {})
        | set(config.get("exporters") or {})
        | set(connectors)
    )
    assert defined == referenced, (name, defined ^ referenced)


def test_routing_connector_sends_high_risk_steps_to_their_own_pipeline():
    config = yaml.safe_load((CONTRIB / "routing-high-risk-steps.yaml").read_text(encoding="utf-8"))
    routing = config["connectors"]["routing"]
    assert routing["default_pipelines"] == ["logs/default"]
    (route,) = routing["table"]
    assert route["context"] == "log" and route["pipelines"] == ["logs/high-risk"]
    assert route["condition"] == (
        f'event_name == "{names.EVENT_STEP_LOG}" and attributes["{names.RISK_LEVEL}"] == "high"'
    )
    assert "match_once" not in routing


def test_production_filter_drops_exactly_the_step_records():
    config = yaml.safe_load((CONTRIB / "production-drop-step-logs.yaml").read_text(encoding="utf-8"))
    conditions = config["processors"]["filter/drop-step-logs"]["logs"]["log_record"]
    assert conditions == [f'event_name == "{names.EVENT_STEP_LOG}"']
    assert "filter/drop-step-logs" in config["service"]["pipelines"]["logs"]["processors"]
    for signal in ("traces", "metrics"):
        assert "filter/drop-step-logs" not in config["service"]["pipelines"][signal].get("processors", [])


def test_prometheus_route_restores_cumulative_for_remote_write():
    config = yaml.safe_load((CONTRIB / "otlp-to-prometheus.yaml").read_text(encoding="utf-8"))
    pipelines = config["service"]["pipelines"]
    assert "deltatocumulative" in pipelines["metrics/remotewrite"]["processors"]
    assert pipelines["metrics/remotewrite"]["processors"].index("deltatocumulative") < pipelines["metrics/remotewrite"][
        "processors"
    ].index("batch")
    assert config["exporters"]["prometheus"]["resource_to_telemetry_conversion"] == {"enabled": False}


def test_rotel_processors_use_the_package_names():
    for script in ("drop_step_logs.py", "keep_high_risk_steps.py"):
        text = (ROTEL / script).read_text(encoding="utf-8")
        assert f'"{names.EVENT_STEP_LOG}"' in text
    assert f'"{names.RISK_LEVEL}"' in (ROTEL / "keep_high_risk_steps.py").read_text(encoding="utf-8")
    assert json.dumps(names.EVENT_STEP_LOG) in (CONTRIB / "production-drop-step-logs.yaml").read_text(encoding="utf-8")


CONTRIB_RELEASE = "otelcol-contrib v0.146.0"


def test_every_collector_config_is_run_by_a_test_or_marked_as_an_example():
    """rotel routes: each .env file is started by the test its README row names (and each processor script is
    loaded by an .env file); contrib files: each opens with the EXAMPLE line naming the release, and the README's
    Versions section names that release and every component kind the files use."""
    import inspect
    import sys

    readme = (Path(ROOT) / "collector" / "README.md").read_text(encoding="utf-8")
    module = sys.modules[__name__]
    files = {p.relative_to(Path(ROOT) / "collector").as_posix() for p in (Path(ROOT) / "collector").rglob("*")}
    files = {f for f in files if "." in f.rsplit("/", 1)[-1] and f != "README.md" and "__pycache__" not in f}
    processors = {
        value for env in ROTEL.glob("*.env") for key, value in read_env_file(str(env)).items() if "PROCESSOR" in key
    }
    (versions,) = re.findall(r"^### Versions\n\n(.*?)(?=\n#|\Z)", readme, re.S | re.M)
    assert CONTRIB_RELEASE in versions
    for name in sorted(files):
        folder, _, file = name.partition("/")
        if folder == "rotel" and file.endswith(".env"):
            (row,) = [line for line in readme.splitlines() if line.startswith(f"| `{file}`")]
            tests = re.findall(r"`(test_\w+)`", row)
            assert tests, row
            for test in tests:
                assert f'"{file}"' in inspect.getsource(getattr(module, test)), (file, test)
        elif folder == "rotel" and file.endswith(".py"):
            assert file in processors, f"{name} is loaded by no .env file"
        elif folder == "otelcol-contrib" and file.endswith(".yaml"):
            text = (CONTRIB / file).read_text(encoding="utf-8")
            assert text.startswith("# EXAMPLE, not run by the tests") and CONTRIB_RELEASE in text.splitlines()[0]
            config = yaml.safe_load(text)
            for section in ("receivers", "processors", "exporters", "connectors"):
                for component in config.get(section) or {}:
                    assert f"`{kind(component)}`" in versions, (file, component)
        else:
            raise AssertionError(f"collector/{name}: neither tested nor marked as an example")
