"""The telemetry budget of docs/backends.md, measured: Prometheus series per model and per decoder layer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure

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
