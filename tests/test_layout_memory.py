"""The layers to tap are found once a model and used again while the model's structure on the way to them holds:
a generation does not walk every module, and a replaced, added or removed layer is seen at the next one."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch

from opentelemetry_instrumentation_corevital import testing
from opentelemetry_instrumentation_corevital.capture import _layers


@pytest.fixture
def walks(monkeypatch) -> list[int]:
    """One entry per walk of a whole model by ``discover``."""
    counted: list[int] = []
    original = _layers._walk

    def walk(model):
        counted.append(1)
        return original(model)

    monkeypatch.setattr(_layers, "_walk", walk)
    return counted


def test_a_model_is_walked_once_while_its_layers_stay_where_they_were(walks):
    model = testing.tiny_causal_lm("llama")
    first = _layers.discover(model)
    second = _layers.discover(model)
    assert len(walks) == 1
    assert [t.module for t in second.decoder_layers] == list(model.model.layers)
    assert [(t.index, t.name, t.module, t.output_index) for t in second.decoder_attention] == [
        (t.index, t.name, t.module, t.output_index) for t in first.decoder_attention
    ]
    assert second.lm_head is model.lm_head and second.base_decoder is model.model
    second.problems.append("edited by a caller")
    second.decoder_layers.clear()
    again = _layers.discover(model)  # what a caller gets is its own
    assert again.problems == [] and len(again.decoder_layers) == 2
    assert len(walks) == 1


def test_a_replaced_added_or_removed_layer_is_found_again(walks):
    model = testing.tiny_causal_lm("llama")
    _layers.discover(model)
    replaced = copy.deepcopy(model.model.layers[1])
    model.model.layers[1] = replaced
    assert _layers.discover(model).decoder_layers[1].module is replaced
    model.model.layers.append(copy.deepcopy(replaced))
    assert len(_layers.discover(model).decoder_layers) == 3
    del model.model.layers[2]
    assert len(_layers.discover(model).decoder_layers) == 2
    model.model.layers[0].self_attn = copy.deepcopy(model.model.layers[0].self_attn)
    assert _layers.discover(model).decoder_attention[0].module is model.model.layers[0].self_attn
    assert len(walks) == 5
    old_head = model.lm_head
    model.resize_token_embeddings(model.config.vocab_size + 8)  # a new output head: looked up every time
    assert _layers.discover(model).lm_head is model.lm_head is not old_head
    assert len(walks) == 5


def test_the_memory_does_not_keep_a_model_alive():
    model = testing.tiny_causal_lm("llama")
    _layers.discover(model)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_a_generation_taps_a_layer_put_in_after_an_earlier_generation():
    """After layer 1 is replaced by one with other weights, the capture reads the new layer: its hidden norms are
    those of a copy of the changed model that was never captured before."""
    model = testing.tiny_causal_lm("llama")
    prompt = torch.tensor([[5, 9, 13, 17]])

    def norms(m) -> list:
        with testing.TelemetryCapture(capture="summary") as tc:
            m.generate(prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False)
        return tc.reports[0].sequences[0].layers.hidden_norm[1]

    before = norms(model)
    kept = model.model.layers[1]  # still alive, as a caller holding it keeps it
    layer = copy.deepcopy(kept)
    with torch.no_grad():
        for p in layer.mlp.parameters():
            p.mul_(3.0)
    model.model.layers[1] = layer
    after = norms(model)
    assert after == norms(copy.deepcopy(model))
    assert after != before and all(v is not None for v in after)
    assert kept is not model.model.layers[1]
