"""Content capture switches as contrib's GenAI instrumentations read them (opentelemetry-util-genai, openai-v2).

Each value of ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, with and without
``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` (and ``OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT``), drives
a real generation of the tiny model (its output forced to known words) into the SDK's in-memory exporters; each test
says exactly where content is (span attributes, span events, log records, the report handed on) and where it is not.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import torch
from transformers import LogitsProcessorList

from opentelemetry_instrumentation_corevital import names
from opentelemetry_instrumentation_corevital.instrument._content import template_system_prompt
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

from .test_content_policy import ForceTokens

CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
EMIT_EVENT_ENV = "OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT"
LATEST = "gen_ai_latest_experimental"
PROMPT, ANSWER = "write blue moon", "blue moon poem"
INPUT = [{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]
OUTPUT = [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}], "finish_reason": "length"}]
CONTENT_KEYS = (names.INPUT_MESSAGES, names.OUTPUT_MESSAGES, names.SYSTEM_INSTRUCTIONS)
GENAI_EVENTS = (names.EVENT_OPERATION_DETAILS, names.EVENT_CHOICE, "gen_ai.user.message", "gen_ai.system.message")


def plain(value: Any) -> Any:
    """An attribute value as JSON would hold it (the SDK stores sequences as tuples)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


class Run:
    """One forced generation's telemetry: the span, the log records by event name, the report handed on."""

    def __init__(self, model, tok, monkeypatch, env: dict[str, str], **options: Any) -> None:
        for key in (CONTENT_ENV, OPT_IN_ENV, EMIT_EVENT_ENV):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        self.ids = tok.encode(ANSWER, add_special_tokens=False)
        with TelemetryCapture(capture="full", **options) as capture:
            inputs = tok.apply_chat_template(
                [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            prompt_len = inputs["input_ids"].shape[1]
            output = model.generate(
                **inputs,
                max_new_tokens=len(self.ids),
                do_sample=False,
                logits_processor=LogitsProcessorList([ForceTokens(self.ids, prompt_len)]),
            )
        assert output[0, prompt_len:].tolist() == self.ids
        (self.span,) = capture.spans()
        (self.report,) = capture.reports
        self.records = [log.log_record for log in capture.logs()]

    def span_content(self) -> dict[str, Any]:
        """The span's content attributes, their JSON text read back."""
        return {k: json.loads(v) for k, v in self.span.attributes.items() if k in CONTENT_KEYS}

    def span_token_ids(self) -> list[int | None]:
        return [e.attributes.get(names.TOKEN_ID) for e in self.span.events if e.name == names.EVENT_STEP]

    def step_log_token_ids(self) -> list[int | None]:
        return [r.attributes.get(names.TOKEN_ID) for r in self.records if r.event_name == names.EVENT_STEP_LOG]

    def genai_events(self) -> list[tuple[str, dict[str, Any], Any]]:
        """(event name, attributes, body) of the GenAI events, in order."""
        return [
            (r.event_name, plain(dict(r.attributes)), plain(r.body))
            for r in self.records
            if r.event_name in GENAI_EVENTS
        ]

    def span_genai(self) -> dict[str, Any]:
        """The span's GenAI attributes without content."""
        return {
            k: plain(v) for k, v in self.span.attributes.items() if k.startswith("gen_ai.") and k not in CONTENT_KEYS
        }

    def assert_events_route(self, content: bool) -> None:
        """Step log records and the report handed on carry content exactly when the events route is on."""
        assert self.step_log_token_ids() == (self.ids if content else [None] * len(self.ids))
        seq = self.report.sequences[0]
        assert (seq.output_text, seq.token_ids, self.report.input_messages) == (
            (ANSWER, self.ids, INPUT) if content else (None, None, None)
        )


def nothing_anywhere(run: Run) -> None:
    assert run.span_content() == {}
    assert run.span_token_ids() == [None] * len(run.ids)
    assert run.genai_events() == []
    run.assert_events_route(False)


# -- default conventions (no opt-in): true/false, as openai-v2's is_content_enabled ------------------------------


@pytest.mark.parametrize("value", [None, "false", "FALSE"])
def test_default_conventions_off(value, tiny_llama, tiny_tok, monkeypatch, caplog):
    run = Run(tiny_llama, tiny_tok, monkeypatch, {CONTENT_ENV: value} if value else {})
    nothing_anywhere(run)
    assert "captures no content" not in caplog.text


@pytest.mark.parametrize("value", ["true", "True"])
def test_default_conventions_true_means_log_events_never_the_span(value, tiny_llama, tiny_tok, monkeypatch):
    run = Run(tiny_llama, tiny_tok, monkeypatch, {CONTENT_ENV: value})
    assert run.span_content() == {}
    assert run.span_token_ids() == [None] * len(run.ids)
    system = {names.SYSTEM: names.PROVIDER}
    assert run.genai_events() == [
        ("gen_ai.user.message", system, {"content": PROMPT}),
        (
            names.EVENT_CHOICE,
            system,
            {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": ANSWER}},
        ),
    ]
    run.assert_events_route(True)
    span = run.span.context
    for record in run.records:
        assert (record.trace_id, record.span_id) == (span.trace_id, span.span_id)


@pytest.mark.parametrize("value", ["SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT"])
def test_default_conventions_modes_need_the_opt_in(value, tiny_llama, tiny_tok, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING):
        run = Run(tiny_llama, tiny_tok, monkeypatch, {CONTENT_ENV: value})
    nothing_anywhere(run)
    assert f"CoreVital captures no content: {CONTENT_ENV}={value} needs {OPT_IN_ENV}={LATEST}; or use true." in (
        caplog.text
    )


# -- newest conventions (OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental) --------------------------------


@pytest.mark.parametrize("value", [None, "NO_CONTENT", "no_content"])
def test_latest_no_content(value, tiny_llama, tiny_tok, monkeypatch):
    env = {OPT_IN_ENV: f"http,{LATEST}", **({CONTENT_ENV: value} if value else {})}
    nothing_anywhere(Run(tiny_llama, tiny_tok, monkeypatch, env))


def test_latest_true_captures_nothing_as_in_contrib(tiny_llama, tiny_tok, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING):
        run = Run(tiny_llama, tiny_tok, monkeypatch, {OPT_IN_ENV: LATEST, CONTENT_ENV: "true"})
    nothing_anywhere(run)
    assert f"{CONTENT_ENV}=true means nothing with {OPT_IN_ENV}={LATEST}" in caplog.text


def test_latest_span_only(tiny_llama, tiny_tok, monkeypatch):
    run = Run(tiny_llama, tiny_tok, monkeypatch, {OPT_IN_ENV: LATEST, CONTENT_ENV: "SPAN_ONLY"})
    assert run.span_content() == {names.INPUT_MESSAGES: INPUT, names.OUTPUT_MESSAGES: OUTPUT}
    # JSON text as contrib writes it on spans: compact separators
    assert run.span.attributes[names.INPUT_MESSAGES] == json.dumps(INPUT, separators=(",", ":"))
    assert run.span_token_ids() == run.ids
    assert run.genai_events() == []  # the details event follows the mode: not with SPAN_ONLY
    run.assert_events_route(False)


def test_latest_event_only(tiny_llama, tiny_tok, monkeypatch):
    run = Run(tiny_llama, tiny_tok, monkeypatch, {OPT_IN_ENV: LATEST, CONTENT_ENV: "event_only"})
    assert run.span_content() == {}
    assert run.span_token_ids() == [None] * len(run.ids)
    ((name, attributes, body),) = run.genai_events()
    assert name == names.EVENT_OPERATION_DETAILS and body is None
    assert attributes == {**run.span_genai(), names.INPUT_MESSAGES: INPUT, names.OUTPUT_MESSAGES: OUTPUT}
    run.assert_events_route(True)


def test_latest_span_and_event(tiny_llama, tiny_tok, monkeypatch):
    run = Run(tiny_llama, tiny_tok, monkeypatch, {OPT_IN_ENV: LATEST, CONTENT_ENV: "SPAN_AND_EVENT"})
    assert run.span_content() == {names.INPUT_MESSAGES: INPUT, names.OUTPUT_MESSAGES: OUTPUT}
    assert run.span_token_ids() == run.ids
    ((name, attributes, _),) = run.genai_events()
    assert name == names.EVENT_OPERATION_DETAILS
    assert attributes == {**run.span_genai(), names.INPUT_MESSAGES: INPUT, names.OUTPUT_MESSAGES: OUTPUT}
    run.assert_events_route(True)


def test_operation_details_event_without_content(tiny_llama, tiny_tok, monkeypatch):
    """EMIT_EVENT=true with NO_CONTENT: the event, with the span's GenAI attributes and no messages."""
    run = Run(tiny_llama, tiny_tok, monkeypatch, {OPT_IN_ENV: LATEST, EMIT_EVENT_ENV: "true"})
    ((name, attributes, body),) = run.genai_events()
    assert (name, body) == (names.EVENT_OPERATION_DETAILS, None)
    assert attributes == run.span_genai()
    assert attributes == {
        names.OPERATION_NAME: "chat",
        names.PROVIDER_NAME: names.PROVIDER,
        names.REQUEST_MODEL: "llama",
        names.RESPONSE_MODEL: "llama",
        names.RESPONSE_ID: run.report.report_id,
        names.OUTPUT_TYPE: "text",
        names.USAGE_INPUT_TOKENS: run.report.usage.input_tokens,
        names.USAGE_OUTPUT_TOKENS: 3,
        names.RESPONSE_FINISH_REASONS: ["length"],
        names.REQUEST_MAX_TOKENS: 3,
    }
    span = run.span.context
    (record,) = [r for r in run.records if r.event_name == names.EVENT_OPERATION_DETAILS]
    assert (record.trace_id, record.span_id) == (span.trace_id, span.span_id)
    assert run.span_content() == {} and run.span_token_ids() == [None] * len(run.ids)
    run.assert_events_route(False)


def test_emit_event_false_turns_the_details_event_off(tiny_llama, tiny_tok, monkeypatch):
    env = {OPT_IN_ENV: LATEST, CONTENT_ENV: "SPAN_AND_EVENT", EMIT_EVENT_ENV: "false"}
    run = Run(tiny_llama, tiny_tok, monkeypatch, env)
    assert run.genai_events() == []
    assert run.span_content() == {names.INPUT_MESSAGES: INPUT, names.OUTPUT_MESSAGES: OUTPUT}
    run.assert_events_route(True)  # the switch is the details event's only: our own records keep the mode


def test_keywords_read_like_the_variables(tiny_llama, tiny_tok, monkeypatch):
    """``capture_content`` and ``semconv_opt_in`` as keywords mean what the variables mean."""
    run = Run(tiny_llama, tiny_tok, monkeypatch, {}, capture_content="SPAN_ONLY", semconv_opt_in=LATEST)
    assert run.span_content() == {names.INPUT_MESSAGES: INPUT, names.OUTPUT_MESSAGES: OUTPUT}
    run = Run(tiny_llama, tiny_tok, monkeypatch, {}, capture_content=True)
    assert run.span_content() == {} and [e[0] for e in run.genai_events()] == ["gen_ai.user.message", "gen_ai.choice"]


def test_response_id_is_the_report_id(tiny_llama, tiny_tok, monkeypatch):
    run = Run(tiny_llama, tiny_tok, monkeypatch, {})
    assert run.span.attributes[names.RESPONSE_ID] == run.report.report_id
    assert len(run.report.report_id) == 32 and int(run.report.report_id, 16) >= 0


def test_a_template_without_a_system_prompt_gives_no_system_instructions(tiny_tok):
    assert template_system_prompt(tiny_tok, [{"role": "user", "content": PROMPT}]) is None


# -- system instructions: the chat template's own system prompt (the real SmolLM2) --------------------------------

SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def smollm2_run(smollm2, monkeypatch, messages: list[dict[str, str]]):
    tokenizer, model = smollm2
    monkeypatch.setenv(OPT_IN_ENV, LATEST)
    monkeypatch.setenv(CONTENT_ENV, "SPAN_AND_EVENT")
    with TelemetryCapture(capture="summary") as capture:
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        model.generate(**inputs, max_new_tokens=4, do_sample=False)
    (span,) = capture.spans()
    (event,) = [log.log_record for log in capture.logs() if log.log_record.event_name == names.EVENT_OPERATION_DETAILS]
    return span, plain(dict(event.attributes)), capture.reports[0]


@pytest.mark.slow
def test_system_instructions_are_the_templates_own_system_prompt(smollm2, monkeypatch):
    tokenizer, _ = smollm2
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert SMOLLM2_SYSTEM in rendered  # the template writes it: the user gave no system message
    span, event, report = smollm2_run(smollm2, monkeypatch, [{"role": "user", "content": "Hi"}])
    system = [{"type": "text", "content": SMOLLM2_SYSTEM}]
    assert json.loads(span.attributes[names.SYSTEM_INSTRUCTIONS]) == system
    assert event[names.SYSTEM_INSTRUCTIONS] == system
    assert report.system_instructions == system
    user = [{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]
    assert json.loads(span.attributes[names.INPUT_MESSAGES]) == event[names.INPUT_MESSAGES] == user


@pytest.mark.slow
def test_a_system_message_of_the_conversation_stays_in_the_input_messages(smollm2, monkeypatch):
    messages = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"}]
    span, event, report = smollm2_run(smollm2, monkeypatch, messages)
    assert names.SYSTEM_INSTRUCTIONS not in span.attributes and names.SYSTEM_INSTRUCTIONS not in event
    assert report.system_instructions is None
    assert json.loads(span.attributes[names.INPUT_MESSAGES]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Answer in French."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Hi"}]},
    ]


@pytest.mark.slow
def test_system_instructions_leave_only_with_content_on(smollm2, monkeypatch):
    tokenizer, model = smollm2
    monkeypatch.setenv(OPT_IN_ENV, LATEST)
    monkeypatch.setenv(EMIT_EVENT_ENV, "true")
    monkeypatch.delenv(CONTENT_ENV, raising=False)
    with TelemetryCapture(capture="summary", report_log=True) as capture:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        model.generate(**inputs, max_new_tokens=4, do_sample=False)
    exported = capture.spans()[0].to_json() + "".join(log.to_json() for log in capture.logs())
    assert "trained by Hugging Face" not in exported and capture.reports[0].system_instructions is None


# -- the switches' parsing, and the events route's copy ------------------------------------------------------------


def test_opt_in_is_one_item_of_a_comma_separated_list():
    from opentelemetry_instrumentation_corevital._content_switch import parse_opt_in

    assert parse_opt_in(f"http/dup, {LATEST} ", OPT_IN_ENV) is True
    assert parse_opt_in("gen_ai", OPT_IN_ENV) is False
    assert parse_opt_in(f"{LATEST}_v2", OPT_IN_ENV) is False


def test_an_unknown_switch_value_is_refused_at_instrument(monkeypatch):
    from opentelemetry_instrumentation_corevital import ConfigurationError

    monkeypatch.setenv(CONTENT_ENV, "SPAN")
    with pytest.raises(ConfigurationError) as info:
        TelemetryCapture().__enter__()
    assert str(info.value) == (
        f"{CONTENT_ENV}='SPAN' is not a content-capture mode; "
        "use one of true, false, NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT."
    )


def test_the_events_route_copy_drops_the_system_instructions():
    from opentelemetry_instrumentation_corevital.report import ContentPolicy

    from .test_report_handoff import build

    report = build()
    report.system_instructions = [{"type": "text", "content": SMOLLM2_SYSTEM}]
    plain_copy = ContentPolicy(span=True, events=False).for_events(report)
    assert plain_copy.system_instructions is None and SMOLLM2_SYSTEM not in plain_copy.to_json()
    assert report.system_instructions is not None  # the span's report keeps them


@pytest.mark.parametrize("mode", ["NO_CONTENT", "SPAN_AND_EVENT"])
def test_a_failed_generation_has_its_details_event_with_the_error(mode, tiny_llama, monkeypatch):
    """As contrib: the operation-details event of a call that raised carries error.type (and no content)."""
    for key, value in {OPT_IN_ENV: LATEST, CONTENT_ENV: mode, EMIT_EVENT_ENV: "true"}.items():
        monkeypatch.setenv(key, value)
    with TelemetryCapture() as capture:
        with pytest.raises(IndexError):
            tiny_llama.generate(torch.tensor([[5, 10_000]]), max_new_tokens=2, do_sample=False)  # id past the vocab
    (span,) = capture.spans()
    (record,) = [log.log_record for log in capture.logs()]
    assert (record.event_name, plain(dict(record.attributes))) == (
        names.EVENT_OPERATION_DETAILS,
        {
            names.OPERATION_NAME: "text_completion",
            names.PROVIDER_NAME: names.PROVIDER,
            names.REQUEST_MODEL: "llama",
            names.RESPONSE_MODEL: "llama",
            names.ERROR_TYPE: "IndexError",
        },
    )
    assert (record.trace_id, record.span_id) == (span.context.trace_id, span.context.span_id)
    assert span.attributes[names.ERROR_TYPE] == "IndexError"
