"""The GenAI conventions' events of one call, as contrib's GenAI instrumentations emit them.

Newest conventions (``gen_ai_latest_experimental``): one ``gen_ai.client.inference.operation.details`` log record
with the span's GenAI attributes, plus the messages as structured values when content may go on events. Default
conventions: with content on, one ``gen_ai.{role}.message`` record per input message and one ``gen_ai.choice`` per
returned sequence, the text in the body (contrib also sends them empty with content off; those would only repeat
the span).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry._logs import Logger
from opentelemetry.context import Context

from .. import names as n
from ..report import ContentPolicy, Report
from ._span import messages


def emit_genai_events(
    logger: Logger,
    report: Report,
    context: Context,
    genai: Mapping[str, Any],
    content: ContentPolicy,
    provider: str,
) -> None:
    """The events ``content`` asks for; ``genai`` is the span's GenAI attributes (without content)."""
    if content.details_event:
        attrs = {**genai, **(messages(report) if content.events else {})}
        logger.emit(event_name=n.EVENT_OPERATION_DETAILS, attributes=attrs, context=context)
    if content.message_events:
        for record in message_records(report, provider):
            logger.emit(**record, context=context)


def emit_failure_details(
    logger: Logger, context: Context, attributes: Mapping[str, Any], content: ContentPolicy
) -> None:
    """A failed call's operation-details event (contrib emits it for failures too): its GenAI attributes, error.type."""
    if content.details_event:
        logger.emit(event_name=n.EVENT_OPERATION_DETAILS, attributes=dict(attributes), context=context)


def _text(parts: Any) -> str:
    """The text parts of a GenAI message, joined."""
    return "".join(str(p.get("content", "")) for p in parts or () if isinstance(p, Mapping) and p.get("type") == "text")


def message_records(report: Report, provider: str) -> list[dict[str, Any]]:
    """The default conventions' message and choice events of ``report`` (event name, attributes, body)."""
    attrs = {n.SYSTEM: provider}
    records = [
        {
            "event_name": n.EVENT_MESSAGE.format(role=message.get("role", "user")),
            "attributes": attrs,
            "body": {"content": _text(message.get("parts"))},
        }
        for message in report.input_messages or ()
    ]
    records += [
        {
            "event_name": n.EVENT_CHOICE,
            "attributes": attrs,
            "body": {
                "index": seq.index,
                "finish_reason": seq.finish_reason,
                "message": {"role": "assistant", "content": seq.output_text},
            },
        }
        for seq in report.sequences
        if seq.output_text is not None
    ]
    return records
