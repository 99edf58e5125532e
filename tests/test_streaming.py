"""Streaming: the span covers the whole generation, joins the request's trace, and TTFT is real."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
import torch
from transformers import AsyncTextIteratorStreamer, TextIteratorStreamer

from opentelemetry_instrumentation_corevital.testing import TelemetryCapture


@pytest.fixture
def context_errors(caplog):
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")
    yield caplog
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry.context")] == []


def spans_by_name(tc):
    return {s.name: s for s in tc.spans()}


def test_threaded_streamer_joins_the_request_trace(tiny_llama, tiny_tok, context_errors):
    with TelemetryCapture() as tc:
        tracer = tc.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("request") as request:
            inputs = tiny_tok("the sky is", return_tensors="pt")
            streamer = TextIteratorStreamer(tiny_tok, skip_prompt=True)
            worker = threading.Thread(
                target=tiny_llama.generate, kwargs=dict(**inputs, streamer=streamer, max_new_tokens=8, do_sample=False)
            )
            started = time.perf_counter()
            worker.start()
            chunks, first_chunk = [], None
            for chunk in streamer:
                if first_chunk is None:
                    first_chunk = time.perf_counter() - started
                chunks.append(chunk)
            worker.join()
    spans = spans_by_name(tc)
    assert set(spans) == {"request", "text_completion llama"}
    generation = spans["text_completion llama"]
    assert generation.parent.span_id == request.get_span_context().span_id
    assert generation.context.trace_id == request.get_span_context().trace_id
    assert generation.attributes["gen_ai.request.stream"] is True
    report = tc.reports[0]
    assert 0 < report.timings.time_to_first_token_s <= first_chunk
    assert report.timings.time_to_first_token_s < report.timings.duration_s
    assert generation.start_time >= request.start_time and generation.end_time <= request.end_time
    assert "".join(chunks).strip()


def test_async_consumer(tiny_llama, tiny_tok, context_errors):
    async def serve(tc):
        tracer = tc.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("request") as request:
            inputs = tiny_tok("hello", return_tensors="pt")
            streamer = AsyncTextIteratorStreamer(tiny_tok, skip_prompt=True)
            job = asyncio.create_task(
                asyncio.to_thread(tiny_llama.generate, **inputs, streamer=streamer, max_new_tokens=6, do_sample=False)
            )
            text = [chunk async for chunk in streamer]
            await job
        return request, text

    with TelemetryCapture() as tc:
        request, text = asyncio.run(serve(tc))
    generation = spans_by_name(tc)["text_completion llama"]
    assert generation.parent.span_id == request.get_span_context().span_id
    assert tc.reports[0].usage.output_tokens == 6
    assert text


def test_consumer_that_stops_reading_early(tiny_llama, tiny_tok, context_errors):
    with TelemetryCapture() as tc:
        inputs = tiny_tok("the sea is", return_tensors="pt")
        streamer = TextIteratorStreamer(tiny_tok, skip_prompt=True)
        worker = threading.Thread(
            target=tiny_llama.generate, kwargs=dict(**inputs, streamer=streamer, max_new_tokens=10, do_sample=False)
        )
        worker.start()
        next(iter(streamer))  # the client disconnects after one chunk; generation runs to its end
        worker.join(timeout=60)
    assert not worker.is_alive()
    (span,) = tc.spans()
    assert span.end_time is not None
    assert span.attributes["gen_ai.usage.output_tokens"] == 10
    assert span.parent is None  # no request span anywhere: a root span, not a wrong parent


def test_streamer_made_outside_any_span_keeps_the_worker_context(tiny_llama, tiny_tok, context_errors):
    """A worker that carries its own context (copy_context) wins over the streamer's."""
    import contextvars

    with TelemetryCapture() as tc:
        tracer = tc.tracer_provider.get_tracer("app")
        inputs = tiny_tok("the sky is", return_tensors="pt")
        streamer = TextIteratorStreamer(tiny_tok, skip_prompt=True)
        with tracer.start_as_current_span("job") as job:
            ctx = contextvars.copy_context()
        worker = threading.Thread(
            target=ctx.run,
            args=(tiny_llama.generate,),
            kwargs=dict(**inputs, streamer=streamer, max_new_tokens=4, do_sample=False),
        )
        worker.start()
        list(streamer)
        worker.join()
    generation = spans_by_name(tc)["text_completion llama"]
    assert generation.parent.span_id == job.get_span_context().span_id


def test_streaming_does_not_change_the_output(tiny_llama, tiny_tok):
    inputs = tiny_tok("the sky is", return_tensors="pt")
    plain = tiny_llama.generate(**inputs, max_new_tokens=8, do_sample=False)
    with TelemetryCapture():
        streamer = TextIteratorStreamer(tiny_tok, skip_prompt=True)
        result = {}
        worker = threading.Thread(
            target=lambda: result.update(
                out=tiny_llama.generate(**inputs, streamer=streamer, max_new_tokens=8, do_sample=False)
            )
        )
        worker.start()
        list(streamer)
        worker.join()
    assert torch.equal(plain, result["out"])
