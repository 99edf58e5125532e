"""Datadog: the real Datadog APM test agent (ddapm-test-agent, own virtualenv) on 127.0.0.1 receives
(a) OTLP traces and delta-temporality metrics sent by exporters="datadog", and (b) a ddtrace app's
generation span carrying CoreVital attributes; DogStatsD datagrams land on our own UDP socket.
The Datadog dashboard only queries metric names that really arrived."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure, names

from ._services import ROOT, ddapm_test_agent, http_get, wait_until
from .conftest import free_port

pytestmark = pytest.mark.slow

DASHBOARD = Path(ROOT) / "dashboards" / "datadog-corevital.json"
DELTA = "AGGREGATION_TEMPORALITY_DELTA"


def trace_hex(value: str) -> str:
    """The agent's JSON carries ids as hex or base64 depending on the path; normalise to hex."""
    import base64

    return value if re.fullmatch(r"[0-9a-f]{32}", value) else base64.b64decode(value).hex()


def otlp_attrs(items: list[dict]) -> dict:
    out = {}
    for kv in items:
        value = kv["value"]
        ((kind, v),) = value.items()
        out[kv["key"]] = v
    return out


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddagent")
    ports = {"apm": free_port(), "otlp_http": free_port(), "otlp_grpc": free_port()}
    with ddapm_test_agent(str(folder), ports["apm"], ports["otlp_http"], ports["otlp_grpc"]):
        yield ports


@pytest.fixture(scope="module")
def otlp_run(agent, tiny_llama):
    """Two generations exported with configure(exporters="datadog") to the agent's OTLP/HTTP port."""
    endpoint = f"http://127.0.0.1:{agent['otlp_http']}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "corevital-dd-test"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reports: list = []
    instrumentor = CoreVitalInstrumentor()
    try:
        with configure(exporters="datadog") as config:  # leaving flushes spans, metrics, logs
            instrumentor.instrument(max_span_steps=16, **config.instrument_kwargs(on_report=reports.append))
            try:
                for tokens in (6, 4):
                    prompt = torch.tensor([[1, 17, 42, 99, 7]])
                    tiny_llama.generate(
                        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=tokens, do_sample=False
                    )
            finally:
                instrumentor.uninstrument()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    base = f"http://127.0.0.1:{agent['otlp_http']}/test/session"
    traces = wait_until(lambda: json.loads(http_get(base + "/traces")), timeout=20, what="OTLP traces at the agent")
    metrics = wait_until(lambda: json.loads(http_get(base + "/metrics")), timeout=20, what="OTLP metrics at the agent")
    return reports, traces, metrics


def test_agent_receives_otlp_spans_with_corevital_attributes(otlp_run):
    reports, traces, _ = otlp_run
    spans = [s for req in traces for rs in req["resource_spans"] for ss in rs["scope_spans"] for s in ss["spans"]]
    assert len(spans) == 2
    by_trace = {r.trace_id: r for r in reports}
    for span in spans:
        attrs = otlp_attrs(span["attributes"])
        report = by_trace[trace_hex(span["trace_id"])]
        assert span["name"] == "text_completion llama"
        assert attrs["gen_ai.provider.name"] == "huggingface"
        assert attrs["corevital.risk.score"] == report.summary.risk_score
        assert attrs["corevital.risk.level"] == report.summary.risk_level
        assert int(attrs["gen_ai.usage.output_tokens"]) == report.usage.output_tokens


def test_agent_receives_delta_metrics(otlp_run):
    reports, _, metrics = otlp_run
    found = {}
    for req in metrics:
        for rm in req["resource_metrics"]:
            for sm in rm["scope_metrics"]:
                for metric in sm["metrics"]:
                    found.setdefault(metric["name"], []).append(metric)
    expected = {
        names.METRIC_OPERATION_DURATION,
        names.METRIC_TOKEN_USAGE,
        names.METRIC_TIME_TO_FIRST_TOKEN,
        names.METRIC_TIME_PER_OUTPUT_TOKEN,
        names.METRIC_RISK_SCORE,
        names.METRIC_HEALTH_FLAGS,
        names.METRIC_TOKEN_ENTROPY,
    }
    assert set(found) == expected
    (risk,) = found[names.METRIC_RISK_SCORE]
    assert risk["histogram"]["aggregation_temporality"] == DELTA
    (point,) = risk["histogram"]["data_points"]
    assert int(point["count"]) == 2
    assert point["sum"] == pytest.approx(sum(r.summary.risk_score for r in reports), rel=1e-12)
    (flags,) = found[names.METRIC_HEALTH_FLAGS]
    assert flags["sum"]["aggregation_temporality"] == DELTA and flags["sum"]["is_monotonic"]
    (entropy,) = found[names.METRIC_TOKEN_ENTROPY]
    assert sum(int(p["count"]) for p in entropy["histogram"]["data_points"]) == 10


DD_APPS = {
    # ddtrace-run style: ddtrace's OTel support becomes the global provider; DogStatsD chosen by env var.
    "global": ("import ddtrace.auto  # noqa: F401  (what ddtrace-run does)", "config = configure()"),
    # explicit: exporters="ddtrace" hands CoreVital's spans to ddtrace without touching the global provider.
    "exporter": ("", 'config = configure(exporters="ddtrace,dogstatsd")'),
}
DD_APP = r"""
import json, sys, torch
{import_line}
from ddtrace import tracer
from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure
from opentelemetry_instrumentation_corevital.testing import tiny_causal_lm

model = tiny_causal_lm("llama", seed=0)
reports = []
{instrument_line}
CoreVitalInstrumentor().instrument(max_span_steps=8, **config.instrument_kwargs(on_report=reports.append))
prompt = torch.tensor([[1, 17, 42, 99, 7]])
with tracer.trace("web.request", service="chat-app", resource="POST /chat"):
    output = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5, do_sample=False)
CoreVitalInstrumentor().uninstrument()
config.shutdown()
tracer.flush()
print(json.dumps({{"report": reports[0].to_dict(), "output": output.tolist()}}))
"""


@pytest.mark.parametrize("mode", sorted(DD_APPS))
def test_ddtrace_app_generation_span_carries_corevital_attributes(mode, agent, tiny_llama, tmp_path):
    token = f"corevital-ddtrace-{mode}"
    apm = f"http://127.0.0.1:{agent['apm']}"
    http_get(f"{apm}/test/session/start?test_session_token={token}")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(15)
    script = tmp_path / "app.py"
    import_line, instrument_line = DD_APPS[mode]
    script.write_text(DD_APP.format(import_line=import_line, instrument_line=instrument_line))
    env = {
        **os.environ,
        "DD_TRACE_OTEL_ENABLED": "true",
        "DD_TRACE_AGENT_URL": apm,
        "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
        "DD_REMOTE_CONFIGURATION_ENABLED": "false",
        "DD_TRACE_STARTUP_LOGS": "false",
        "DD_SERVICE": "chat-app",
        "DD_TRACE_SAMPLING_RULES": "",
        "_DD_TRACE_TEST_SESSION_TOKEN": token,
        "DD_TRACE_HEADER_TAGS": "",
        "OTEL_INSTRUMENTATION_COREVITAL_EXPORTERS": "dogstatsd",
        "DD_AGENT_HOST": "127.0.0.1",
        "DD_DOGSTATSD_PORT": str(udp.getsockname()[1]),
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    report = out["report"]
    prompt = torch.tensor([[1, 17, 42, 99, 7]])
    plain = tiny_llama.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5, do_sample=False)
    assert out["output"] == plain.tolist()  # the traced app's output is the plain output

    def traces():
        data = json.loads(http_get(f"{apm}/test/session/traces?test_session_token={token}"))
        spans = [s for t in data for s in t]
        return spans if len(spans) >= 2 else None

    spans = wait_until(traces, timeout=20, what="ddtrace spans at the agent")
    request = next(s for s in spans if s["name"] == "web.request")
    generation = next(s for s in spans if s["resource"] == "text_completion llama")
    assert generation["parent_id"] == request["span_id"] and generation["trace_id"] == request["trace_id"]
    meta, metrics = generation["meta"], generation["metrics"]
    assert meta["gen_ai.operation.name"] == "text_completion"
    assert meta["gen_ai.request.model"] == "llama"
    assert meta["gen_ai.provider.name"] == "huggingface"
    assert meta["corevital.risk.level"] == report["summary"]["risk_level"]
    assert metrics["corevital.risk.score"] == report["summary"]["risk_score"]
    assert metrics["gen_ai.usage.output_tokens"] == 5
    assert metrics["corevital.entropy.mean"] == report["summary"]["aggregates"]["entropy_mean"]
    entropy = report["sequences"][0]["timeline"]["entropy"]
    assert not [k for k in {**meta, **metrics} if k.startswith(names.STEP_PREFIX)]  # no per-step array as tags

    # DogStatsD, chosen through the environment: the datagrams of that same generation.
    lines = []
    while not any(line.startswith(names.METRIC_TOKEN_ENTROPY) for line in lines):
        lines += udp.recv(65535).decode().splitlines()
    udp.close()
    tags = (
        "#gen_ai.operation.name:text_completion,gen_ai.provider.name:huggingface,"
        "gen_ai.request.model:llama,gen_ai.response.model:llama"
    )
    risk = report["summary"]["risk_score"]
    assert f"corevital.risk.score:{risk:.6g}|d|{tags}" in lines
    assert f"corevital.health.flags:1|c|{tags},corevital.flag:high_entropy" in lines
    assert f"gen_ai.client.token.usage:5|d|{tags},gen_ai.token.type:output" in lines
    values = ":".join(f"{v:.6g}" for v in entropy)  # the whole distribution in one multi-value line
    assert [line for line in lines if line.startswith("corevital.token.entropy:")] == [
        f"corevital.token.entropy:{values}|d|{tags}"
    ]


def datadog_dashboard_metrics() -> set[str]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("query", "q") and isinstance(value, str):
                    queries.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(board["widgets"])
    assert len(queries) >= 8, queries
    used = set()
    for query in queries:
        found = re.findall(r"(?:avg|sum|min|max|count|p50|p75|p90|p95|p99):([a-z_][a-z0-9_.]*)\{", query)
        assert found, query
        used.update(found)
    return used


def test_datadog_dashboard_queries_only_metrics_that_arrived(otlp_run):
    """Every metric a widget queries arrived at the agent over OTLP and arrives over DogStatsD."""
    from opentelemetry_instrumentation_corevital.exporters.dogstatsd import DogStatsDReportExporter

    reports, _, metrics = otlp_run
    otlp_names = {
        m["name"]
        for req in metrics
        for rm in req["resource_metrics"]
        for sm in rm["scope_metrics"]
        for m in sm["metrics"]
    }
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(10)
    exporter = DogStatsDReportExporter("127.0.0.1", udp.getsockname()[1])
    for report in reports:
        exporter.export(report)
    exporter.shutdown()
    statsd_names: set[str] = set()
    while names.METRIC_TOKEN_ENTROPY not in statsd_names or names.METRIC_HEALTH_FLAGS not in statsd_names:
        statsd_names |= {line.split(":", 1)[0] for line in udp.recv(65535).decode().splitlines()}
    udp.close()
    used = datadog_dashboard_metrics()
    assert used <= otlp_names, sorted(used - otlp_names)
    assert used <= statsd_names, sorted(used - statsd_names)


WIDGET_QUERY = re.compile(
    r"(?P<agg>avg|sum|min|max|count|p\d\d):(?P<metric>[a-z_][a-z0-9_.]*)"
    r"\{(?P<filters>[^}]*)\}(?: by \{(?P<by>[^}]*)\})?(?P<as_count>\.as_count\(\))?"
)
DOCS = Path(ROOT) / "docs" / "backends.md"


def widget_queries() -> list[tuple[str, re.Match]]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    for widget in board["widgets"]:
        for request in widget["definition"]["requests"]:
            for query in request["queries"]:
                match = WIDGET_QUERY.fullmatch(query["query"])
                assert match, query["query"]
                out.append((widget["definition"]["title"], match))
    return out


def otlp_points(metrics: list[dict]) -> dict[str, dict]:
    """Per metric name: its kind (distribution / count), unit and every data point as (tags, count, total)."""
    found: dict[str, dict] = {}
    for req in metrics:
        for rm in req["resource_metrics"]:
            for sm in rm["scope_metrics"]:
                for m in sm["metrics"]:
                    entry = found.setdefault(m["name"], {"unit": m.get("unit", ""), "points": []})
                    if "histogram" in m:
                        entry["kind"] = "distribution"  # the Agent's default mapping of OTLP histograms
                        for p in m["histogram"]["data_points"]:
                            entry["points"].append((otlp_attrs(p["attributes"]), int(p["count"]), float(p["sum"])))
                    else:
                        assert m["sum"]["is_monotonic"] and m["sum"]["aggregation_temporality"] == DELTA
                        entry["kind"] = "count"  # a delta monotonic sum is a Datadog count
                        for p in m["sum"]["data_points"]:
                            value = float(p.get("as_int", p.get("as_double", 0)))
                            entry["points"].append((otlp_attrs(p["attributes"]), 1, value))
    return found


def datadog_total(match: re.Match, metric: dict) -> dict[tuple[str, ...], float]:
    """What a count/sum widget shows summed over the time range, by its group-by tags: count of a distribution is
    its number of values, sum is the sum of the values (of a distribution) or of the increments (of a count)."""
    filters = [f.strip() for f in match["filters"].split(",") if f.strip() and f.strip() != "$model"]
    by = [t.strip() for t in (match["by"] or "").split(",") if t.strip()]
    totals: dict[tuple[str, ...], float] = {}
    for tags, count, total in metric["points"]:
        if not all(
            tags.get(key) not in (None, "") and value in ("*", tags[key])
            for key, _, value in (f.partition(":") for f in filters)
        ):
            continue
        key = tuple(tags[t] for t in by)
        value = count if match["agg"] == "count" else total
        totals[key] = totals.get(key, 0.0) + value
    return totals


@pytest.fixture(scope="module")
def otlp_with_failure(tiny_llama, tmp_path_factory):
    """Two generations and a generate() that raised (token id out of vocabulary), exported with
    configure(exporters="datadog") to an agent of their own: its metrics are these three calls' only."""
    folder = tmp_path_factory.mktemp("ddagent-failure")
    ports = {"apm": free_port(), "otlp_http": free_port(), "otlp_grpc": free_port()}
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports['otlp_http']}"}
    reports: list = []
    with (
        ddapm_test_agent(str(folder), ports["apm"], ports["otlp_http"], ports["otlp_grpc"]),
        pytest.MonkeyPatch.context() as patch,
    ):
        for key, value in env.items():
            patch.setenv(key, value)
        instrumentor = CoreVitalInstrumentor()
        with configure(exporters="datadog") as config:
            instrumentor.instrument(**config.instrument_kwargs(on_report=reports.append))
            try:
                for tokens in (6, 4):
                    prompt = torch.tensor([[1, 17, 42, 99, 7]])
                    tiny_llama.generate(
                        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=tokens, do_sample=False
                    )
                prompt = torch.tensor([[1, 17, 10**6]])
                with pytest.raises(IndexError):
                    tiny_llama.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4)
            finally:
                instrumentor.uninstrument()
        base = f"http://127.0.0.1:{ports['otlp_http']}/test/session"

        def with_failure():
            points = otlp_points(json.loads(http_get(base + "/metrics")))
            duration = points.get(names.METRIC_OPERATION_DURATION, {"points": []})["points"]
            return points if any(tags.get(names.ERROR_TYPE) for tags, _, _ in duration) else None

        points = wait_until(with_failure, timeout=20, what="the failed generation's duration at the agent")
    return reports, points


def test_datadog_widgets_count_what_their_titles_say(otlp_with_failure):
    """Count and sum widgets evaluated on what the agent received: generations are counted (not their seconds)."""
    reports, points = otlp_with_failure
    flags: dict[tuple[str, ...], float] = {}
    for r in reports:
        for flag in r.summary.flags:
            flags[(flag,)] = flags.get((flag,), 0) + 1
    expected = {
        "Generations": {("llama",): len(reports) + 1},  # every generate() call, the failed one too
        "Failed generations": {("IndexError",): 1},
        "Output tokens": {("llama",): sum(r.usage.output_tokens for r in reports)},
        "Health flags fired": flags,
    }
    totals = {
        title: datadog_total(match, points[match["metric"]])
        for title, match in widget_queries()
        if match["agg"] in ("count", "sum")
    }
    assert totals == expected


def test_datadog_widgets_use_each_metric_with_the_type_its_aggregation_needs(otlp_with_failure):
    """Percentiles, count, avg and max read distributions; sum reads a count or a distribution of counted things
    (unit {token}, never seconds); .as_count() only on counts; every tag filtered or grouped on is sent; the same
    holds for the DogStatsD lines; every percentile metric is named in docs/backends.md's percentile note."""
    from opentelemetry_instrumentation_corevital.exporters.dogstatsd import report_lines

    reports, points = otlp_with_failure
    statsd_kind = {
        line.split(":", 1)[0]: {"d": "distribution", "c": "count"}[line.split("|")[1]]
        for report in reports
        for line in report_lines(report)
    }
    docs = DOCS.read_text(encoding="utf-8")
    (percentile_note,) = re.findall(r"^\*\*Percentile widgets\*\*.*?(?=\n\n)", docs, re.S | re.M)
    for title, match in widget_queries():
        metric = points[match["metric"]]
        kinds = {metric["kind"], statsd_kind[match["metric"]]}
        agg = match["agg"]
        if agg == "sum":
            assert kinds == {"count"} or (kinds == {"distribution"} and metric["unit"].startswith("{")), title
        else:
            assert kinds == {"distribution"}, (title, agg, kinds)
        assert bool(match["as_count"]) == (agg in ("count", "sum")), title
        if re.fullmatch(r"p\d\d", agg):
            assert f"`{match['metric']}`" in percentile_note, (title, match["metric"])
        sent_tags = {key for tags, _, _ in metric["points"] for key in tags}
        used = {f.partition(":")[0].strip() for f in match["filters"].split(",") if f.strip() != "$model"}
        used |= {t.strip() for t in (match["by"] or "").split(",") if t.strip()} | {names.REQUEST_MODEL}
        assert used <= sent_tags, (title, used - sent_tags)
