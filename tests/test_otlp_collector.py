"""OTLP end to end: the package exports over OTLP/HTTP to a real rotel collector on 127.0.0.1,
which forwards (gzip, OTLP/HTTP) to a local receiver; the span arrives with its attributes."""

from __future__ import annotations

import torch
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
from opentelemetry_instrumentation_corevital.testing import OTLPSink

from ._services import rotel_collector
from .conftest import free_port


def test_span_travels_through_rotel(tiny_llama, tmp_path):
    with OTLPSink() as sink:
        grpc_port, http_port = free_port(), free_port()
        forward = [
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            sink.endpoint,
            "--otlp-exporter-protocol",
            "http",
            "--otlp-exporter-retry-max-elapsed-time",
            "2s",
        ]
        with rotel_collector(grpc_port, http_port, *forward, log_path=str(tmp_path / "rotel.log")):
            provider = TracerProvider()
            provider.add_span_processor(
                SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/traces"))
            )
            reports = []
            CoreVitalInstrumentor().instrument(tracer_provider=provider, on_report=reports.append)
            prompt = torch.tensor([[1, 17, 42, 99, 7]])
            tiny_llama.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False)
            CoreVitalInstrumentor().uninstrument()
            provider.shutdown()
            found = sink.wait_for_spans(lambda span, attrs: span.name == "text_completion llama", timeout=15)
    assert len(found) == 1
    span, attrs = found[0]
    report = reports[0]
    assert span.kind == 1  # SPAN_KIND_INTERNAL
    assert span.trace_id.hex() == report.trace_id
    assert attrs["gen_ai.provider.name"] == "huggingface"
    assert attrs["gen_ai.usage.output_tokens"] == 6
    assert attrs["corevital.risk.score"] == report.summary.risk_score
    assert attrs["corevital.step.entropy"] == tuple(report.sequences[0].timeline.entropy)
    assert attrs["corevital.flags"] == tuple(report.summary.flags)
