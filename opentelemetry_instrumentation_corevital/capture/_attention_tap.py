"""What the wrapped attention functions hand over (see ``_intercept``), kept for the step or reduced at prefill.

Per decoding step only references are kept (the query row, the key cache,
mask, bias, scale); the prompt's attention telemetry (decoder prefill,
encoder) is computed here, once. A failure stops the attention capture only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from . import _attention
from ._taps import AttentionCall

if TYPE_CHECKING:
    from ._model_taps import ModelTaps


def _kept(
    query: torch.Tensor, key: torch.Tensor, mask: Any, bias: Any, scaling: float, softcap: float | None
) -> AttentionCall:
    """What the step's reduce needs of one attention call: references only; a mask that is not a tensor is None."""
    return (query, key, mask if isinstance(mask, torch.Tensor) else None, bias, scaling, softcap)


class AttentionTap:
    """The attention listener of one call's taps: attention module id -> (kind, layer slot, module scaling)."""

    def __init__(self, taps: ModelTaps, slots: dict[int, tuple[str, int, float | None]]) -> None:
        self._taps = taps
        self._slots = slots

    def on_attention(self, module: Any, query: torch.Tensor, key: torch.Tensor, mask: Any, kwargs: dict) -> None:
        """Called by the wrapped attention functions, after the model's own attention ran."""
        place = self._slots.get(id(module))
        taps = self._taps
        if place is None or not taps.active:
            return
        try:
            kind, slot, scaling = place
            if kind == "decoder" and query.shape[2] == 1:  # the per-step path: keep references, nothing else
                if taps.recording:
                    explicit = kwargs.get("scaling")
                    taps.buffers.attn[slot] = _kept(
                        query,
                        key,
                        mask,
                        kwargs.get("position_bias"),
                        explicit
                        if explicit is not None
                        else (scaling if scaling is not None else query.shape[-1] ** -0.5),
                        kwargs.get("softcap"),
                    )
                return
            scaling = _attention.scaling_of(module, kwargs, query.shape[-1])
            bias = kwargs.get("position_bias")
            softcap = kwargs.get("softcap")
            encoder = taps.prefill.encoder
            if kind == "encoder":
                if not taps.forwards and encoder and encoder["attention"][slot] is None:
                    valid = taps.valid_mask(query.transpose(1, 2))
                    valid = (
                        valid if valid is not None else torch.ones(query.shape[0], key.shape[-2], device=query.device)
                    )
                    encoder["attention"][slot] = _attention.prompt_attention_stats(
                        query,
                        key,
                        mask if isinstance(mask, torch.Tensor) else None,
                        scaling,
                        valid,
                        bias,
                        softcap,
                        causal=False,
                    )
                return
            if not taps.recording:
                return
            if taps.teacher_forced:
                taps.buffers.attn[slot] = _kept(query, key, mask, bias, scaling, softcap)
                return
            if query.shape[2] != 1:  # prefill
                prompt = taps.prefill.layers
                if prompt and taps.forwards == 1 and not taps.steps:
                    valid = taps.valid_mask(query.transpose(1, 2))
                    if valid is None:
                        valid = torch.ones(query.shape[0], key.shape[-2], device=query.device)
                    prompt["attention"][slot] = _attention.prompt_attention_stats(
                        query, key, mask if isinstance(mask, torch.Tensor) else None, scaling, valid, bias, softcap
                    )
                query = query[:, :, -1:].clone()
                if isinstance(mask, torch.Tensor) and mask.dim() == 4:
                    mask = mask[..., -1:, :].clone()
                if isinstance(bias, torch.Tensor):
                    bias = bias[..., -1:, :].clone()
            taps.buffers.attn[slot] = _kept(query, key, mask, bias, scaling, softcap)
        except Exception as exc:
            self._slots = {}
            taps.stop_attention(f"{type(exc).__name__}: {exc}")
