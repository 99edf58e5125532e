"""Describe a model and a generate call from the objects ``generate`` already holds.

Everything here reads attributes of Python objects (config, dtype, shapes) and,
once per local model folder, its ``config.json``; nothing reads tensor values,
so nothing synchronises the device.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import PurePath
from typing import Any

import torch

from ..report import ModelInfo


def model_name(model: Any, override: str | None = None) -> str:
    """The name spans and metrics use: the override, else a clean name derived from the load (never a path)."""
    if override:
        return override
    config = getattr(model, "config", None)
    gguf = getattr(getattr(config, "quantization_config", None), "gguf_file", None)
    if gguf:  # the file stem keeps the quantisation: two GGUFs of one folder differ
        return PurePath(str(gguf)).stem
    name = getattr(model, "name_or_path", None) or getattr(config, "name_or_path", None)
    if name:
        return checkpoint_name(str(name))
    return str(getattr(config, "model_type", None) or type(model).__name__)


_HUB_CACHE = re.compile(r"(?:^|/)models--([^/]+?)--([^/]+)/snapshots/[^/]+/?$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?$")


@functools.lru_cache(maxsize=64)
def checkpoint_name(name_or_path: str) -> str:
    """A hub repo id as is; a local folder by the repo id its config was saved from, else by its own name."""
    cached = _HUB_CACHE.search(name_or_path.replace(os.sep, "/"))
    if cached:  # a snapshot folder of the hub cache
        return f"{cached.group(1)}/{cached.group(2)}"
    if not os.path.isdir(name_or_path):
        return name_or_path if _REPO_ID.match(name_or_path) else PurePath(name_or_path).name or name_or_path
    try:
        with open(os.path.join(name_or_path, "config.json"), encoding="utf-8") as f:
            saved = json.load(f).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        saved = None
    if isinstance(saved, str) and _REPO_ID.match(saved) and not os.path.isdir(saved):
        return saved
    return os.path.basename(os.path.normpath(name_or_path))


def model_info(model: Any, device: torch.device | None, name: str | None = None) -> ModelInfo:
    """The report's ``model`` section, from the config (decoder side of multimodal configs first)."""
    config = getattr(model, "config", None)
    text = config.get_text_config(decoder=True) if config is not None and hasattr(config, "get_text_config") else config

    def cfg(*names: str) -> Any:
        for name in names:
            value = getattr(text, name, None)
            if value is None and config is not None:
                value = getattr(config, name, None)
            if value is not None:
                return value
        return None

    architectures = getattr(config, "architectures", None) or [type(model).__name__]
    dtype = getattr(model, "dtype", None)
    return ModelInfo(
        name=model_name(model, name),
        model_type=getattr(config, "model_type", None),
        architecture=str(architectures[0]),
        num_layers=cfg("num_hidden_layers", "n_layer", "num_layers"),
        hidden_size=cfg("hidden_size", "n_embd", "d_model"),
        num_attention_heads=cfg("num_attention_heads", "n_head", "num_heads"),
        num_key_value_heads=cfg("num_key_value_heads"),
        vocab_size=cfg("vocab_size"),
        dtype=str(dtype).replace("torch.", "") if dtype is not None else None,
        device=str(device) if device is not None else None,
        is_encoder_decoder=bool(getattr(config, "is_encoder_decoder", False)),
    )


def input_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The prompt tensor of a generate call: ``inputs``/``input_ids`` or ``inputs_embeds``."""
    for value in (
        args[0] if args else None,
        kwargs.get("inputs"),
        kwargs.get("input_ids"),
        kwargs.get("inputs_embeds"),
    ):
        if isinstance(value, torch.Tensor):
            return value
    return None


def call_device(model: Any, prompt: torch.Tensor | None) -> torch.device | None:
    """Where the call runs: the prompt's device, else the model's."""
    if prompt is not None:
        return prompt.device
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else None


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, torch.Tensor):
        return value.flatten().tolist() if value.device.type == "cpu" else []
    return [value]


def request_params(generation_config: Any, prompt_len: int | None) -> dict[str, Any]:
    """The effective request parameters of a generate call, from its final GenerationConfig."""
    gc = generation_config
    max_new = getattr(gc, "max_new_tokens", None)
    max_length = getattr(gc, "max_length", None)
    if max_new is None and max_length is not None and prompt_len is not None:
        max_new = max(int(max_length) - int(prompt_len), 0)
    do_sample = bool(getattr(gc, "do_sample", False))
    params: dict[str, Any] = {
        "do_sample": do_sample,
        "max_new_tokens": int(max_new) if max_new is not None else None,
        "num_beams": int(getattr(gc, "num_beams", 1) or 1),
        "num_return_sequences": int(getattr(gc, "num_return_sequences", 1) or 1),
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "repetition_penalty": getattr(gc, "repetition_penalty", None),
        "min_new_tokens": getattr(gc, "min_new_tokens", None),
        "stop_strings": [str(s) for s in _as_list(getattr(gc, "stop_strings", None))],
        "eos_token_ids": [int(t) for t in _as_list(getattr(gc, "eos_token_id", None))],
        "pad_token_id": _first_int(getattr(gc, "pad_token_id", None)),
    }
    if do_sample:  # warpers only apply when sampling
        params["temperature"] = _float(getattr(gc, "temperature", None))
        params["top_p"] = _float(getattr(gc, "top_p", None))
        top_k = getattr(gc, "top_k", None)
        params["top_k"] = int(top_k) if top_k is not None else None
    if params["repetition_penalty"] is not None:
        params["repetition_penalty"] = float(params["repetition_penalty"])
    return params


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _first_int(value: Any) -> int | None:
    values = _as_list(value)
    return int(values[0]) if values else None


def fallback_generation_config(model: Any, kwargs: dict) -> Any:
    """Approximate the effective GenerationConfig when generate's own could not be observed."""
    import copy

    base = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    if base is None:
        return None
    config = copy.deepcopy(base)
    try:
        config.update(**{k: v for k, v in kwargs.items() if hasattr(config, k)})
    except Exception:
        pass
    return config
