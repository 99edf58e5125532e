"""A run's text, where content capture kept it: prompt and output, each token's text, the run list's preview.

The report keeps the texts per sequence (``input_text``, ``output_text``, ``token_texts``); a span with content on
the span keeps the GenAI messages (``gen_ai.input.messages``, ``gen_ai.output.messages``). Without content capture
there is none, and the page says how to get it next time (:data:`messages.NO_TEXT`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .. import names as n
from . import otlp

#: Words of the output the run list shows as its preview.
PREVIEW_WORDS = 12
#: Characters of a token's text an axis label keeps.
LABEL_CHARS = 12


@dataclass(frozen=True)
class Texts:
    """A run's prompt and output as captured (None when content capture was off)."""

    prompt: str | None
    output: str | None


def _records(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in otlp.typed(report, "sequences", list, []) if isinstance(s, dict)]


def _riskiest(report: dict[str, Any]) -> dict[str, Any]:
    """The record of the sequence the summary calls riskiest (else the first one, else empty)."""
    seqs = _records(report)
    named = otlp.typed(otlp.typed(report, "summary", dict, {}), "riskiest_sequence", int, None)
    return next((s for s in seqs if s.get("index") == named), seqs[0] if seqs else {})


def _message_text(value: Any) -> str | None:
    """The text parts of GenAI messages (a span attribute holds them as JSON text), joined; None when there are none."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, list):
        return None
    parts = [
        p["content"]
        for m in value
        if isinstance(m, dict) and isinstance(m.get("parts"), list)
        for p in m["parts"]
        if isinstance(p, dict) and isinstance(p.get("content"), str)
    ]
    return "\n".join(parts) if parts else None


def texts(report: dict[str, Any] | None, span: dict[str, Any] | None) -> Texts:
    """The riskiest sequence's prompt and output from the report, else the span's GenAI messages."""
    seq = _riskiest(report or {})
    prompt = otlp.typed(seq, "input_text", str, None)
    output = otlp.typed(seq, "output_text", str, None)
    attrs = span or {}
    return Texts(
        prompt if prompt is not None else _message_text(attrs.get(n.INPUT_MESSAGES)),
        output if output is not None else _message_text(attrs.get(n.OUTPUT_MESSAGES)),
    )


def searchable(report: dict[str, Any] | None, span: dict[str, Any] | None) -> dict[str, str | None]:
    """What the run list keeps of a run's text: the prompt and every sequence's output (for search)."""
    outputs = [s["output_text"] for s in _records(report or {}) if isinstance(s.get("output_text"), str)]
    found = texts(report, span)
    return {"prompt": found.prompt, "output": "\n".join(outputs) if outputs else found.output}


def preview(output: str | None, words: int = PREVIEW_WORDS) -> str | None:
    """The first words of an output, on one line, with an ellipsis when there is more."""
    if output is None:
        return None
    parts = output.split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


def token_texts(seq: dict[str, Any]) -> list[str] | None:
    """A report sequence's per-step token texts, or None when the report has none (or of the wrong shape)."""
    found = seq.get("token_texts")
    return list(found) if isinstance(found, list) and all(isinstance(t, str) for t in found) else None


def label(token: str, limit: int = LABEL_CHARS) -> str:
    """A token's text as an axis label or table cell: line breaks and tabs made visible, long ones shortened."""
    shown = token.replace("\n", "⏎").replace("\t", "⇥")
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def axis_labels(tokens: list[str] | None) -> str | None:
    """A Vega expression that names each step of an x axis by its token's text; None without tokens."""
    if not tokens:
        return None
    # A JSON array is a Vega expression literal; ASCII-only, so no character of a token can end it early.
    return f"{json.dumps([label(t) for t in tokens], ensure_ascii=True)}[datum.value] || datum.value"
