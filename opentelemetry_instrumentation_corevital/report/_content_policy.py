"""What content may leave the process, and by which route: decided once per call from the content-capture mode.

Content is the prompt and output text, the GenAI messages, the generated token ids (decodable back to the text),
each generated token's text (``sequences[].token_texts``) and the token strings the narrative quotes. Every route
asks the one :class:`ContentPolicy`:

- **span**: span attributes (``gen_ai.input.messages`` / ``gen_ai.output.messages``) and the ``corevital.step``
  span events (``corevital.token.id``) - allowed by ``SPAN_ONLY`` and ``SPAN_AND_EVENT``;
- **events**: the ``corevital.generation.step`` log records (``corevital.token.id``), the
  ``corevital.generation.report`` log record and the report handed on (``on_report``, so the SQLite, W&B and
  DogStatsD sinks, and monitors) - allowed by ``EVENT_ONLY`` and ``SPAN_AND_EVENT``;
- **quoted tokens**: the narrative travels by both routes (a span attribute and inside the report), so it quotes a
  token only when both allow content (``SPAN_AND_EVENT``).

Which GenAI events carry the messages follows the conventions (``_content_switch``): under the default ones the
``gen_ai.{role}.message`` and ``gen_ai.choice`` events (with content only), under ``gen_ai_latest_experimental``
the ``gen_ai.client.inference.operation.details`` event (``details_event``; its messages only with **events**).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .._content_switch import content_mode
from .._values import ContentMode
from ._model import Report


@dataclass(frozen=True)
class ContentPolicy:
    """Which routes may carry content; every route asks this instead of reading the mode itself."""

    span: bool = False  # span attributes and span events
    events: bool = False  # log records and the report handed on (on_report, report sinks, monitors)
    details_event: bool = False  # emit gen_ai.client.inference.operation.details (newest conventions only)
    message_events: bool = False  # emit gen_ai.{role}.message and gen_ai.choice (default conventions, content on)

    @classmethod
    def of(cls, mode: ContentMode, latest: bool = True, emit_event: bool | None = None) -> ContentPolicy:
        """The policy of a content-capture mode under the newest (``latest``) or the default GenAI conventions;
        ``emit_event`` None: the operation-details event follows the mode."""
        event = mode.on_event if emit_event is None else emit_event
        return cls(
            mode.on_span, mode.on_event, details_event=latest and event, message_events=not latest and mode.on_event
        )

    @classmethod
    def of_switches(cls, switch: ContentMode | bool, latest: bool, emit_event: bool | None = None) -> ContentPolicy:
        """The policy of the content switch as given, read as contrib reads it under these conventions."""
        return cls.of(content_mode(switch, latest), latest, emit_event)

    def without_genai_events(self) -> ContentPolicy:
        """This policy where another instrumentation emits the GenAI events (openai-v2, whose span we enrich)."""
        return dataclasses.replace(self, details_event=False, message_events=False)

    @property
    def captured(self) -> bool:
        """Whether any route may carry content: only then is anything decoded at all."""
        return self.span or self.events

    @property
    def quoted_tokens(self) -> bool:
        """Whether the narrative may quote a token: it goes on the span and in the report, so both must allow it."""
        return self.span and self.events

    def for_events(self, report: Report) -> Report:
        """``report`` as the events route may carry it: itself, or a copy without content."""
        return report if self.events else without_content(report)


def without_content(report: Report) -> Report:
    """A copy of ``report`` without text, messages, token ids and token texts (the given report is unchanged)."""
    if (
        report.input_messages is None
        and report.system_instructions is None
        and all(
            s.token_ids is None and s.token_texts is None and s.input_text is None and s.output_text is None
            for s in report.sequences
        )
    ):
        return report
    sequences = [
        dataclasses.replace(s, token_ids=None, token_texts=None, input_text=None, output_text=None)
        for s in report.sequences
    ]
    return dataclasses.replace(report, sequences=sequences, input_messages=None, system_instructions=None)
