"""Scoring a given continuation: one teacher-forced forward, the same signals as a generation.

``score(model, prompt_ids, continuation_ids)`` runs one plain forward over
prompt + continuation with the capture taps in place. Position ``P - 1 + t``
predicts continuation token ``t``, so its logits, layer states and attention
row are exactly what generation step ``t`` would have seen had the model
produced that token: the report has one "step" per continuation token, with
the same timeline, layer matrices, flags and risk, under the span operation
name ``score``. Candidate answers, RAG outputs and datasets can be scored
without sampling anything.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .. import names
from .._errors import ConfigurationError
from ..report import Report, RequestInfo
from ._call import GenerationCall, Telemetry
from ._prompts import PromptRecord

OPERATION = "score"


class ScoreCall(GenerationCall):
    """``score()``: the generation lifecycle around one teacher-forced forward."""

    operation = OPERATION

    def __init__(
        self,
        telemetry: Telemetry,
        model: Any,
        prompt_ids: torch.Tensor,
        continuation_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> None:
        if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
            raise ConfigurationError(
                "score() teacher-forces a decoder-only model; encoder-decoder models are not supported"
            )
        prompt_ids, continuation_ids = (
            _as_rows(prompt_ids, "prompt_ids"),
            _as_rows(continuation_ids, "continuation_ids"),
        )
        if prompt_ids.shape[0] != continuation_ids.shape[0]:
            raise ConfigurationError(
                f"prompt_ids has {prompt_ids.shape[0]} rows but continuation_ids has {continuation_ids.shape[0]}"
            )
        if prompt_ids.shape[1] < 1 or continuation_ids.shape[1] < 1:
            raise ConfigurationError("score() needs at least one prompt token and one continuation token")
        device = getattr(model, "device", prompt_ids.device)
        self.prompt_ids = prompt_ids.to(device)
        self.continuation_ids = continuation_ids.to(device)
        mask = torch.ones_like(self.prompt_ids) if attention_mask is None else attention_mask.to(device)
        if mask.shape != self.prompt_ids.shape:
            raise ConfigurationError("attention_mask must have prompt_ids' shape (it covers the prompt only)")
        super().__init__(telemetry, model, (self.prompt_ids,), {"attention_mask": mask})
        self.source.teacher_force(int(self.prompt_ids.shape[1]), int(self.continuation_ids.shape[1]))
        self.full_ids = torch.cat([self.prompt_ids, self.continuation_ids], dim=1)
        self.full_mask = torch.cat([mask, torch.ones_like(self.continuation_ids)], dim=1)

    def run(self) -> Report | None:
        """The forward, then the report; the forward's exceptions are recorded and re-raised."""
        with self:
            with torch.no_grad():
                output = self.model(
                    input_ids=self.full_ids,
                    attention_mask=self.full_mask,
                    use_cache=False,
                    logits_to_keep=int(self.continuation_ids.shape[1]) + 1,
                )
            self.source.score(output.logits, self.full_ids, self.full_mask)
            self.returned(self.full_ids)
        return self.report

    def _request_info(self, params: dict[str, Any]) -> RequestInfo:
        """Teacher forcing samples nothing and has no length limit: no sampling parameters."""
        return dataclasses.replace(
            super()._request_info(params),
            generation_mode="teacher_forced",
            max_new_tokens=None,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
        )

    def _report(self, result: Any) -> Report:
        report = super()._report(result)
        for seq in report.sequences:  # every given token is scored, end-of-sequence tokens included
            seq.finish_reason = "length"
        return report

    def _operation(self) -> str:
        return OPERATION  # scoring is its own operation, never "chat"

    def _prompt_record(
        self, prompt_rows: list[list[int]] | None, mask_rows: list[list[int]] | None
    ) -> PromptRecord | None:
        return None  # no chat messages: scoring is not a conversation


def _as_rows(value: Any, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    if tensor.dtype.is_floating_point:
        raise ConfigurationError(f"{name} must hold token ids (integers), not {tensor.dtype}")
    if tensor.dim() == 1:
        tensor = tensor[None]
    if tensor.dim() != 2:
        raise ConfigurationError(f"{name} must be [tokens] or [rows, tokens], got shape {tuple(tensor.shape)}")
    return tensor.long()


__all__ = ["OPERATION", "ScoreCall", "names"]
