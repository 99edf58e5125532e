"""What a call hands the report builder besides the capture: its inputs, request parameters, timing and trace.

Everything here reads tensors already on the host or Python attributes; it runs in
:meth:`GenerationCall.succeed`, after the model returned.
"""

from __future__ import annotations

from typing import Any

import torch
from opentelemetry.trace import SpanContext

from ..report import GenerationRequest, RequestInfo
from . import _describe


def host_rows(value: Any) -> list[list[int]] | None:
    """An integer tensor (ids or mask) as rows of Python ints; None for anything else."""
    if not isinstance(value, torch.Tensor) or value.dtype.is_floating_point:
        return None
    rows = value.tolist()
    return rows if rows and isinstance(rows[0], list) else [rows]


def input_lengths(
    prompt: torch.Tensor | None, prompt_rows: list[list[int]] | None, mask_rows: list[list[int]] | None
) -> list[int]:
    """Non-pad prompt tokens per input row (``inputs_embeds``: the embedded length)."""
    if mask_rows is not None:
        return [int(sum(r)) for r in mask_rows]
    if prompt_rows is not None:
        return [len(r) for r in prompt_rows]
    if prompt is not None and prompt.dim() >= 2:
        return [int(prompt.shape[1])] * int(prompt.shape[0])
    return []


def request_parts(generation_config: Any, prompt_len: int | None) -> tuple[dict[str, Any], list[int], int | None]:
    """(``RequestInfo`` fields, EOS ids, pad id) from the call's effective GenerationConfig (None: unknown)."""
    params = _describe.request_params(generation_config, prompt_len) if generation_config is not None else {}
    return params, params.pop("eos_token_ids", []), params.pop("pad_token_id", None)


def generation_request(
    info: RequestInfo,
    *,
    prompt: torch.Tensor | None,
    prompt_rows: list[list[int]] | None,
    mask_rows: list[list[int]] | None,
    eos_token_ids: list[int],
    pad_token_id: int | None,
    capture_mode: str,
    duration_s: float,
    step_stride: int,
    span_context: SpanContext,
) -> GenerationRequest:
    """The builder's request record of one call."""
    masks = (
        mask_rows
        if mask_rows is not None
        else ([[1] * len(r) for r in prompt_rows] if prompt_rows is not None else None)
    )
    valid = span_context.is_valid
    return GenerationRequest(
        params=info,
        capture_mode=capture_mode,
        duration_s=duration_s,
        input_lengths=input_lengths(prompt, prompt_rows, mask_rows),
        input_masks=masks,
        eos_token_ids=eos_token_ids,
        pad_token_id=pad_token_id,
        step_stride=step_stride,
        trace_id=f"{span_context.trace_id:032x}" if valid else None,
        span_id=f"{span_context.span_id:016x}" if valid else None,
    )
