"""The telemetry budget of docs/backends.md, measured: Prometheus series per model and per decoder layer."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure, names
from opentelemetry_instrumentation_corevital.exporters.dogstatsd import DogStatsDReportExporter, report_lines
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture, tiny_causal_lm

from ._services import ROOT

DOCS = Path(ROOT) / "docs" / "backends.md"


@pytest.mark.parametrize("capture", ["summary", "full"])
def test_series_per_model_match_the_documented_budget(capture):
    """docs/backends.md's Prometheus budget: N series per model and operation (+1 per fired flag), with full capture
    U more for the answer uncertainty and M per layer group (4 groups of adjacent layers by default, fewer on a
    model of fewer layers)."""
    from prometheus_client import generate_latest

    docs = DOCS.read_text(encoding="utf-8")
    (per_model,) = re.findall(r"\*\*(\d+) series per model and operation name\*\*", docs)
    (per_group,) = re.findall(r"\*\*(\d+) series per layer group\*\*", docs)
    (per_full,) = re.findall(r"\*\*(\d+) series for the answer uncertainty\*\*", docs)
    model = tiny_causal_lm("llama", seed=0, num_hidden_layers=10)  # 4 groups: layers 0-2, 3-5, 6-7, 8-9
    reports: list = []
    instrumentor = CoreVitalInstrumentor()
    with configure(exporters="prometheus", prometheus_port=0) as config:
        instrumentor.instrument(capture=capture, **config.instrument_kwargs(on_report=reports.append))
        try:
            prompt = torch.tensor([[1, 17, 42, 99, 7]])
            model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False)
        finally:
            instrumentor.uninstrument()
        exposition = generate_latest(config.prometheus.registry).decode()
    series = [line for line in exposition.splitlines() if line and line[0] != "#" and not line.startswith("target_")]
    groups = 4 if capture == "full" else 0
    (report,) = reports
    full = int(per_full) if capture == "full" else 0
    assert len(series) == int(per_model) + full + len(report.summary.flags) + int(per_group) * groups


def tiny_report(model, tokens: int):
    """The report of one greedy generation of ``tokens`` tokens (summary capture)."""
    with TelemetryCapture(capture="summary") as capture:
        prompt = torch.tensor([[1, 17, 42, 99, 7]])
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=tokens, do_sample=False)
    (report,) = capture.reports
    return report


def test_dogstatsd_sends_per_generation_lines_the_token_entropy_in_one(tiny_llama):
    """The UDP datagrams of one 24-token generation: 6 lines, 1 per fired flag, and ONE multi-value entropy line."""
    report = tiny_report(tiny_llama, 24)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(10)
    exporter = DogStatsDReportExporter("127.0.0.1", udp.getsockname()[1])
    exporter.export(report)
    exporter.shutdown()
    (datagram,) = [udp.recv(65535).decode()]  # one datagram holds them all
    udp.close()
    lines = datagram.splitlines()
    (fixed,) = re.findall(r"\*\*(\d+) lines \+ 1 per fired flag \+ 1 multi-value line\*\*", DOCS.read_text("utf-8"))
    assert int(fixed) == 6 and len(lines) == int(fixed) + len(report.summary.flags) + 1
    tags = (
        "#gen_ai.operation.name:text_completion,gen_ai.provider.name:huggingface,"
        "gen_ai.request.model:llama,gen_ai.response.model:llama"
    )
    entropy = report.sequences[0].timeline.entropy
    assert len(entropy) == 24
    values = ":".join(f"{v:.6g}" for v in entropy)
    assert [line for line in lines if line.startswith("corevital.token.entropy:")] == [
        f"corevital.token.entropy:{values}|d|{tags}"
    ]


def test_dogstatsd_entropy_splits_only_at_the_datagram_size(tiny_llama):
    """Under a 200-byte limit the entropy line splits into lines of at most 200 bytes holding every value in order."""
    report = tiny_report(tiny_llama, 24)
    lines = [line for line in report_lines(report, limit=200) if line.startswith("corevital.token.entropy:")]
    assert len(lines) > 1 and all(len(line.encode()) <= 200 for line in lines)
    values = [v for line in lines for v in line.split("|")[0].split(":")[1:]]
    assert values == [f"{v:.6g}" for v in report.sequences[0].timeline.entropy]
    everything = [line for line in report_lines(report) if line.startswith("corevital.token.entropy:")]
    assert len(everything) == 1  # 8192 bytes hold them all


def layer_points(model, **options) -> dict[str, dict[str, tuple[int, float]]]:
    """Per layer metric: its label value -> (count, sum), from one full-capture generation; and the report."""
    with TelemetryCapture(capture="full", step_events=False, step_logs=False, **options) as capture:
        prompt = torch.tensor([[1, 17, 42, 99, 7]])
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False)
    metrics = capture.metrics()
    points = {
        name: {
            str(dict(p.attributes).pop(label)): (p.count, p.sum)
            for p in metrics[name].data.data_points
            for label in (names.LAYER_GROUP_ATTRIBUTE, names.LAYER_ATTRIBUTE)
            if label in p.attributes
        }
        for name in (names.METRIC_LAYER_PREFIX + m for m in names.LAYER_METRICS)
    }
    (report,) = capture.reports
    return points, report


def test_layer_histograms_default_to_four_groups_of_adjacent_layers():
    """A 10-layer model: 4 series per layer metric, layers 0-2, 3-5, 6-7, 8-9, each holding its layers' means."""
    model = tiny_causal_lm("llama", seed=0, num_hidden_layers=10)
    points, report = layer_points(model)
    means = [sum(row) / len(row) for row in report.sequences[0].layers.hidden_norm]
    groups = {"0-2": (0, 3), "3-5": (3, 6), "6-7": (6, 8), "8-9": (8, 10)}
    assert {k: v[0] for k, v in points[names.METRIC_LAYER_PREFIX + "hidden_norm"].items()} == {
        label: hi - lo for label, (lo, hi) in groups.items()
    }
    for label, (lo, hi) in groups.items():
        assert points[names.METRIC_LAYER_PREFIX + "hidden_norm"][label][1] == pytest.approx(sum(means[lo:hi]))
    assert all(len(by_label) == 4 for by_label in points.values())


def test_every_layer_is_an_opt_in():
    """``layer_groups=0``: one series per layer, labelled by its index."""
    model = tiny_causal_lm("llama", seed=0, num_hidden_layers=10)
    points, report = layer_points(model, layer_groups=0)
    means = [sum(row) / len(row) for row in report.sequences[0].layers.hidden_norm]
    by_index = points[names.METRIC_LAYER_PREFIX + "hidden_norm"]
    assert by_index == {str(i): (1, pytest.approx(m)) for i, m in enumerate(means)}
