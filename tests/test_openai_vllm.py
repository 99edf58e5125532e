"""The ``openai`` client instrumented, against a real ``vllm serve`` (CPU build, SmolLM2-135M-Instruct).

One server for the whole session (the ``vllm_url`` fixture). Greedy decoding (temperature 0), so the
generations are deterministic and the same with and without instrumentation.
"""

from __future__ import annotations

import asyncio
import gc
import math
from urllib.parse import urlparse

import openai
import pytest
from opentelemetry.trace import SpanKind

from opentelemetry_instrumentation_corevital import names
from opentelemetry_instrumentation_corevital.capture._logprobs import NO_TOP_LOGPROBS
from opentelemetry_instrumentation_corevital.instrument._openai_call import ABANDONED, NO_STREAM_USAGE
from opentelemetry_instrumentation_corevital.signals.logits import truncated_stats
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

pytestmark = pytest.mark.slow

MODEL = "smollm2"
MESSAGES = [{"role": "user", "content": "Name three colours."}]
PROMPT = "The capital of France is"
GREEDY = {"temperature": 0, "max_tokens": 12}


@pytest.fixture(scope="module")
def served(vllm_url):
    """(base URL, the model name the server serves)."""
    client = openai.OpenAI(base_url=vllm_url, api_key="none")
    return vllm_url, client.models.list().data[0].id


def _client(url):
    return openai.OpenAI(base_url=url, api_key="none")


def _chat_steps(response):
    """(chosen logprob, top logprobs) per token of choice 0 of a chat response."""
    return [(t.logprob, [x.logprob for x in t.top_logprobs]) for t in response.choices[0].logprobs.content]


def _one(telemetry):
    (span,) = telemetry.spans()
    (report,) = telemetry.reports
    return span, report


def _expect_signals(report, steps):
    """The report's timeline equals what the returned log-probabilities give by hand."""
    timeline = report.sequences[0].timeline
    assert timeline.surprisal == [-lp / math.log(2) for lp, _ in steps]
    assert timeline.entropy == [truncated_stats(top)[0] for _, top in steps]
    assert timeline.topk_mass == [sum(math.exp(v) for v in top) for _, top in steps]
    assert report.summary.risk_score is not None


def test_chat_sync_with_logprobs_span_and_report(served):
    url, model = served
    with TelemetryCapture(capture="summary") as telemetry:
        response = _client(url).chat.completions.create(
            model=model, messages=MESSAGES, logprobs=True, top_logprobs=5, **GREEDY
        )
    span, report = _one(telemetry)
    steps = _chat_steps(response)
    assert span.kind is SpanKind.CLIENT
    attrs = span.attributes
    parsed = urlparse(url)
    assert attrs[names.SERVER_ADDRESS] == "127.0.0.1"
    assert attrs[names.SERVER_PORT] == parsed.port
    assert attrs[names.PROVIDER_NAME] == "openai"
    assert attrs[names.OPERATION_NAME] == "chat"
    assert attrs[names.REQUEST_MODEL] == model
    assert attrs[names.REQUEST_TEMPERATURE] == 0.0
    assert attrs[names.REQUEST_MAX_TOKENS] == 12
    assert attrs[names.USAGE_INPUT_TOKENS] == response.usage.prompt_tokens
    assert attrs[names.USAGE_OUTPUT_TOKENS] == response.usage.completion_tokens
    assert list(attrs[names.RESPONSE_FINISH_REASONS]) == [response.choices[0].finish_reason]
    assert attrs[names.RESPONSE_ID] == response.id  # the server's id, not the report's
    assert attrs[names.RISK_SCORE] == report.summary.risk_score
    _expect_signals(report, steps)
    assert report.sequences[0].output_tokens == len(steps) == response.usage.completion_tokens
    assert "logits" in report.capture.signals
    assert "top 5 log-probabilities" in report.capture.unavailable["full_distribution"]
    assert report.sequences[0].output_text is None  # content capture off
    assert not any("Name three" in str(v) for v in attrs.values())


def test_completion_sync_with_logprobs(served):
    url, model = served
    with TelemetryCapture(capture="summary") as telemetry:
        response = _client(url).completions.create(model=model, prompt=PROMPT, logprobs=3, **GREEDY)
    span, report = _one(telemetry)
    lp = response.choices[0].logprobs
    steps = [(c, list(top.values())) for c, top in zip(lp.token_logprobs, lp.top_logprobs)]
    assert span.attributes[names.OPERATION_NAME] == "text_completion"
    _expect_signals(report, steps)


def test_chat_stream_and_async(served):
    url, model = served
    plain = _client(url).chat.completions.create(
        model=model, messages=MESSAGES, logprobs=True, top_logprobs=5, **GREEDY
    )
    with TelemetryCapture(capture="summary") as telemetry:
        stream = _client(url).chat.completions.create(
            model=model, messages=MESSAGES, logprobs=True, top_logprobs=5, stream=True, **GREEDY
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    span, report = _one(telemetry)
    assert span.attributes[names.REQUEST_STREAM] is True
    _expect_signals(report, _chat_steps(plain))
    assert len(report.timings.step_end_s) == len(_chat_steps(plain))

    async def run():
        client = openai.AsyncOpenAI(base_url=url, api_key="none")
        whole = await client.chat.completions.create(
            model=model, messages=MESSAGES, logprobs=True, top_logprobs=5, **GREEDY
        )
        stream = await client.completions.create(model=model, prompt=PROMPT, logprobs=3, stream=True, **GREEDY)
        pieces = [c async for c in stream]
        return whole, pieces

    with TelemetryCapture(capture="summary") as telemetry:
        whole, pieces = asyncio.run(run())
    assert whole.choices[0].message.content == plain.choices[0].message.content
    chat_report, completion_report = telemetry.reports
    _expect_signals(chat_report, _chat_steps(whole))
    steps = [
        (c.choices[0].logprobs.token_logprobs[i], list(c.choices[0].logprobs.top_logprobs[i].values()))
        for c in pieces
        if c.choices and c.choices[0].logprobs
        for i in range(len(c.choices[0].logprobs.tokens))
    ]
    _expect_signals(completion_report, steps)
    assert [s.kind for s in telemetry.spans()] == [SpanKind.CLIENT, SpanKind.CLIENT]


def test_without_logprobs_signals_unavailable_and_option_adds_them(served):
    url, model = served
    plain = _client(url).chat.completions.create(model=model, messages=MESSAGES, **GREEDY)
    assert plain.choices[0].logprobs is None
    with TelemetryCapture(capture="summary") as telemetry:
        response = _client(url).chat.completions.create(model=model, messages=MESSAGES, **GREEDY)
    span, report = _one(telemetry)
    assert response.choices[0].logprobs is None  # the request is not changed
    assert "logits" not in report.capture.signals
    assert "no top log-probabilities" in report.capture.unavailable["logits"]
    assert any(v.startswith("logits: ") for v in span.attributes[names.CAPTURE_UNAVAILABLE])
    assert span.attributes[names.USAGE_OUTPUT_TOKENS] == response.usage.completion_tokens

    with TelemetryCapture(capture="summary", request_logprobs=4) as telemetry:
        added = _client(url).chat.completions.create(model=model, messages=MESSAGES, **GREEDY)
    _, report = _one(telemetry)
    assert len(added.choices[0].logprobs.content[0].top_logprobs) == 4
    assert added.choices[0].message.content == plain.choices[0].message.content
    _expect_signals(report, _chat_steps(added))


def test_generation_unchanged_and_content_only_when_on(served):
    url, model = served
    kwargs = dict(model=model, messages=MESSAGES, logprobs=True, top_logprobs=5, **GREEDY)
    plain = _client(url).chat.completions.create(**kwargs)
    with TelemetryCapture(capture="full", capture_content=True) as telemetry:
        traced = _client(url).chat.completions.create(**kwargs)
    assert traced.choices[0].message.content == plain.choices[0].message.content
    assert [t.token for t in traced.choices[0].logprobs.content] == [t.token for t in plain.choices[0].logprobs.content]
    _, report = _one(telemetry)
    assert report.sequences[0].output_text == plain.choices[0].message.content
    assert report.sequences[0].token_ids is None


def test_logprobs_without_top_logprobs_give_exact_surprisal_only(served):
    url, model = served
    with TelemetryCapture(capture="summary") as telemetry:
        response = _client(url).chat.completions.create(model=model, messages=MESSAGES, logprobs=True, **GREEDY)
    span, report = _one(telemetry)
    tokens = response.choices[0].logprobs.content
    assert all(t.top_logprobs == [] for t in tokens)
    timeline = report.sequences[0].timeline
    assert timeline.surprisal == [-t.logprob / math.log(2) for t in tokens]
    assert timeline.entropy == timeline.top1_prob == timeline.margin == timeline.topk_mass == [None] * len(tokens)
    assert report.capture.signals == ["logits", "tokens"]
    assert report.capture.unavailable["top_logprobs"] == NO_TOP_LOGPROBS
    assert "logits" not in report.capture.unavailable and "full_distribution" not in report.capture.unavailable
    assert report.capture.top_k == 0
    assert report.sequences[0].flags.nan_or_inf is False
    assert [f.name for f in report.sequences[0].risk.factors] == [
        "surprisal_mean",
        "ngram_repeat_rate",
        "repetition_share",
    ]
    assert span.attributes[names.RISK_SCORE] == report.summary.risk_score
    assert f"top_logprobs: {NO_TOP_LOGPROBS}" in span.attributes[names.CAPTURE_UNAVAILABLE]


def test_stream_usage_unknown_without_include_usage(served):
    url, model = served
    kwargs = dict(model=model, messages=MESSAGES, logprobs=True, top_logprobs=2, stream=True, **GREEDY)
    with TelemetryCapture(capture="summary") as telemetry:
        chunks = list(_client(url).chat.completions.create(**kwargs))
        counted = list(_client(url).chat.completions.create(stream_options={"include_usage": True}, **kwargs))
    bare, with_usage = telemetry.reports
    assert all(c.usage is None for c in chunks)
    assert bare.capture.unavailable["usage"] == NO_STREAM_USAGE
    assert bare.usage.input_tokens == 0  # the schema's integer; "usage" above says it was not measured
    assert "usage" not in with_usage.capture.unavailable
    assert with_usage.usage.input_tokens == counted[-1].usage.prompt_tokens > 0


def test_abandoned_stream_ends_its_span_when_collected(served):
    url, model = served
    kwargs = dict(model=model, messages=MESSAGES, logprobs=True, top_logprobs=2, stream=True, **GREEDY)
    with TelemetryCapture(capture="summary") as telemetry:
        stream = _client(url).chat.completions.create(**kwargs)
        first = [next(stream) for _ in range(3)]
        assert telemetry.spans() == []
        del stream
        gc.collect()
        (span,) = telemetry.spans()
        (report,) = telemetry.reports
        seen = sum(len(c.choices[0].logprobs.content) for c in first if c.choices and c.choices[0].logprobs)
        assert report.sequences[0].output_tokens == seen
        assert report.capture.unavailable["stream"] == ABANDONED
        assert f"stream: {ABANDONED}" in span.attributes[names.CAPTURE_UNAVAILABLE]
        assert span.attributes[names.RISK_SCORE] == report.summary.risk_score

        async def run():
            client = openai.AsyncOpenAI(base_url=url, api_key="none")
            stream = await client.chat.completions.create(**kwargs)
            await stream.__anext__()
            del stream
            gc.collect()

        asyncio.run(run())
        assert len(telemetry.spans()) == 2
        assert telemetry.reports[1].capture.unavailable["stream"] == ABANDONED

        finished = _client(url).chat.completions.create(**kwargs)
        list(finished)
        del finished
        gc.collect()
        assert len(telemetry.spans()) == 3  # an exhausted stream ends its span once, not again when collected
        assert "stream" not in telemetry.reports[2].capture.unavailable
