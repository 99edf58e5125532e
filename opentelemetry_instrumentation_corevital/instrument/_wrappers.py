"""The wrapt wrappers. Each one starts by deciding whether to pass straight through.

Pass-through happens when the instrumentor is off (references to wrapped
methods outlive ``uninstrument()``), when instrumentation is suppressed in the
current context, and for a ``generate`` nested inside another (assisted
decoding runs the assistant's ``generate`` inside the main one): one user
call, one span.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from .._content_switch import content_mode
from ._call import GenerationCall, Telemetry, count_loss, warn_once
from ._context import active_call
from ._prompts import PromptRecord, _weak


class Wrappers:
    """The wrapt wrappers of one instrumentation, reading the live telemetry at every call."""

    def __init__(self, telemetry_getter: Callable[[], Telemetry | None]) -> None:
        self._telemetry = telemetry_getter

    # -- GenerationMixin.generate ---------------------------------------------------
    def generate(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """Run ``generate`` inside one :class:`GenerationCall`; plainly when we must not or cannot instrument."""
        telemetry = self._telemetry()
        if telemetry is None or not is_instrumentation_enabled() or active_call() is not None:
            return wrapped(*args, **kwargs)
        try:
            call = GenerationCall(telemetry, instance, args, kwargs)
        except Exception as exc:
            warn_once("start", "CoreVital could not start instrumenting a generation (running it plainly): %r", exc)
            count_loss(telemetry, "start")
            return wrapped(*args, **kwargs)
        with call:
            return call.returned(wrapped(*args, **kwargs))

    # -- hooks inside generate: each acts on the active call of this model, if any -------------
    @staticmethod
    def _on_call(
        key: str, what: str, result: Any, call: GenerationCall | None, hook: Callable[[GenerationCall], Any]
    ) -> Any:
        """``hook(call)``'s value, or ``result`` unchanged when there is no call or the hook fails (logged once)."""
        if call is None:
            return result
        try:
            return hook(call)
        except Exception as exc:
            warn_once(key, "CoreVital could not %s: %r", what, exc)
            return result

    def logits_processor(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """Put our step recorder first in the list ``generate`` builds, so it sees raw logits."""
        processors = wrapped(*args, **kwargs)
        call = active_call(instance)
        if call is not None and call.source.attached:
            return processors
        generation_config = kwargs.get("generation_config", args[0] if args else None)
        loop_prefix = kwargs.get("input_ids_seq_length", args[1] if len(args) > 1 else None)
        return self._on_call(
            "attach",
            "attach to a generation (signals lost)",
            processors,
            call,
            lambda c: c.source.processors_for(
                processors, generation_config, c.assistant_model, loop_prefix, kwargs.get("model_kwargs")
            ),
        )

    def stopping_criteria(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """Append the on-device ``stop_on`` criterion when this call asks for one."""
        criteria = wrapped(*args, **kwargs)

        def add(call: GenerationCall) -> Any:
            options = call.options
            # The report's flag and the stop use one threshold: the profile's, after the user's overrides.
            th = call.profile.thresholds
            bits = th.high_entropy_bits if "high_entropy" in options.stop_on else 0.0
            return call.source.criteria_for(
                criteria,
                options.stop_on,
                bits,
                options.high_entropy_run,
                options.step_callback,
                options.callback_every,
                options.stop_loop_repeat,
                (th.repetition_min_cycles, th.repetition_min_tokens, th.repetition_max_period),
            )

        return self._on_call(
            "stop_on", "add its stopping criterion (stop_on inactive)", criteria, active_call(instance), add
        )

    # -- beam search bookkeeping: which row continues which ------------------------------------
    def reorder_cache(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """Tell the active call which beam each row now continues (beam search)."""
        result = wrapped(*args, **kwargs)
        call = active_call()  # the cache is not the model: any active call
        if call is not None:
            beam_idx = args[0] if args else kwargs.get("beam_idx")
            if beam_idx is not None:
                call.source.on_reorder(beam_idx)
        return result

    def update_finished_beams(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """Hand the active call beam search's record of which row made each kept token (beam attribution)."""
        result = wrapped(*args, **kwargs)
        self._on_call(
            "beams",
            "follow beam search (beam signals lost)",
            None,
            active_call(instance),
            lambda c: c.source.on_finished_beams(result[2]),
        )
        return result

    # -- streamers: remember the context they were made in ------------------------------------
    def streamer_init(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """A streamer is made in the request's context, ``generate`` then runs in a worker thread
        without it; keeping the context lets the generation span join the request's trace."""
        result = wrapped(*args, **kwargs)
        try:
            instance._corevital_context = otel_context.get_current()
        except Exception:
            pass
        return result

    # -- tokenizers: remember chat-templated prompts ---------------------------------------
    def _after(self, key: str, what: str, result: Any, act: Callable[[Telemetry], None]) -> Any:
        """``result`` unchanged, after ``act(telemetry)`` when instrumented (a failure is logged once)."""
        telemetry = self._telemetry()
        if telemetry is not None:
            try:
                act(telemetry)
            except Exception as exc:
                warn_once(key, "CoreVital could not %s: %r", what, exc)
        return result

    def apply_chat_template(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """Remember the conversation behind the ids, so the generation that follows is reported as a chat."""
        result = wrapped(*args, **kwargs)

        def remember(telemetry: Telemetry) -> None:
            conversation = args[0] if args else kwargs.get("conversation")
            options = telemetry.options
            keep = content_mode(options.content, options.semconv_opt_in).enabled
            ref = _weak(instance)
            records: PromptRecord | list[PromptRecord]
            if isinstance(conversation, (list, tuple)) and conversation and isinstance(conversation[0], (list, tuple)):
                records = [PromptRecord(True, conv if keep else None, ref) for conv in conversation]  # a batch
            else:
                records = PromptRecord(True, conversation if keep else None, ref)
            telemetry.prompts.remember_tokenizer(instance)
            telemetry.prompts.remember_output(result, records)

        return self._after("chat", "record a chat prompt", result, remember)

    def tokenizer_call(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        """Carry a chat-templated text's record over to the ids it is tokenized into."""
        result = wrapped(*args, **kwargs)

        def remember(telemetry: Telemetry) -> None:
            prompts = telemetry.prompts
            prompts.remember_tokenizer(instance)
            if prompts.has_texts():
                text = args[0] if args else kwargs.get("text")
                record = prompts.lookup_text(text)
                if record is not None:
                    prompts.remember_output(result, record)

        return self._after("tokenize", "inspect a tokenizer call", result, remember)
