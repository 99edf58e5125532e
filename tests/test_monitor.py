"""The library API (CoreVitalMonitor) and real-time intervention (stop_on, step_callback)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from opentelemetry_instrumentation_corevital import ConfigurationError, CoreVitalInstrumentor, CoreVitalMonitor
from opentelemetry_instrumentation_corevital.capture._intervene import _TailLoops, loop_length
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture, tiny_causal_lm

PROMPT = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64]])


class Cycle(LogitsProcessor):
    """A user's processor that forces the output into a cycle: a real loop inside a real generate."""

    def __init__(self, cycle: list[int], start: int = 0) -> None:
        self.cycle, self.start = cycle, start

    def __call__(self, input_ids, scores):
        generated = input_ids.shape[1] - PROMPT.shape[1]
        forced = scores.clone()
        if generated >= self.start:
            forced[:] = -math.inf
            forced[:, self.cycle[(generated - self.start) % len(self.cycle)]] = 0.0
        return forced


def run(model, monitor, **kwargs):
    kwargs.setdefault("max_new_tokens", 40)
    return monitor.generate(model, PROMPT, attention_mask=torch.ones_like(PROMPT), do_sample=False, **kwargs)


class TestTailLoops:
    def test_every_period_at_once(self):
        tails = _TailLoops(torch.device("cpu"))
        rows = torch.tensor(
            [
                [9] * 4 + [5] * 12,  # period 1, 12 tokens
                [9] * 5 + [5] * 11,  # 11 tokens: not yet
                [9, 8, 7, 6] + [1, 2, 3, 4] * 3,  # period 4, 3 cycles
                [9, 8, 7, 6, 5] + [1, 2, 3, 4] * 2 + [1, 2, 3],  # 11 tokens of period 4: not yet
            ]
        )
        assert tails(rows, generated=16).tolist() == [True, False, True, False]
        assert tails(rows, generated=11) is None  # fewer than 12 generated tokens: nothing can qualify

    def test_a_long_sentence_needs_three_cycles(self):
        tails = _TailLoops(torch.device("cpu"))
        sentence = list(range(20, 30))
        assert tails(torch.tensor([sentence * 3]), generated=30).tolist() == [True]
        assert tails(torch.tensor([[1] + sentence * 2 + sentence[:9]]), generated=30).tolist() == [False]

    def test_min_repeat_stops_a_sentence_on_its_second_saying(self):
        assert [loop_length(p, 3, 12, 8) for p in (1, 4, 5, 10)] == [12, 12, 13, 18]
        assert [loop_length(p, 3, 12, None) for p in (1, 4, 5, 10)] == [12, 12, 15, 30]
        tails = _TailLoops(torch.device("cpu"), min_repeat=8)
        sentence = list(range(20, 30))
        assert tails(torch.tensor([[1] + sentence + sentence[:8]]), generated=19).tolist() == [True]
        assert tails(torch.tensor([[1, 1] + sentence + sentence[:7]]), generated=19).tolist() == [False]


class TestStopOn:
    def test_repetition_loop_stops_after_three_cycles(self, tiny_llama):
        monitor = CoreVitalMonitor(stop_on=("repetition_loop",))
        out = run(tiny_llama, monitor, logits_processor=LogitsProcessorList([Cycle([5, 6, 7], start=4)]))
        generated = out[0, PROMPT.shape[1] :].tolist()
        # 4 free tokens, then 5 6 7 ...; the loop qualifies at 12 periodic tokens: step 4 + 12 - 1 = 15
        assert len(generated) == 16
        assert generated[4:] == [5, 6, 7] * 4
        seq = monitor.report.sequences[0]
        assert seq.finish_reason == "intervention"
        assert (seq.intervention.condition, seq.intervention.step) == ("repetition_loop", 15)
        assert seq.output_tokens == 16
        assert seq.flags.repetition_loop and seq.flags.repetition_onset_step == 4

    def test_seq2seq_stops_too(self):
        from opentelemetry_instrumentation_corevital.testing import tiny_seq2seq_lm

        class Alternate(LogitsProcessor):  # the decoder's row starts with its start token
            def __call__(self, input_ids, scores):
                forced = torch.full_like(scores, -math.inf)
                forced[:, [9, 10][input_ids.shape[1] % 2]] = 0.0
                return forced

        model, source = tiny_seq2seq_lm(), torch.tensor([[5, 6, 7, 8, 1]])
        monitor = CoreVitalMonitor(stop_on=("repetition_loop",))
        out = monitor.generate(
            model, source, max_new_tokens=30, do_sample=False, logits_processor=LogitsProcessorList([Alternate()])
        )
        assert out[0, 1:].tolist() == [10, 9] * 6  # 12 periodic tokens, then the stop
        seq = monitor.report.sequences[0]
        assert (seq.finish_reason, seq.intervention.condition, seq.intervention.step) == (
            "intervention",
            "repetition_loop",
            11,
        )

    def test_stop_loop_repeat_stops_a_long_cycle_on_its_second_saying(self, tiny_llama):
        cycle = [5, 6, 7, 8, 9, 10]  # period 6: three cycles would take 18 tokens, 6 + 8 takes 14
        monitor = CoreVitalMonitor(stop_on=("repetition_loop",), stop_loop_repeat=8)
        out = run(tiny_llama, monitor, logits_processor=LogitsProcessorList([Cycle(cycle, start=2)]))
        seq = monitor.report.sequences[0]
        assert (seq.intervention.condition, seq.intervention.step) == ("repetition_loop", 2 + 14 - 1)
        assert out[0, PROMPT.shape[1] :].tolist()[2:] == cycle * 2 + cycle[:2]

    def test_a_non_looping_greedy_output_is_unchanged(self, tiny_llama):
        plain = tiny_llama.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=30, do_sample=False)
        monitor = CoreVitalMonitor(stop_on=("repetition_loop", "nan_or_inf"))
        out = run(tiny_llama, monitor, max_new_tokens=30)
        assert torch.equal(plain, out)
        assert monitor.report.sequences[0].intervention is None
        assert monitor.report.sequences[0].finish_reason == "length"

    def test_nan_logits_stop_at_the_first_step(self):
        model = tiny_causal_lm("llama")
        with torch.no_grad():
            model.lm_head.weight[7, 3] = float("nan")
        monitor = CoreVitalMonitor(stop_on=("nan_or_inf",))
        out = run(model, monitor)
        assert out.shape[1] == PROMPT.shape[1] + 1
        seq = monitor.report.sequences[0]
        assert (seq.intervention.condition, seq.intervention.step) == ("nan_or_inf", 0)
        assert seq.flags.nan_or_inf and monitor.get_risk_score() == 1.0

    def test_high_entropy_run(self, tiny_llama):
        # a random model is unsure at every step (about 8 bits): the 8th such step in a row stops it
        monitor = CoreVitalMonitor(stop_on=("high_entropy",), high_entropy_run=8)
        run(tiny_llama, monitor)
        seq = monitor.report.sequences[0]
        assert (seq.intervention.condition, seq.intervention.step, seq.output_tokens) == ("high_entropy", 7, 8)

    def test_step_callback_sees_each_step_and_can_stop(self, tiny_llama):
        seen = []

        def callback(view):
            seen.append((view.step, len(view.entropy), len(view.tokens)))
            return view.step == 5

        monitor = CoreVitalMonitor(step_callback=callback, callback_every=1)
        run(tiny_llama, monitor)
        assert seen == [(t, 1, 1) for t in range(6)]
        seq = monitor.report.sequences[0]
        assert (seq.intervention.condition, seq.intervention.step, seq.output_tokens) == ("step_callback", 5, 6)

    def test_callback_every_k_steps(self, tiny_llama):
        steps = []
        run(
            tiny_llama,
            CoreVitalMonitor(step_callback=lambda v: steps.append(v.step), callback_every=4),
            max_new_tokens=12,
        )
        assert steps == [0, 4, 8]

    def test_intervention_is_on_the_span(self, tiny_llama):
        with TelemetryCapture(stop_on="repetition_loop") as tc:
            tiny_llama.generate(
                PROMPT,
                attention_mask=torch.ones_like(PROMPT),
                max_new_tokens=40,
                do_sample=False,
                logits_processor=LogitsProcessorList([Cycle([9, 10], start=0)]),
            )
        attrs = tc.spans()[0].attributes
        assert attrs["gen_ai.response.finish_reasons"] == ("intervention",)
        assert attrs["corevital.intervention.conditions"] == ("repetition_loop",)
        assert attrs["corevital.intervention.steps"] == (11,)
        assert attrs["gen_ai.usage.output_tokens"] == 12

    def test_unknown_condition_is_refused(self):
        with pytest.raises(ConfigurationError, match="unknown condition 'loops'; use any of repetition_loop"):
            CoreVitalMonitor(stop_on=("loops",))


class TestMonitorApi:
    def test_answers_about_the_last_generation(self, tiny_llama):
        monitor = CoreVitalMonitor(capture="full")
        out = run(tiny_llama, monitor, max_new_tokens=6)
        assert out.shape == (1, 14)
        report = monitor.report
        assert report.capture.mode == "full" and report.sequences[0].layers.attn_entropy is not None
        assert monitor.get_risk_score() == report.summary.risk_score
        assert monitor.get_health_flags() == {
            "nan_or_inf": False,
            "high_entropy": True,
            "repetition_loop": False,
            "mid_layer_anomaly": False,
            "attention_collapse": False,
        }
        summary = monitor.get_summary()
        assert summary["output_tokens"] == 6 and summary["flags"] == ["high_entropy"]
        assert monitor.should_intervene() is (report.summary.risk_score >= 0.7)
        assert not CoreVitalInstrumentor().is_instrumented_by_opentelemetry  # the monitor cleaned up

    def test_intervene_on_flags(self, tiny_llama):
        monitor = CoreVitalMonitor(intervene_above=1.0, intervene_on=("high_entropy",))
        run(tiny_llama, monitor, max_new_tokens=4)
        assert monitor.should_intervene()
        quiet = CoreVitalMonitor(intervene_above=1.0, intervene_on=())
        run(tiny_llama, quiet, max_new_tokens=4)
        assert not quiet.should_intervene()

    def test_alongside_the_instrumentor_one_capture_same_values(self, tiny_llama):
        with TelemetryCapture(capture="summary") as tc:
            monitor = CoreVitalMonitor(capture="full")
            run(tiny_llama, monitor, max_new_tokens=6)
            assert CoreVitalInstrumentor().is_instrumented_by_opentelemetry  # left as the application set it
        (span,) = tc.spans()
        assert tc.reports == [monitor.report]  # one capture, delivered to both
        assert span.attributes["corevital.capture.mode"] == "full"
        assert span.attributes["corevital.risk.score"] == monitor.get_risk_score()
        assert list(span.attributes["corevital.step.entropy"]) == monitor.report.sequences[0].timeline.entropy

    def test_without_any_sdk_configured(self, tiny_llama):
        monitor = CoreVitalMonitor()
        run(tiny_llama, monitor, max_new_tokens=3)
        assert monitor.report.trace_id is None  # the API's no-op tracer gives no trace, the report is whole
        assert len(monitor.report.sequences[0].timeline.entropy) == 3

    def test_watch_block_and_nothing_before(self, tiny_llama):
        monitor = CoreVitalMonitor()
        with pytest.raises(LookupError, match="no generation has been watched yet"):
            monitor.get_risk_score()
        with monitor.watch():
            tiny_llama.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=2, do_sample=False)
            tiny_llama.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=3, do_sample=False)
        tiny_llama.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=4, do_sample=False)
        assert [r.usage.output_tokens for r in monitor.reports] == [2, 3]

    def test_bad_option_names_the_problem(self):
        with pytest.raises(ConfigurationError, match="capture='loud' is not a capture mode"):
            CoreVitalMonitor(capture="loud")
        with pytest.raises(ConfigurationError, match="intervene_above=2 must be between 0 and 1"):
            CoreVitalMonitor(intervene_above=2)
        with pytest.raises(
            ConfigurationError, match="unknown option 'stop_loop_repat'; options are: .*stop_loop_repeat"
        ):
            CoreVitalMonitor(stop_loop_repat=8)


class TestScore:
    def test_scoring_a_generation_gives_its_own_signals(self):
        model = tiny_causal_lm("llama")
        monitor = CoreVitalMonitor(capture="full")
        out = run(model, monitor, max_new_tokens=6)
        generated = monitor.report
        scored = monitor.score(model, PROMPT, out[:, PROMPT.shape[1] :])
        assert scored is monitor.report
        assert scored.request.operation == "score" and scored.request.generation_mode == "teacher_forced"
        a, b = generated.sequences[0], scored.sequences[0]
        assert b.output_tokens == 6 and b.prompt_tokens == 8
        for name in ("entropy", "surprisal", "top1_prob", "margin", "topk_mass"):
            assert getattr(b.timeline, name) == pytest.approx(getattr(a.timeline, name), abs=1e-4), name
        for name in (
            "hidden_norm",
            "hidden_std",
            "hidden_cos_prev",
            "update_ratio",
            "attn_entropy",
            "attn_entropy_min",
            "attn_max_weight",
            "attn_sink_mass",
            "attn_prompt_mass",
            "attn_collapsed_fraction",
            "attn_prev_token",
        ):
            for x, y in zip(getattr(a.layers, name), getattr(b.layers, name)):
                assert y == pytest.approx(x, abs=1e-4), name
        assert b.risk.score == pytest.approx(a.risk.score, abs=1e-5)
        assert b.uncertainty.score == pytest.approx(a.uncertainty.score, abs=1e-5)
        assert b.uncertainty.tokens == a.uncertainty.tokens == 6

    def test_scoring_a_batch_with_padding_and_its_span(self, tiny_tok):
        model = tiny_causal_lm("llama")
        tiny_tok.padding_side = "left"
        prompts = tiny_tok(["the sky is blue and the sea", "hello"], padding=True, return_tensors="pt")
        answers = tiny_tok(["is green .", "you ."], padding=False, return_tensors=None)["input_ids"]
        answers = torch.tensor([answers[0], answers[1] + [answers[1][-1]]])  # same length rows
        with TelemetryCapture(capture="full") as tc:
            report = CoreVitalMonitor().score(model, prompts["input_ids"], answers, prompts["attention_mask"])
        (span,) = tc.spans()
        assert span.name == "score llama"
        assert span.attributes["gen_ai.operation.name"] == "score"
        assert span.attributes["gen_ai.usage.input_tokens"] == int(prompts["attention_mask"].sum())
        assert span.attributes["gen_ai.usage.output_tokens"] == 6
        # the padded row scores like the same prompt alone
        alone = CoreVitalMonitor(capture="full").score(
            model, tiny_tok("hello", return_tensors="pt")["input_ids"], answers[1:]
        )
        assert report.sequences[1].timeline.entropy == pytest.approx(alone.sequences[0].timeline.entropy, abs=1e-4)
        for x, y in zip(report.sequences[1].layers.attn_entropy, alone.sequences[0].layers.attn_entropy):
            assert x == pytest.approx(y, abs=1e-4)
        for x, y in zip(report.sequences[1].layers.attn_prev_token, alone.sequences[0].layers.attn_prev_token):
            assert x == pytest.approx(y, abs=1e-4)

    def test_bad_inputs(self, tiny_llama):
        monitor = CoreVitalMonitor()
        with pytest.raises(ConfigurationError, match="continuation_ids must hold token ids"):
            monitor.score(tiny_llama, PROMPT, torch.zeros(1, 3))
        with pytest.raises(ConfigurationError, match="prompt_ids has 1 rows but continuation_ids has 2"):
            monitor.score(tiny_llama, PROMPT, torch.ones(2, 3, dtype=torch.long))

    def test_score_needs_the_instrumentation(self, tiny_llama):
        from opentelemetry_instrumentation_corevital.instrument import score

        with pytest.raises(ConfigurationError, match=r"^score\(\) needs the instrumentation on: call it in a Monitor"):
            score(tiny_llama, PROMPT, PROMPT)


class TestProfileOptions:
    """``profile=`` and ``thresholds=`` reach the report and the span, through keywords and the environment."""

    def test_profile_and_thresholds_apply_to_the_report_and_span(self, tiny_llama):
        with TelemetryCapture(profile="gpt2", thresholds={"high_entropy_bits": 20.0}) as tc:
            tiny_llama.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), do_sample=False, max_new_tokens=6)
        report = tc.reports[0]
        assert report.thresholds.profile == "gpt2"
        assert report.thresholds.high_entropy_bits == 20.0 and report.thresholds.overridden == ["high_entropy_bits"]
        assert report.sequences[0].flags.high_entropy_steps == 0
        assert tc.spans()[0].attributes["corevital.profile"] == "gpt2"

    def test_environment_names_them_too(self, tiny_llama, monkeypatch):
        monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_PROFILE", "mistral")
        monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_THRESHOLDS", "high_entropy_bits=0.5, window=4")
        with TelemetryCapture() as tc:
            tiny_llama.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), do_sample=False, max_new_tokens=6)
        thresholds = tc.reports[0].thresholds
        assert (thresholds.profile, thresholds.high_entropy_bits, thresholds.window) == ("mistral", 0.5, 4)
        assert tc.reports[0].sequences[0].flags.high_entropy_steps == 6  # a random model is above 0.5 bits

    def test_a_profile_file_of_ones_own(self, tiny_llama, tmp_path):
        path = tmp_path / "mine.json"
        path.write_text('{"format": 1, "name": "mine", "extends": "llama", "thresholds": {"high_entropy_bits": 30}}')
        monitor = CoreVitalMonitor(profile=str(path))
        run(tiny_llama, monitor, max_new_tokens=4)
        assert (monitor.report.thresholds.profile, monitor.report.thresholds.high_entropy_bits) == ("mine", 30.0)

    def test_stop_on_high_entropy_uses_the_profile_threshold(self, tiny_llama):
        # A random model's entropy is about log2(vocab) bits: far above the default 4.0, far below 30.
        quiet = CoreVitalMonitor(stop_on=("high_entropy",), high_entropy_run=2, thresholds={"high_entropy_bits": 30})
        run(tiny_llama, quiet, max_new_tokens=6)
        assert quiet.report.sequences[0].intervention is None
        loud = CoreVitalMonitor(stop_on=("high_entropy",), high_entropy_run=2)
        run(tiny_llama, loud, max_new_tokens=6)
        assert loud.report.sequences[0].intervention.condition == "high_entropy"
        assert loud.report.sequences[0].intervention.step == 1

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"profile": "llamma"}, "profile='llamma': .*shipped profiles: .*llama"),
            ({"profile": "/nonexistent/p.json"}, "profile='/nonexistent/p.json': profile file"),
            ({"thresholds": {"high_entropy_bit": 3}}, "unknown threshold 'high_entropy_bit'"),
            ({"thresholds": {"window": 2.5}}, "must be a whole number >= 1, got 2.5"),
        ],
    )
    def test_bad_values_are_named(self, kwargs, message):
        with pytest.raises(ConfigurationError, match=message):
            CoreVitalMonitor(**kwargs)

    def test_bad_environment_text_is_named(self, monkeypatch):
        monkeypatch.setenv("OTEL_INSTRUMENTATION_COREVITAL_THRESHOLDS", "high_entropy_bits:3")
        with pytest.raises(ConfigurationError, match="'high_entropy_bits:3' is not name=value"):
            CoreVitalInstrumentor().instrument()
