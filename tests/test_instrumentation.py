"""The instrumentor on tiny random models: output unchanged, span, metrics, logs, lifecycle."""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers.generation.utils as generation_utils
import transformers.tokenization_utils_base as tokenization_utils_base
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, StatusCode

from opentelemetry_instrumentation_corevital import (
    ConfigurationError,
    CoreVitalInstrumentor,
    Report,
    __version__,
    generation_context,
    names,
    validate_report,
)
from opentelemetry_instrumentation_corevital.testing import TINY_EOS, TelemetryCapture, tiny_causal_lm

PROMPT = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64]])

GENAI_SUMMARY_TYPES = {
    "gen_ai.operation.name": str,
    "gen_ai.provider.name": str,
    "gen_ai.request.model": str,
    "gen_ai.response.model": str,
    "gen_ai.response.id": str,
    "gen_ai.output.type": str,
    "gen_ai.request.max_tokens": int,
    "gen_ai.usage.input_tokens": int,
    "gen_ai.usage.output_tokens": int,
    "gen_ai.response.finish_reasons": tuple,
}
COREVITAL_SUMMARY_TYPES = {
    "corevital.schema_version": str,
    "corevital.capture.mode": str,
    "corevital.generation.mode": str,
    "corevital.timing.time_to_first_token": float,
    "corevital.timing.time_per_output_token": float,
    "corevital.risk.score": float,
    "corevital.risk.level": str,
    "corevital.risk.factors": tuple,
    "corevital.risk.factor_contributions": tuple,
    "corevital.risk.factor_values": tuple,
    "corevital.risk.factor_weights": tuple,
    "corevital.profile": str,
    "corevital.narrative": str,
    "corevital.fingerprint": tuple,
    "corevital.fingerprint.version": int,
    "corevital.flags": tuple,
    "corevital.flag.nan_or_inf": bool,
    "corevital.flag.repetition_loop": bool,
    "corevital.flag.mid_layer_anomaly": bool,
    "corevital.flag.attention_collapse": bool,
    "corevital.flag.high_entropy": bool,
    "corevital.high_entropy.steps": int,
    "corevital.entropy.mean": float,
    "corevital.entropy.max": float,
    "corevital.entropy.p95": float,
    "corevital.perplexity.mean": float,
    "corevital.surprisal.mean": float,
    "corevital.surprisal.max": float,
    "corevital.margin.mean": float,
    "corevital.margin.min": float,
    "corevital.top1_prob.mean": float,
    "corevital.topk_mass.mean": float,
    "corevital.timeline.stride": int,
    "corevital.timeline.lengths": tuple,
    "corevital.step.entropy": tuple,
    "corevital.step.surprisal": tuple,
    "corevital.step.margin": tuple,
    "corevital.step.top1_prob": tuple,
    "corevital.step.topk_mass": tuple,
    "corevital.step.duration": tuple,
    "corevital.layers.indices": tuple,
    "corevital.layers.hidden_norm": tuple,
}


def generate(model, prompt=PROMPT, **kwargs):
    kwargs.setdefault("max_new_tokens", 12)
    kwargs.setdefault("do_sample", False)
    return model.generate(prompt, attention_mask=torch.ones_like(prompt), **kwargs)


def only_span(tc):
    spans = tc.spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


class TestOutputUnchanged:
    def test_greedy_tokens_identical(self, tiny_llama):
        plain = generate(tiny_llama, max_new_tokens=24)
        with TelemetryCapture() as tc:
            instrumented = generate(tiny_llama, max_new_tokens=24)
        assert torch.equal(plain, instrumented)
        assert len(tc.spans()) == 1

    def test_return_object_is_untouched(self, tiny_llama):
        with TelemetryCapture():
            out = generate(tiny_llama, return_dict_in_generate=True, output_scores=True)
        assert type(out).__name__ == "GenerateDecoderOnlyOutput"
        assert len(out.scores) == 12

    def test_sampling_with_seed_identical(self, tiny_llama):
        torch.manual_seed(3)
        plain = generate(tiny_llama, do_sample=True, top_k=20, num_return_sequences=3)
        with TelemetryCapture() as tc:
            torch.manual_seed(3)
            instrumented = generate(tiny_llama, do_sample=True, top_k=20, num_return_sequences=3)
        assert torch.equal(plain, instrumented)
        span = only_span(tc)
        assert span.attributes["gen_ai.request.choice.count"] == 3
        assert span.attributes["gen_ai.request.top_k"] == 20
        assert span.attributes["corevital.timeline.lengths"] == (12, 12, 12)
        assert len(span.attributes["corevital.sequence.risk_scores"]) == 3


class TestSpan:
    def test_name_kind_status_scope(self, tiny_llama, telemetry):
        generate(tiny_llama)
        span = only_span(telemetry)
        assert span.name == "text_completion llama"
        assert span.kind is SpanKind.INTERNAL
        assert span.status.status_code is StatusCode.UNSET
        assert span.instrumentation_scope.name == "opentelemetry_instrumentation_corevital"
        assert span.instrumentation_scope.version == __version__
        assert span.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.41.0"

    def test_exact_attribute_names_and_types(self, tiny_llama, telemetry):
        generate(tiny_llama)
        attrs = dict(only_span(telemetry).attributes)
        expected = {**GENAI_SUMMARY_TYPES, **COREVITAL_SUMMARY_TYPES}
        assert set(attrs) == set(expected)
        for key, kind in expected.items():
            assert type(attrs[key]) is kind, (key, type(attrs[key]))
        assert attrs["gen_ai.operation.name"] == "text_completion"
        assert attrs["gen_ai.provider.name"] == "huggingface"
        assert attrs["gen_ai.request.model"] == "llama"
        assert attrs["gen_ai.usage.input_tokens"] == 8
        assert attrs["gen_ai.usage.output_tokens"] == 12
        assert attrs["gen_ai.request.max_tokens"] == 12
        assert attrs["gen_ai.response.finish_reasons"] == ("length",)
        assert attrs["corevital.generation.mode"] == "greedy_search"
        assert all(type(v) is float for v in attrs["corevital.step.entropy"])
        assert len(attrs["corevital.step.entropy"]) == 12
        assert attrs["corevital.timeline.lengths"] == (12,)
        assert 0.0 <= attrs["corevital.risk.score"] <= 1.0
        # GenAI keys come last, so the SDK's oldest-first eviction reaches them last.
        keys = list(attrs)
        assert max(keys.index(k) for k in COREVITAL_SUMMARY_TYPES) < min(keys.index(k) for k in GENAI_SUMMARY_TYPES)

    def test_span_values_equal_the_report(self, tiny_llama, telemetry):
        generate(tiny_llama)
        attrs = only_span(telemetry).attributes
        report = telemetry.reports[0]
        seq = report.sequences[0]
        assert attrs["corevital.risk.score"] == report.summary.risk_score == seq.risk.score
        assert list(attrs["corevital.step.entropy"]) == seq.timeline.entropy
        assert list(attrs["corevital.step.surprisal"]) == seq.timeline.surprisal
        assert attrs["corevital.entropy.mean"] == pytest.approx(sum(seq.timeline.entropy) / 12)
        ctx = only_span(telemetry).get_span_context()
        assert report.trace_id == f"{ctx.trace_id:032x}" and report.span_id == f"{ctx.span_id:016x}"

    def test_signals_match_a_reference_run(self, tiny_llama, telemetry):
        """Entropy and surprisal equal what output_scores gives, computed independently."""
        out = generate(tiny_llama, return_dict_in_generate=True, output_logits=True)
        seq = telemetry.reports[0].sequences[0]
        for step, logits in enumerate(out.logits):
            logp = torch.log_softmax(logits[0].double(), -1)
            entropy = float(-(logp.exp() * logp).sum() / math.log(2))
            token = int(out.sequences[0, PROMPT.shape[1] + step])
            assert seq.timeline.entropy[step] == pytest.approx(entropy, abs=1e-4)
            assert seq.timeline.surprisal[step] == pytest.approx(float(-logp[token] / math.log(2)), abs=1e-4)

    def test_stop_finish_reason_at_eos(self, tiny_llama, telemetry):
        plain = generate(tiny_llama, max_new_tokens=6)
        eos = int(plain[0, PROMPT.shape[1] + 3])  # the 4th generated token becomes the EOS
        generate(tiny_llama, max_new_tokens=6, eos_token_id=eos)
        attrs = telemetry.spans()[-1].attributes
        assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
        assert attrs["gen_ai.usage.output_tokens"] == 4
        assert attrs["corevital.timeline.lengths"] == (4,)

    def test_seed_and_extra_attributes_from_context(self, tiny_llama, telemetry):
        with generation_context(seed=7, attributes={"app.request_id": "r-1"}):
            generate(tiny_llama)
        attrs = only_span(telemetry).attributes
        assert attrs["gen_ai.request.seed"] == 7
        assert attrs["app.request_id"] == "r-1"

    def test_attribute_count_stays_bounded_for_long_generations(self, tiny_llama, telemetry):
        generate(tiny_llama, max_new_tokens=600, min_new_tokens=600)
        span = only_span(telemetry)
        assert len(span.attributes) < 64
        assert span.dropped_attributes == 0
        assert span.attributes["corevital.timeline.stride"] == 2
        assert span.attributes["corevital.timeline.lengths"] == (300,)
        assert len(span.attributes["corevital.step.entropy"]) == 300
        assert len(telemetry.reports[0].sequences[0].timeline.entropy) == 600


class TestBatches:
    def test_left_padded_batch(self, tiny_llama, tiny_tok, telemetry):
        tiny_tok.padding_side = "left"
        batch = tiny_tok(["the sky is blue and the sea is green", "hello"], padding=True, return_tensors="pt")
        tiny_llama.generate(**batch, max_new_tokens=8, do_sample=False)
        attrs = only_span(telemetry).attributes
        assert attrs["gen_ai.usage.input_tokens"] == 10  # 9 + 1 real tokens, padding excluded
        assert attrs["gen_ai.usage.output_tokens"] == 16
        assert attrs["corevital.timeline.lengths"] == (8, 8)
        report = telemetry.reports[0]
        assert [s.prompt_tokens for s in report.sequences] == [9, 1]

    def test_padding_does_not_leak_into_signals(self, tiny_llama, tiny_tok, telemetry):
        tiny_tok.padding_side = "left"
        alone = tiny_tok(["hello"], return_tensors="pt")
        tiny_llama.generate(**alone, max_new_tokens=8, do_sample=False)
        batch = tiny_tok(["the sky is blue and the sea is green", "hello"], padding=True, return_tensors="pt")
        tiny_llama.generate(**batch, max_new_tokens=8, do_sample=False)
        single, batched = telemetry.reports
        assert batched.sequences[1].timeline.entropy == pytest.approx(single.sequences[0].timeline.entropy, abs=1e-4)
        assert batched.sequences[1].timeline.surprisal == pytest.approx(
            single.sequences[0].timeline.surprisal, abs=1e-4
        )


class TestModes:
    def test_off_mode_keeps_span_and_timings_only(self, tiny_llama):
        with TelemetryCapture(capture="off") as tc:
            generate(tiny_llama)
        attrs = dict(only_span(tc).attributes)
        assert set(attrs) == set(GENAI_SUMMARY_TYPES) | {
            "corevital.capture.mode",
            "corevital.timing.time_to_first_token",
            "corevital.timing.time_per_output_token",
        }
        assert attrs["corevital.capture.mode"] == "off"
        assert tc.reports[0].summary.risk_score is None

    def test_capture_mode_from_environment(self, tiny_llama, monkeypatch):
        monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_CAPTURE", "off")
        with TelemetryCapture() as tc:
            generate(tiny_llama)
        assert only_span(tc).attributes["corevital.capture.mode"] == "off"

    def test_unknown_mode_names_the_choices(self, monkeypatch):
        monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_CAPTURE", "everything")
        with pytest.raises(
            ConfigurationError,
            match="OTEL_INSTRUMENTATION_COREVITAL_CAPTURE='everything'.*'off', 'summary', 'full', 'on_risk'",
        ):
            CoreVitalInstrumentor().instrument()

    def test_bad_numeric_option(self):
        with pytest.raises(ConfigurationError, match="max_span_steps=0 must be >= 1"):
            CoreVitalInstrumentor().instrument(max_span_steps=0)

    def test_beam_search_has_signals_for_the_returned_beam(self, tiny_llama):
        plain = generate(tiny_llama, num_beams=3)
        with TelemetryCapture() as tc:
            out = generate(tiny_llama, num_beams=3)
        assert torch.equal(plain, out)
        attrs = only_span(tc).attributes
        assert attrs["corevital.generation.mode"] == "beam_search"
        assert "corevital.capture.unavailable" not in attrs
        assert 0.0 <= attrs["corevital.risk.score"] <= 1.0
        assert attrs["gen_ai.usage.output_tokens"] == 12
        assert attrs["corevital.timeline.lengths"] == (12,)


class TestLifecycle:
    def test_uninstrument_restores_original_functions(self):
        originals = (
            generation_utils.GenerationMixin.__dict__["generate"],
            generation_utils.GenerationMixin.__dict__["_get_logits_processor"],
            tokenization_utils_base.PreTrainedTokenizerBase.__dict__["apply_chat_template"],
            tokenization_utils_base.PreTrainedTokenizerBase.__dict__["__call__"],
        )
        CoreVitalInstrumentor().instrument()
        assert generation_utils.GenerationMixin.__dict__["generate"] is not originals[0]
        CoreVitalInstrumentor().uninstrument()
        restored = (
            generation_utils.GenerationMixin.__dict__["generate"],
            generation_utils.GenerationMixin.__dict__["_get_logits_processor"],
            tokenization_utils_base.PreTrainedTokenizerBase.__dict__["apply_chat_template"],
            tokenization_utils_base.PreTrainedTokenizerBase.__dict__["__call__"],
        )
        assert all(a is b for a, b in zip(originals, restored))

    def test_references_taken_while_instrumented_pass_through_afterwards(self, tiny_llama):
        tc = TelemetryCapture()
        with tc:
            bound = tiny_llama.generate  # a wrapt-bound method that outlives uninstrument()
        out = bound(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=4, do_sample=False)
        assert out.shape == (1, 12)
        assert tc.spans() == []

    def test_suppressed_instrumentation_emits_nothing(self, tiny_llama, telemetry):
        with suppress_instrumentation():
            generate(tiny_llama)
        assert telemetry.spans() == []
        assert telemetry.metrics() == {}
        assert telemetry.reports == []

    def test_exception_is_recorded_and_reraised_unchanged(self, telemetry):
        model = tiny_causal_lm("llama")
        boom = RuntimeError("device fell over")

        def broken_forward(*args, **kwargs):
            raise boom

        model.forward = broken_forward
        with pytest.raises(RuntimeError) as caught:
            generate(model)
        assert caught.value is boom
        span = only_span(telemetry)
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "RuntimeError"
        assert [e.name for e in span.events] == ["exception"]
        duration = telemetry.metrics()["gen_ai.client.operation.duration"]
        (point,) = duration.data.data_points
        assert point.attributes["error.type"] == "RuntimeError"

    def test_assisted_generation_is_one_span(self, tiny_llama, telemetry):
        assistant = tiny_causal_lm("llama", seed=1)
        generate(tiny_llama, assistant_model=assistant, max_new_tokens=8)
        span = only_span(telemetry)
        assert span.attributes["corevital.generation.mode"] == "assisted_generation"
        assert span.attributes["corevital.capture.unavailable"] == (
            "layers: not captured for assisted_generation decoding",
            "logits: not captured for assisted_generation decoding",
            "timing: per-step times not measured for assisted_generation decoding",
        )
        assert "corevital.timing.time_to_first_token" not in span.attributes

    def test_instrument_twice_is_harmless(self, tiny_llama, telemetry):
        CoreVitalInstrumentor().instrument()  # already instrumented: warns and returns
        generate(tiny_llama)
        assert len(telemetry.spans()) == 1


class TestChatAndContent:
    def test_chat_template_names_the_span_chat(self, tiny_llama, tiny_tok, telemetry):
        enc = tiny_tok.apply_chat_template(
            [{"role": "user", "content": "tell me a short poem"}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        tiny_llama.generate(**enc, max_new_tokens=4, do_sample=False)
        assert only_span(telemetry).name == "chat llama"
        assert "gen_ai.input.messages" not in only_span(telemetry).attributes

    def test_rendered_chat_text_tokenized_later_is_chat(self, tiny_llama, tiny_tok, telemetry):
        text = tiny_tok.apply_chat_template(
            [{"role": "user", "content": "hello"}], add_generation_prompt=True, tokenize=False
        )
        enc = tiny_tok(text, return_tensors="pt")
        tiny_llama.generate(**enc, max_new_tokens=4, do_sample=False)
        assert only_span(telemetry).name == "chat llama"

    def test_plain_prompt_is_text_completion(self, tiny_llama, tiny_tok, telemetry):
        tiny_llama.generate(**tiny_tok("the sky is", return_tensors="pt"), max_new_tokens=4, do_sample=False)
        assert only_span(telemetry).name == "text_completion llama"

    def test_content_capture_opt_in(self, tiny_llama, tiny_tok, monkeypatch):
        # content on the span and the report: the newest conventions' mode (true alone means log events only)
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_AND_EVENT")
        with TelemetryCapture() as tc:
            enc = tiny_tok.apply_chat_template(
                [{"role": "user", "content": "hello"}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
            out = tiny_llama.generate(**enc, max_new_tokens=4, do_sample=False)
        attrs = only_span(tc).attributes
        assert json.loads(attrs["gen_ai.input.messages"]) == [
            {"role": "user", "parts": [{"type": "text", "content": "hello"}]}
        ]
        expected_text = tiny_tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        (message,) = json.loads(attrs["gen_ai.output.messages"])
        assert message["role"] == "assistant" and message["finish_reason"] == "length"
        assert message["parts"] == [{"type": "text", "content": expected_text}]
        assert tc.reports[0].sequences[0].token_ids == out[0, enc["input_ids"].shape[1] :].tolist()

    def test_no_content_by_default(self, tiny_llama, tiny_tok, telemetry):
        enc = tiny_tok("the sky is", return_tensors="pt")
        tiny_llama.generate(**enc, max_new_tokens=4, do_sample=False)
        report = telemetry.reports[0]
        assert report.sequences[0].token_ids is None and report.sequences[0].output_text is None
        assert "gen_ai.output.messages" not in only_span(telemetry).attributes


class TestMetrics:
    def test_instruments_units_buckets_and_attributes(self, tiny_llama, telemetry):
        generate(tiny_llama)
        metrics = telemetry.metrics()
        expected = {
            "gen_ai.client.operation.duration": ("s", names.DURATION_BUCKETS),
            "gen_ai.client.token.usage": ("{token}", names.TOKEN_BUCKETS),
            "gen_ai.server.time_to_first_token": ("s", names.TTFT_BUCKETS),
            "gen_ai.server.time_per_output_token": ("s", names.TPOT_BUCKETS),
            "corevital.risk.score": ("1", names.RISK_BUCKETS),
        }
        base = {
            "gen_ai.operation.name": "text_completion",
            "gen_ai.provider.name": "huggingface",
            "gen_ai.request.model": "llama",
            "gen_ai.response.model": "llama",
        }
        for name, (unit, buckets) in expected.items():
            metric = metrics[name]
            assert metric.unit == unit, name
            for point in metric.data.data_points:
                assert tuple(point.explicit_bounds) == tuple(float(b) for b in buckets), name
                assert point.count == 1
                assert math.isfinite(point.sum)
                extra = {k: v for k, v in point.attributes.items() if k not in base}
                assert {k: point.attributes[k] for k in base} == base
                assert set(extra) <= {"gen_ai.token.type"}
        usage = {
            p.attributes["gen_ai.token.type"]: p.sum for p in metrics["gen_ai.client.token.usage"].data.data_points
        }
        assert usage == {"input": 8, "output": 12}
        (risk_point,) = metrics["corevital.risk.score"].data.data_points
        assert risk_point.sum == telemetry.reports[0].summary.risk_score

    def test_flag_counter_uses_a_bounded_flag_attribute(self, tiny_llama, telemetry):
        generate(tiny_llama)  # a random model is unsure everywhere: high_entropy fires
        flags = telemetry.metrics()["corevital.health.flags"]
        assert flags.unit == "{flag}"
        points = {p.attributes["corevital.flag"]: p.value for p in flags.data.data_points}
        assert points == {"high_entropy": 1}

    def test_time_per_output_token_is_the_mean_step_time(self, tiny_llama, telemetry):
        generate(tiny_llama)
        report = telemetry.reports[0]
        ends = report.timings.step_end_s
        assert len(ends) == 12 and ends == sorted(ends)
        assert report.timings.time_to_first_token_s == ends[0]
        assert report.timings.time_per_output_token_s == pytest.approx((ends[-1] - ends[0]) / 11)
        assert ends[-1] <= report.timings.duration_s


class TestReport:
    def test_report_validates_and_round_trips(self, tiny_llama, telemetry):
        generate(tiny_llama)
        report = telemetry.reports[0]
        data = report.to_dict()
        validate_report(data)
        assert Report.from_json(report.to_json()).to_dict() == data
        assert data["capture"]["distribution"] == "raw_logits"
        assert data["usage"] == {"input_tokens": 8, "output_tokens": 12}

    def test_report_log_record(self, tiny_llama):
        with TelemetryCapture(report_log=True) as tc:
            generate(tiny_llama)
        (record,) = tc.logs()
        log = record.log_record
        assert log.event_name == "corevital.generation.report"
        body = json.loads(log.body)
        validate_report(body)
        span = only_span(tc)
        assert log.trace_id == span.get_span_context().trace_id
        assert log.span_id == span.get_span_context().span_id
        assert body["summary"]["risk_score"] == span.attributes["corevital.risk.score"]

    def test_no_log_record_unless_asked(self, tiny_llama, telemetry):
        generate(tiny_llama)
        assert telemetry.logs() == []

    def test_eos_model_output(self):
        model = tiny_causal_lm("llama", seed=2)
        with TelemetryCapture() as tc:
            model.generate(
                PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=3, do_sample=False, eos_token_id=TINY_EOS
            )
        assert tc.reports[0].sequences[0].finish_reason == "length"
