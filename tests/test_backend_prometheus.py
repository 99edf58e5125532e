"""Prometheus: a real Debian Prometheus server scrapes CoreVital's endpoint (library and CLI) on 127.0.0.1,
and PromQL returns the documented series with exact values; the Grafana dashboard only queries those series."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure, names
from opentelemetry_instrumentation_corevital.exporters.prometheus import PROMETHEUS_LABELS, PROMETHEUS_NAMES

from ._services import ROOT, prometheus_server, promql, promql_at, stop, wait_until
from .conftest import free_port

pytestmark = pytest.mark.slow

DASHBOARD = Path(ROOT) / "dashboards" / "grafana-corevital.json"
SCRAPE_LABELS = {"__name__", "job", "instance", "le"}
PROMQL_WORDS = {
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "by",
    "without",
    "rate",
    "increase",
    "irate",
    "histogram_quantile",
    "label_values",
    "clamp_min",
    "clamp_max",
    "topk",
    "bottomk",
    "and",
    "or",
    "unless",
    "offset",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "time",
    "vector",
    "scalar",
    "abs",
    "sort",
    "sort_desc",
    "delta",
}


def value(result: list[dict]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def metric_names_in(expr: str) -> set[str]:
    """Metric names a PromQL expression reads: identifiers outside label matchers and by/without lists."""
    stripped = re.sub(r"label_values\(\s*([^,]+),[^)]*\)", r"\1", expr)
    stripped = re.sub(r"\{[^}]*\}", " ", stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", stripped)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)
    stripped = re.sub(r'"[^"]*"', " ", stripped)
    stripped = re.sub(r"\$\w+", " ", stripped)
    tokens = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped))
    return {t for t in tokens if t not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhd]?", t)}


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


@pytest.fixture(autouse=True)
def _never_leave_instrumented():
    """Overrides conftest's: the module fixture keeps the endpoint up while Prometheus scrapes it
    (a failed scrape would mark every series stale) and uninstruments at the end itself."""
    yield


@pytest.fixture(scope="module")
def scraped(tiny_llama, tiny_model_dir, tmp_path_factory):
    """Two library generations and one CLI run, both endpoints scraped by one Prometheus server."""
    folder = tmp_path_factory.mktemp("prometheus")
    lib_port, cli_port, prom_port = free_port(), free_port(), free_port()
    reports: list = []
    instrumentor = CoreVitalInstrumentor()
    config = configure(exporters="prometheus", prometheus_port=lib_port)
    instrumentor.instrument(**config.instrument_kwargs(on_report=reports.append))
    cli = None
    try:
        for new_tokens in (6, 4):
            prompt = torch.tensor([[1, 17, 42, 99, 7]])
            tiny_llama.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens, do_sample=False
            )
        cli_out = folder / "cli"
        cli = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "opentelemetry_instrumentation_corevital.cli",
                "run",
                "--model",
                str(tiny_model_dir),
                "--no-chat",
                "--prompt",
                "the sky is blue",
                "--max-new-tokens",
                "5",
                "--exporter",
                "prometheus",
                "--prometheus-port",
                str(cli_port),
                "--serve-seconds",
                "120",
                "--quiet",
                "--json",
                "--out",
                str(cli_out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        targets = [f"127.0.0.1:{lib_port}", f"127.0.0.1:{cli_port}"]
        with prometheus_server(str(folder), prom_port, targets) as base:
            for port in (lib_port, cli_port):
                wait_until(
                    # > 0: the endpoint serves a new series at 0 in its first scrape, its value from the next
                    lambda p=port: promql(base, f'corevital_risk_score_count{{instance="127.0.0.1:{p}"}} > 0'),
                    timeout=90,
                    what=f"a scraped CoreVital series from port {port}",
                )
            yield base, lib_port, cli_port, reports, cli
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        config.shutdown()
        if cli is not None:
            stop(cli)


def test_promql_returns_documented_series_with_exact_values(scraped):
    base, lib_port, _, reports, _ = scraped
    lib = f'instance="127.0.0.1:{lib_port}",gen_ai_request_model="llama"'
    assert value(promql(base, f"corevital_risk_score_count{{{lib}}}")) == 2
    assert value(promql(base, f"corevital_risk_score_sum{{{lib}}}")) == pytest.approx(
        reports[0].summary.risk_score + reports[1].summary.risk_score, rel=1e-12
    )
    steps = sum(len(s.timeline.entropy) for r in reports for s in r.sequences)
    assert steps == 10
    assert value(promql(base, f"corevital_token_entropy_bit_count{{{lib}}}")) == steps
    assert value(promql(base, f'gen_ai_client_token_usage_sum{{{lib},gen_ai_token_type="output"}}')) == 10
    assert value(promql(base, f'gen_ai_client_token_usage_sum{{{lib},gen_ai_token_type="input"}}')) == 10
    flags = promql(base, f"corevital_health_flags_total{{{lib}}}")
    assert {r["metric"]["corevital_flag"]: float(r["value"][1]) for r in flags} == {"high_entropy": 2.0}
    le = promql(base, f'corevital_risk_score_bucket{{{lib},le="+Inf"}}')
    assert value(le) == 2
    buckets = {r["metric"]["le"] for r in promql(base, f"corevital_risk_score_bucket{{{lib}}}")}
    assert buckets == {str(b) for b in names.RISK_BUCKETS} | {"+Inf"}


def test_every_series_has_documented_names_and_bounded_labels(scraped):
    base, lib_port, _, _, _ = scraped
    series = promql(base, f'{{instance="127.0.0.1:{lib_port}",__name__=~"corevital_.*|gen_ai_.*"}}')
    families = {re.sub(r"_(bucket|sum|count)$", "", s["metric"]["__name__"]) for s in series}
    full_only = {names.METRIC_UNCERTAINTY_SCORE}  # and the per-layer histograms
    expected = {
        v for k, v in PROMETHEUS_NAMES.items() if not k.startswith(names.METRIC_LAYER_PREFIX) and k not in full_only
    }
    assert families == expected
    for s in series:
        extra = set(s["metric"]) - SCRAPE_LABELS - PROMETHEUS_LABELS
        assert not extra, (s["metric"]["__name__"], extra)
        assert s["metric"]["otel_scope_name"] == "opentelemetry_instrumentation_corevital"


def test_cli_run_is_scraped(scraped):
    base, _, cli_port, _, cli = scraped
    cli_series = f'instance="127.0.0.1:{cli_port}"'
    assert value(promql(base, f"corevital_risk_score_count{{{cli_series}}}")) == 1
    assert value(promql(base, f'gen_ai_client_token_usage_sum{{{cli_series},gen_ai_token_type="output"}}')) <= 5
    (target,) = promql(base, f"target_info{{{cli_series}}}")
    assert target["metric"]["service_name"] == "corevital-cli"
    assert cli.poll() is None  # still serving until stopped by PID


def test_grafana_dashboard_queries_only_scraped_metrics(scraped):
    base = scraped[0]
    present = {r["metric"]["__name__"] for r in promql(base, '{__name__=~".+"}')}
    queries = dashboard_queries()
    assert len(queries) >= 10
    used = set().union(*(metric_names_in(q) for q in queries))
    assert used, queries
    missing = used - present
    assert not missing, f"dashboard queries metrics no real run exported: {sorted(missing)}"
    for query in queries:  # every panel's query also evaluates against the real server
        if not query.startswith("label_values"):
            promql(base, query.replace("$model", ".*").replace("$__rate_interval", "1m"))


def test_cli_run_counts_in_every_rate_panel(scraped):
    """`corevital run` generates once, then serves: its series start at 0 in the first scrape, so the Grafana
    panels' rate()/increase() count that generation (a series first seen at 1 read 0 forever)."""
    base, _, cli_port, _, _ = scraped
    cli_series = f'instance="127.0.0.1:{cli_port}"'
    (first,) = promql(base, f"corevital_risk_score_count{{{cli_series}}}[10m]")
    assert [float(v) for _, v in first["values"]][0] == 0.0
    model = first["metric"]["gen_ai_request_model"]
    at = promql(base, f"timestamp(corevital_risk_score_count{{{cli_series}}})")[0]["value"][1]
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    checked = 0
    for panel in board["panels"]:
        for target in panel["targets"]:
            if not re.search(r"\b(rate|increase)\(", target["expr"]) or "error_type!=" in target["expr"]:
                continue  # the failures panel: the run did not fail
            query = (
                target["expr"]
                .replace("$__rate_interval", "600s")
                .replace("$model", re.escape(model).replace("\\", "\\\\"))
            )
            values = [float(r["value"][1]) for r in promql_at(base, query, at)]
            assert values and all(v == v for v in values) and max(values) > 0, (panel["title"], query, values)
            checked += 1
            if panel["title"] == "Generations per second":
                assert values == [pytest.approx(1 / 600, rel=1e-9)]
    assert checked >= 10
