"""The ``repetition_loop`` rule v2: the pure n-gram near-loop rule, its on-device twin, and stop_on with it."""

from __future__ import annotations

import math
import random

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from opentelemetry_instrumentation_corevital import CoreVitalMonitor
from opentelemetry_instrumentation_corevital.capture._intervene import _NgramLoops
from opentelemetry_instrumentation_corevital.signals.repetition import (
    NgramLoopRule,
    find_loop,
    find_ngram_loop,
    find_repetition_loop,
    ngram_loop_steps,
    recurring_steps,
)

SMALL = NgramLoopRule(n=2, seen=1, history=8, window=4, hits=3)
PROMPT = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64]])


def varied_sentence(sayings: int) -> list[int]:
    """A 10-token sentence said again and again with its 6th token different each time: never exactly periodic."""
    out: list[int] = []
    for k in range(sayings):
        out += [20, 21, 22, 23, 24, 60 + k, 26, 27, 28, 29]
    return out


class TestNgramRule:
    def test_recurring_steps_by_hand(self):
        # bigrams end at 1..9: (1,2) (2,3) (3,1) (1,2)* (2,4) (4,1) (1,2)* (2,3)* (3,1)*; * = said before, <= 8 back
        tokens = [1, 2, 3, 1, 2, 4, 1, 2, 3, 1]
        assert recurring_steps(tokens, SMALL) == [False] * 4 + [True, False, False, True, True, True]
        # 3 of the last 4 steps recur only at step 9
        assert ngram_loop_steps(tokens, SMALL) == [False] * 9 + [True]
        assert ngram_loop_steps(tokens[:9], SMALL) == [False] * 9

    def test_history_bounds_the_look_back(self):
        tokens = [1, 2, 3, 1, 2, 4, 1, 2, 3, 1]
        short = NgramLoopRule(n=2, seen=1, history=5, window=4, hits=3)
        # (2,3) at step 8 was said at step 2, 6 steps back; (3,1) at 9 at step 3, 6 back: both out of reach
        assert recurring_steps(tokens, short) == [False] * 4 + [True, False, False, True, False, False]
        assert not any(ngram_loop_steps(tokens, short))

    def test_seen_counts_earlier_sayings(self):
        # (1,2) ends at 1, 4, 7: with seen=2 only the third saying recurs
        tokens = [1, 2, 3, 1, 2, 4, 1, 2, 3, 1]
        assert recurring_steps(tokens, NgramLoopRule(n=2, seen=2, history=8, window=4, hits=3)) == [False] * 7 + [
            True,
            False,
            False,
        ]

    def test_found_loop_by_hand(self):
        loop = find_ngram_loop([1, 2, 3, 1, 2, 4, 1, 2, 3, 1], SMALL)
        # holds at step 9; the first recurring step of its window (6..9) is 7; (3,1) was last said 6 steps before;
        # recurring steps run from 7 to 9
        assert (loop.onset_step, loop.period, loop.length, loop.share) == (7, 6, 3, 0.3)

    def test_default_rule_on_one_token_said_over_and_over(self):
        # 4-grams end at 3, 4, ...; one recurs once 3 earlier ones exist (step 6 on); 9 recurring steps: step 14
        assert ngram_loop_steps([7] * 15) == [False] * 14 + [True]
        assert not any(ngram_loop_steps([7] * 14))

    def test_default_rule_sees_a_sentence_loop_with_variations(self):
        tokens = varied_sentence(6)
        assert find_repetition_loop(tokens, min_cycles=2) is None  # the changed word breaks every period
        # Only the 4-grams ending at a saying's tokens 9, 0, 1, 2, 3, 4 avoid its changed token 5. Those ending at
        # 3, 4, 9 were first said in saying 0, those ending at 0, 1, 2 in saying 1 (step 0 ends no 4-gram), so the
        # third earlier saying comes in saying 3 (steps 33, 34, 39), then 40..44, 49, 50..54, 59.
        recurring = [33, 34, 39, 40, 41, 42, 43, 44, 49, 50, 51, 52, 53, 54, 59]
        assert [i for i, r in enumerate(recurring_steps(tokens)) if r] == recurring
        # The window of 16 steps ending at 50 (35..50) holds 8 of them, the one ending at 51 holds 9: step 51.
        assert ngram_loop_steps(tokens).index(True) == 51
        loop = find_ngram_loop(varied_sentence(8))
        assert (loop.onset_step, loop.period, loop.length) == (39, 10, 41)  # recurring steps 39..79

    @pytest.mark.parametrize("bad", [dict(seen=0), dict(hits=17), dict(hits=0), dict(history=0), dict(n=0)])
    def test_a_rule_that_cannot_hold_or_always_holds_is_refused(self, bad):
        with pytest.raises(ValueError, match="hits <= window"):
            NgramLoopRule(**bad)

    def test_find_loop_takes_the_earlier_onset(self):
        same = [7] * 20  # both hold: the exact stretch starts at 0, the n-gram rule's onset is step 6
        assert find_ngram_loop(same).onset_step == 6
        assert find_loop(same, min_cycles=2) == find_repetition_loop(same, min_cycles=2)
        near = varied_sentence(5)
        assert find_loop(near, min_cycles=2) == find_ngram_loop(near)
        assert find_loop(list(range(100))) is None


def random_ids(rng: random.Random, length: int) -> list[int]:
    """Ids with copied stretches (exact and with substitutions) at random lags: loops, near-loops, noise."""
    out: list[int] = []
    while len(out) < length:
        if out and rng.random() < 0.6:
            lag, run = rng.randint(1, min(40, len(out))), rng.randint(2, 30)
            out += [out[-lag] if rng.random() > 0.1 else rng.randrange(8) for _ in range(run)]
        else:
            out.append(rng.randrange(8))
    return out[:length]


class TestOnTheDevice:
    @pytest.mark.parametrize(
        "rule",
        [NgramLoopRule(), SMALL, NgramLoopRule(n=3, seen=2, history=16, window=8, hits=5)],
        ids=["default", "small", "mid"],
    )
    def test_device_rule_equals_the_pure_rule_at_every_step(self, rule):
        rng = random.Random(7)
        check = _NgramLoops(torch.device("cpu"), rule)
        for _ in range(40):
            prompt = [rng.randrange(8) for _ in range(rng.randint(0, 12))]  # prompt n-grams never count
            tokens = random_ids(rng, rng.randint(1, 120))
            ids = torch.tensor([prompt + tokens])
            device = []
            for t in range(1, len(tokens) + 1):
                held = check(ids[:, : len(prompt) + t], t)
                device.append(bool(held[0]) if held is not None else False)
            assert device == ngram_loop_steps(tokens, rule)

    def test_rows_are_independent(self):
        check = _NgramLoops(torch.device("cpu"))
        rows = torch.tensor([[3] + [7] * 15, [3] + list(range(15)), [7] * 16])
        assert check(rows, generated=15).tolist() == [True, False, True]


class Script(LogitsProcessor):
    """A user's processor that forces given tokens from a given step: a real loop inside a real generate."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens

    def __call__(self, input_ids, scores):
        generated = input_ids.shape[1] - PROMPT.shape[1]
        forced = torch.full_like(scores, -math.inf)
        forced[:, self.tokens[generated]] = 0.0
        return forced


class TestStopOn:
    def test_stop_on_stops_a_varied_sentence_loop_where_the_report_flags_it(self, tiny_llama):
        script = varied_sentence(8)
        kwargs = dict(
            attention_mask=torch.ones_like(PROMPT),
            do_sample=False,
            max_new_tokens=len(script),
            logits_processor=LogitsProcessorList([Script(script)]),
        )
        plain = CoreVitalMonitor(capture_content=True)
        full = plain.generate(tiny_llama, PROMPT, **kwargs)[0, PROMPT.shape[1] :].tolist()
        assert full == script
        flags = plain.report.sequences[0].flags
        # The ids say so (the hidden states may too): no exact period, the n-gram rule from step 33, period 10
        assert flags.repetition_loop and "tokens" in flags.repetition_evidence and flags.repetition_period == 10
        monitor = CoreVitalMonitor(stop_on=("repetition_loop",))
        stopped = monitor.generate(tiny_llama, PROMPT, **kwargs)[0, PROMPT.shape[1] :].tolist()
        seq = monitor.report.sequences[0]
        assert (seq.finish_reason, seq.intervention.condition, seq.intervention.step) == (
            "intervention",
            "repetition_loop",
            51,
        )
        assert stopped == full[:52]

    def test_live_stop_agrees_with_the_report_rule_on_real_ids(self, tiny_llama):
        # The tiny model's greedy outputs loop with periods 5, 1, 5 and 1 from steps 2, 16, 13 and 1.
        prompt = torch.tensor([[1, 17, 42, 99], [5, 5, 5, 5], [9, 8, 9, 8], [3, 4, 5, 6]])
        kwargs = dict(attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=80)
        plain = tiny_llama.generate(prompt, **kwargs)[:, prompt.shape[1] :].tolist()
        monitor = CoreVitalMonitor(stop_on=("repetition_loop",))
        stopped = monitor.generate(tiny_llama, prompt, **kwargs)[:, prompt.shape[1] :]
        steps = []
        for row, seq in enumerate(monitor.report.sequences):
            tokens = plain[row]
            # The report's rule (the default profile's exact test: 3 periods, 12 tokens) over each prefix of the
            # plain run: the first prefix it flags is where the live stop must have come.
            pure = next(t for t in range(len(tokens)) if find_loop(tokens[: t + 1], min_cycles=3) is not None)
            assert (seq.intervention.condition, seq.intervention.step) == ("repetition_loop", pure)
            assert stopped[row, : pure + 1].tolist() == tokens[: pure + 1]
            steps.append(pure)
        assert steps == [16, 27, 27, 12]


@pytest.mark.slow
def test_smollm2_sentence_loop_is_stopped_by_the_ngram_rule(smollm2):
    """SmolLM2's own sentence loop ("They're a marvel of human ingenuity." again and again, greedy): the n-gram
    rule holds at step 79, two steps before the exact tail test would; stop_on stops there and the report of the
    plain run flags the same loop."""
    tokenizer, model = smollm2
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me about trains."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    prompt = inputs["input_ids"].shape[1]
    plain = CoreVitalMonitor(capture="summary", capture_content=True)
    tokens = plain.generate(model, **inputs, max_new_tokens=96, do_sample=False)[0, prompt:].tolist()
    assert find_repetition_loop(tokens[:80], min_cycles=3) is None  # no exact loop yet at step 79
    assert ngram_loop_steps(tokens).index(True) == 79
    flags = plain.report.sequences[0].flags
    assert flags.repetition_loop and "tokens" in flags.repetition_evidence
    monitor = CoreVitalMonitor(stop_on=("repetition_loop",))
    stopped = monitor.generate(model, **inputs, max_new_tokens=96, do_sample=False)[0, prompt:].tolist()
    seq = monitor.report.sequences[0]
    assert (seq.finish_reason, seq.intervention.condition, seq.intervention.step) == (
        "intervention",
        "repetition_loop",
        79,
    )
    assert stopped == tokens[:80]
