"""The vLLM batch capture without vLLM: rows attributed to requests through batch updates, checked by hand.

vLLM hands the logits processor the batch changes (rows removed, added with their parameters and live output
list, moved or swapped) and then each step's logits. Here the steps are made up: each request's logits at each
step are fixed random rows, and the batch layout changes as under continuous batching. Every request's series
must equal what its own logits give by hand, whatever rows it sat in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import pytest
import torch

from opentelemetry_instrumentation_corevital.capture._vllm_batch import MARKER, BatchCapture
from opentelemetry_instrumentation_corevital.capture._vllm_request import stop_reason

VOCAB = 50


class Move(Enum):
    UNIDIRECTIONAL = 1
    SWAP = 2


@dataclass
class Params:
    """The fields of vLLM's SamplingParams the capture reads."""

    key: str
    max_tokens: int = 100
    eos_token_id: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    extra_args: dict = field(default_factory=dict)
    stop: dict = field(default_factory=dict)  # stop_on settings, as the frontend puts them in the marker

    def __post_init__(self):
        self.extra_args = {MARKER: {"id": self.key, "capture": "summary", "arrival": 0.0, **self.stop}}


def _logits(key: str, step: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(hash((key, step)) % (2**31))
    return torch.randn(VOCAB, generator=generator) * 3


def _expected(key: str, tokens: list[int]) -> dict[str, list[float]]:
    """Entropy, top-1 and surprisal of each step's own logits, by hand (float64)."""
    out: dict[str, list[float]] = {"entropy": [], "top1_prob": [], "surprisal": []}
    for step, token in enumerate(tokens):
        p = torch.softmax(_logits(key, step).double(), dim=-1)
        out["entropy"].append(float(-(p * p.log()).sum() / math.log(2)))
        out["top1_prob"].append(float(p.max()))
        out["surprisal"].append(float(-math.log2(p[token])))
    return out


class Engine:
    """A made-up engine: keeps vLLM's row order, feeds the capture each step, appends a sampled token per row."""

    def __init__(self) -> None:
        self.capture = BatchCapture(torch.device("cpu"))
        self.rows: list[tuple[Params, list[int]] | None] = []

    def add(self, params: Params) -> list[int]:
        outputs: list[int] = []
        slot = next((i for i, r in enumerate(self.rows) if r is None), len(self.rows))
        if slot == len(self.rows):
            self.rows.append(None)
        self.rows[slot] = (params, outputs)
        self.capture.update([], [(slot, params, [1, 2, 3], outputs)], [])
        return outputs

    def remove(self, key: str) -> None:
        slot = next(i for i, r in enumerate(self.rows) if r is not None and r[0].key == key)
        self.rows[slot] = None
        # vLLM condenses: the last row moves into the hole
        last = max(i for i, r in enumerate(self.rows) if r is not None) if any(self.rows) else -1
        moved = []
        if last > slot:
            self.rows[slot], self.rows[last] = self.rows[last], None
            moved = [(last, slot, Move.UNIDIRECTIONAL)]
        while self.rows and self.rows[-1] is None:
            self.rows.pop()
        self.capture.update([slot], [], moved)

    def swap(self, a: int, b: int) -> None:
        self.rows[a], self.rows[b] = self.rows[b], self.rows[a]
        self.capture.update([], [], [(a, b, Move.SWAP)])

    def step(self) -> None:
        live = [r for r in self.rows if r is not None]
        logits = torch.stack([_logits(p.key, len(out)) for p, out in live])
        self.capture.step(logits)
        for p, out in live:
            out.append(int(torch.multinomial(torch.softmax(_logits(p.key, len(out)), -1), 1, generator=None)))


def test_requests_joining_leaving_and_moving_each_get_their_own_rows():
    torch.manual_seed(0)
    engine = Engine()
    a = engine.add(Params("a"))
    engine.step()
    b = engine.add(Params("b"))
    engine.step()
    c = engine.add(Params("c"))
    engine.step()
    engine.swap(0, 2)
    engine.step()
    engine.remove("b")  # c or a moves into b's row
    engine.step()
    found = {key: engine.capture.finish(key) for key in ("a", "b", "c")}
    assert [len(a), len(b), len(c)] == [5, 3, 3]
    for key, tokens in (("a", a), ("b", b), ("c", c)):
        result = found[key].result
        series = result.series[0]
        expected = _expected(key, tokens)
        assert result.steps == len(tokens)
        assert result.sequences == [[1, 2, 3, *tokens]]
        for name, values in expected.items():
            assert series[name] == pytest.approx(values, abs=1e-4), (key, name)


def test_a_prompt_split_in_chunks_counts_only_the_step_that_sampled():
    engine = Engine()
    outputs = engine.add(Params("p"))
    # two prefill chunks sample nothing: vLLM drops their tokens, the output list does not grow
    for _ in range(2):
        engine.capture.step(torch.stack([_logits("junk", 0)]))
    engine.step()
    engine.step()
    result = engine.capture.finish("p").result
    expected = _expected("p", outputs)
    assert result.steps == 2
    assert result.series[0]["entropy"] == pytest.approx(expected["entropy"], abs=1e-4)
    assert result.series[0]["surprisal"] == pytest.approx(expected["surprisal"], abs=1e-4)


def test_stop_reason_follows_vllms_scheduler():
    assert stop_reason(_tracked([5], eos=5), None) == "stop"
    assert stop_reason(_tracked([7], stop=[7]), None) == "stop"
    assert stop_reason(_tracked([1, 2], max_tokens=2), None) == "length"
    assert stop_reason(_tracked([1], max_tokens=5), 4) == "length"  # 3 prompt tokens + 1 reach the context
    assert stop_reason(_tracked([1], max_tokens=5), None) is None
    assert stop_reason(_tracked([], max_tokens=5), None) is None


def _tracked(outputs, eos=None, stop=(), max_tokens=100):
    from opentelemetry_instrumentation_corevital.capture._vllm_request import Tracked

    params = Params("x", max_tokens=max_tokens, eos_token_id=eos, stop_token_ids=list(stop))
    return Tracked("x", {}, params, [1, 2, 3], list(outputs))


def test_unmarked_requests_are_not_captured_and_cost_no_reduce():
    capture = BatchCapture(torch.device("cpu"))

    class Plain:
        extra_args = None

    capture.update([], [(0, Plain(), [1], [])], [])
    assert capture.rows == {}
    capture.step(torch.zeros(1, VOCAB))
    assert capture.chunks == {}


def test_stop_on_nan_lets_only_the_end_token_be_sampled_and_reports_the_step():
    capture = BatchCapture(torch.device("cpu"))
    a = Params("a", eos_token_id=7, stop={"stop_on": ["nan_or_inf"]})
    b = Params("b", eos_token_id=7)  # no stop_on: its logits are never touched
    out_a, out_b = [], []
    capture.update([], [(0, a, [1], out_a), (1, b, [1], out_b)], [])
    logits = torch.zeros(2, VOCAB)
    logits[:, 3] = float("nan")
    capture.step(logits)
    expected = torch.full((VOCAB,), -math.inf)
    expected[7] = 0.0
    assert torch.equal(logits[0], expected)
    assert torch.isnan(logits[1, 3]) and logits[1, 0] == 0.0
    out_a.append(7)
    result = capture.finish("a").result
    assert result.stopped_at == [0] and result.stop_reason == ["nan_or_inf"]
    assert capture.finish("b").result.stopped_at is None


def test_stop_on_high_entropy_needs_its_run_of_steps():
    capture = BatchCapture(torch.device("cpu"))
    stop = {"stop_on": ["high_entropy"], "high_entropy_bits": 5.0, "high_entropy_run": 2}
    outputs: list[int] = []
    capture.update([], [(0, Params("h", eos_token_id=7, stop=stop), [1], outputs)], [])
    uniform = torch.zeros(1, VOCAB)  # log2(50) = 5.64 bits > 5
    capture.step(uniform)
    assert uniform[0, 0] == 0.0  # one step above the threshold: not yet
    outputs.append(4)
    capture.step(uniform)
    assert uniform[0, 7] == 0.0 and uniform[0, 0] == -math.inf
    outputs.append(7)
    result = capture.finish("h").result
    assert result.stopped_at == [1] and result.stop_reason == ["high_entropy"]


def test_stop_on_without_an_end_token_is_reported_not_forced():
    capture = BatchCapture(torch.device("cpu"))
    outputs = [5] * 12
    capture.update([], [(0, Params("n", stop={"stop_on": ["repetition_loop"]}), [1], outputs)], [])
    logits = torch.zeros(1, VOCAB)
    capture.step(logits)
    assert torch.equal(logits, torch.zeros(1, VOCAB))
    outputs.append(5)
    assert "stop_on" in capture.finish("n").result.unavailable


def test_tail_loops_by_hand():
    from opentelemetry_instrumentation_corevital.capture._vllm_stop import tail_loops

    assert tail_loops([9] * 12, None)  # period 1, 12 tokens
    assert not tail_loops([9] * 11, None)
    assert tail_loops([1, 2, 3] * 4, None)  # period 3: 4 periods = 12 tokens
    assert not tail_loops([1, 2, 3] * 3, None)  # 9 tokens: fewer than 12
    assert tail_loops([8, 1, 2, 3, 4, 5, 6] * 3, None)  # period 7: 3 whole periods, 21 tokens
    assert tail_loops(list(range(10)) * 2 + [0, 1], 2)  # stop_loop_repeat=2: period 10 + 2 repeated = 12


def test_capture_off_keeps_the_request_for_its_span_but_reduces_nothing():
    capture = BatchCapture(torch.device("cpu"))
    params = Params("o")
    params.extra_args[MARKER]["capture"] = "off"
    outputs: list[int] = []
    capture.update([], [(0, params, [1, 2], outputs)], [])
    for token in (4, 5):
        capture.step(torch.zeros(1, VOCAB))
        outputs.append(token)
    assert capture.chunks == {}
    result = capture.finish("o").result
    assert (result.signals, result.steps, result.sequences) == (False, 2, [[1, 2, 4, 5]])
