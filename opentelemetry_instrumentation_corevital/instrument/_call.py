"""One instrumented ``generate`` call: span, capture session, report, emission.

Rules every method here keeps:

* the user's ``generate`` runs exactly as without us, and its result or
  exception comes back unchanged;
* anything that goes wrong on our side is logged (once per kind) and costs
  telemetry at worst;
* host reads happen only in :meth:`GenerationCall.succeed`, after the model
  returned, a fixed number of times whatever the number of steps.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._config import CaptureMode, Options
from .. import names
from ..capture import CapturePlan, TransformersSource
from ..emit import (
    Instruments,
    add_step_events,
    corevital_attributes,
    emit_step_logs,
    emit_report,
    genai_attributes,
    metric_attributes,
    span_name,
)
from ..report import BuildInput, PerfInfo, Report, build_report, trim_to_summary
from ..report._build import LayerData
from . import _describe
from ._context import ACTIVE_CALL, REQUEST_CONTEXT, WATCHERS
from ._prompts import PromptRecord, PromptRegistry

_logger = logging.getLogger(__name__)
_warned: set[str] = set()


def warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        _logger.warning(message, *args)


@dataclass
class Telemetry:
    """What the instrumentor sets up once and every call shares."""

    tracer: trace.Tracer
    instruments: Instruments
    logger: Any  # opentelemetry._logs.Logger
    options: Options
    prompts: PromptRegistry
    on_report: Any = None  # optional callable(Report), for the CLI and tests


def error_type(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _host_rows(value: Any) -> list[list[int]] | None:
    if not isinstance(value, torch.Tensor) or value.dtype.is_floating_point:
        return None
    rows = value.tolist()
    return rows if rows and isinstance(rows[0], list) else [rows]


def _genai_messages(messages: Any) -> list[dict[str, Any]] | None:
    """HF chat messages -> GenAI ``gen_ai.input.messages`` (role + text parts)."""
    if not isinstance(messages, (list, tuple)):
        return None
    converted = []
    for message in messages:
        if not isinstance(message, Mapping):
            return None
        content = message.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "content": content}]
        elif isinstance(content, (list, tuple)):
            parts = [
                {"type": "text", "content": str(p.get("text", ""))}
                for p in content
                if isinstance(p, Mapping) and p.get("type") == "text"
            ]
        else:
            parts = []
        converted.append({"role": str(message.get("role", "user")), "parts": parts})
    return converted


class GenerationCall:
    def __init__(self, telemetry: Telemetry, model: Any, args: tuple, kwargs: dict) -> None:
        self.telemetry = telemetry
        self.model = model
        self.start = time.perf_counter()
        self.watchers = WATCHERS.get()
        options = telemetry.options
        for watcher in self.watchers:  # a monitor's options win for the generations it watches
            options = dataclasses.replace(options, **watcher.overrides)
        self.options = options
        self.prompt = _describe.input_tensor(args, kwargs)
        self.device = _describe.call_device(model, self.prompt)
        self.model_name = _describe.model_name(model)
        self.attention_mask = kwargs.get("attention_mask")
        self.streaming = kwargs.get("streamer") is not None
        self.assistant_model = kwargs.get("assistant_model")
        self.tokenizer = kwargs.get("tokenizer")
        self.kwargs = kwargs
        self.request_context = REQUEST_CONTEXT.get() or {}
        layer_count = _describe.model_info(model, None).get("num_layers")
        plan = CapturePlan.for_mode(
            options.capture.value,
            layers=options.layers.resolve(int(layer_count)) if layer_count else options.layers.indices,
            step_stride=options.step_stride,
            cuda_graphs=options.cuda_graphs,
        )
        prompt_ids = self.prompt if isinstance(self.prompt, torch.Tensor) and not self.prompt.is_floating_point() else None
        self.session = TransformersSource(model, self.device, plan, prompt_ids=prompt_ids, prompt_mask=self.attention_mask)
        self.operation = names.OP_TEXT_COMPLETION
        attributes = {
            names.OPERATION_NAME: self.operation,
            names.PROVIDER_NAME: names.PROVIDER,
            names.REQUEST_MODEL: self.model_name,
        }
        self.span = telemetry.tracer.start_span(
            span_name(self.operation, self.model_name), kind=SpanKind.INTERNAL, attributes=attributes,
            context=self._parent_context(kwargs.get("streamer")),
        )
        self.span_context = trace.set_span_in_context(self.span)
        self._context_token: object | None = None
        self._active_token: contextvars.Token | None = None

    def profile(self) -> Any:
        """The model profile this call's report will be diagnosed with (the stop criterion needs its thresholds)."""
        from ..report._build import effective_profile

        options = self.options
        return effective_profile(_describe.model_info(self.model, None), options.profile, options.thresholds,
                                 options.high_entropy_bits)

    @staticmethod
    def _parent_context(streamer: Any) -> Any:
        """The current context; or, when it has no span and a streamer was made inside one, the streamer's.

        (Streaming runs ``generate`` in a worker thread that does not inherit the request's context.)
        """
        current = otel_context.get_current()
        if trace.get_current_span(current).get_span_context().is_valid:
            return current
        stored = getattr(streamer, "_corevital_context", None)
        if stored is not None and trace.get_current_span(stored).get_span_context().is_valid:
            return stored
        return current

    # -- context ---------------------------------------------------------------
    def enter(self) -> None:
        self._active_token = ACTIVE_CALL.set(self)
        self.session.start()
        self._context_token = otel_context.attach(self.span_context)

    def exit(self) -> None:
        if self._context_token is not None:
            otel_context.detach(self._context_token)
            self._context_token = None
        self.session.stop()
        if self._active_token is not None:
            ACTIVE_CALL.reset(self._active_token)
            self._active_token = None

    # -- outcomes --------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """The model raised: mark the span and the duration metric; the caller re-raises."""
        try:
            duration = time.perf_counter() - self.start
            self.session.finish(None)
            kind = error_type(exc)
            self.span.set_attribute(names.ERROR_TYPE, kind)
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            self.telemetry.instruments.record_failure(
                duration, metric_attributes(self.operation, self.model_name), kind
            )
        except Exception as ours:  # pragma: no cover - defensive
            warn_once("fail", "CoreVital could not record a failed generation: %s", ours)
        finally:
            self.span.end()

    def succeed(self, result: Any) -> Report | None:
        """Build the report and emit it. Never raises."""
        report = None
        try:
            report = self._report(result)
            self._emit(report)
        except Exception as exc:
            warn_once("succeed", "CoreVital could not report a generation (telemetry lost, output unaffected): %r", exc)
            _logger.debug("report failure", exc_info=True)
        finally:
            if self.span.is_recording() and report is None:
                self.span.set_attribute(names.CAPTURE_ERROR, "report could not be built")
            self.span.end()
        return report

    # -- internals -------------------------------------------------------------
    def _report(self, result: Any) -> Report:
        duration = time.perf_counter() - self.start
        sequences = result if isinstance(result, torch.Tensor) else getattr(result, "sequences", None)
        num_return = int(getattr(self.session.generation_config, "num_return_sequences", 1) or 1)
        capture = self.session.finish(sequences if isinstance(sequences, torch.Tensor) else None, num_return)
        prompt_rows = _host_rows(self.prompt)
        mask_rows = _host_rows(self.attention_mask)
        if mask_rows is not None:
            input_lengths = [int(sum(r)) for r in mask_rows]
        elif prompt_rows is not None:
            input_lengths = [len(r) for r in prompt_rows]
        elif self.prompt is not None and self.prompt.dim() >= 2:  # inputs_embeds
            input_lengths = [int(self.prompt.shape[1])] * int(self.prompt.shape[0])
        else:
            input_lengths = []

        record = self._prompt_record(prompt_rows, mask_rows)
        if record is not None and record.chat:
            self.operation = names.OP_CHAT

        generation_config = self.session.generation_config
        if generation_config is None:
            generation_config = _describe.fallback_generation_config(self.model, self.kwargs)
        prompt_len = int(self.prompt.shape[-1]) if prompt_rows is not None else None
        request = _describe.request_params(generation_config, prompt_len) if generation_config is not None else {}
        request["generation_mode"] = self.session.generation_mode
        request["seed"] = self.request_context.get("seed")
        request["stream"] = self.streaming

        options = self.options
        content = options.content.enabled
        decode, input_texts, input_messages = None, None, None
        if content:
            decode, input_texts, input_messages = self._content(record, prompt_rows, mask_rows)

        if capture.sequences:
            prefix = capture.prefix_len if self.session.attached else self._fallback_prefix(capture, prompt_rows)
        else:
            prefix = 0
        span_ctx = self.span.get_span_context()
        model = _describe.model_info(self.model, self.device)
        layer_data = None
        if capture.layers or capture.encoder_layers is not None:
            masks = mask_rows if mask_rows is not None else (
                [[1] * len(r) for r in prompt_rows] if prompt_rows is not None else None)
            layer_data = LayerData(
                layers=capture.layers,
                layer_steps=capture.layer_steps,
                matrices=capture.matrices,
                hidden=capture.hidden,
                hidden_full=capture.hidden_full,
                attention=capture.attention,
                moe=capture.moe,
                row_of=capture.row_of,
                prompt_surprisal=capture.prompt_surprisal,
                prompt_layers=capture.prompt_layers,
                encoder_layers=capture.encoder_layers,
                encoder_indices=capture.encoder_indices,
                input_masks=masks,
                step_stride=options.step_stride,
                attention_source=capture.attention_source,
            )
        data = BuildInput(
            capture_mode=options.capture.value,
            model=model,
            request=request,
            operation=self.operation,
            duration_s=duration,
            sequences=capture.sequences,
            prefix_len=prefix,
            steps=capture.steps,
            series=capture.series,
            step_end_s=capture.step_ends,
            input_lengths=input_lengths,
            signals_captured=capture.signals,
            unavailable=capture.unavailable if options.capture is not CaptureMode.OFF else {},
            capture_error=capture.error,
            high_entropy_bits=options.high_entropy_bits,
            profile=options.profile,
            thresholds=dict(options.thresholds) if options.thresholds else None,
            trace_id=f"{span_ctx.trace_id:032x}" if span_ctx.is_valid else None,
            span_id=f"{span_ctx.span_id:016x}" if span_ctx.is_valid else None,
            content=content,
            decode=decode,
            input_texts=input_texts,
            input_messages=input_messages,
            layer_data=layer_data,
            stopped_at=capture.stopped_at,
            stop_reason=capture.stop_reason,
        )
        report = build_report(data)
        perf = self.request_context.get("perf")
        if perf:
            report.perf = PerfInfo(**perf)
        return report

    def _fallback_prefix(self, capture: Any, prompt_rows: list[list[int]] | None) -> int:
        if _describe.model_info(self.model, None)["is_encoder_decoder"]:
            return 1
        return len(prompt_rows[0]) if prompt_rows else 0

    def _prompt_record(self, prompt_rows: list[list[int]] | None, mask_rows: list[list[int]] | None) -> PromptRecord | None:
        if not prompt_rows:
            return None
        row = prompt_rows[0]
        if mask_rows:
            row = [t for t, m in zip(row, mask_rows[0]) if m]
        return self.telemetry.prompts.lookup_ids(row)

    def _content(self, record: PromptRecord | None, prompt_rows: Any, mask_rows: Any) -> tuple[Any, Any, Any]:
        tokenizer = self.tokenizer or (record.tokenizer if record else None) or self.telemetry.prompts.last_tokenizer
        decode = None
        if tokenizer is not None:
            def decode(ids: list[int]) -> str:
                return tokenizer.decode(ids, skip_special_tokens=True)

        input_texts = None
        if decode is not None and prompt_rows:
            input_texts = []
            for i, row in enumerate(prompt_rows):
                if mask_rows and i < len(mask_rows):
                    row = [t for t, m in zip(row, mask_rows[i]) if m]
                input_texts.append(decode(row))
        if record is not None and record.chat and record.messages is not None:
            messages = _genai_messages(record.messages)
        elif input_texts:
            messages = [{"role": "user", "parts": [{"type": "text", "content": input_texts[0]}]}]
        else:
            messages = None
        return decode, input_texts, messages

    def _emit(self, report: Report) -> None:
        telemetry = self.telemetry
        options = self.options
        span = self.span
        detail = self._detail(report)
        span.update_name(span_name(report.request.operation, report.model.name))
        extra = self.request_context.get("attributes") or {}
        if extra:
            span.set_attributes(extra)
        if report.perf is not None:
            span.set_attributes({names.PERF_PREFIX + k: v for k, v in vars(report.perf).items()})
        if options.capture is not CaptureMode.OFF:
            span.set_attributes(corevital_attributes(report, options.max_span_steps))
            if detail == "full" and options.step_events:
                span.set_attributes(add_step_events(span, report, options.content.enabled))
        else:
            span.set_attributes({names.CAPTURE_MODE: options.capture.value})
            timing = corevital_attributes(report, options.max_span_steps)
            span.set_attributes({k: v for k, v in timing.items() if k.startswith(names.CV + "timing.")})
        # GenAI keys last: the SDK evicts the oldest attributes first.
        span.set_attributes(genai_attributes(report, content_on_span=options.content.on_span))
        base = metric_attributes(report.request.operation, report.model.name)
        token = otel_context.attach(self.span_context)
        try:
            telemetry.instruments.record(report, base)
            if detail == "full":
                if options.layer_metrics:
                    telemetry.instruments.record_layers(report, base)
                if options.step_logs:
                    emit_step_logs(telemetry.logger, report, self.span_context, getattr(span, "start_time", None),
                                   options.content.enabled)
            if options.report_log:
                emit_report(telemetry.logger, report, self.span_context)
        finally:
            otel_context.detach(token)
        if telemetry.on_report is not None:
            telemetry.on_report(report)
        for watcher in self.watchers:
            watcher.receive(report)

    def _detail(self, report: Report) -> str | None:
        """``full`` or ``summary`` detail to emit; ``on_risk`` decides from the risk score."""
        mode = self.options.capture
        if mode is CaptureMode.FULL:
            report.capture.detail = "full"
        elif mode is CaptureMode.ON_RISK:
            score = report.summary.risk_score
            if score is not None and score >= self.options.on_risk_threshold:
                report.capture.detail = "full"
            else:
                trim_to_summary(report)
        return report.capture.detail
