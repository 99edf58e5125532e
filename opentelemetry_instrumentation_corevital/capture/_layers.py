"""Find the modules we tap, from the metadata transformers itself uses to record outputs.

Every transformers 5 model class declares ``_can_record_outputs``: which module
class produces ``hidden_states`` (the decoder layer), ``attentions`` (the
attention module) and, for mixture-of-experts models, ``router_logits`` (the
router), and at which index of a tuple output. Reading that declaration finds
the right modules for every architecture without a per-model table; the
parent path separates an encoder's layers from a decoder's.
"""

from __future__ import annotations

import threading
import weakref
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
    """Find the modules to tap from the model's own ``_can_record_outputs``, for any architecture.

    Walking every module costs about half a millisecond a generation on a model of a few hundred modules, which
    a compiled decode pays as wall time; so the layers found are remembered for the model, and used again while
    every module on the path to them is still where it was (see :class:`_Known`). The output head is looked up
    every time (resizing the embeddings replaces it).
    """
    with _lock:
        known = _known.get(model)
    walked = known.layout() if known is not None and known.holds() else None
    if walked is None:
        walked = _walk(model)
        known = _Known.of(model, walked)
        if known is not None:
            with _lock:
                _known[model] = known
    layout = walked  # a fresh object either way: the remembered one is rebuilt by _Known.layout
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


#: A target as remembered: (index, dotted name, the module, output index).
_Found = tuple[int, str, "weakref.ref[torch.nn.Module]", int]
#: (parent, child's name, child, the parent's number of children).
_Link = tuple["weakref.ref[torch.nn.Module]", str, "weakref.ref[torch.nn.Module]", int]
#: The ModelLayout lists that hold targets.
_KINDS = ("decoder_layers", "encoder_layers", "decoder_attention", "encoder_attention", "routers")
_known: weakref.WeakKeyDictionary[torch.nn.Module, _Known] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class _Known:
    """A model's walked layout, kept without keeping the model alive (weak references only), and the links from
    the model down to every target, each with its parent's number of children: a replaced, added or removed
    module on those paths makes the model be walked again."""

    def __init__(self, kinds: dict[str, list[_Found]], links: list[_Link], problems: list[str]) -> None:
        self._kinds = kinds
        self._links = links  # (parent ref, child name, child ref, the parent's number of children)
        self._problems = problems

    @classmethod
    def of(cls, model: torch.nn.Module, layout: ModelLayout) -> _Known | None:
        kinds = {
            name: [(t.index, t.name, weakref.ref(t.module), t.output_index) for t in getattr(layout, name)]
            for name in _KINDS
        }
        links: dict[tuple[int, str], _Link] = {}
        for targets in kinds.values():
            for _, path, _, _ in targets:
                parent = model
                for key in path.split("."):
                    child = parent._modules.get(key)
                    if child is None:
                        return None
                    links.setdefault(
                        (id(parent), key), (weakref.ref(parent), key, weakref.ref(child), len(parent._modules))
                    )
                    parent = child
        return cls(kinds, list(links.values()), list(layout.problems)) if links else None

    def holds(self) -> bool:
        """Whether every module on the paths to the targets is still where it was."""
        for parent_ref, key, child_ref, size in self._links:
            parent = parent_ref()
            child = child_ref()
            if parent is None or child is None or len(parent._modules) != size or parent._modules.get(key) is not child:
                return False
        return True

    def layout(self) -> ModelLayout | None:
        layout = ModelLayout(problems=list(self._problems))
        for name, targets in self._kinds.items():
            found = getattr(layout, name)
            for index, path, ref, out_index in targets:
                module = ref()
                if module is None:
                    return None
                found.append(Target(index, path, module, out_index))
        return layout


def _walk(model: PreTrainedModel) -> ModelLayout:
    """Every module of the model, looked through once (see :func:`discover`)."""
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
