"""vLLM in-process (``LLM.generate`` / ``LLM.chat``) captured by the logits processor and decoder-layer hooks.

Greedy decoding, so every run is deterministic. The expected values come from vLLM itself: the log-probabilities
it returns when asked (``logprobs=5``) give each token's surprisal and top-1 probability by hand.
"""

from __future__ import annotations

import math

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, names
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "One, two, three, four, five, six, seven,",
    "Water boils at",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "In 1969, the first",
    "Photosynthesis is the process by which green plants",
    "My favourite colour is",
    "def fibonacci(n):",
]


def _greedy(max_tokens=12, **kwargs):
    from vllm import SamplingParams

    return SamplingParams(temperature=0, max_tokens=max_tokens, **kwargs)


def _by_request_id(telemetry):
    """Each report by the vLLM request id its span carries."""
    span_of = {f"{s.context.span_id:016x}": s.attributes[names.RESPONSE_ID] for s in telemetry.spans()}
    return {span_of[r.span_id]: r for r in telemetry.reports}


def test_greedy_output_is_the_same_with_and_without_capture(llm):
    plain = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, _greedy(), use_tqdm=False)]
    with TelemetryCapture(capture="full") as telemetry:
        captured = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, _greedy(), use_tqdm=False)]
    assert captured == plain
    assert len(telemetry.reports) == len(PROMPTS)
    assert sorted(r.usage.output_tokens for r in telemetry.reports) == sorted(len(t) for t in plain)


def test_signals_equal_what_vllm_returns_by_hand(llm):
    with TelemetryCapture(capture="summary") as telemetry:
        (output,) = llm.generate([PROMPTS[0]], _greedy(logprobs=5), use_tqdm=False)
    (report,) = telemetry.reports
    completion = output.outputs[0]
    timeline = report.sequences[0].timeline
    assert report.sequences[0].output_tokens == len(completion.token_ids) == 12
    for step, (token, top) in enumerate(zip(completion.token_ids, completion.logprobs)):
        chosen = top[token].logprob
        best = max(lp.logprob for lp in top.values())
        assert timeline.surprisal[step] == pytest.approx(-chosen / math.log(2), abs=1e-4)
        assert timeline.top1_prob[step] == pytest.approx(math.exp(best), abs=1e-5)
        assert timeline.entropy[step] >= 0
    assert report.capture.signals == ["logits", "tokens", "hidden"]
    assert report.model.num_layers == 30 and report.model.model_type == "llama"


def test_continuous_batching_attributes_every_row_to_its_request(llm):
    """A request's signals alone and inside a batch of 8 mixed-length requests agree within float tolerance."""
    target = PROMPTS[3]
    with TelemetryCapture(capture="summary") as alone:
        (single,) = llm.generate([target], _greedy(16), use_tqdm=False)
    lengths = [4, 9, 16, 16, 6, 12, 3, 14]  # different prompt and output lengths: rows join and leave
    with TelemetryCapture(capture="summary") as batched:
        outputs = llm.generate(PROMPTS, [_greedy(n) for n in lengths], use_tqdm=False)
    assert len(batched.reports) == 8
    assert outputs[3].outputs[0].token_ids == single.outputs[0].token_ids
    (a,) = alone.reports
    by_id = _by_request_id(batched)
    b = by_id[outputs[3].request_id]
    assert b.usage.output_tokens == a.usage.output_tokens == 16
    for name in ("entropy", "surprisal", "top1_prob", "margin", "topk_mass"):
        assert getattr(b.sequences[0].timeline, name) == pytest.approx(
            getattr(a.sequences[0].timeline, name), rel=1e-3, abs=1e-4
        ), name
    norms_a, norms_b = a.sequences[0].layers.hidden_norm, b.sequences[0].layers.hidden_norm
    assert len(norms_a) == 30 and len(norms_a[0]) == 16
    for layer_a, layer_b in zip(norms_a, norms_b):
        assert layer_b == pytest.approx(layer_a, rel=1e-3)
    # every other request's report has exactly its own output length
    for output, n in zip(outputs, lengths):
        report = by_id[output.request_id]
        assert report.usage.input_tokens == len(output.prompt_token_ids)
        assert report.sequences[0].output_tokens == len(output.outputs[0].token_ids) == n


def test_one_span_per_request_under_the_callers_span(llm):
    with TelemetryCapture(capture="summary") as telemetry:
        tracer = trace.get_tracer("app", tracer_provider=telemetry.tracer_provider)
        with tracer.start_as_current_span("handle") as parent:
            outputs = llm.generate(PROMPTS[:2], _greedy(8), use_tqdm=False)
    spans = [s for s in telemetry.spans() if s.name != "handle"]
    assert len(spans) == 2
    for span in spans:
        assert span.kind is SpanKind.INTERNAL
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.context.trace_id == parent.get_span_context().trace_id
        attrs = span.attributes
        assert attrs[names.PROVIDER_NAME] == "vllm"
        assert attrs[names.OPERATION_NAME] == "text_completion"
        assert span.name.startswith("text_completion ")
        assert attrs[names.USAGE_OUTPUT_TOKENS] == 8
        assert attrs[names.TIME_TO_FIRST_TOKEN] > 0
    assert sorted(s.attributes[names.USAGE_INPUT_TOKENS] for s in spans) == sorted(
        len(o.prompt_token_ids) for o in outputs
    )
    assert sorted(s.attributes[names.RESPONSE_ID] for s in spans) == sorted(o.request_id for o in outputs)


def test_chat_is_a_chat_span_and_ends_with_the_engines_finish_reason(llm):
    messages = [{"role": "user", "content": "Say hello."}]
    with TelemetryCapture(capture="summary") as telemetry:
        (output,) = llm.chat(messages, _greedy(64), use_tqdm=False)
    (report,) = telemetry.reports
    (span,) = telemetry.spans()
    assert span.name.startswith("chat ")
    assert report.request.operation == "chat"
    assert output.outputs[0].finish_reason == "stop"  # SmolLM2 answers in fewer than 64 tokens
    assert report.sequences[0].finish_reason == "stop"
    assert report.sequences[0].output_tokens == len(output.outputs[0].token_ids)
    assert report.usage.input_tokens == len(output.prompt_token_ids)


def test_full_capture_has_hidden_state_statistics_and_says_what_vllm_cannot_give(llm):
    with TelemetryCapture(capture="full") as telemetry:
        llm.generate([PROMPTS[2]], _greedy(6), use_tqdm=False)
    (report,) = telemetry.reports
    layers = report.sequences[0].layers
    assert report.capture.signals == ["logits", "tokens", "hidden", "hidden_full"]
    assert len(layers.hidden_mean) == 30 and len(layers.hidden_mean[0]) == 6
    # cosine to the previous step is known from the second step on
    assert layers.hidden_cos_prev[5][0] is None and -1.0 <= layers.hidden_cos_prev[5][1] <= 1.0
    assert set(report.capture.unavailable) == {"attention", "prompt"}


def test_uninstrument_unwraps_vllm_and_requests_are_no_longer_captured(llm):
    from vllm.v1.engine.llm_engine import LLMEngine

    with TelemetryCapture(capture="summary") as telemetry:
        assert hasattr(LLMEngine.add_request, "__wrapped__")
    assert not CoreVitalInstrumentor().is_instrumented_by_opentelemetry
    assert not hasattr(LLMEngine.add_request, "__wrapped__")
    llm.generate([PROMPTS[0]], _greedy(4), use_tqdm=False)
    assert telemetry.reports == []


def test_stop_on_repetition_loop_ends_the_request_with_its_end_token(llm):
    loops = ["Repeat after me: hello hello hello hello hello hello hello hello", "1, 1, 1, 1, 1, 1, 1,"]
    plain = [o.outputs[0].token_ids for o in llm.generate(loops, _greedy(40), use_tqdm=False)]
    with TelemetryCapture(capture="summary", stop_on=("repetition_loop",)) as telemetry:
        stopped = llm.generate(loops, _greedy(40), use_tqdm=False)
    eos = llm.get_tokenizer().eos_token_id
    by_id = _by_request_id(telemetry)
    for before, after in zip(plain, stopped):
        tokens = after.outputs[0].token_ids
        # greedy output unchanged up to the stop, then vLLM's own end token: the request finished as any other
        assert tokens[:-1] == before[: len(tokens) - 1] and tokens[-1] == eos and len(tokens) < 40
        assert after.outputs[0].finish_reason == "stop"
        sequence = by_id[after.request_id].sequences[0]
        assert sequence.finish_reason == "intervention"
        assert sequence.intervention.condition == "repetition_loop"
        assert sequence.output_tokens == len(tokens) - 1 == sequence.intervention.step + 1  # the end token is not ours
    # period 1 (one token 12 times) and period 3 (four periods, 12 tokens): both stopped after 12 tokens
    assert [len(o.outputs[0].token_ids) for o in stopped] == [13, 13]


def test_stop_on_high_entropy_uses_the_profiles_threshold_and_its_run(llm):
    """A threshold of 0.5 bits (thresholds override) and a run of 2: the first two steps are above it."""
    with TelemetryCapture(
        capture="summary", stop_on=("high_entropy",), thresholds={"high_entropy_bits": 0.5}, high_entropy_run=2
    ) as telemetry:
        (output,) = llm.generate([PROMPTS[0]], _greedy(12), use_tqdm=False)
    (report,) = telemetry.reports
    sequence = report.sequences[0]
    assert [e > 0.5 for e in sequence.timeline.entropy] == [True, True]
    assert sequence.intervention.condition == "high_entropy" and sequence.intervention.step == 1
    # the token of the stopping step is the end token vLLM was made to sample
    assert output.outputs[0].token_ids[-1] == llm.get_tokenizer().eos_token_id
    assert sequence.output_tokens == len(output.outputs[0].token_ids) == 2


def test_capture_off_still_gives_each_request_its_span_and_counts(llm):
    with TelemetryCapture(capture="off") as telemetry:
        outputs = llm.generate(PROMPTS[:2], _greedy(5), use_tqdm=False)
    spans = telemetry.spans()
    assert len(spans) == 2 and len(telemetry.reports) == 2
    for span in spans:
        assert span.attributes[names.USAGE_OUTPUT_TOKENS] == 5
        assert names.RISK_SCORE not in span.attributes
    assert sorted(s.attributes[names.USAGE_INPUT_TOKENS] for s in spans) == sorted(
        len(o.prompt_token_ids) for o in outputs
    )
