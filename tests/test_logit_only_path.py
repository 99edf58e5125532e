"""The logit-only step path (every step of a compiled forward, or no layer to capture) reports exactly what the
general path reports for the same logits: the per-step series are computed by the same reduce, only looked up
once a generation instead of every step."""

from __future__ import annotations

import dataclasses

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


def test_logit_only_steps_are_reduced_in_batches_that_report_what_single_steps_report():
    """40 tokens on the logit-only path: step 0 alone, then rings of 16 steps (full twice) and the 7 left at the
    end, reduced at once; every series equals the layer path's, whose steps are reduced one by one."""
    from opentelemetry_instrumentation_corevital.capture import _logit_batch

    model = testing.tiny_causal_lm("llama", seed=0)
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

    assert _logit_batch.batch_steps(2, model.config.vocab_size) == 16
    _logit_batch.LogitBatch._keep = counted
    try:
        single = run()
        assert reduced == []  # layers captured: one step at a time
        batched = run(layers="1000")
    finally:
        _logit_batch.LogitBatch._keep = original
    assert reduced == [16, 16, 7]
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

    assert _logit_batch.batch_steps(1, 32000) == 16
    assert _logit_batch.batch_steps(8, 151936) == 11  # 64 MiB / (4 bytes x 8 rows x 151936) = 13.8, less 2 to work
    assert _logit_batch.batch_steps(64, 151936) == 0


def test_the_steps_left_at_the_end_reduced_by_a_replay_of_the_whole_ring_report_what_single_steps_report():
    """On a GPU the last steps go through the ring's graph, whole: the slots past them hold older logits (or none
    yet), their rows are dropped and the carried log-probabilities are put back to the last real step's. Here the
    same reduce runs eagerly, so the bookkeeping is checked exactly: 40 tokens, 7 left after two full rings, and
    a 10-token run that ends before the first ring fills."""
    from opentelemetry_instrumentation_corevital.capture import _logit_batch

    model = testing.tiny_causal_lm("llama", seed=0)
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

    for tokens in (40, 10):
        single = run(tokens)
        _logit_batch.LogitBatch.flush = whole
        try:
            padded = run(tokens, layers="1000")
        finally:
            _logit_batch.LogitBatch.flush = original
        assert padded == single
        assert len(padded[1]["surprisal"]) == tokens and padded[1]["surprisal"][-1] is not None
