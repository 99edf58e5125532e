"""CoreVital beside the official ``opentelemetry-instrumentation-openai-v2``: one span per chat request, enriched.

Both instrumentations on, in either order, against the real ``vllm serve`` of the session (``vllm_url``). openai-v2
wraps only ``chat.completions.create``: a chat request gets its CLIENT span with CoreVital's attributes on it, a
text completion gets CoreVital's own span.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

import openai
import pytest
from openai.resources import chat, completions
from opentelemetry.instrumentation._semconv import (
    _OpenTelemetrySemanticConventionStability,
    _OpenTelemetryStabilitySignalType,
    _StabilityMode,
)
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.trace import SpanKind, StatusCode

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, names
from opentelemetry_instrumentation_corevital.instrument._openai_call import ABANDONED
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

MODEL_KW = {"temperature": 0, "max_tokens": 8, "logprobs": True, "top_logprobs": 3}
MESSAGES = [{"role": "user", "content": "Name three colours."}]
OPENAI_V2_SCOPE = "opentelemetry.instrumentation.openai_v2"
GENAI_HANDLER_SCOPE = "opentelemetry.util.genai.handler"
ORDERS = ["openai-v2 last", "corevital last"]
METHODS = [
    (chat.Completions, "create"),
    (chat.AsyncCompletions, "create"),
    (completions.Completions, "create"),
    (completions.AsyncCompletions, "create"),
]


@contextlib.contextmanager
def both_on(order: str):
    """Both instrumentations on the same providers, instrumented in ``order``; taken off in the reverse order."""
    capture = TelemetryCapture(capture="summary", report_log=True)
    providers = {
        "tracer_provider": capture.tracer_provider,
        "meter_provider": capture.meter_provider,
        "logger_provider": capture.logger_provider,
    }
    if order == "openai-v2 last":
        capture.__enter__()
        OpenAIInstrumentor().instrument(**providers)
    else:
        OpenAIInstrumentor().instrument(**providers)
        capture.__enter__()
    try:
        yield capture
    finally:
        if order == "openai-v2 last":
            OpenAIInstrumentor().uninstrument()
            capture.__exit__()
        else:
            capture.__exit__()
            OpenAIInstrumentor().uninstrument()


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("reverse_off", [True, False])
def test_both_off_restores_the_openai_methods(order, reverse_off):
    originals = [owner.__dict__[name] for owner, name in METHODS]
    first, second = (OpenAIInstrumentor(), CoreVitalInstrumentor())
    if order == "corevital last":
        first, second = second, first
    first.instrument()
    second.instrument()
    outer = chat.Completions.__dict__["create"]
    assert outer.__wrapped__.__wrapped__ is originals[0]  # two layers on the chat methods
    assert completions.Completions.__dict__["create"].__wrapped__ is originals[2]  # ours alone
    for instrumentor in (second, first) if reverse_off else (first, second):
        instrumentor.uninstrument()
    assert [owner.__dict__[name] for owner, name in METHODS] == originals


@pytest.fixture(scope="module")
def served(vllm_url):
    """(base URL, the model name the server serves)."""
    return vllm_url, openai.OpenAI(base_url=vllm_url, api_key="none").models.list().data[0].id


def _expect_enriched(span, report, parent, model, scope=OPENAI_V2_SCOPE):
    """``span`` is openai-v2's chat span for the request, a child of ``parent``, carrying CoreVital's report."""
    assert span.instrumentation_scope.name == scope
    assert span.name == f"chat {model}"
    assert span.kind is SpanKind.CLIENT
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.attributes[names.RISK_SCORE] == report.summary.risk_score
    assert report.summary.risk_score is not None
    assert span.attributes[names.CAPTURE_MODE] == "summary"
    if scope == OPENAI_V2_SCOPE:
        assert span.attributes["gen_ai.system"] == "openai"  # openai-v2's own attribute (semconv 1.30)
    assert report.trace_id == f"{span.context.trace_id:032x}"
    assert report.span_id == f"{span.context.span_id:016x}"
    assert "logits" in report.capture.signals
    assert report.capture.top_k == 3


@pytest.mark.slow
@pytest.mark.parametrize("order", ORDERS)
def test_chat_enriches_the_openai_v2_span_completion_keeps_ours(served, order):
    url, model = served
    with both_on(order) as telemetry:
        tracer = telemetry.tracer_provider.get_tracer("test")
        client = openai.OpenAI(base_url=url, api_key="none")
        with tracer.start_as_current_span("request") as parent:
            whole = client.chat.completions.create(model=model, messages=MESSAGES, **MODEL_KW)
        (span, request_span) = telemetry.spans()
        (report,) = telemetry.reports
        assert request_span.name == "request"
        _expect_enriched(span, report, parent, model)
        assert report.sequences[0].output_tokens == whole.usage.completion_tokens
        (log,) = [r.log_record for r in telemetry.logs() if r.log_record.event_name == "corevital.generation.report"]
        assert (log.trace_id, log.span_id) == (span.context.trace_id, span.context.span_id)
        assert span.attributes[names.USAGE_OUTPUT_TOKENS] == whole.usage.completion_tokens

        with tracer.start_as_current_span("request") as parent:
            stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **MODEL_KW)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == whole.choices[0].message.content
        span, request_span = telemetry.spans()[2:]
        stream_report = telemetry.reports[1]
        _expect_enriched(span, stream_report, parent, model)
        assert stream_report.sequences[0].timeline.surprisal == report.sequences[0].timeline.surprisal
        assert len(stream_report.timings.step_end_s) == whole.usage.completion_tokens

        async def run():
            aclient = openai.AsyncOpenAI(base_url=url, api_key="none")
            with tracer.start_as_current_span("request") as parent:
                await aclient.chat.completions.create(model=model, messages=MESSAGES, **MODEL_KW)
            return parent

        parent = asyncio.run(run())
        span, request_span = telemetry.spans()[4:]
        _expect_enriched(span, telemetry.reports[2], parent, model)

        with tracer.start_as_current_span("request") as parent:
            client.completions.create(model=model, prompt="The capital of France is", temperature=0, max_tokens=8)
        span, request_span = telemetry.spans()[6:]
        assert span.instrumentation_scope.name == "opentelemetry_instrumentation_corevital"
        assert span.name == f"text_completion {model}"
        assert span.kind is SpanKind.CLIENT
        assert span.parent.span_id == parent.get_span_context().span_id
        assert names.CAPTURE_MODE in span.attributes
        assert len(telemetry.spans()) == 8
        assert len(telemetry.reports) == 4
        metrics = telemetry.metrics()
        assert names.METRIC_RISK_SCORE in metrics  # ours, recorded as without openai-v2
        assert "gen_ai.client.operation.duration" in metrics  # theirs and ours share the GenAI metric


@pytest.mark.slow
@pytest.mark.parametrize("order", ORDERS)
def test_abandoned_stream_reports_but_openai_v2_never_ends_its_span(served, order):
    url, model = served
    with both_on(order) as telemetry:
        client = openai.OpenAI(base_url=url, api_key="none")
        stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **MODEL_KW)
        next(stream)
        next(stream)
        del stream
        gc.collect()
        (report,) = telemetry.reports
        assert report.capture.unavailable["stream"] == ABANDONED
        assert telemetry.spans() == []  # openai-v2 2.4b0 ends its span only when its stream ends or is closed


@pytest.mark.slow
@pytest.mark.parametrize("order", ORDERS)
def test_failed_request_and_stream_left_inside_with(served, order):
    url, model = served
    with both_on(order) as telemetry:
        client = openai.OpenAI(base_url=url, api_key="none")
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=MESSAGES, **MODEL_KW)
        (span,) = telemetry.spans()
        assert span.instrumentation_scope.name == OPENAI_V2_SCOPE
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "NotFoundError"  # openai-v2, the outer wrapper, writes last
        assert [e.name for e in span.events] == ["exception"]  # recorded by CoreVital
        assert telemetry.reports == []

        # openai-v2's __exit__ ends its span without closing the stream it wraps: CoreVital's call is still open
        # then, and reports when the stream is collected, without the span.
        with client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **MODEL_KW) as stream:
            next(stream)
        span = telemetry.spans()[1]
        assert span.instrumentation_scope.name == OPENAI_V2_SCOPE
        assert names.RISK_SCORE not in span.attributes
        assert telemetry.reports == []
        del stream
        gc.collect()
        (report,) = telemetry.reports
        assert report.capture.unavailable["stream"] == ABANDONED
        assert report.span_id == f"{span.context.span_id:016x}"
        assert len(telemetry.spans()) == 2

        stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **MODEL_KW)
        for _ in range(3):
            next(stream)
        stream.close()  # openai-v2's close closes ours first: ours reports onto its span, then it ends the span
        span = telemetry.spans()[2]
        assert span.instrumentation_scope.name == OPENAI_V2_SCOPE
        assert telemetry.reports[1].summary.risk_score is not None
        assert span.attributes[names.RISK_SCORE] == telemetry.reports[1].summary.risk_score
        assert "stream" not in telemetry.reports[1].capture.unavailable
        assert len(telemetry.spans()) == 3


@pytest.fixture
def latest_semconv(monkeypatch):
    """openai-v2 on its latest-experimental path, where ``opentelemetry-util-genai``'s handler makes the span.

    (``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``, read once per process: set for this test only.)
    """
    stability = _OpenTelemetrySemanticConventionStability
    stability._initialize()
    mapping = stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING
    latest = _StabilityMode.GEN_AI_LATEST_EXPERIMENTAL
    monkeypatch.setitem(mapping, _OpenTelemetryStabilitySignalType.GEN_AI, latest)


@pytest.mark.slow
@pytest.mark.parametrize("order", ORDERS)
def test_latest_semconv_path_is_enriched_too(served, order, latest_semconv):
    url, model = served
    with both_on(order) as telemetry:
        tracer = telemetry.tracer_provider.get_tracer("test")
        client = openai.OpenAI(base_url=url, api_key="none")
        with tracer.start_as_current_span("request") as parent:
            client.chat.completions.create(model=model, messages=MESSAGES, **MODEL_KW)
        span, _ = telemetry.spans()
        _expect_enriched(span, telemetry.reports[0], parent, model, GENAI_HANDLER_SCOPE)
        with tracer.start_as_current_span("request") as parent:
            list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **MODEL_KW))
        span, _ = telemetry.spans()[2:]
        _expect_enriched(span, telemetry.reports[1], parent, model, GENAI_HANDLER_SCOPE)
        assert len(telemetry.spans()) == 4


@pytest.mark.slow
@pytest.mark.parametrize("order", ORDERS)
def test_content_events_come_once_from_openai_v2(served, order, monkeypatch):
    """Both read OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true the same way: on openai-v2's span the
    message and choice events are openai-v2's alone, never doubled by ours; the report still carries the text."""
    url, model = served
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    with both_on(order) as telemetry:
        response = openai.OpenAI(base_url=url, api_key="none").chat.completions.create(
            model=model, messages=MESSAGES, **MODEL_KW
        )
    (span,) = telemetry.spans()
    genai = [r.log_record.event_name for r in telemetry.logs() if (r.log_record.event_name or "").startswith("gen_ai.")]
    assert genai == ["gen_ai.user.message", "gen_ai.choice"]
    assert span.attributes[names.RESPONSE_ID] == response.id
    assert telemetry.reports[0].sequences[0].output_text == response.choices[0].message.content
