"""Compiled generation: the capture adds no recompile and no graph break, and the report says what it captured.

Under ``torch.compile`` (the forward compiled by the caller, or by transformers
for a static cache) the capture keeps to the logits processor, outside the
graph. Dynamo's own counters (``torch._dynamo.utils.counters``) are compared
for plain and instrumented generation on the tiny Llama; the ``eager`` backend
keeps compilation fast (graphs, guards and breaks are dynamo's, whatever the backend).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters
from transformers import CompileConfig, GenerationConfig

from opentelemetry_instrumentation_corevital.capture._compiled import AUTO_COMPILED, USER_COMPILED, compiled_forward
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture, tiny_causal_lm

PROMPT = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29], [1, 7, 11, 19, 23, 31, 37, 41]])
TOKENS = 6
#: What dynamo counts per generation: frames compiled, graphs made, graph breaks and untraceable calls.
WATCHED = ("frames", "stats", "graph_break", "unimplemented", "recompiles")


def _static_kwargs(model: Any = None) -> dict[str, Any]:
    """Generate's keywords for a static cache that transformers compiles (also on the CPU)."""
    config = CompileConfig(backend="eager", mode=None)
    config._compile_all_devices = True  # transformers compiles only on accelerators unless told so
    return dict(cache_implementation="static", compile_config=config)


def _compile_forward(model: Any) -> dict[str, Any]:
    """The caller compiles the forward (no generate keywords needed)."""
    model.forward = torch.compile(model.forward, backend="eager")
    return {}


def _counts() -> Counter:
    return Counter({f"{group}.{key}": n for group in WATCHED for key, n in counters[group].items()})


def _generate(model: Any, extra: dict[str, Any]) -> tuple[torch.Tensor, Counter]:
    """One greedy generation and what dynamo counted during it."""
    before = _counts()
    with torch.inference_mode():
        out = model.generate(
            PROMPT,
            attention_mask=torch.ones_like(PROMPT),
            max_new_tokens=TOKENS,
            min_new_tokens=TOKENS,
            do_sample=False,
            **extra,
        )
    return out, _counts() - before


def _breaks(counted: Counter) -> int:
    return sum(n for key, n in counted.items() if key.startswith(("graph_break.", "unimplemented.")))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.slow  # two compilations each (about 30 s on 2 cores)
@pytest.mark.parametrize(
    ("compile_how", "mode", "reason"),
    [
        (_static_kwargs, "full", AUTO_COMPILED.format(cache="static")),
        (_compile_forward, "summary", USER_COMPILED),
    ],
    ids=["static-cache-full", "torch-compile-forward-summary"],
)
def test_instrumented_compiled_generation_compiles_what_plain_compiles(compile_how, mode, reason):
    model = tiny_causal_lm("llama")
    extra = compile_how(model)
    plain_first, plain_compiled = _generate(model, extra)
    plain_again, plain_warm = _generate(model, extra)
    assert plain_compiled["stats.unique_graphs"] >= 1 and _breaks(plain_compiled) == 0
    assert plain_warm == Counter()

    torch._dynamo.reset()  # the instrumented run compiles from scratch, as a process instrumented at start does
    counters.clear()
    with TelemetryCapture(capture=mode) as tc:
        first, compiled = _generate(model, extra)
        again, warm = _generate(model, extra)

    assert compiled == plain_compiled  # the same frames and graphs, no graph break, no recompile
    assert warm == Counter()  # and nothing more once compiled: no recompile in the decode loop
    assert torch.equal(first, plain_first) and torch.equal(again, plain_again)
    assert len(tc.reports) == 2
    for report in tc.reports:
        assert report.capture.signals == ["logits", "tokens"]
        assert report.capture.unavailable == {"layers": reason}
        assert report.capture.layers == [] and report.capture.attention_source is None
        assert all(seq.layers is None and seq.prompt is None for seq in report.sequences)
        assert [len(seq.timeline.entropy) for seq in report.sequences] == [TOKENS, TOKENS]


def test_switching_the_instrumentor_on_recompiles_once_then_never():
    model = tiny_causal_lm("llama")
    extra = _static_kwargs()
    plain, _ = _generate(model, extra)
    _generate(model, extra)
    with TelemetryCapture(capture="full") as tc:
        first, switched = _generate(model, extra)  # the attention registry now holds our wrappers: one new graph
        second, warm = _generate(model, extra)
    back, off_again = _generate(model, extra)  # the plain graph is still cached
    assert switched["stats.unique_graphs"] == 1 and _breaks(switched) == 0
    assert warm == Counter() and off_again == Counter()
    assert torch.equal(first, plain) and torch.equal(second, plain) and torch.equal(back, plain)
    assert [r.capture.signals for r in tc.reports] == [["logits", "tokens"]] * 2


def test_an_eager_forward_keeps_the_layer_capture():
    model = tiny_causal_lm("llama")
    assert compiled_forward(model, GenerationConfig(), {}) is None
    # A static cache on the CPU without a compile config is not compiled by transformers.
    assert compiled_forward(model, GenerationConfig(cache_implementation="static"), None) is None
    with TelemetryCapture(capture="summary") as tc:
        _generate(model, {})
    assert tc.reports[0].capture.signals == ["logits", "tokens", "hidden"]
    assert "layers" not in tc.reports[0].capture.unavailable


def test_compiled_forward_names_how_it_was_compiled():
    model = tiny_causal_lm("llama")
    static = GenerationConfig(cache_implementation="static", compile_config=CompileConfig())
    static.compile_config._compile_all_devices = True
    assert compiled_forward(model, static, None) == AUTO_COMPILED.format(cache="static")
    static.disable_compile = True
    assert compiled_forward(model, static, None) is None
    model.model.layers[1].compile(backend="eager")  # nn.Module.compile on one decoder layer
    assert compiled_forward(model, GenerationConfig(), {}) == USER_COMPILED
    other = tiny_causal_lm("llama")
    other.model.register_module("unused", None)  # an empty slot is passed over
    assert compiled_forward(other, GenerationConfig(), {}) is None
    mlp = other.model.layers[0].mlp  # a forward replaced three modules down
    mlp.forward = torch.compile(mlp.forward, backend="eager")
    assert compiled_forward(other, GenerationConfig(), {}) == USER_COMPILED
