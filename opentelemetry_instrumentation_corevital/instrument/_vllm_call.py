"""One vLLM request, finished in the engine: its GenAI span (back-dated to its arrival) and its report.

The lifecycle is :class:`ReportingCall`'s; what differs is that the whole call
happens after the fact: the engine freed the request, its capture is complete,
and the span is started at the request's arrival time with the trace context
the frontend put in the marker, then ended now. Token counts are the engine's
own (prompt and output ids); the step times are the engine's (when each
step's logits were ready), so TTFT and TPOT are measured where the model runs.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from .. import names
from ..capture import VLLMRequestCapture
from ..emit import span_name
from ..report import ContentInput, GenerationRequest, ModelInfo, Report, RequestInfo, Usage, build_report
from ._call import ReportingCall, Telemetry
from ._describe import checkpoint_name


@dataclass
class EngineFacts:
    """What the engine knows of a finished request besides the capture."""

    finish_reason: str | None = None  # vLLM's: stop, length, abort, error, repetition
    request_id: str | None = None


def engine_facts(request: Any) -> EngineFacts:
    """The finish reason and id of the scheduler's request."""
    reason = None
    try:
        found = request.get_finished_reason()
        reason = str(found).rsplit(".", 1)[-1].lower() if found is not None else None
    except Exception:
        pass
    return EngineFacts(finish_reason=reason, request_id=getattr(request, "request_id", None))


def model_info(config: Any, override: str | None = None) -> ModelInfo:
    """The report's model section from a ``VllmConfig``: named by ``override``, else by the served name (vLLM's
    default is the model path: a local folder is then named as a transformers load of it is, never by its path)."""
    model_config = getattr(config, "model_config", None)
    hf = getattr(model_config, "hf_config", None)
    served = getattr(model_config, "served_model_name", None)
    if isinstance(served, (list, tuple)):
        served = served[0] if served else None
    name = override or checkpoint_name(str(served or getattr(model_config, "model", None) or "unknown"))
    architectures = getattr(hf, "architectures", None) or [None]
    device = getattr(getattr(config, "device_config", None), "device_type", None)
    return ModelInfo(
        name=name,
        model_type=getattr(hf, "model_type", None),
        architecture=architectures[0],
        num_layers=getattr(hf, "num_hidden_layers", None),
        hidden_size=getattr(hf, "hidden_size", None),
        num_attention_heads=getattr(hf, "num_attention_heads", None),
        num_key_value_heads=getattr(hf, "num_key_value_heads", None),
        vocab_size=getattr(hf, "vocab_size", None),
        dtype=str(getattr(model_config, "dtype", "")).replace("torch.", "") or None,
        device=str(device) if device else None,
    )


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


class VLLMCall(ReportingCall):
    """The span and report of one request the vLLM engine finished."""

    provider = names.PROVIDER_VLLM

    def __init__(self, telemetry: Telemetry, found: VLLMRequestCapture, facts: EngineFacts) -> None:
        self.telemetry = telemetry
        self.options = telemetry.options
        self.found = found
        self.facts = facts
        self.marker = found.marker
        self.operation = str(self.marker.get("operation") or names.OP_TEXT_COMPLETION)
        self.model_info = model_info(found.config, self.options.model_name)
        self.watchers = ()
        self.request_context = {}
        arrival = self.marker.get("arrival")
        self.arrival = float(arrival) if isinstance(arrival, (int, float)) else time.time()
        self.start = time.perf_counter() - max(0.0, time.time() - self.arrival)
        self.source = _Done(found)
        self.span: trace.Span = trace.INVALID_SPAN
        self.span_context = trace.set_span_in_context(self.span)
        self.report: Report | None = None

    def emit(self) -> Report | None:
        """Start the span at the arrival time, then build, emit and end it. Never raises."""
        carrier = {k: str(self.marker[k]) for k in ("traceparent", "tracestate") if k in self.marker}
        parent = propagate.extract(carrier) if carrier else None
        try:
            self.span = self.telemetry.tracer.start_span(
                span_name(self.operation, self.model_info.name),
                context=parent,
                kind=SpanKind.SERVER if self.marker.get("server") else SpanKind.INTERNAL,
                attributes={
                    names.OPERATION_NAME: self.operation,
                    names.PROVIDER_NAME: self.provider,
                    names.REQUEST_MODEL: self.model_info.name,
                },
                start_time=int(self.arrival * 1e9),
            )
        except Exception as exc:
            self._lost("span_start", exc, "could not start a span, the request is not traced")
        self.span_context = trace.set_span_in_context(self.span)
        self.report = self.succeed(None)
        return self.report

    def _report(self, result: Any) -> Report:
        found, params = self.found, self.found.params
        temperature = getattr(params, "temperature", None)
        top_k = getattr(params, "top_k", None)
        stop = getattr(params, "stop", None)
        request_info = RequestInfo(
            operation=self.operation,
            generation_mode="greedy_search" if not temperature else "sample",
            do_sample=bool(temperature),
            max_new_tokens=getattr(params, "max_tokens", None),
            temperature=temperature,
            top_p=getattr(params, "top_p", None),
            top_k=top_k if isinstance(top_k, int) and top_k > 0 else None,
            num_return_sequences=1,
            repetition_penalty=getattr(params, "repetition_penalty", None),
            min_new_tokens=getattr(params, "min_tokens", None) or None,
            seed=getattr(params, "seed", None),
            stop_strings=[stop] if isinstance(stop, str) else list(stop or []),
        )
        span = self.span.get_span_context()
        request = GenerationRequest(
            params=request_info,
            capture_mode=str(self.marker.get("capture") or self.options.capture.value),
            duration_s=max(0.0, time.time() - self.arrival),
            input_lengths=[len(found.prompt_ids)],
            trace_id=f"{span.trace_id:032x}" if span.is_valid else None,
            span_id=f"{span.span_id:016x}" if span.is_valid else None,
        )
        content = self._content() if self.content.captured else None
        report = build_report(found.result, self.model_info, request, self.profile, content)
        for seq in report.sequences:  # a stop_on stop stays "intervention"; otherwise the engine's reason
            if seq.intervention is None:
                seq.finish_reason = self.facts.finish_reason or seq.finish_reason
        report.usage = Usage(len(found.prompt_ids), len(found.output_ids))
        self.response_id = self.facts.request_id
        return report

    def _content(self) -> ContentInput | None:
        """Decoding with the model's tokenizer (loaded once per process, from the engine's own config)."""
        path = getattr(getattr(self.found.config, "model_config", None), "tokenizer", None)
        if not path:
            return None
        tokenizer = _tokenizer(str(path))
        text = tokenizer.decode(self.found.prompt_ids)
        return ContentInput(
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
            input_texts=[text],
            input_messages=[{"role": "user", "parts": [{"type": "text", "content": text}]}],
            quote_tokens=self.content.quoted_tokens,
        )


class _Done:
    """The capture source of a request already finished in the engine: nothing to start, stop or tap."""

    attached = True
    generation_mode: str | None = None
    generation_config = None

    def __init__(self, found: VLLMRequestCapture) -> None:
        self.found = found

    def start(self) -> None:
        """Nothing to tap."""

    def stop(self) -> None:
        """Nothing to untap."""

    def finish(self, sequences: Any = None, num_return_sequences: int = 1) -> Any:
        """The engine's capture, already on the host."""
        return self.found.result
