"""The capture source interface, used directly: taps in before the first forward and all out at finish, scoring
as a mode."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessorList

from opentelemetry_instrumentation_corevital.capture import (
    CapturePlan,
    CaptureSource,
    TransformersSource,
    install_attention_interception,
    uninstall_attention_interception,
)
from opentelemetry_instrumentation_corevital.capture._compiled import USER_COMPILED
from opentelemetry_instrumentation_corevital.testing import tiny_causal_lm

PROMPT = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64]])
CONTINUATION = torch.tensor([[12, 30, 8, 77]])


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def scored(model: torch.nn.Module, plan: CapturePlan) -> tuple[TransformersSource, object, torch.Tensor]:
    """One scoring call through the source interface alone: (source, result, logits of the forward)."""
    ids = torch.cat([PROMPT, CONTINUATION], dim=1)
    mask = torch.ones_like(ids)
    source = TransformersSource(model, None, plan, prompt_ids=PROMPT, prompt_mask=torch.ones_like(PROMPT))
    source.teacher_force(PROMPT.shape[1], CONTINUATION.shape[1])
    lifecycle: CaptureSource = source
    lifecycle.start()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    source.score(logits, ids, mask)
    lifecycle.stop()
    return source, lifecycle.finish(ids).settled(), logits


def test_taps_go_in_once_the_processors_are_built_and_all_come_out_at_stop():
    """A decoder-only ``generate`` runs its first forward after building its processors: the taps go in there."""
    model = tiny_causal_lm("llama")
    model.set_attn_implementation("eager")
    source = TransformersSource(model, None, CapturePlan.for_mode("full"), prompt_ids=PROMPT)
    assert hook_count(model) == 0  # nothing is installed before the call starts
    source.start()
    assert hook_count(model) == 0
    source.processors_for(LogitsProcessorList(), GenerationConfig(), None, PROMPT.shape[1], {})
    assert source.taps.taps.targets == [
        "model",
        "layer model.layers.0",
        "layer model.layers.1",
        "attention model.layers.0.self_attn",
        "attention model.layers.1.self_attn",
        "decoder output",
    ]
    assert hook_count(model) == 6
    source.stop()
    assert hook_count(model) == 0  # stop unbinds the context and takes the taps out, whatever follows
    assert source.taps.taps.targets == []
    result = source.finish(None)
    assert hook_count(model) == 0
    assert result.attention_source == "eager attention weights"


def test_a_compiled_forward_never_gets_a_tap(monkeypatch):
    """Known compiled when the processors are built, before the first forward: no hook is ever registered."""
    model = tiny_causal_lm("llama")
    model.forward = torch.compile(model.forward, backend="eager")
    registered: list[str] = []
    for name in ("register_forward_hook", "register_forward_pre_hook"):
        original = getattr(torch.nn.Module, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            registered.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.nn.Module, name, counted)
    source = TransformersSource(model, None, CapturePlan.for_mode("full"), prompt_ids=PROMPT)
    source.start()
    source.processors_for(LogitsProcessorList(), GenerationConfig(), None, PROMPT.shape[1], {})
    source.stop()
    assert registered == []
    assert source.unavailable["layers"] == USER_COMPILED


def test_the_taps_go_in_even_when_attaching_to_the_processors_fails(monkeypatch):
    """Our processor is lost (the wrapper hands generate its own list back), the layers are not."""
    from opentelemetry_instrumentation_corevital.capture import _transformers

    def broken(*args):
        raise RuntimeError("an unexpected generation config")

    monkeypatch.setattr(_transformers, "compiled_forward", broken)
    model = tiny_causal_lm("llama")
    model.set_attn_implementation("eager")
    source = TransformersSource(model, None, CapturePlan.for_mode("full"), prompt_ids=PROMPT)
    source.start()
    with pytest.raises(RuntimeError, match="unexpected generation config"):
        source.processors_for(LogitsProcessorList(), GenerationConfig(), None, PROMPT.shape[1], {})
    assert hook_count(model) == 6
    source.stop()
    assert hook_count(model) == 0


def test_scoring_is_a_mode_of_the_source():
    model = tiny_causal_lm("llama")
    source, result, logits = scored(model, CapturePlan.for_mode("summary"))
    assert (source.attached, source.generation_mode) == (True, "score")
    assert (result.prefix_len, result.steps, result.rows, result.error) == (8, 4, 1, None)
    assert result.layers == [0, 1] and result.layer_steps == [0, 1, 2, 3]
    assert hook_count(model) == 0
    # position P - 1 + t predicts continuation token t: its surprisal, in bits
    logp = torch.log_softmax(logits[0, 7:11].float(), dim=-1)
    expected = [-logp[t, CONTINUATION[0, t]].item() / math.log(2.0) for t in range(4)]
    got = result.series[0]["surprisal"]
    assert all(abs(a - b) < 1e-4 for a, b in zip(got, expected)) and len(got) == 4


def test_intercepted_attention_matches_the_eager_weights():
    """The wrapped attention functions reach the source through its public listener; eager reads the weights."""
    install_attention_interception()
    try:
        model = tiny_causal_lm("llama")
        model.set_attn_implementation("sdpa")
        _, intercepted, _ = scored(model, CapturePlan.for_mode("full"))
        model.set_attn_implementation("eager")
        _, eager, _ = scored(model, CapturePlan.for_mode("full"))
    finally:
        uninstall_attention_interception()
    assert intercepted.attention_source == "query row recomputed beside sdpa attention"
    a, b = intercepted.matrices["attn_entropy"][0], eager.matrices["attn_entropy"][0]
    assert len(a) == 2 and all(len(row) == 4 for row in a)
    assert all(abs(x - y) < 1e-4 for ra, rb in zip(a, b) for x, y in zip(ra, rb))
