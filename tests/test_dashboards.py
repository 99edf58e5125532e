"""Grafana dashboard on real data: a real Debian Prometheus scrapes CoreVital's endpoint while generations (and a
failing one) run across several scrapes; every panel query, with Grafana's variables filled in, returns the exact
value the reports give (rates over a window that holds each series' whole life, read at the last scrape)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure, names

from ._services import ROOT, prometheus_server, promql, promql_at, wait_until
from .conftest import free_port

pytestmark = pytest.mark.slow

GRAFANA = Path(ROOT) / "dashboards" / "grafana-corevital.json"
MODEL = "llama"
WINDOW_S = 600  # $__rate_interval: longer than the test, so every series' first (zero) sample is inside it
#: Generations per scrape batch (max_new_tokens); None is a generate() that raises (token id out of vocabulary).
BATCHES = ((6, 4), (5, None), (3,))


@pytest.fixture(autouse=True)
def _never_leave_instrumented():
    """Overrides conftest's: the module fixture keeps the endpoint up while Prometheus scrapes and uninstruments."""
    yield


def grafana_targets() -> list[tuple[str, dict]]:
    board = json.loads(GRAFANA.read_text(encoding="utf-8"))
    return [(panel["title"], target) for panel in board["panels"] for target in panel["targets"]]


def fill_variables(expr: str) -> str:
    """The query Grafana sends with $model = the one model and $__rate_interval = the whole test."""
    filled = expr.replace("$__rate_interval", f"{WINDOW_S}s").replace("$model", re.escape(MODEL).replace("\\", "\\\\"))
    assert "$" not in filled, filled
    return filled


def legend(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def quantile(q: float, values: list[float], bounds: tuple[float, ...]) -> float:
    """Prometheus's histogram_quantile over the explicit buckets ``bounds`` (+Inf added) holding ``values``."""
    counts = [sum(v <= b for v in values) for b in bounds] + [len(values)]
    rank = q * len(values)
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(bounds):
        return bounds[-1]
    start, count = (0.0, counts[b]) if b == 0 else (bounds[b - 1], counts[b] - counts[b - 1])
    if b > 0:
        rank -= counts[b - 1]
    return start + (bounds[b] - start) * rank / count


@pytest.fixture(scope="module")
def scraped(tiny_llama, tmp_path_factory):
    """BATCHES generated through the Prometheus exporter, each batch scraped before the next starts."""
    folder = tmp_path_factory.mktemp("grafana")
    app_port, prom_port = free_port(), free_port()
    reports: list = []
    instrumentor = CoreVitalInstrumentor()
    config = configure(exporters="prometheus", prometheus_port=app_port)
    instrumentor.instrument(**config.instrument_kwargs(on_report=reports.append))
    instance = f'instance="127.0.0.1:{app_port}"'
    try:
        with prometheus_server(str(folder), prom_port, [f"127.0.0.1:{app_port}"]) as base:
            done = 0
            for batch in BATCHES:
                for tokens in batch:
                    if tokens is None:
                        prompt = torch.tensor([[1, 17, 10**6]])
                        with pytest.raises(IndexError):
                            tiny_llama.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4)
                    else:
                        prompt = torch.tensor([[1, 17, 42, 99, 7]])
                        tiny_llama.generate(
                            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=tokens, do_sample=False
                        )
                done += len(batch)
                wait_until(
                    lambda n=done: [
                        r
                        for r in promql(base, f"sum(gen_ai_client_operation_duration_seconds_count{{{instance}}})")
                        if float(r["value"][1]) == n
                    ],
                    timeout=60,
                    what=f"{done} generations scraped",
                )
            (last,) = promql(base, f"timestamp(corevital_risk_score_count{{{instance}}})")
            yield base, last["value"][1], reports
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        config.shutdown()


def expected_panels(base: str, reports: list) -> dict[tuple[str, str], dict[str, float]]:
    """Each panel target's exact result, legend -> value, computed from the reports."""
    ok = len(reports)
    failed_s = float(
        promql(base, 'gen_ai_client_operation_duration_seconds_sum{error_type="IndexError"}')[0]["value"][1]
    )
    risks = [r.summary.risk_score for r in reports]
    entropies = [v for r in reports for s in r.sequences for v in s.timeline.entropy]
    durations = [r.timings.duration_s for r in reports] + [failed_s]
    flags: dict[str, int] = {}
    for r in reports:
        for flag in r.summary.flags:
            flags[flag] = flags.get(flag, 0) + 1
    per_s = 1 / WINDOW_S
    return {
        ("Generations per second", "A"): {MODEL: (ok + 1) * per_s},
        ("Mean risk score", "A"): {MODEL: sum(risks) / ok},
        ("Risk score p50 / p95", "A"): {"p50": quantile(0.5, risks, names.RISK_BUCKETS)},
        ("Risk score p50 / p95", "B"): {"p95": quantile(0.95, risks, names.RISK_BUCKETS)},
        ("Share of generations at high risk (score > 0.7)", "A"): {"high risk": sum(r > 0.7 for r in risks) / ok},
        ("Health flags fired", "A"): {flag: float(n) for flag, n in flags.items()},
        ("Token entropy distribution (bits)", "A"): {
            **{_le(b): float(sum(v <= b for v in entropies)) for b in names.ENTROPY_BUCKETS},
            "+Inf": float(len(entropies)),
        },
        ("Mean token entropy (bits)", "A"): {MODEL: sum(entropies) / len(entropies)},
        ("Generation latency p95", "A"): {MODEL: quantile(0.95, durations, names.DURATION_BUCKETS)},
        ("Time to first token p95", "A"): {
            MODEL: quantile(0.95, [r.timings.time_to_first_token_s for r in reports], names.TTFT_BUCKETS)
        },
        ("Time per output token p95", "A"): {
            MODEL: quantile(0.95, [r.timings.time_per_output_token_s for r in reports], names.TPOT_BUCKETS)
        },
        ("Tokens per second (input / output)", "A"): {
            "input": sum(r.usage.input_tokens for r in reports) * per_s,
            "output": sum(r.usage.output_tokens for r in reports) * per_s,
        },
        ("Failed generations per second", "A"): {"IndexError": per_s},
    }


def _le(bound: float) -> str:
    return str(float(bound))


def test_every_grafana_panel_returns_the_exact_value_of_the_generations(scraped):
    base, at, reports = scraped
    assert len(reports) == sum(t is not None for batch in BATCHES for t in batch)
    expected = expected_panels(base, reports)
    targets = grafana_targets()
    assert {(title, t["refId"]) for title, t in targets} == set(expected)  # a new panel needs its expected value
    for title, target in targets:
        query = fill_variables(target["expr"])
        got = {legend(target["legendFormat"], r["metric"]): float(r["value"][1]) for r in promql_at(base, query, at)}
        want = expected[(title, target["refId"])]
        assert set(got) == set(want), (title, query, got)
        for key, value in want.items():
            assert math.isfinite(got[key]) and got[key] == pytest.approx(value, rel=1e-9), (title, key, got, want)


def test_grafana_model_variable_lists_the_model(scraped):
    base, at, _ = scraped
    board = json.loads(GRAFANA.read_text(encoding="utf-8"))
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "model"]
    series, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"]).groups()
    assert {r["metric"][label] for r in promql_at(base, series, at)} == {MODEL}
