"""One ``openai`` client request (chat or completion, streamed or not): a GenAI CLIENT span and its report.

The lifecycle is :class:`ReportingCall`'s (span, ``fail``/``succeed``, emit at
the capture mode's detail); what differs is the source (the response's
log-probabilities, :class:`capture.LogprobsSource`) and the request
description, read from the client's keyword arguments and the response.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import Token
from typing import Any, cast

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from .. import names
from ..capture import LogprobsSource
from ..report import ContentInput, GenerationRequest, ModelInfo, Report, RequestInfo, Usage, build_report
from ._call import ReportingCall, Telemetry, warn_once
from ._content import genai_messages


def server_of(resource: Any) -> tuple[str | None, int | None]:
    """(host, port) of the client's base URL; the scheme's default port when the URL names none."""
    url = getattr(getattr(resource, "_client", None), "base_url", None)
    if url is None:
        return None, None
    port = url.port or {"https": 443, "http": 80}.get(url.scheme)
    return url.host or None, port


#: The instrumentation scopes of ``opentelemetry-instrumentation-openai-v2``'s spans: its own tracer, and
#: ``opentelemetry-util-genai``'s handler (used with ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``).
OPENAI_V2_SCOPES = ("opentelemetry.instrumentation.openai_v2", "opentelemetry.util.genai.handler")
#: Why a stream's report is cut short when the stream was dropped unfinished.
ABANDONED = (
    "the stream was dropped before its end (neither exhausted nor closed): the report covers the chunks that "
    "arrived and was made when the stream was garbage-collected"
)
#: Why a streamed response's input token count is 0.
NO_STREAM_USAGE = (
    "the stream carried no usage: usage.input_tokens is 0, not measured; ask for it with "
    'stream_options={"include_usage": True}'
)


class LentSpan(wrapt.ObjectProxy):
    """openai-v2's span for this request, lent to our call: we add attributes and events, it names and ends it."""

    def end(self, end_time: int | None = None) -> None:
        """Not ours to end: openai-v2 ends it when its wrapper (or its stream) is done."""

    def update_name(self, name: str) -> None:
        """The name stays openai-v2's."""


def openai_v2_span() -> trace.Span | None:
    """The current span when it is openai-v2's open CLIENT span (we run inside its wrapper), else None."""
    span = trace.get_current_span()
    scope = getattr(span, "instrumentation_scope", None)
    if span.is_recording() and getattr(span, "kind", None) is SpanKind.CLIENT:
        if getattr(scope, "name", None) in OPENAI_V2_SCOPES:
            return span
    return None


def add_logprobs(kwargs: dict[str, Any], chat: bool, top_k: int) -> dict[str, Any]:
    """``kwargs`` asking for ``top_k`` log-probabilities when it asks for none (``top_k`` 0: unchanged)."""
    if top_k <= 0:
        return kwargs
    if chat and not kwargs.get("logprobs"):
        return {**kwargs, "logprobs": True, "top_logprobs": top_k}
    if not chat and kwargs.get("logprobs") is None:
        return {**kwargs, "logprobs": top_k}
    return kwargs


class OpenAICall(ReportingCall):
    """One request of an OpenAI-compatible client; fed with the response or its chunks."""

    provider = names.PROVIDER_OPENAI
    source: LogprobsSource

    def __init__(
        self, telemetry: Telemetry, resource: Any, kwargs: dict[str, Any], chat: bool, in_openai_v2: bool = False
    ) -> None:
        self.telemetry = telemetry
        self.options = telemetry.options
        self.start = time.perf_counter()
        self.watchers = ()
        self.request_context = {}
        self.kwargs = kwargs
        self.chat = chat
        self.operation = names.OP_CHAT if chat else names.OP_TEXT_COMPLETION
        self.stream = bool(kwargs.get("stream"))
        self.model_info = ModelInfo(name=str(kwargs.get("model") or "unknown"))
        self.server = server_of(resource)
        self.source = LogprobsSource(streaming=self.stream)
        self.span: trace.Span = trace.INVALID_SPAN
        self.in_openai_v2 = in_openai_v2  # openai-v2 wraps this method too: its span for the request is current
        self.lent = False  # the span is openai-v2's, not ours
        self.abandoned = False
        self.span_context = otel_context.get_current()
        self.report: Report | None = None
        self.texts: dict[int, list[str]] = {}
        self.finish_reasons: dict[int, str] = {}
        self.usage: Any = None
        self.response_model: str | None = None
        self._result: Any = None
        self._token: Token[otel_context.Context] | None = None

    def open(self) -> None:
        """Start the CLIENT span (not made current: a stream outlives this frame), or borrow openai-v2's."""
        theirs = openai_v2_span() if self.in_openai_v2 else None
        if theirs is not None:
            self.span, self.lent = cast(trace.Span, LentSpan(theirs)), True  # the proxy acts as the span
            self.span_context = trace.set_span_in_context(self.span)
            self.source.start()
            return
        attributes: dict[str, Any] = {
            names.OPERATION_NAME: self.operation,
            names.PROVIDER_NAME: self.provider,
            names.REQUEST_MODEL: self.model_info.name,
        }
        host, port = self.server
        if host:
            attributes[names.SERVER_ADDRESS] = host
        if port:
            attributes[names.SERVER_PORT] = port
        try:
            self.span = self.telemetry.tracer.start_span(
                f"{self.operation} {self.model_info.name}", kind=SpanKind.CLIENT, attributes=attributes
            )
        except Exception as exc:
            self._lost("span_start", exc, "could not start a span, the request is not traced")
        self.span_context = trace.set_span_in_context(self.span)
        self.source.start()

    def with_trace_headers(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` whose ``extra_headers`` carry this call's trace context (W3C ``traceparent``), so that the
        server's own span joins the trace; a header the caller set wins."""
        carrier: dict[str, str] = {}
        try:
            propagate.inject(carrier, context=self.span_context)
        except Exception:
            return kwargs
        if not carrier:
            return kwargs
        headers = dict(kwargs.get("extra_headers") or {})
        present = {key.lower() for key in headers}
        headers.update({key: value for key, value in carrier.items() if key.lower() not in present})
        return {**kwargs, "extra_headers": headers}

    def __enter__(self) -> OpenAICall:
        self.open()
        self._token = otel_context.attach(self.span_context)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
        self.close(exc)

    def close(self, exc: BaseException | None) -> None:
        """The response is complete (or failed): emit the report, end the span. Never raises."""
        self.source.stop()
        if self.lent and not self.span.is_recording():  # openai-v2 ended its span first: report without it
            self.span = trace.NonRecordingSpan(self.span.get_span_context())
        if exc is not None:
            self.fail(exc)
        else:
            self.report = self.succeed(self._result)

    def abandon(self) -> None:
        """The stream was garbage-collected unfinished: report what arrived, saying so, and end our span."""
        self.abandoned = True
        self.close(None)

    def returned(self, result: Any) -> Any:
        """Read a complete (not streamed) response; returns it unchanged."""
        self._result = result
        self.feed(result)
        return result

    def feed(self, response: Any) -> None:
        """Take the tokens, log-probabilities, texts, finish reasons and usage of a response or a stream chunk."""
        try:
            self.response_model = getattr(response, "model", None) or self.response_model
            self.response_id = getattr(response, "id", None) or self.response_id
            self.usage = getattr(response, "usage", None) or self.usage
            for choice in getattr(response, "choices", None) or ():
                self._choice(choice)
        except Exception as exc:  # an unexpected response shape costs the signals only
            warn_once("openai-feed", "CoreVital could not read an openai response: %r", exc)

    def _choice(self, choice: Any) -> None:
        row = int(getattr(choice, "index", 0) or 0)
        self.source.choice(row)
        if getattr(choice, "finish_reason", None):
            self.finish_reasons[row] = str(choice.finish_reason)
        if self.chat:
            message = getattr(choice, "message", None) or getattr(choice, "delta", None)
            text = getattr(message, "content", None)
        else:
            text = getattr(choice, "text", None)
        if text:
            self.texts.setdefault(row, []).append(text)
        logprobs = getattr(choice, "logprobs", None)
        if logprobs is None:
            return
        if self.chat:
            for item in getattr(logprobs, "content", None) or ():
                top = [t.logprob for t in item.top_logprobs or ()]
                self.source.add(row, item.token, item.logprob, top)
            return
        tokens = logprobs.tokens or []
        chosen = logprobs.token_logprobs or []
        tops = logprobs.top_logprobs or []
        for i, token in enumerate(tokens):
            top = tops[i] if i < len(tops) and isinstance(tops[i], Mapping) else {}
            self.source.add(row, token, chosen[i] if i < len(chosen) else None, list(top.values()))

    # -- the report ------------------------------------------------------------------
    def _report(self, result: Any) -> Report:
        kwargs = self.kwargs
        capture = self.source.finish()
        temperature = kwargs.get("temperature")
        params = RequestInfo(
            operation=self.operation,
            generation_mode=None if temperature is None else ("greedy_search" if temperature == 0 else "sample"),
            do_sample=bool(temperature),
            max_new_tokens=kwargs.get("max_completion_tokens") or kwargs.get("max_tokens"),
            temperature=temperature,
            top_p=kwargs.get("top_p"),
            num_return_sequences=int(kwargs.get("n") or 1),
            seed=kwargs.get("seed"),
            stop_strings=[kwargs["stop"]] if isinstance(kwargs.get("stop"), str) else list(kwargs.get("stop") or []),
            stream=self.stream,
        )
        usage = self.usage
        span = self.span.get_span_context()
        request = GenerationRequest(
            params=params,
            capture_mode=self.options.capture.value,
            duration_s=time.perf_counter() - self.start,
            input_lengths=[int(usage.prompt_tokens)] if usage is not None else [],
            trace_id=f"{span.trace_id:032x}" if span.is_valid else None,
            span_id=f"{span.span_id:016x}" if span.is_valid else None,
        )
        content = None
        if self.content.captured:
            strings = self.source.token_strings()
            prompt = kwargs.get("prompt")
            content = ContentInput(
                decode=lambda ids: "".join(strings.get(i, "") for i in ids),
                input_texts=[prompt] if isinstance(prompt, str) else None,
                input_messages=genai_messages(kwargs.get("messages"))
                if self.chat
                else (
                    [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
                    if isinstance(prompt, str)
                    else None
                ),
                quote_tokens=self.content.quoted_tokens,
            )
        report = build_report(capture, self.model_info, request, self.profile, content)
        if capture.signals:
            report.capture.top_k = self.source.top_k  # the signals describe the server's top-k, not our top-10
        for seq in report.sequences:
            seq.finish_reason = self.finish_reasons.get(seq.index, seq.finish_reason)
            if content is not None:
                seq.token_ids = None  # ids of this call only, not the server's vocabulary
                seq.output_text = "".join(self.texts.get(seq.index, ())) or seq.output_text
        if usage is not None:
            report.usage = Usage(int(usage.prompt_tokens), int(usage.completion_tokens))
        elif self.stream:
            report.capture.unavailable["usage"] = NO_STREAM_USAGE
        if self.abandoned:
            report.capture.unavailable["stream"] = ABANDONED
        return report
