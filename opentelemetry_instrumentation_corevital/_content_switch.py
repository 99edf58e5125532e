"""The GenAI content-capture switches, read as contrib's GenAI instrumentations read them (opentelemetry-util-genai).

``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` means one thing under the default conventions and another
under ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``:

- default: ``true`` puts content in log events only (never on the span); ``false`` or nothing: no content; a mode
  name (``SPAN_ONLY`` ...) captures nothing, as in contrib, and is warned about;
- opted in: ``NO_CONTENT``, ``SPAN_ONLY``, ``EVENT_ONLY``, ``SPAN_AND_EVENT``; ``true`` captures nothing, as in
  contrib, and is warned about. ``OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT`` turns the
  ``gen_ai.client.inference.operation.details`` event on or off (default: on with ``EVENT_ONLY`` and
  ``SPAN_AND_EVENT``).
"""

from __future__ import annotations

from typing import Any

from ._errors import ConfigurationError
from ._values import ContentMode

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
STABILITY_OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
EMIT_EVENT_ENV = "OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT"
#: The opt-in value (one item of the comma-separated list) that selects the newest GenAI conventions.
GENAI_LATEST = "gen_ai_latest_experimental"

CONTENT_DOC = (
    "record prompt and output text. Default conventions: true (log events only) or false; with "
    f"{STABILITY_OPT_IN_ENV}={GENAI_LATEST}: NO_CONTENT, SPAN_ONLY, EVENT_ONLY or SPAN_AND_EVENT (as contrib)"
)
OPT_IN_DOC = (
    f"semantic-convention opt-ins, comma-separated; {GENAI_LATEST} selects the newest GenAI conventions (the content "
    "modes, gen_ai.client.inference.operation.details, gen_ai.system_instructions, gen_ai.client.inference.* metrics)"
)
EMIT_EVENT_DOC = (
    f"with {GENAI_LATEST}: emit gen_ai.client.inference.operation.details (true/false; "
    "default: with EVENT_ONLY and SPAN_AND_EVENT)"
)


def parse_content_switch(value: Any, source: str = "capture_content") -> ContentMode | bool:
    """The switch as given: ``true``/``false`` (the default conventions' values) or a content mode (the newest's)."""
    if isinstance(value, (ContentMode, bool)):
        return value
    text = str(value).strip()
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no", ""):
        return False
    try:
        return ContentMode(text.upper())
    except ValueError:
        allowed = "true, false, " + ", ".join(m.value for m in ContentMode)
        raise ConfigurationError(f"{source}={value!r} is not a content-capture mode; use one of {allowed}.") from None


def parse_opt_in(value: Any, source: str = "semconv_opt_in") -> bool:
    """Whether the comma-separated opt-in list (or a boolean) selects the newest GenAI conventions."""
    if isinstance(value, bool):
        return value
    return GENAI_LATEST in [item.strip() for item in str(value).split(",")]


def content_mode(switch: ContentMode | bool, latest: bool) -> ContentMode:
    """Where content may go, as contrib decides it: a mode needs the opt-in, ``true`` needs its absence."""
    if latest:
        return switch if isinstance(switch, ContentMode) else ContentMode.NO_CONTENT
    return ContentMode.EVENT_ONLY if switch is True else ContentMode.NO_CONTENT


def ignored_switch(switch: ContentMode | bool, latest: bool) -> str | None:
    """Why a switch that asks for content captures none under these conventions, or None."""
    if latest and switch is True:
        modes = ", ".join(m.value for m in ContentMode)
        return (
            f"{CAPTURE_CONTENT_ENV}=true means nothing with {STABILITY_OPT_IN_ENV}={GENAI_LATEST}; use one of {modes}"
        )
    if not latest and isinstance(switch, ContentMode) and switch.enabled:
        return f"{CAPTURE_CONTENT_ENV}={switch.value} needs {STABILITY_OPT_IN_ENV}={GENAI_LATEST}; or use true"
    return None
