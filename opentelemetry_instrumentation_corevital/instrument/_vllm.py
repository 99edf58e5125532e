"""The wrapt wrappers of vLLM: mark requests where they enter the engine, report them where the engine frees them.

vLLM runs a request in two places that may be two processes: the frontend
(``LLM``, or the OpenAI-compatible server) adds it, and the engine (scheduler,
model, logits processor) runs it. So:

* in the frontend, ``add_request`` of ``LLMEngine`` and ``AsyncLLM`` puts a
  small marker into the request's ``SamplingParams.extra_args`` (a copy of the
  parameters: the caller's object is not touched): an id, the capture mode, the
  operation, the arrival time and the trace context (the caller's current span,
  or the ``traceparent`` the server received). ``LLM.chat`` and the server's
  chat request say "chat";
* in the engine, the loaded model is registered (its layers get hooked while
  marked requests run), the logits processor captures marked rows, and when
  the scheduler frees a marked request its capture becomes one span and report
  (:class:`VLLMCall`) through this process's telemetry.

vLLM is wrapped when its modules are imported (post-import hooks), so
instrumenting costs nothing to a process that never imports vLLM.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap

from .. import capture, names
from ..signals.profiles import effective_profile
from ._call import Telemetry, warn_once
from ._vllm_call import EngineFacts, VLLMCall, engine_facts

#: The operation of the requests added inside ``LLM.chat`` (the server marks its chat requests itself).
_OPERATION: ContextVar[str | None] = ContextVar("corevital_vllm_operation", default=None)


def _marker(
    request_id: Any, operation: str | None, capture_mode: str, headers: Mapping[str, str] | None
) -> dict[str, Any]:
    """CoreVital's entry in a request's ``extra_args``: plain strings and numbers (it crosses processes)."""
    marker: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "request_id": str(request_id),
        "capture": capture_mode,
        "operation": operation or _OPERATION.get() or names.OP_TEXT_COMPLETION,
        "arrival": time.time(),
    }
    carrier: dict[str, str] = {}
    current = otel_context.get_current()
    if trace.get_current_span(current).get_span_context().is_valid:
        propagate.inject(carrier, context=current)
    elif headers:
        propagate.inject(carrier, context=propagate.extract(dict(headers)))
    marker.update({k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")})
    return marker


def _stop_options(telemetry: Telemetry, engine: Any) -> dict[str, Any]:
    """The ``stop_on`` settings the engine applies to this request (the threshold from the model's profile)."""
    options = telemetry.options
    if not options.stop_on:
        return {}
    settings: dict[str, Any] = {
        "stop_on": list(options.stop_on),
        "stop_loop_repeat": options.stop_loop_repeat,
        "high_entropy_run": options.high_entropy_run,
    }
    if "high_entropy" in options.stop_on:
        model_config = getattr(engine, "model_config", None)
        model_type = getattr(getattr(model_config, "hf_config", None), "model_type", None)
        name = str(getattr(model_config, "served_model_name", None) or getattr(model_config, "model", ""))
        profile = effective_profile(model_type, name, options.profile, options.thresholds, options.high_entropy_bits)
        settings["high_entropy_bits"] = profile.thresholds.high_entropy_bits
    return settings


class VLLMWrappers:
    """The wrappers of one instrumentation, reading the live telemetry at every call."""

    def __init__(self, telemetry_getter: Callable[[], Telemetry | None]) -> None:
        self._telemetry = telemetry_getter
        self._wrapped: list[tuple[Any, str]] = []
        self._active = True

    # -- frontend -------------------------------------------------------------------
    def add_request(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """Mark the request (a copy of its sampling parameters) before the engine sees it."""
        telemetry = self._telemetry()
        if telemetry is None or not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        try:
            args, kwargs = self._marked(telemetry, instance, args, kwargs)
        except Exception as exc:
            warn_once("vllm-mark", "CoreVital could not mark a vLLM request (not captured): %r", exc)
        return wrapped(*args, **kwargs)

    def _marked(self, telemetry: Telemetry, engine: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        in_args = "params" not in kwargs and len(args) > 2
        params = args[2] if in_args else kwargs.get("params")
        if params is None or not hasattr(params, "clone") or not hasattr(params, "extra_args"):
            return args, kwargs  # pooling requests: nothing to capture
        entry = (params.extra_args or {}).get(capture.VLLM_MARKER)
        entry = entry if isinstance(entry, dict) else {}
        headers = kwargs.get("trace_headers")
        marked = params.clone()
        request_id = args[0] if args else kwargs.get("request_id")
        marker = _marker(request_id, entry.get("operation"), telemetry.options.capture.value, headers)
        marker["server"] = bool(entry.get("server"))  # the OpenAI-compatible server's request: a SERVER span
        marker.update(_stop_options(telemetry, engine))
        marked.extra_args = {**(marked.extra_args or {}), capture.VLLM_MARKER: marker}
        if in_args:
            return (*args[:2], marked, *args[3:]), kwargs
        return args, {**kwargs, "params": marked}

    def chat(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """``LLM.chat``: the requests it adds are chat requests."""
        token = _OPERATION.set(names.OP_CHAT)
        try:
            return wrapped(*args, **kwargs)
        finally:
            _OPERATION.reset(token)

    def _server_params(self, operation: str) -> Callable[..., Any]:
        """The server's chat or completion request: its sampling parameters say so (the request is added later)."""

        def wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
            params = wrapped(*args, **kwargs)
            if self._telemetry() is not None:
                try:
                    entry = {"operation": operation, "server": True}
                    params.extra_args = {**(params.extra_args or {}), capture.VLLM_MARKER: entry}
                except Exception:
                    pass
            return params

        return wrapper

    # -- engine ---------------------------------------------------------------------
    def load_model(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """Register the model an engine loads, so that its decoder layers can be hooked."""
        model = wrapped(*args, **kwargs)
        try:
            config = kwargs.get("vllm_config", args[0] if args else None)
            capture.register_vllm_model(config, model)
        except Exception as exc:
            warn_once("vllm-model", "CoreVital could not register a vLLM model (no layer summaries): %r", exc)
        return model

    def free_request(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """The scheduler freed a request: a marked one becomes its span and report, here and now."""
        result = wrapped(*args, **kwargs)
        request = args[0] if args else kwargs.get("request")
        telemetry = self._telemetry()
        if telemetry is None or request is None:
            return result
        try:
            marker = capture.vllm_marker_of(getattr(request, "sampling_params", None))
            if marker is not None:
                found = capture.finish_vllm_request(marker["id"], list(request.output_token_ids))
                if found is not None:
                    VLLMCall(telemetry, found, engine_facts(request)).emit()
        except Exception as exc:
            warn_once("vllm-free", "CoreVital could not report a vLLM request (telemetry lost): %r", exc)
        return result

    def after_step(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """The model runner appended the step's sampled tokens: report the requests they ended, here and now."""
        result = wrapped(*args, **kwargs)
        if self._telemetry() is not None:
            try:
                capture.vllm_after_step()
            except Exception as exc:
                warn_once("vllm-step", "CoreVital could not finish vLLM requests (telemetry lost): %r", exc)
        return result

    def sink(self, found: Any) -> None:
        """A request the engine capture ended by itself (its last token, or it left the batch)."""
        telemetry = self._telemetry()
        if telemetry is not None:
            VLLMCall(telemetry, found, EngineFacts(found.finish_reason, found.marker.get("request_id"))).emit()

    # -- installing -----------------------------------------------------------------
    def targets(self) -> list[tuple[str, str, str, Callable[..., Any]]]:
        """(module, class, method, wrapper) of every vLLM function we wrap."""
        return [
            ("vllm.v1.engine.llm_engine", "LLMEngine", "add_request", self.add_request),
            ("vllm.v1.engine.async_llm", "AsyncLLM", "add_request", self.add_request),
            ("vllm.entrypoints.llm", "LLM", "chat", self.chat),
            (
                "vllm.entrypoints.openai.chat_completion.protocol",
                "ChatCompletionRequest",
                "to_sampling_params",
                self._server_params(names.OP_CHAT),
            ),
            (
                "vllm.entrypoints.openai.completion.protocol",
                "CompletionRequest",
                "to_sampling_params",
                self._server_params(names.OP_TEXT_COMPLETION),
            ),
            ("vllm.model_executor.model_loader.base_loader", "BaseModelLoader", "load_model", self.load_model),
            ("vllm.v1.core.sched.scheduler", "Scheduler", "_free_request", self.free_request),
            ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_bookkeeping_sync", self.after_step),
        ]

    def install(self) -> None:
        """Wrap each target when its module is imported (now, if it already is)."""
        capture.set_vllm_sink(self.sink)
        for module, owner, name, wrapper in self.targets():
            wrapt.register_post_import_hook(self._hook(owner, name, wrapper), module)

    def _hook(self, owner: str, name: str, wrapper: Callable[..., Any]) -> Callable[[Any], None]:
        def hook(module: Any) -> None:
            if not self._active:  # an earlier instrumentation's hook, left registered by wrapt
                return
            cls = getattr(module, owner, None)
            if cls is None or not hasattr(cls, name):
                return
            try:
                wrapt.wrap_function_wrapper(cls, name, wrapper)
                self._wrapped.append((cls, name))
            except Exception as exc:
                warn_once(f"vllm-wrap-{owner}", "CoreVital could not wrap vLLM's %s.%s: %r", owner, name, exc)

        return hook

    def uninstall(self) -> None:
        """Unwrap exactly what was wrapped; hooks still pending do nothing from now on."""
        self._active = False
        capture.set_vllm_sink(None)
        wrapped, self._wrapped = self._wrapped, []
        for cls, name in wrapped:
            unwrap(cls, name)
