"""The telemetry budget of docs/backends.md, measured: Prometheus series per model and per decoder layer."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure
from opentelemetry_instrumentation_corevital.exporters.dogstatsd import DogStatsDReportExporter, report_lines
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

from ._services import ROOT


@pytest.mark.parametrize("capture", ["summary", "full"])
def test_series_per_model_match_the_documented_budget(tiny_llama, capture):
    """docs/backends.md's Prometheus budget: N series per model and operation (+1 per fired flag), M per layer."""
    from prometheus_client import generate_latest

    docs = (Path(ROOT) / "docs" / "backends.md").read_text(encoding="utf-8")
    (per_model,) = re.findall(r"\*\*(\d+) series per model and operation name\*\*", docs)
    (per_layer,) = re.findall(r"\*\*(\d+) series per decoder layer\*\*", docs)
    reports: list = []
    instrumentor = CoreVitalInstrumentor()
    with configure(exporters="prometheus", prometheus_port=0) as config:
        instrumentor.instrument(capture=capture, **config.instrument_kwargs(on_report=reports.append))
        try:
            prompt = torch.tensor([[1, 17, 42, 99, 7]])
            tiny_llama.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False)
        finally:
            instrumentor.uninstrument()
        exposition = generate_latest(config.prometheus.registry).decode()
    series = [line for line in exposition.splitlines() if line and line[0] != "#" and not line.startswith("target_")]
    layers = tiny_llama.config.num_hidden_layers if capture == "full" else 0
    (report,) = reports
    assert len(series) == int(per_model) + len(report.summary.flags) + int(per_layer) * layers


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
    assert len(lines) == 6 + len(report.summary.flags) + 1
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
