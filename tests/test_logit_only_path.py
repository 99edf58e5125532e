"""The logit-only step path (every step of a compiled forward, or no layer to capture) reports exactly what the
general path reports for the same logits: the per-step series are computed by the same reduce, only looked up
once a generation instead of every step."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from opentelemetry_instrumentation_corevital import testing

PROMPT = torch.tensor([[0, 0, 5, 9, 13, 17], [4, 8, 15, 16, 23, 42]])
MASK = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])


def timelines(model, **options) -> list[dict]:
    with testing.TelemetryCapture(capture="summary", **options) as tc:
        model.generate(PROMPT, attention_mask=MASK, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    (report,) = tc.reports
    return [dataclasses.asdict(seq.timeline) for seq in report.sequences], list(report.capture.signals)


def test_logit_only_steps_report_what_layer_steps_report():
    model = testing.tiny_causal_lm("llama", seed=0)
    with_layers, signals = timelines(model)
    logit_only, only = timelines(model, layers="1000")  # past the model's layers: no taps, logit steps only
    assert (signals, only) == (["logits", "tokens", "hidden"], ["logits", "tokens"])
    assert logit_only == with_layers
    assert len(logit_only[0]["entropy"]) == 12


@pytest.mark.parametrize(
    ("fit", "shape", "rings"),
    [
        (None, (1, 16), [16, 16, 7]),
        (27, (4, 4), [16, 16, 7]),
        (13, (11, 1), [11, 11, 11, 6]),
        (4, (2, 1), [2] * 19 + [1]),
    ],
)
def test_logit_only_steps_are_reduced_in_batches_that_report_what_single_steps_report(fit, shape, rings, monkeypatch):
    """40 tokens on the logit-only path: step 0 alone, then full rings and the steps left at the end, reduced
    chunk by chunk (the default budget: one chunk of 16; a budget of 27 steps' logits: four chunks of 4; of 13:
    eleven steps one by one; of 4: two); every series equals the layer path's, whose steps are reduced one by
    one."""
    from opentelemetry_instrumentation_corevital.capture import _logit_batch

    model = testing.tiny_causal_lm("llama", seed=0)
    if fit is not None:
        monkeypatch.setattr(_logit_batch, "BUDGET", fit * 4 * 2 * model.config.vocab_size)
    reduced: list[int] = []
    original = _logit_batch.LogitBatch._keep

    def counted(self, out, rows, count):
        reduced.append(count)
        return original(self, out, rows, count)

    def run(**options) -> list[dict]:
        torch.manual_seed(3)
        with testing.TelemetryCapture(capture="summary", **options) as tc:
            model.generate(PROMPT, attention_mask=MASK, max_new_tokens=40, min_new_tokens=40, do_sample=True)
        return [dataclasses.asdict(seq.timeline) for seq in tc.reports[0].sequences]

    assert _logit_batch.ring_shape(2, model.config.vocab_size) == shape
    _logit_batch.LogitBatch._keep = counted
    try:
        single = run()
        assert reduced == []  # layers captured: one step at a time
        batched = run(layers="1000")
    finally:
        _logit_batch.LogitBatch._keep = original
    assert reduced == rings
    assert batched == single
    assert len(batched[0]["surprisal"]) == 40


def test_steps_are_not_batched_when_stop_on_reads_them_during_the_loop():
    from opentelemetry_instrumentation_corevital.capture import _logit_batch

    model = testing.tiny_causal_lm("llama", seed=0)
    made: list[int] = []
    original = _logit_batch.LogitBatch.__init__

    def init(self, *args):
        made.append(1)
        original(self, *args)

    _logit_batch.LogitBatch.__init__ = init
    try:
        stopped, _ = timelines(model, layers="1000", stop_on=("nan_or_inf",))
        assert made == []
        batched, _ = timelines(model, layers="1000")
        assert made == [1]
    finally:
        _logit_batch.LogitBatch.__init__ = original
    assert stopped == batched


def test_a_batch_too_large_for_the_device_budget_is_not_made():
    from opentelemetry_instrumentation_corevital.capture import _logit_batch

    assert _logit_batch.ring_shape(1, 32000) == (1, 16)  # 524 steps fit: one chunk of 16
    assert _logit_batch.ring_shape(1, 151936) == (1, 16)  # 110 fit
    assert _logit_batch.ring_shape(4, 151936) == (4, 4)  # 27 fit: 16 steps and two chunks of 4 to work (24)
    # 64 MiB / (4 bytes x 8 rows x 151936) = 13.8: 11 steps, one at a time (a chunk of 1 leaves 2 to work)
    assert _logit_batch.ring_shape(8, 151936) == (11, 1)
    assert _logit_batch.ring_shape(13, 151936) == (6, 1)  # 8 fit
    assert _logit_batch.ring_shape(26, 151936) == (2, 1)  # 4 fit: the smallest ring
    assert _logit_batch.ring_shape(32, 151936) == (0, 0)  # 3 fit: no ring
    assert _logit_batch.ring_shape(64, 151936) == (0, 0)


@pytest.mark.parametrize("fit", [None, 27])
def test_the_steps_left_at_the_end_reduced_by_a_replay_of_the_whole_ring_report_what_single_steps_report(
    fit, monkeypatch
):
    """On a GPU the last steps go through the ring's graph, whole: the slots past them hold older logits (or none
    yet), their rows are dropped and the carried log-probabilities are put back to the last real step's. Here the
    same reduce runs eagerly, so the bookkeeping is checked exactly: 40 tokens (7 left after two full rings of
    16: in one chunk of 16, or in a chunk of 4 and part of another) and 12 tokens (ending before the first ring
    fills: 11 steps, two chunks of 4 and part of a third)."""
    from opentelemetry_instrumentation_corevital.capture import _logit_batch

    model = testing.tiny_causal_lm("llama", seed=0)
    if fit is not None:
        monkeypatch.setattr(_logit_batch, "BUDGET", fit * 4 * 2 * model.config.vocab_size)
    original = _logit_batch.LogitBatch.flush

    def whole(self, rows):
        if self.count:
            self.padded(rows)

    def run(tokens: int, **options) -> list[dict]:
        torch.manual_seed(3)
        with testing.TelemetryCapture(capture="summary", **options) as tc:
            model.generate(PROMPT, attention_mask=MASK, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True)
        (report,) = tc.reports
        assert report.capture.error is None
        return [dataclasses.asdict(seq.timeline) for seq in report.sequences]

    for tokens in (40, 12):
        single = run(tokens)
        _logit_batch.LogitBatch.flush = whole
        try:
            padded = run(tokens, layers="1000")
        finally:
            _logit_batch.LogitBatch.flush = original
        assert padded == single
        assert len(padded[1]["surprisal"]) == tokens and padded[1]["surprisal"][-1] is not None
