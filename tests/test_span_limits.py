"""The SDK's span limits, lowered: what we must keep when the SDK drops, and JSON that is never cut.

The Python SDK evicts the *oldest* attributes when ``max_span_attributes`` is reached and cuts strings at
``max_span_attribute_length``. Real generations of the tiny model go to a real ``TracerProvider`` with lowered
``SpanLimits``; the tests say exactly which keys survive and that no JSON attribute arrives broken.
"""

from __future__ import annotations

import json

import torch
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from opentelemetry_instrumentation_corevital import names
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

KEY_ATTRIBUTES = (names.RISK_SCORE, names.RISK_LEVEL, names.FLAGS, names.NARRATIVE)
CONTENT_KEYS = (names.INPUT_MESSAGES, names.OUTPUT_MESSAGES, names.SYSTEM_INSTRUCTIONS)


def generate(model, limits: SpanLimits | None, **options):
    """One greedy generation of 24 tokens; the finished span and the report."""
    capture = TelemetryCapture(**options)
    capture.tracer_provider = TracerProvider(span_limits=limits or SpanLimits())
    capture.tracer_provider.add_span_processor(SimpleSpanProcessor(capture.span_exporter))
    with capture:
        prompt = torch.tensor([[1, 17, 42, 99, 7]])
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=24, do_sample=False)
    (span,) = capture.spans()
    (report,) = capture.reports
    return span, report


def test_a_lowered_attribute_count_keeps_genai_risk_flags_and_narrative(tiny_llama):
    """With 20 attributes allowed, the per-step arrays are dropped, never the GenAI keys or the risk verdict."""
    whole, report = generate(tiny_llama, None, capture="summary")
    assert report.summary.narrative and report.summary.flags  # the tiny random model is flagged and narrated
    genai = {k: v for k, v in whole.attributes.items() if k.startswith("gen_ai.") and k != names.RESPONSE_ID}
    assert len(genai) + len(KEY_ATTRIBUTES) <= 20 < len(whole.attributes)
    span, report = generate(tiny_llama, SpanLimits(max_span_attributes=20), capture="summary")
    kept = dict(span.attributes)
    assert kept.pop(names.RESPONSE_ID) == report.report_id
    # the three GenAI keys set at the span's start are the oldest: evicted first, set again at the end
    assert len(kept) == 19 and span.dropped_attributes == len(whole.attributes) - 20 + 3
    assert {k: v for k, v in kept.items() if k.startswith("gen_ai.")} == genai
    assert kept[names.RISK_SCORE] == report.summary.risk_score
    assert kept[names.RISK_LEVEL] == report.summary.risk_level
    assert list(kept[names.FLAGS]) == report.summary.flags
    assert kept[names.NARRATIVE] == report.summary.narrative
    assert not [k for k in kept if k.startswith(names.STEP_PREFIX)]


def test_every_array_goes_before_any_scalar(tiny_llama):
    """Under the oldest-first eviction, every sequence-valued corevital key is older than every scalar one."""
    span, _ = generate(tiny_llama, None, capture="full")
    cv = [k for k in span.attributes if k.startswith(names.CV)]
    assert cv[-len(KEY_ATTRIBUTES) :] == list(KEY_ATTRIBUTES[::-1])  # the risk score is the newest of ours
    kinds = [isinstance(span.attributes[k], tuple) for k in cv[: -len(KEY_ATTRIBUTES)]]
    assert kinds == sorted(kinds, reverse=True) and any(kinds) and not all(kinds)
    assert list(span.attributes)[-1].startswith("gen_ai.")  # and the GenAI keys newer still


def chat_generation(model, tok, limit: int | None):
    """A generation of a chat prompt with content on the span, under a value-length limit."""
    capture = TelemetryCapture(
        capture="summary", capture_content="SPAN_ONLY", semconv_opt_in="gen_ai_latest_experimental"
    )
    capture.tracer_provider = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=limit))
    capture.tracer_provider.add_span_processor(SimpleSpanProcessor(capture.span_exporter))
    with capture:
        inputs = tok.apply_chat_template(
            [{"role": "user", "content": "write blue moon"}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        model.generate(**inputs, max_new_tokens=6, do_sample=False)
    (span,) = capture.spans()
    return span


def test_a_json_attribute_over_the_length_limit_is_dropped_not_cut(tiny_llama, tiny_tok):
    """gen_ai.input.messages fits in 80 characters and stays; the longer output messages are dropped and named."""
    whole = chat_generation(tiny_llama, tiny_tok, None)
    sizes = {k: len(whole.attributes[k]) for k in (names.INPUT_MESSAGES, names.OUTPUT_MESSAGES)}
    assert sizes[names.INPUT_MESSAGES] <= 80 < sizes[names.OUTPUT_MESSAGES], sizes
    assert names.DROPPED_ATTRIBUTES not in whole.attributes
    span = chat_generation(tiny_llama, tiny_tok, 80)
    assert span.attributes[names.INPUT_MESSAGES] == whole.attributes[names.INPUT_MESSAGES]
    assert names.OUTPUT_MESSAGES not in span.attributes
    assert list(span.attributes[names.DROPPED_ATTRIBUTES]) == [names.OUTPUT_MESSAGES]
    for key in CONTENT_KEYS:
        if key in span.attributes:
            json.loads(span.attributes[key])
    short = chat_generation(tiny_llama, tiny_tok, 40)
    assert not [k for k in short.attributes if k in CONTENT_KEYS]
    assert list(short.attributes[names.DROPPED_ATTRIBUTES]) == [names.INPUT_MESSAGES, names.OUTPUT_MESSAGES]
