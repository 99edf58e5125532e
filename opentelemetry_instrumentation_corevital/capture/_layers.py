"""Find the modules we tap, from the metadata transformers itself uses to record outputs.

Every transformers 5 model class declares ``_can_record_outputs``: which module
class produces ``hidden_states`` (the decoder layer), ``attentions`` (the
attention module) and, for mixture-of-experts models, ``router_logits`` (the
router), and at which index of a tuple output. Reading that declaration finds
the right modules for every architecture without a per-model table; the
parent path separates an encoder's layers from a decoder's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass
class Target:
    """A module whose output we tap, and where in a tuple output the tensor is."""

    index: int  # position among its kind (layer 0, 1, ...)
    name: str  # dotted module path, for messages
    module: torch.nn.Module
    output_index: int = 0


@dataclass
class ModelLayout:
    """The modules of one model that the taps hook, by kind, and what could not be found."""

    decoder_layers: list[Target] = field(default_factory=list)
    encoder_layers: list[Target] = field(default_factory=list)
    decoder_attention: list[Target] = field(default_factory=list)
    encoder_attention: list[Target] = field(default_factory=list)
    routers: list[Target] = field(default_factory=list)
    base_decoder: torch.nn.Module | None = None  # its output[0] is the final-normed hidden state
    lm_head: torch.nn.Module | None = None
    problems: list[str] = field(default_factory=list)


def _spec(key: str, value: Any) -> tuple[type | None, str | None, int, str | None]:
    """(class, class-name suffix, output index, layer-name filter) of a ``_can_record_outputs`` entry.

    A bare class means index 0 for hidden states and 1 otherwise, as transformers itself reads it.
    """
    if isinstance(value, type):
        return value, None, 0 if "hidden_states" in key else 1, None
    return (
        getattr(value, "target_class", None),
        getattr(value, "class_name", None),
        int(getattr(value, "index", 0) or 0),
        getattr(value, "layer_name", None),
    )


def _matches(
    name: str, module: torch.nn.Module, cls: type | None, class_name: str | None, layer_name: str | None
) -> bool:
    if cls is not None and not isinstance(module, cls):
        return False
    if class_name is not None and not type(module).__name__.endswith(class_name):
        return False
    if layer_name is not None and not name.endswith(layer_name.lstrip(".")):
        return False
    return cls is not None or class_name is not None


def _record_spec(model: torch.nn.Module) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for module in model.modules():
        declared = getattr(type(module), "_can_record_outputs", None)
        if declared:
            for key, value in declared.items():
                spec.setdefault(key, value)
    return spec


def _is_encoder_path(name: str) -> bool:
    parts = name.split(".")
    return "encoder" in parts and "decoder" not in parts


def discover(model: PreTrainedModel) -> ModelLayout:
    """Find the modules to tap from the model's own ``_can_record_outputs``, for any architecture."""
    layout = ModelLayout()
    spec = _record_spec(model)
    named = list(model.named_modules())

    def find(key: str) -> list[tuple[str, torch.nn.Module, int]]:
        if key not in spec:
            return []
        cls, class_name, out_index, layer_name = _spec(key, spec[key])
        return [(n, m, out_index) for n, m in named if n and _matches(n, m, cls, class_name, layer_name)]

    for name, module, out_index in find("hidden_states"):
        kind = layout.encoder_layers if _is_encoder_path(name) else layout.decoder_layers
        kind.append(Target(len(kind), name, module, out_index))
    for name, module, out_index in find("attentions"):
        kind = layout.encoder_attention if _is_encoder_path(name) else layout.decoder_attention
        kind.append(Target(len(kind), name, module, out_index))
    for name, module, out_index in find("router_logits"):
        if not _is_encoder_path(name):
            layout.routers.append(Target(len(layout.routers), name, module, out_index))
    if not layout.decoder_layers:
        layout.problems.append(f"{type(model).__name__} declares no decoder layers (_can_record_outputs)")
    if layout.decoder_attention and len(layout.decoder_attention) != len(layout.decoder_layers):
        layout.problems.append("attention modules do not pair one-to-one with decoder layers")
        layout.decoder_attention = []
    if layout.encoder_attention and len(layout.encoder_attention) != len(layout.encoder_layers):
        layout.encoder_attention = []
    if layout.routers and len(layout.routers) != len(layout.decoder_layers):
        layout.problems.append("routers do not pair one-to-one with decoder layers")
        layout.routers = []
    get_decoder = getattr(model, "get_decoder", None)
    try:
        layout.base_decoder = get_decoder() if callable(get_decoder) else None
    except Exception:
        layout.base_decoder = None
    try:
        layout.lm_head = model.get_output_embeddings()
    except Exception:
        layout.lm_head = None
    return layout


def first_tensor(output: Any, index: int = 0) -> torch.Tensor | None:
    """The tensor at ``index`` of a module output that may be a tensor, tuple or ModelOutput."""
    if isinstance(output, torch.Tensor):
        return output if index in (0, -1) else None
    if isinstance(output, (tuple, list)):
        if -len(output) <= index < len(output):
            value = output[index]
            return value if isinstance(value, torch.Tensor) else None
        return None
    getter = getattr(output, "to_tuple", None)
    if callable(getter):
        return first_tensor(getter(), index)
    return None
