"""Five diagnosis errors a new user reproduced (issue 14), each pinned: NaN logits whose greedy token is the pad
id, the collapsed-head share at float32 and bfloat16 precision, a mid-layer anomaly covering most of the run,
attention steps with too few keys to judge, and confident repetition on SmolLM2's standard loop."""

from __future__ import annotations

import json
import math

import pytest
import torch

from opentelemetry_instrumentation_corevital import CoreVitalMonitor, validate_report
from opentelemetry_instrumentation_corevital.testing import (
    TINY_PAD,
    TelemetryCapture,
    tiny_causal_lm,
    tiny_seq2seq_lm,
)

PROMPT = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64]])
STEPS = 8
NAN_FROM = 3  # the output layer returns NaN from decode step 3 on


def nan_from(module: torch.nn.Module, step: int):
    """A forward hook on the output layer: NaN logits from generation step ``step`` on (call 1 is step 0)."""
    seen = {"n": 0}

    def hook(_module, _args, output):
        seen["n"] += 1
        return output.mul(float("nan")) if seen["n"] > step else output

    return module.register_forward_hook(hook)


def nan_model(kind: str):
    """(model, generate keyword arguments) with pad id 0 (T5's default), the id greedy picks from NaN logits."""
    if kind == "causal":
        model = tiny_causal_lm("llama")
        assert model.generation_config.pad_token_id == TINY_PAD == 0
        return model, {"input_ids": PROMPT, "attention_mask": torch.ones_like(PROMPT)}
    model = tiny_seq2seq_lm()
    model.generation_config.pad_token_id = 0
    source = torch.tensor([[5, 6, 7, 8, 1]])
    return model, {"input_ids": source, "attention_mask": torch.ones_like(source)}


@pytest.mark.parametrize("kind", ["causal", "t5"])
class TestNanLogitsWithPadIdZero:
    def test_nan_steps_are_reported_not_trimmed_as_padding(self, kind):
        model, inputs = nan_model(kind)
        handle = nan_from(model.lm_head, NAN_FROM)
        try:
            with TelemetryCapture(capture="summary") as tc:
                out = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False)
        finally:
            handle.remove()
        (report,) = tc.reports
        validate_report(json.loads(report.to_json()))
        assert out[0, -(STEPS - NAN_FROM) :].tolist() == [0] * (STEPS - NAN_FROM)  # greedy's pick from NaN
        seq = report.sequences[0]
        assert (seq.output_tokens, seq.finish_reason) == (STEPS, "length")
        assert (seq.flags.nan_or_inf, seq.flags.nan_or_inf_first_step, seq.flags.nan_or_inf_steps) == (
            True,
            NAN_FROM,
            STEPS - NAN_FROM,
        )
        assert (seq.risk.score, seq.risk.forced_by) == (1.0, "nan_or_inf")

    def test_stop_on_nan_is_an_intervention(self, kind):
        model, inputs = nan_model(kind)
        handle = nan_from(model.lm_head, NAN_FROM)
        try:
            monitor = CoreVitalMonitor(stop_on=("nan_or_inf",))
            out = monitor.generate(model, **inputs, max_new_tokens=STEPS, do_sample=False)
        finally:
            handle.remove()
        seq = monitor.report.sequences[0]
        assert out[0, -1].item() == 0
        assert (seq.output_tokens, seq.finish_reason) == (NAN_FROM + 1, "intervention")
        assert (seq.intervention.condition, seq.intervention.step) == ("nan_or_inf", NAN_FROM)
        assert seq.flags.nan_or_inf and seq.flags.nan_or_inf_first_step == NAN_FROM
        assert monitor.get_risk_score() == 1.0


KEYS = 16  # key 0 is the sink


def head(sink: float, rest: list[float]) -> list[float]:
    """One head's attention over KEYS keys: ``sink`` on key 0, the remainder shared in proportion to ``rest``."""
    total = sum(rest)
    return [sink] + [(1.0 - sink) * r / total for r in rest]


SPREAD = [1.0 + 0.1 * i for i in range(KEYS - 1)]  # the remainder spread over every non-sink key
PEAKED = [1.0] + [1e-9] * (KEYS - 2)  # the remainder on one key
HEADS = [
    head(1.0 - 1e-7, SPREAD),  # all but 1e-7 on the sink: parking, not collapsed
    head(0.9999995, SPREAD),
    head(0.9999993, SPREAD),
    head(0.99, SPREAD),
    head(0.5, PEAKED),  # collapsed
    head(0.999, PEAKED),  # collapsed
    head(1.0 / KEYS, [1.0] * (KEYS - 1)),  # uniform
    [1.0] + [0.0] * (KEYS - 1),  # everything on the sink
]


def reference_collapsed(probs: torch.Tensor) -> float:
    """The documented definition in float64 on the given probabilities: share of heads whose renormalised
    non-sink attention has entropy below 3% of ln(non-sink keys); a head with nothing off the sink is not."""
    from opentelemetry_instrumentation_corevital.capture._attention import COLLAPSE_THRESHOLD

    count = 0
    for row in probs.double():
        rest = row[1:]
        mass = rest.sum()
        if mass > 0:
            q = rest / mass
            entropy = -torch.special.xlogy(q, q).sum()
            count += bool(entropy / torch.log(torch.tensor(KEYS - 1.0)) < COLLAPSE_THRESHOLD)
    return count / len(probs)


def collapsed_fraction(probs: torch.Tensor, valid: float) -> float:
    """The capture's collapsed fraction of one layer and row from [heads, keys] probabilities."""
    from opentelemetry_instrumentation_corevital.capture import _attention, _reduce

    weights = _attention.key_weights(1, probs.shape[-1], probs.shape[-1], torch.zeros(1, dtype=torch.long))
    heads = _reduce.head_values(probs[None], weights)  # [rows=1, heads, 6]
    valid_t = torch.tensor([valid])
    stats = _reduce.aggregate_heads(heads, 1.0 / valid_t.log(), _attention.inv_log_rest(valid_t))
    return stats[0, _attention.ATTENTION_COLUMNS.index("collapsed_fraction")].item()


class TestCollapsedShare:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    def test_share_follows_the_definition_in_float32_and_bfloat16(self, dtype):
        probs = torch.tensor(HEADS, dtype=torch.float64).to(dtype)
        assert reference_collapsed(probs) == 2 / 8
        assert collapsed_fraction(probs, KEYS) == 2 / 8

    @pytest.mark.parametrize("keys", [1, 2])
    def test_a_step_with_fewer_than_two_non_sink_keys_is_not_judged(self, keys):
        probs = torch.tensor([[1.0] + [0.0] * (keys - 1)] * 4)
        assert math.isnan(collapsed_fraction(probs, keys))

    def test_a_step_with_two_non_sink_keys_is_judged(self):
        probs = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4]])
        assert collapsed_fraction(probs, 3) == 0.5

    def test_t5_first_decoder_steps_are_not_judged_nor_blamed(self):
        model = tiny_seq2seq_lm()
        source = torch.tensor([[5, 6, 7, 8, 1]])
        with TelemetryCapture(capture="full") as tc:
            model.generate(source, attention_mask=torch.ones_like(source), max_new_tokens=3, min_new_tokens=3)
        seq = tc.reports[0].sequences[0]
        # The decoder's self-attention sees 1, 2, then 3 keys (the start token first): only the third step has two
        # keys besides the sink.
        collapsed = seq.layers.attn_collapsed_fraction
        assert [row[:2] for row in collapsed] == [[None, None], [None, None]]
        assert all(row[2] is not None for row in collapsed)
        assert not any(r.code == "attention_collapse" for b in seq.diagnosis.blame for r in b.reasons)
        assert seq.flags.attention_collapse_peak_share == sum(row[2] for row in collapsed) / 2


STEPS_10 = list(range(10))
FAULT_FROM = 3  # the fault covers steps 3-9: 70% of the run


def norms_with_fault(layers_scaled: tuple[int, ...], factor: float) -> list[list[float]]:
    """Six layers' norms (10, 20, ... growing with depth), those of ``layers_scaled`` times ``factor`` from
    :data:`FAULT_FROM` on."""
    return [
        [10.0 * (i + 1) * (factor if i in layers_scaled and t >= FAULT_FROM else 1.0) for t in STEPS_10]
        for i in range(6)
    ]


def diagnosed(norms: list[list[float]]):
    """A hand-built sequence with these per-layer norms, diagnosed with the default profile."""
    from opentelemetry_instrumentation_corevital.report import diagnose_sequence
    from opentelemetry_instrumentation_corevital.report._model import LayerSeries, SequenceReport, Timeline
    from opentelemetry_instrumentation_corevital.signals.profiles import load_profile

    n = len(STEPS_10)
    seq = SequenceReport(
        index=0,
        prompt_tokens=4,
        output_tokens=n,
        finish_reason="length",
        timeline=Timeline(
            entropy=[1.0] * n, top1_prob=[0.6] * n, margin=[0.3] * n, topk_mass=[0.9] * n, surprisal=[1.0] * n
        ),
        layers=LayerSeries(indices=list(range(6)), steps=STEPS_10, hidden_norm=norms),
    )
    diagnose_sequence(seq, load_profile("default"), tokens=list(range(10, 20)), signals=True)
    return seq


class TestMidLayerAnomalyCoveringMostOfTheRun:
    @pytest.mark.parametrize("factor, sign", [(8.0, 1.0), (1 / 8.0, -1.0)])
    def test_spike_onset_and_direction(self, factor, sign):
        from opentelemetry_instrumentation_corevital.signals import layers as layer_sig

        result = layer_sig.mid_layer_anomalies(norms_with_fault((2,), factor), list(range(6)), STEPS_10, 3.0)
        assert [(a.layer, a.step, a.kind) for a in result.anomalies] == [(2, t, "spike") for t in range(3, 10)]
        assert all(a.log_ratio == pytest.approx(sign * math.log(8.0)) for a in result.anomalies)
        assert result.first_step == FAULT_FROM

    def test_jump_carried_to_the_output_onset_direction_and_narrative(self):
        seq = diagnosed(norms_with_fault((2, 3, 4, 5), 8.0))
        flags = seq.flags
        assert (flags.mid_layer_anomaly, flags.mid_layer_anomaly_layers) == (True, [2])
        assert flags.mid_layer_anomaly_first_step == FAULT_FROM
        assert flags.mid_layer_anomaly_ratio == pytest.approx(8.0)
        (blamed,) = seq.diagnosis.blame
        assert (blamed.layer, blamed.reasons[0].step) == (2, FAULT_FROM)
        assert blamed.reasons[0].detail == "norm 8.0x above its usual level from here to the output at step 3"
        assert "At step 3 the hidden-state norm rose 8.0x above its usual level at layer 2" in seq.diagnosis.narrative

    def test_a_fall_is_told_as_a_fall(self):
        seq = diagnosed(norms_with_fault((2, 3, 4, 5), 1 / 8.0))
        assert seq.flags.mid_layer_anomaly_first_step == FAULT_FROM
        (blamed,) = seq.diagnosis.blame
        assert blamed.reasons[0].detail == "norm 8.0x below its usual level from here to the output at step 3"
        assert "At step 3 the hidden-state norm fell 8.0x below its usual level at layer 2" in seq.diagnosis.narrative


@pytest.mark.slow
class TestConfidentRepetitionOnSmolLM2:
    def run(self, smollm2, encode, tokens):
        _, model = smollm2
        with TelemetryCapture(capture="summary", capture_content=True) as tc:
            model.generate(**encode(), max_new_tokens=tokens, do_sample=False)
        return tc.reports[0].sequences[0]

    def test_fires_on_the_standard_loop(self, smollm2):
        tokenizer, _ = smollm2
        seq = self.run(smollm2, lambda: tokenizer("more and more and more and more and", return_tensors="pt"), 40)
        assert seq.output_text.startswith(" more and more and more and")
        (signal,) = [c for c in seq.diagnosis.compound if c.name == "confident_repetition"]
        # Steps 5-12 all copy an earlier 4-gram; their mean entropy is under the profile's 3.34 bits.
        assert signal.onset_step == 5 and signal.evidence["copied_share"] == 1.0
        assert signal.evidence["entropy_mean"] == pytest.approx(sum(seq.timeline.entropy[5:13]) / 8)
        assert signal.evidence["entropy_mean"] < 3.34

    @pytest.mark.parametrize(
        "question",
        [
            "What is the capital of France?",
            "Explain in two sentences why the sky is blue.",
            "Name three primary colours.",
        ],
    )
    def test_quiet_on_ordinary_answers(self, smollm2, question):
        tokenizer, _ = smollm2

        def encode():
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": question}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )

        seq = self.run(smollm2, encode, 48)
        assert seq.diagnosis.compound == []
