"""The hand-off to the report builder: a CaptureResult plus what the call knew, in; a diagnosed Report, out."""

from __future__ import annotations

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalMonitor
from opentelemetry_instrumentation_corevital.report import (
    CaptureResult,
    ContentInput,
    GenerationRequest,
    LayerSeries,
    ModelInfo,
    PromptTelemetry,
    RequestInfo,
    build_report,
    trim_to_summary,
)
from opentelemetry_instrumentation_corevital.signals.profiles import load_profile
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

SERIES = {
    "entropy": [1.0, 2.0, None, 0.5],
    "surprisal": [0.5, 1.5, 3.0, 0.25],
    "top1_prob": [0.9, 0.6, 0.4, 0.95],
    "margin": [0.8, 0.3, 0.1, 0.9],
    "topk_mass": [0.99, 0.9, 0.8, 1.0],
}


def capture() -> CaptureResult:
    # prompt [5, 6, 7], then 10, 11 and EOS (2), then padding (0)
    return CaptureResult(
        signals=True,
        unavailable={"attention": "not asked for"},
        prefix_len=3,
        steps=4,
        rows=1,
        series=[SERIES],
        sequences=[[5, 6, 7, 10, 11, 2, 0]],
        step_ends=[0.1, 0.2, 0.3, 0.4],
    )


def request(mode: str = "summary") -> GenerationRequest:
    return GenerationRequest(
        params=RequestInfo(operation="text_completion", max_new_tokens=4),
        capture_mode=mode,
        duration_s=1.5,
        input_lengths=[3],
        eos_token_ids=[2],
        pad_token_id=0,
        trace_id="ab" * 16,
        span_id="cd" * 8,
    )


def build(mode: str = "summary", content: ContentInput | None = None):
    return build_report(capture(), ModelInfo(name="hand-made"), request(mode), load_profile("default"), content)


def test_a_capture_and_what_the_call_knew_make_the_report():
    report = build()
    (seq,) = report.sequences
    assert (seq.output_tokens, seq.finish_reason, seq.prompt_tokens) == (3, "stop", 3)
    assert seq.timeline.entropy == [1.0, 2.0, None]
    assert seq.timeline.perplexity == [2.0, 4.0, None]
    assert seq.timeline.margin == [0.8, 0.3, 0.1]
    assert seq.aggregates.entropy_mean == 1.5
    assert (report.usage.input_tokens, report.usage.output_tokens) == (3, 3)
    assert report.timings.duration_s == 1.5 and report.timings.time_to_first_token_s == 0.1
    assert report.timings.time_per_output_token_s == pytest.approx(0.1)
    assert report.capture.mode == "summary" and report.capture.signals == ["logits", "tokens"]
    assert report.capture.unavailable == {"attention": "not asked for"}
    assert report.capture.layers == [] and report.capture.step_stride == 1
    assert report.request.max_new_tokens == 4 and report.model.name == "hand-made"
    assert (report.trace_id, report.span_id) == ("ab" * 16, "cd" * 8)
    assert report.thresholds.profile == "default"
    assert seq.token_ids is None and seq.output_text is None and report.input_messages is None


def test_capture_off_reports_nothing_unavailable():
    assert build("off").capture.unavailable == {}


def test_content_comes_with_its_own_record():
    messages = [{"role": "user", "parts": [{"type": "text", "content": "5 6 7"}]}]
    content = ContentInput(decode=lambda ids: " ".join(map(str, ids)), input_texts=["5 6 7"], input_messages=messages)
    (seq,) = (report := build(content=content)).sequences
    assert seq.token_ids == [10, 11, 2]
    assert seq.output_text == "10 11 2" and seq.input_text == "5 6 7"
    assert report.input_messages == messages


def test_trim_to_summary_leaves_the_full_report_alone():
    report = build("on_risk")
    seq = report.sequences[0]
    seq.layers = LayerSeries(indices=[0], steps=[0], hidden_norm=[[1.0]], attn_entropy=[[0.5]], router_entropy=[[0.2]])
    seq.prompt = PromptTelemetry(tokens=3)
    report.capture.signals += ["hidden", "attention", "moe", "prompt"]
    trimmed = trim_to_summary(report)
    layers = trimmed.sequences[0].layers
    assert layers.hidden_norm == [[1.0]] and layers.attn_entropy is None and layers.router_entropy is None
    assert trimmed.sequences[0].prompt is None
    assert trimmed.capture.signals == ["logits", "tokens", "hidden"] and trimmed.capture.detail == "summary"
    assert seq.layers.attn_entropy == [[0.5]] and seq.prompt.tokens == 3
    assert report.capture.signals == ["logits", "tokens", "hidden", "attention", "moe", "prompt"]
    assert report.capture.detail is None


def test_a_failing_score_is_recorded_as_a_score(tiny_llama):
    prompt = torch.tensor([[1, 17, 42]])
    with TelemetryCapture() as tc:
        with pytest.raises(IndexError):
            CoreVitalMonitor().score(tiny_llama, prompt, torch.tensor([[10**6]]))  # no such token: the forward fails
    (span,) = tc.spans()
    assert span.name == "score llama" and span.attributes["gen_ai.operation.name"] == "score"
    assert span.attributes["error.type"] == "IndexError"
    (point,) = tc.metrics()["gen_ai.client.operation.duration"].data.data_points
    assert point.attributes["gen_ai.operation.name"] == "score" and point.attributes["error.type"] == "IndexError"
    assert tc.reports == []
