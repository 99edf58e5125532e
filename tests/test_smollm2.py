"""The real SmolLM2-135M-Instruct: identical greedy output, a chat span with sane signals."""

from __future__ import annotations

import pytest
import torch

from opentelemetry_instrumentation_corevital import validate_report
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

pytestmark = pytest.mark.slow


def chat_inputs(tokenizer, text):
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )


def test_greedy_output_identical_and_span_is_chat(smollm2):
    tokenizer, model = smollm2
    inputs = chat_inputs(tokenizer, "What is the capital of France?")
    plain = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    with TelemetryCapture() as tc:
        inputs = chat_inputs(tokenizer, "What is the capital of France?")  # tokenized while instrumented
        instrumented = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    assert torch.equal(plain, instrumented)
    assert "Paris" in tokenizer.decode(instrumented[0, inputs["input_ids"].shape[1] :])
    (span,) = tc.spans()
    assert span.name == "chat SmolLM2-135M-Instruct.Q4_1"
    report = tc.reports[0]
    validate_report(report.to_dict())
    seq = report.sequences[0]
    generated = instrumented.shape[1] - inputs["input_ids"].shape[1]
    assert seq.output_tokens == generated
    assert seq.finish_reason == ("stop" if generated < 24 else "length")
    assert len(seq.timeline.entropy) == generated
    # A confident factual answer: low mean entropy and low risk.
    assert seq.aggregates.entropy_mean < 2.0
    assert report.summary.risk_level == "low"


def test_batched_chat_with_left_padding(smollm2):
    tokenizer, model = smollm2
    tokenizer.padding_side = "left"
    conversations = [
        [{"role": "user", "content": "Name a colour."}],
        [{"role": "user", "content": "Write one sentence about the ocean and its waves."}],
    ]

    def encode():
        return tokenizer.apply_chat_template(
            conversations, add_generation_prompt=True, return_tensors="pt", return_dict=True, padding=True
        )

    plain = model.generate(**encode(), max_new_tokens=12, do_sample=False)
    with TelemetryCapture() as tc:
        inputs = encode()
        instrumented = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert torch.equal(plain, instrumented)
    (span,) = tc.spans()
    assert span.name.startswith("chat ")
    assert span.attributes["gen_ai.usage.input_tokens"] == int(inputs["attention_mask"].sum())
    assert len(span.attributes["gen_ai.response.finish_reasons"]) == 2


def test_full_capture_keeps_output_and_sees_every_layer(smollm2):
    tokenizer, model = smollm2
    inputs = chat_inputs(tokenizer, "Name three primary colours.")
    plain = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    with TelemetryCapture(capture="full") as tc:
        inputs = chat_inputs(tokenizer, "Name three primary colours.")
        instrumented = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    assert torch.equal(plain, instrumented)
    report = tc.reports[0]
    validate_report(report.to_dict())
    seq = report.sequences[0]
    assert seq.layers.indices == list(range(30))
    assert len(seq.layers.hidden_norm) == 30 and len(seq.layers.hidden_norm[0]) == seq.output_tokens
    assert report.capture.attention_source == "query row recomputed beside sdpa attention"
    # Real models park attention on the first token (attention sinks); the collapse measure excludes the sink.
    sink = [sum(row) / len(row) for row in seq.layers.attn_sink_mass]
    assert max(sink) > 0.3
    assert seq.prompt.tokens == int(inputs["attention_mask"].sum())
    assert len(seq.prompt.surprisal) == seq.prompt.tokens - 1
    assert 1.0 < seq.prompt.perplexity < 1000.0


def test_stop_on_ends_a_loop_within_the_documented_delay(smollm2):
    from opentelemetry_instrumentation_corevital import CoreVitalMonitor
    from opentelemetry_instrumentation_corevital.capture._intervene import loop_length
    from opentelemetry_instrumentation_corevital.signals.repetition import find_repetition_loop

    tokenizer, model = smollm2
    inputs = tokenizer("more and more and more and more and", return_tensors="pt")
    prompt = inputs["input_ids"].shape[1]
    plain = model.generate(**inputs, max_new_tokens=40, do_sample=False)[0, prompt:].tolist()
    loop = find_repetition_loop(plain)
    assert loop is not None and loop.onset_step == 0 and loop.period == 2  # " more and" over and over
    monitor = CoreVitalMonitor(stop_on=("repetition_loop",))
    stopped = monitor.generate(model, **inputs, max_new_tokens=40, do_sample=False)[0, prompt:].tolist()
    # Documented: the stop comes with the token that makes max(3 periods, 12 tokens) of the loop.
    step = loop.onset_step + loop_length(loop.period, 3, 12, None) - 1
    assert step == 11
    assert stopped == plain[: step + 1]
    seq = monitor.report.sequences[0]
    assert (seq.finish_reason, seq.intervention.condition, seq.intervention.step) == (
        "intervention",
        "repetition_loop",
        step,
    )


def test_stop_on_leaves_a_non_looping_answer_unchanged(smollm2):
    from opentelemetry_instrumentation_corevital import CoreVitalMonitor

    tokenizer, model = smollm2
    inputs = chat_inputs(tokenizer, "Name three primary colours.")
    plain = model.generate(**inputs, max_new_tokens=48, do_sample=False)
    monitor = CoreVitalMonitor(stop_on=("repetition_loop", "nan_or_inf", "high_entropy"))
    watched = monitor.generate(model, **inputs, max_new_tokens=48, do_sample=False)
    assert torch.equal(plain, watched)
    assert monitor.report.sequences[0].intervention is None
