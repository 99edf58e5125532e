"""Content capture: decoding the prompt and output ids, the prompt as GenAI input messages, the template's system
prompt as GenAI system instructions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..report import ContentInput, ContentPolicy
from ._prompts import PromptRecord, _unwrapped

#: Stands in for a system message's text when the template is rendered to find where its own system prompt goes.
_MARKER = "COREVITALSYSTEMMARKER"


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


def template_system_prompt(tokenizer: Any, messages: Any) -> str | None:
    """The system prompt the chat template writes on its own for a conversation without one (SmolLM2's, Qwen's).

    The conversation is rendered as it is and again after a system message holding a marker: what the first
    rendering has where the second has the marker is the template's own system prompt. None when it adds none.
    """
    if not isinstance(messages, (list, tuple)) or not getattr(tokenizer, "chat_template", None):
        return None
    if any(isinstance(m, Mapping) and m.get("role") == "system" for m in messages):
        return None  # the conversation's own system message: part of the input messages
    try:
        render = _unwrapped(tokenizer, "apply_chat_template")  # ours would remember the renderings as prompts
        plain = render(tokenizer, list(messages), tokenize=False)
        marked = render(tokenizer, [{"role": "system", "content": _MARKER}, *messages], tokenize=False)
    except Exception:  # a template that refuses a system message
        return None
    if not isinstance(plain, str) or not isinstance(marked, str) or marked.count(_MARKER) != 1:
        return None
    before, after = marked.split(_MARKER)
    if not plain.startswith(before) or not plain.endswith(after) or len(plain) < len(before) + len(after):
        return None
    return plain[len(before) : len(plain) - len(after)] or None


def content_input(
    tokenizer: Any,
    record: PromptRecord | None,
    prompt_rows: list[list[int]] | None,
    mask_rows: list[list[int]] | None,
    policy: ContentPolicy,
) -> ContentInput:
    """The texts a report carries with content capture on (``tokenizer`` None: ids only, chat messages if known)."""
    decode = decode_each = None
    if tokenizer is not None:

        def decode(ids: list[int]) -> str:
            return tokenizer.decode(ids, skip_special_tokens=True)

        def decode_each(ids: list[int]) -> list[str]:
            # one tokenizer call for all steps; special tokens kept, so an end-of-turn step is not an empty label
            return list(tokenizer.batch_decode([[i] for i in ids]))

    input_texts = None
    if decode is not None and prompt_rows:
        input_texts = []
        for i, row in enumerate(prompt_rows):
            if mask_rows and i < len(mask_rows):
                row = [t for t, m in zip(row, mask_rows[i]) if m]
            input_texts.append(decode(row))
    system = None
    if record is not None and record.chat and record.messages is not None:
        messages = genai_messages(record.messages)
        prompt = template_system_prompt(tokenizer, record.messages) if tokenizer is not None else None
        system = [{"type": "text", "content": prompt}] if prompt else None
    elif input_texts:
        messages = [{"role": "user", "parts": [{"type": "text", "content": input_texts[0]}]}]
    else:
        messages = None
    return ContentInput(
        decode=decode,
        decode_each=decode_each,
        input_texts=input_texts,
        input_messages=messages,
        system_instructions=system,
        quote_tokens=policy.quoted_tokens,
    )
