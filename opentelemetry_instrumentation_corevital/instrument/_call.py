"""One instrumented call (``generate``, streaming or not, and ``score``): its lifecycle, span to emitted report.

Rules every method here keeps:

* the user's ``generate`` runs exactly as without us, and its result or
  exception comes back unchanged;
* anything that goes wrong on our side costs telemetry at worst: it is logged
  (once per stage) and counted (``corevital.internal.call_errors``, by stage),
  and the model's hooks come out whatever failed;
* host reads happen only in :meth:`GenerationCall.succeed`, after the model
  returned, a fixed number of times whatever the number of steps.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import Logger
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import names
from .._config import CaptureMode, Options
from ..capture import CapturePlan, CaptureSource, TransformersSource
from ..emit import (
    Instruments,
    emit_failure_details,
    emit_report,
    hand_off,
    metric_attributes,
    publish,
    report_detail,
    span_name,
)
from ..report import (
    CaptureResult,
    ContentPolicy,
    ModelInfo,
    PerfInfo,
    Report,
    RequestInfo,
    build_report,
    trim_to_summary,
)
from ..signals.profiles import Profile, effective_profile
from . import _describe
from ._content import content_input
from ._context import ACTIVE_CALL, REQUEST_CONTEXT, WATCHERS, Watcher
from ._prompts import PromptRecord, PromptRegistry
from ._request import generation_request, host_rows, request_parts

_logger = logging.getLogger(__name__)
_warned: set[str] = set()


def warn_once(key: str, message: str, *args: Any) -> None:
    """Log a warning the first time ``key`` goes wrong in this process: telemetry problems must not flood logs."""
    if key not in _warned:
        _warned.add(key)
        _logger.warning(message, *args)


@dataclass
class Telemetry:
    """What the instrumentor sets up once and every call shares."""

    tracer: trace.Tracer
    instruments: Instruments
    logger: Logger
    options: Options
    prompts: PromptRegistry
    on_report: Callable[[Report], None] | None = None  # for the CLI and tests


def count_loss(telemetry: Telemetry, stage: str) -> None:
    """Count one of our failures at ``stage``; a meter that raises cannot count its own failure (the log says it)."""
    try:
        telemetry.instruments.record_call_error(stage)
    except Exception:
        _logger.debug("could not count a %s failure", stage, exc_info=True)


def error_type(exc: BaseException) -> str:
    """The ``error.type`` value of an exception: its qualified class name."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class ReportingCall:
    """What every instrumented call shares, whatever its engine: the profile, the outcomes and the emission.

    A subclass makes the span, the capture source and the report (:meth:`_report`); ``fail`` and ``succeed``
    end the span, and the report goes out at the detail the capture mode decides.
    """

    operation = names.OP_TEXT_COMPLETION
    derived_name: str | None = None  # the model's own name, which picks the profile even under a model_name override
    provider = names.PROVIDER  # gen_ai.provider.name on the span and the metrics
    response_id: str | None = None  # gen_ai.response.id when the engine names its response; else the report's id
    lent = False  # the span is another instrumentation's (openai-v2's), which emits the GenAI events itself
    telemetry: Telemetry
    options: Options
    model_info: ModelInfo
    source: CaptureSource
    span: trace.Span
    span_context: otel_context.Context
    watchers: tuple[Watcher, ...]
    request_context: dict[str, Any]
    start: float
    report: Report | None
    _result: Any

    @functools.cached_property
    def profile(self) -> Profile:
        """The model profile of this call, resolved once: the stop criterion and the report use the same one."""
        options, model = self.options, self.model_info
        return effective_profile(
            model.model_type,
            self.derived_name or model.name,
            options.profile,
            options.thresholds,
            options.high_entropy_bits,
        )

    @functools.cached_property
    def content(self) -> ContentPolicy:
        """Where this call's content may go, decided once from its options; every route asks it."""
        options = self.options
        policy = ContentPolicy.of_switches(options.content, options.semconv_opt_in, options.genai_event)
        return policy.without_genai_events() if self.lent else policy

    def returned(self, result: Any) -> Any:
        """Keep what the model's work returned (the report is built from it on leaving); returns it unchanged."""
        self._result = result
        return result

    # -- outcomes ------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """The model raised: mark the span and the duration metric; the caller re-raises."""
        try:
            duration = time.perf_counter() - self.start
            kind = error_type(exc)
            self.span.set_attribute(names.ERROR_TYPE, kind)
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            attributes = metric_attributes(self.operation, self.model_info.name, self.provider)
            self.telemetry.instruments.record_failure(duration, attributes, kind)
            details = {**attributes, names.ERROR_TYPE: kind}
            emit_failure_details(self.telemetry.logger, self.span_context, details, self.content)
            self.source.finish(None)  # frees the capture's buffers
        except Exception as ours:
            self._lost("fail", ours, "could not record a failed generation")
        self._end_span()

    def succeed(self, result: Any, end_time: int | None = None) -> Report | None:
        """Build, emit and hand on the report, end the span (at ``end_time`` ns if given); never raises, each stage
        guarded on its own (a failing meter or ``on_report`` receiver costs that stage only). Returns the report."""
        try:
            report = self._report(result)
            detail = self._detail(report)
            record = trim_to_summary(report) if report.capture.detail == "summary" else report
            record = self.content.for_events(record)  # the log record, on_report's sinks and monitors: the events route
        except Exception as exc:
            self._lost("report", exc, "could not report a generation")
            self._end_span("report could not be built", end_time)
            return None
        try:
            self._emit(report, detail, record)
        except Exception as exc:
            self._lost("emit", exc, "could not emit a generation's telemetry")
        for receive in self._receivers():
            try:
                receive(record)
            except Exception as exc:
                self._lost("on_report", exc, "could not hand a report to an on_report receiver or monitor")
        self._end_span(end_time=end_time)
        return record

    def _report(self, result: Any) -> Report:
        raise NotImplementedError

    # -- our failures ------------------------------------------------------------------
    def _lost(self, stage: str, exc: BaseException, what: str) -> None:
        """Telemetry lost at ``stage``: warned once per stage, counted every time; the output is never touched."""
        # Formatted now: a log record keeping ``exc`` would keep this call (and its capture) alive via the traceback.
        warn_once(stage, "CoreVital %s (telemetry lost, output unaffected): %s", what, repr(exc))
        _logger.debug("CoreVital %s failure", stage, exc_info=True)
        count_loss(self.telemetry, stage)

    def _end_span(self, error: str | None = None, end_time: int | None = None) -> None:
        """End the span (a SpanProcessor's ``on_end`` runs here, on this thread): never raises."""
        try:
            if error is not None and self.span.is_recording():
                self.span.set_attribute(names.CAPTURE_ERROR, error)
            self.span.end(end_time=end_time)
        except Exception as exc:
            self._lost("span_end", exc, "could not end a span")

    # -- emission --------------------------------------------------------------------
    def _emit(self, report: Report, detail: str, record: Report) -> None:
        """Span attributes and events, metrics and step logs at ``detail``; the report's log record."""
        telemetry = self.telemetry
        publish(
            report,
            detail,
            self.span,
            self.span_context,
            telemetry.instruments,
            telemetry.logger,
            self.options,
            self.content,
            self.request_context.get("attributes") or {},
            self.provider,
            self.response_id or report.report_id,
        )
        if self.options.report_log:
            emit_report(telemetry.logger, record, self.span_context)

    def _receivers(self) -> list[Callable[[Report], None]]:
        """Who gets the finished report: ``on_report``, then each watching monitor."""
        on_report = self.telemetry.on_report
        return [*([on_report] if on_report is not None else []), *(w.receive for w in self.watchers)]

    def _detail(self, report: Report) -> str:
        """``full`` or ``summary``; ``on_risk`` decides from the risk score. Recorded in ``report.capture.detail``."""
        mode = self.options.capture
        if mode is CaptureMode.FULL:
            report.capture.detail = "full"
        elif mode is CaptureMode.ON_RISK:
            score = report.summary.risk_score
            above = score is not None and score >= self.options.on_risk_threshold
            report.capture.detail = "full" if above else "summary"
        return report_detail(report)


class GenerationCall(ReportingCall):
    """One call's span, capture source and report; a context manager around the model's own work.

    ``with call: call.returned(output)``: entering starts the span and makes the call current (OpenTelemetry
    context, active call, capture source); leaving undoes that, then records the failure (the exception goes
    on) or builds and emits the report, kept as :attr:`report`.
    """

    source: TransformersSource

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
        self.model_info = _describe.model_info(model, self.device, options.model_name)
        self.derived_name = _describe.model_name(model)
        self.attention_mask = kwargs.get("attention_mask")
        self.streamer = kwargs.get("streamer")
        self.assistant_model = kwargs.get("assistant_model")
        self.tokenizer = telemetry.prompts.tokenizer_for(model, kwargs.get("tokenizer"))
        # The prompt and its mask on the host, read once before generate runs: the operation needs them now, the
        # report later (so the read is moved, not added).
        self.prompt_rows, self.mask_rows = host_rows(self.prompt), host_rows(self.attention_mask)
        self.operation = self._operation()
        self.kwargs = kwargs
        self.request_context = REQUEST_CONTEXT.get() or {}
        layer_count = self.model_info.num_layers
        plan = CapturePlan.for_mode(
            options.capture.value,
            layers=options.layers.resolve(int(layer_count)) if layer_count else options.layers.indices,
            step_stride=options.step_stride,
            cuda_graphs=options.cuda_graphs,
        )
        prompt_ids = (
            self.prompt if isinstance(self.prompt, torch.Tensor) and not self.prompt.is_floating_point() else None
        )
        self.source = TransformersSource(
            model, self.device, plan, prompt_ids=prompt_ids, prompt_mask=self.attention_mask
        )
        self.span: trace.Span = trace.INVALID_SPAN
        self.span_context = otel_context.get_current()
        self.report: Report | None = None
        self._result: Any = None
        self._read_back: tuple[CaptureResult, float] | None = None  # the capture and the duration, once read
        self._tokens: tuple[Any, ...] = ()

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> GenerationCall:
        try:
            self.span = self.telemetry.tracer.start_span(
                span_name(self.operation, self.model_info.name),
                kind=SpanKind.INTERNAL,
                attributes={
                    names.OPERATION_NAME: self.operation,
                    names.PROVIDER_NAME: names.PROVIDER,
                    names.REQUEST_MODEL: self.model_info.name,
                },
                context=self._parent_context(),
            )
        except Exception as exc:  # the call goes on without a span
            self._lost("span_start", exc, "could not start a span, the generation is not traced")
        self.span_context = trace.set_span_in_context(self.span)
        self._tokens = (ACTIVE_CALL.set(self), otel_context.attach(self.span_context))
        try:
            self.source.start()
        except Exception as exc:  # the model runs untapped
            self._untap(exc)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        end_time = time.time_ns()  # the generation's end, whoever ends the span and when
        try:
            self.source.stop()  # the taps come out here, before anything that may fail
        except Exception as ours:
            self._untap(ours)
        active, context = self._tokens
        otel_context.detach(context)
        ACTIVE_CALL.reset(active)
        if exc is not None:
            self.fail(exc)
        elif self.options.background_emit and not self.watchers:  # a monitor returns the report: built now
            self._hand_off(end_time)
        else:
            self.report = self.succeed(self._result)

    def _hand_off(self, end_time: int) -> None:
        """Queue the capture's read-back now (the device part); wait for it, build, emit and end the span on the
        emission thread."""
        try:
            self._read_capture(self._result)
            queued = hand_off(functools.partial(self.succeed, self._result, end_time))
        except Exception as exc:
            self._lost("report", exc, "could not report a generation")
            self._end_span("report could not be built", end_time)
            return
        if not queued:
            self._lost("emit", RuntimeError("queue full"), "could not queue a generation's telemetry")
            self._end_span("telemetry queue full", end_time)

    def _untap(self, exc: Exception) -> None:
        """Starting or stopping the capture failed: take the hooks out all the same."""
        self._lost("capture", exc, "could not start or stop a capture")
        self.source.taps.remove()

    def _parent_context(self) -> otel_context.Context:
        """The current context; or, when it has no span and a streamer was made inside one, the streamer's.

        (Streaming runs ``generate`` in a worker thread that does not inherit the request's context.)
        """
        current = otel_context.get_current()
        if trace.get_current_span(current).get_span_context().is_valid:
            return current
        stored = getattr(self.streamer, "_corevital_context", None)
        if stored is not None and trace.get_current_span(stored).get_span_context().is_valid:
            return stored
        return current

    # -- the report ------------------------------------------------------------------
    def _read_capture(self, result: Any) -> tuple[CaptureResult, float]:
        """The capture, its read-back from the device queued once, and the call's duration (taken before)."""
        if self._read_back is None:
            duration = time.perf_counter() - self.start
            sequences = result if isinstance(result, torch.Tensor) else getattr(result, "sequences", None)
            num_return = int(getattr(self.source.generation_config, "num_return_sequences", 1) or 1)
            capture = self.source.finish(sequences if isinstance(sequences, torch.Tensor) else None, num_return)
            self._read_back = (capture, duration)
        return self._read_back

    def _report(self, result: Any) -> Report:
        capture, duration = self._read_capture(result)
        if capture.settled().error is not None:  # the capture stopped (a hook, the reduce or the transfer failed)
            count_loss(self.telemetry, "capture")
        prompt_rows, mask_rows = self.prompt_rows, self.mask_rows
        record = self._prompt_record(prompt_rows, mask_rows)
        if capture.sequences and not self.source.attached:  # our processor never ran: infer the prefix
            prefix = 1 if self.model_info.is_encoder_decoder else (len(prompt_rows[0]) if prompt_rows else 0)
            capture = dataclasses.replace(capture, prefix_len=prefix)

        generation_config = self.source.generation_config
        if generation_config is None:
            generation_config = _describe.fallback_generation_config(self.model, self.kwargs)
        prompt_len = int(self.prompt.shape[-1]) if prompt_rows is not None and self.prompt is not None else None
        params, eos_ids, pad_id = request_parts(generation_config, prompt_len)
        request = generation_request(
            self._request_info(params),
            prompt=self.prompt,
            prompt_rows=prompt_rows,
            mask_rows=mask_rows,
            eos_token_ids=eos_ids,
            pad_token_id=pad_id,
            capture_mode=self.options.capture.value,
            duration_s=duration,
            step_stride=self.options.step_stride,
            span_context=self.span.get_span_context(),
        )
        content = None
        if self.content.captured:
            tokenizer = (
                self.tokenizer or (record.tokenizer if record else None) or self.telemetry.prompts.last_tokenizer
            )
            content = content_input(tokenizer, record, prompt_rows, mask_rows, self.content)
        report = build_report(capture, self.model_info, request, self.profile, content)
        perf = self.request_context.get("perf")
        if perf:
            report.perf = PerfInfo(**perf)
        return report

    def _request_info(self, params: dict[str, Any]) -> RequestInfo:
        """The report's ``request`` section from the effective generation parameters."""
        return RequestInfo(
            operation=self.operation,
            generation_mode=self.source.generation_mode,
            seed=self.request_context.get("seed"),
            stream=self.streamer is not None,
            **params,
        )

    def _operation(self) -> str:
        """``chat`` or ``text_completion``, decided before the span starts (samplers see the final value)."""
        if not self.prompt_rows:
            return names.OP_TEXT_COMPLETION
        row = _unpadded(self.prompt_rows[0], self.mask_rows[0] if self.mask_rows else None)
        return names.OP_CHAT if self.telemetry.prompts.is_chat(row, self.tokenizer) else names.OP_TEXT_COMPLETION

    def _prompt_record(
        self, prompt_rows: list[list[int]] | None, mask_rows: list[list[int]] | None
    ) -> PromptRecord | None:
        """The chat prompt these ids came from, if a tokenizer call recorded one (its messages, its tokenizer)."""
        if not prompt_rows:
            return None
        return self.telemetry.prompts.lookup_ids(_unpadded(prompt_rows[0], mask_rows[0] if mask_rows else None))


def _unpadded(row: list[int], mask: list[int] | None) -> list[int]:
    """A prompt row without the positions its attention mask leaves out."""
    return row if mask is None else [t for t, m in zip(row, mask) if m]
