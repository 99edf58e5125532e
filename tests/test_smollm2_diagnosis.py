"""Diagnosis on the real SmolLM2-135M-Instruct: a coherent answer stays quiet (the original CoreVital scored one
0.87 over a false mid-layer anomaly), a loop is caught by tokens and hidden state, an injected fault is blamed on
its layer, and `corevital run` prints all of it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from opentelemetry_instrumentation_corevital import validate_report
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
LOOP_PROMPT = "I went to the store and I went to the store and I went to the store and"


def chat(tokenizer, text):
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )


def run(model, encode, mode="full", tokens=32, **options):
    # the narrative quotes a token only when both the span and the events may carry content
    with TelemetryCapture(
        capture=mode, capture_content="SPAN_AND_EVENT", semconv_opt_in="gen_ai_latest_experimental", **options
    ) as tc:
        inputs = encode()  # tokenized while instrumented, so content capture knows the tokenizer
        model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    (span,) = tc.spans()
    (report,) = tc.reports
    validate_report(report.to_dict())
    return span, report


@pytest.mark.parametrize(
    "question", ["What is the capital of France?", "Explain in two sentences why the sky is blue."]
)
def test_coherent_answer_stays_quiet(smollm2, question):
    tokenizer, model = smollm2
    span, report = run(model, lambda: chat(tokenizer, question))
    seq = report.sequences[0]
    assert report.thresholds.profile == "smollm2"
    assert seq.flags.fired() == [], seq.flags
    assert seq.flags.unavailable == {}
    assert seq.flags.mid_layer_anomaly_ratio < 2.0  # far from the 3x threshold
    assert seq.diagnosis.blame == [] and seq.diagnosis.compound == []
    assert seq.risk.level == "low" and seq.risk.score < 0.3
    # The narrative tells this run's own numbers: the entropy peak, its step and its token.
    entropy = seq.timeline.entropy
    peak = max(entropy)
    step = entropy.index(peak)
    token = tokenizer.decode([seq.token_ids[step]], skip_special_tokens=True)
    assert f"Entropy peaked at {peak:.2f} bits at step {step} (token {token!r})" in seq.diagnosis.narrative
    assert f"Risk {seq.risk.score:.2f} (low)" in seq.diagnosis.narrative
    assert span.attributes["corevital.narrative"] == seq.diagnosis.narrative


@pytest.mark.parametrize("mode, evidence", [("full", ["tokens", "hidden"]), ("summary", ["tokens", "hidden"])])
def test_loop_is_caught_by_tokens_and_hidden_state(smollm2, mode, evidence):
    tokenizer, model = smollm2
    span, report = run(model, lambda: tokenizer(LOOP_PROMPT, return_tensors="pt"), mode, tokens=40)
    seq = report.sequences[0]
    flags = seq.flags
    assert flags.repetition_loop and flags.repetition_period == 6 and flags.repetition_onset_step == 0
    assert flags.repetition_evidence == evidence
    assert flags.repetition_hidden_recurrence < 0.015
    assert seq.output_text.startswith(" I went to the store and I went to the store")
    assert seq.risk.level == "high" and seq.risk.top_factors(1)[0].name == "repetition_share"
    assert "confident_repetition" in [c.name for c in seq.diagnosis.compound]
    text = seq.diagnosis.narrative
    assert f"From step 0 the output repeats a 6-token cycle ({flags.repetition_share:.0%} of the output)" in text
    assert f"recurrence {flags.repetition_hidden_recurrence:.3f}" in text
    assert "stopping at step 12 would have saved 28 tokens" in text
    assert span.attributes["corevital.flag.repetition_loop"] is True
    assert span.attributes["corevital.repetition.onset_step"] == 0
    assert "confident_repetition" in span.attributes["corevital.compound"]


def test_injected_fault_in_a_middle_layer_is_found_and_blamed(smollm2):
    tokenizer, model = smollm2
    calls = {"n": 0}

    def scale(module, args, output):
        calls["n"] += 1
        if calls["n"] == 6:  # decode step 5
            (output[0] if isinstance(output, tuple) else output).mul_(8.0)
        return output

    handle = model.model.layers[15].register_forward_hook(scale)
    try:
        span, report = run(model, lambda: chat(tokenizer, "What is the capital of France?"), "summary", tokens=12)
    finally:
        handle.remove()
    seq = report.sequences[0]
    assert seq.flags.mid_layer_anomaly and seq.flags.mid_layer_anomaly_layers == [15]
    assert seq.flags.mid_layer_anomaly_first_step == 5
    assert [b.layer for b in seq.diagnosis.blame] == [15]
    assert span.attributes["corevital.blame.layers"] == (15,)
    assert "at layer 15 and stayed there to the last layer" in seq.diagnosis.narrative


def test_corevital_run_prints_the_diagnosis(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "opentelemetry_instrumentation_corevital.cli",
            "run",
            "--no-chat",
            "--prompt",
            LOOP_PROMPT,
            "--max-new-tokens",
            "32",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"\nrisk      0\.9\d \(high\)   profile smollm2\n", out), out
    assert re.search(r"\n          repetition_share +1\.000 +1\.000 +0\.90 +0\.900\n", out), out
    assert "\nflags     repetition_loop (from step 0, period 6, " in out
    assert "seen in tokens and hidden)" in out
    assert "\nblame     no layer stands out\n" in out
    assert "\nsignals   confident_repetition from step " in out
    assert "\nsummary   Risk 0.9" in out and "6-token cycle" in out
