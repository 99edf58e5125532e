"""Content capture: decoding the prompt and output ids, and the prompt as GenAI input messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..report import ContentInput, ContentPolicy
from ._prompts import PromptRecord


def genai_messages(messages: Any) -> list[dict[str, Any]] | None:
    """HF chat messages -> GenAI ``gen_ai.input.messages`` (role + text parts)."""
    if not isinstance(messages, (list, tuple)):
        return None
    converted = []
    for message in messages:
        if not isinstance(message, Mapping):
            return None
        content = message.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "content": content}]
        elif isinstance(content, (list, tuple)):
            parts = [
                {"type": "text", "content": str(p.get("text", ""))}
                for p in content
                if isinstance(p, Mapping) and p.get("type") == "text"
            ]
        else:
            parts = []
        converted.append({"role": str(message.get("role", "user")), "parts": parts})
    return converted


def content_input(
    tokenizer: Any,
    record: PromptRecord | None,
    prompt_rows: list[list[int]] | None,
    mask_rows: list[list[int]] | None,
    policy: ContentPolicy,
) -> ContentInput:
    """The texts a report carries with content capture on (``tokenizer`` None: ids only, chat messages if known)."""
    decode = None
    if tokenizer is not None:

        def decode(ids: list[int]) -> str:
            return tokenizer.decode(ids, skip_special_tokens=True)

    input_texts = None
    if decode is not None and prompt_rows:
        input_texts = []
        for i, row in enumerate(prompt_rows):
            if mask_rows and i < len(mask_rows):
                row = [t for t, m in zip(row, mask_rows[i]) if m]
            input_texts.append(decode(row))
    if record is not None and record.chat and record.messages is not None:
        messages = genai_messages(record.messages)
    elif input_texts:
        messages = [{"role": "user", "parts": [{"type": "text", "content": input_texts[0]}]}]
    else:
        messages = None
    return ContentInput(
        decode=decode, input_texts=input_texts, input_messages=messages, quote_tokens=policy.quoted_tokens
    )
