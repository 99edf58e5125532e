"""The wrapt wrappers of the ``openai`` client: ``chat.completions.create`` and ``completions.create``.

Sync and async, streamed or not. Each wrapper's first line decides whether to
pass straight through (instrumentor off, or instrumentation suppressed). A
streamed response is handed back wrapped: iterating it feeds each chunk to the
call, and the call ends when the stream is exhausted, fails or is closed, or,
dropped unfinished, when it is garbage-collected.

Beside ``opentelemetry-instrumentation-openai-v2`` our wrapper always runs
inside its wrapper, whichever was instrumented last, so that its CLIENT span is
current and the call enriches it instead of starting a second one.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from ._call import Telemetry, warn_once
from ._openai_call import OpenAICall, add_logprobs

_OPENAI_V2 = "opentelemetry.instrumentation.openai_v2."


def _is_openai_v2(layer: Any) -> bool:
    """Whether a wrapt wrapper (bound or not) is openai-v2's; wrapt keeps the wrapper function in ``_self_wrapper``."""
    return (getattr(getattr(layer, "_self_wrapper", None), "__module__", None) or "").startswith(_OPENAI_V2)


def beneath_openai_v2(wrapped: Any, instance: Any, ours: Callable[..., Any]) -> Callable[..., Any] | None:
    """When openai-v2's wrapper is the layer under ours (we were instrumented last): a call of it around ours."""
    if not _is_openai_v2(wrapped):
        return None
    theirs, method = wrapped._self_wrapper, wrapped.__wrapped__
    return lambda *args, **kwargs: theirs(lambda *a, **kw: ours(method, instance, a, kw), instance, args, kwargs)


def inside_openai_v2(instance: Any) -> bool:
    """Whether openai-v2 wraps this ``create`` too: then ours runs inside its wrapper, its span current."""
    layer = inspect.getattr_static(type(instance), "create", None)
    while layer is not None:
        if _is_openai_v2(layer):
            return True
        layer = getattr(layer, "__wrapped__", None)
    return False


class _Feeding(wrapt.ObjectProxy):
    """A stream proxy holding its call until the stream ends; the call is closed once, whatever ends it."""

    def __init__(self, stream: Any, call: OpenAICall) -> None:
        super().__init__(stream)
        self._self_call: OpenAICall | None = call
        self._self_dropped = weakref.finalize(self, call.abandon)  # never exhausted nor closed: end it when collected
        self._self_dropped.atexit = False  # at interpreter exit the exporters may be gone: leave it

    def _self_end(self, exc: BaseException | None) -> None:
        call, self._self_call = self._self_call, None
        if call is not None:
            self._self_dropped.detach()
            call.close(exc)

    def _self_fed(self, chunk: Any) -> Any:
        """Hand a chunk to the call while it is open; the chunk goes to the user unchanged."""
        if self._self_call is not None:
            self._self_call.feed(chunk)
        return chunk


class _Stream(_Feeding):
    """A sync ``openai.Stream`` that feeds its chunks to the call; the user sees the same chunks."""

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self.__wrapped__)
        except StopIteration:
            self._self_end(None)
            raise
        except Exception as exc:
            self._self_end(exc)
            raise
        return self._self_fed(chunk)

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the stream; a stream closed before its end still gets its report (of what arrived)."""
        try:
            self.__wrapped__.close()
        finally:
            self._self_end(None)


class _AsyncStream(_Feeding):
    """An ``openai.AsyncStream`` that feeds its chunks to the call."""

    def __aiter__(self) -> _AsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            self._self_end(None)
            raise
        except Exception as exc:
            self._self_end(exc)
            raise
        return self._self_fed(chunk)

    async def __aenter__(self) -> _AsyncStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the stream; what arrived is reported."""
        try:
            await self.__wrapped__.close()
        finally:
            self._self_end(None)


class OpenAIWrappers:
    """The wrappers of one instrumentation, reading the live telemetry at every call."""

    def __init__(self, telemetry_getter: Callable[[], Telemetry | None]) -> None:
        self._telemetry = telemetry_getter

    def _call(self, instance: Any, kwargs: dict[str, Any], chat: bool) -> tuple[OpenAICall | None, dict[str, Any]]:
        """(the call, the kwargs to send), or (None, kwargs unchanged) when we do not instrument."""
        telemetry = self._telemetry()
        if telemetry is None:
            return None, kwargs
        try:
            kwargs = add_logprobs(kwargs, chat, telemetry.options.request_logprobs)
            return OpenAICall(telemetry, instance, kwargs, chat, inside_openai_v2(instance)), kwargs
        except Exception as exc:
            warn_once("openai-start", "CoreVital could not start instrumenting an openai request: %r", exc)
            return None, kwargs

    def _sync(self, chat: bool) -> Callable[..., Any]:
        def wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
            if self._telemetry() is None or not is_instrumentation_enabled():
                return wrapped(*args, **kwargs)
            beneath = beneath_openai_v2(wrapped, instance, wrapper)
            if beneath is not None:
                return beneath(*args, **kwargs)
            call, kwargs = self._call(instance, kwargs, chat)
            if call is None:
                return wrapped(*args, **kwargs)
            if call.stream:
                call.open()
                try:
                    return _Stream(wrapped(*args, **call.with_trace_headers(kwargs)), call)
                except BaseException as exc:
                    call.close(exc)
                    raise
            with call:
                return call.returned(wrapped(*args, **call.with_trace_headers(kwargs)))

        return wrapper

    def _async(self, chat: bool) -> Callable[..., Any]:
        async def wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
            if self._telemetry() is None or not is_instrumentation_enabled():
                return await wrapped(*args, **kwargs)
            beneath = beneath_openai_v2(wrapped, instance, wrapper)
            if beneath is not None:
                return await beneath(*args, **kwargs)
            call, kwargs = self._call(instance, kwargs, chat)
            if call is None:
                return await wrapped(*args, **kwargs)
            if call.stream:
                call.open()
                try:
                    return _AsyncStream(await wrapped(*args, **call.with_trace_headers(kwargs)), call)
                except BaseException as exc:
                    call.close(exc)
                    raise
            with call:
                return call.returned(await wrapped(*args, **call.with_trace_headers(kwargs)))

        return wrapper

    def targets(self) -> list[tuple[type, str, Callable[..., Any]]]:
        """(class, method, wrapper) of every ``openai`` method we wrap; none when ``openai`` is not installed."""
        try:
            from openai.resources import chat, completions
        except ImportError:
            return []
        return [
            (chat.Completions, "create", self._sync(chat=True)),
            (chat.AsyncCompletions, "create", self._async(chat=True)),
            (completions.Completions, "create", self._sync(chat=False)),
            (completions.AsyncCompletions, "create", self._async(chat=False)),
        ]
