"""The ``transformers`` capture source: taps inside the forward pass, one reduce per step, one transfer at the end.

It composes the pieces: :class:`ModelTaps` (hooks, removed together),
:class:`StepRecorder` (the per-step call in ``generate``), :class:`StepReducer`
(fixed-shape rows on the device, one CUDA-graph replay per step on GPUs),
:class:`StopOn` (stopping on the device) and :func:`transfer` (one
device-to-host copy into a :class:`CaptureResult`). It learns the decoding
mode from the wrapped ``generate`` internals (processors, stopping criteria,
beam reorders). Scoring a given continuation is a mode of the same source
(:meth:`TransformersSource.teacher_force`, then :meth:`TransformersSource.score`).

Every tap is removed in ``stop``, right after the model returned or raised
(and in ``finish``, for a caller that did not stop); any failure inside the
capture, a hook's included, stops the capture for that call (telemetry lost),
never the call.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from transformers.generation.stopping_criteria import StoppingCriteriaList

from .._config import StepView
from ..report import CaptureResult
from . import _intervene, _reduce
from ._clock import StepClock
from ._compiled import compiled_forward
from ._intercept import ACTIVE_TAPS
from ._model_taps import ModelTaps
from ._plan import CapturePlan
from ._recorder import RecordingProcessorList, StepRecorder
from ._reducer import StepReducer
from ._rows import StepRows
from ._scoring import reduce_continuation
from ._stats import TOP_K
from ._transfer import DeviceCapture, transfer

_logger = logging.getLogger(__name__)

#: Generation modes whose processor calls map one-to-one onto emitted tokens of fixed rows.
SIGNAL_MODES = frozenset({"greedy_search", "sample"})
BEAM_MODES = frozenset({"beam_search", "beam_sample"})
#: Modes that call the processors exactly once per decoding step (so step times are real).
TIMING_MODES = SIGNAL_MODES | BEAM_MODES | {"group_beam_search", "constrained_beam_search"}
#: The generation mode of a teacher-forced scoring forward.
SCORE_MODE = "score"


class TransformersSource:
    """State of one instrumented ``transformers`` call, from entry to the final transfer (a :class:`CaptureSource`)."""

    def __init__(
        self,
        model: Any,
        device: torch.device | None,
        plan: CapturePlan,
        prompt_ids: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> None:
        self.plan = plan
        self.clock = StepClock(device)
        self.attached = False
        self.generation_config: Any = None
        self.generation_mode: str | None = None
        self.unavailable: dict[str, str] = {}  # signal group -> reason; shared by the pieces
        ids = prompt_ids if isinstance(prompt_ids, torch.Tensor) and not prompt_ids.is_floating_point() else None
        mask = prompt_mask if isinstance(prompt_mask, torch.Tensor) else None
        config: Any = getattr(model, "config", None)  # a transformers config
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        self.hidden_size = next(
            (getattr(text, k) for k in ("hidden_size", "n_embd", "d_model") if getattr(text, k, None)), None
        )
        self.taps = ModelTaps(model, plan, ids, mask, self.unavailable, self._on_tap_error)
        self.rows = StepRows()
        self.reducer = StepReducer(model, self.taps, self.rows, self.unavailable)
        self.recorder = StepRecorder(plan.signals, self.clock, self._on_step, self._on_fail)
        self.stop_on: _intervene.StopOn | None = None
        self._beam_indices: torch.Tensor | None = None  # beam search: final [batch, beams, steps] rows
        self._continuation: tuple[int, int] | None = None  # scoring: (prompt length, continuation length)
        self._loop_prefix: int | None = None  # length of the ids generate's decoding loop starts from
        self._cached = 0  # positions the key cache holds before step 1 (the prefix, or the embedded prompt)
        self._started = False
        self._deferred = False  # the taps go in at processors_for
        self._bound: contextvars.Token | None = None

    # -- the lifecycle (CaptureSource) ------------------------------------------------------
    def start(self) -> None:
        """Bind the taps to this context, right before the model runs, and put them in place — except for a
        decoder-only ``generate``, whose first forward comes after its processors are built: its taps go in there
        (:meth:`processors_for`), once it is known whether the forward runs compiled (then none go in at all)."""
        if self._bound is not None:
            return
        if not self._started:  # taps go in once per call
            self._started = True
            if self.taps.teacher_forced or self.taps.is_seq2seq:  # a forward (scoring, the encoder's) comes first
                self._install()
            else:
                self._deferred = True
        self._bound = ACTIVE_TAPS.set(self.taps)

    def _install(self) -> None:
        self._deferred = False
        try:
            self.taps.install()
        except Exception as exc:  # a model we cannot hook: no layer data, the call runs as it would
            self.taps.remove()
            self.unavailable["layers"] = f"taps could not be installed: {type(exc).__name__}: {exc}"

    def stop(self) -> None:
        """Unbind from this context and take the taps out once the model returned or raised, whatever happens to
        the report after (what they kept stays for :meth:`finish`)."""
        try:
            if self._bound is not None:
                ACTIVE_TAPS.reset(self._bound)
                self._bound = None
        finally:
            self.taps.remove()

    def finish(self, sequences: torch.Tensor | None, num_return_sequences: int = 1) -> CaptureResult:
        """Remove the taps, stack the device buffers, queue their one transfer to the host, and free them; the
        result's lists are filled when it is settled (:meth:`CaptureResult.settled`), which waits for the copy."""
        self.taps.remove()
        rec = self.recorder
        result = CaptureResult(signals=rec.signals and rec.failed is None, unavailable=dict(self.unavailable))
        result.attention_source = self.taps.attention_source
        if not self.attached:
            result.unavailable.setdefault("logits", "the capture could not attach to this generate call")
            result.signals = False
        try:
            self.reducer.settle(flush=rec.failed is None)  # batched steps reduced, replays run aside done
            # Decoding that calls the recorder once per token knows the prefix and steps from it; other decoding
            # (assisted: zero or several calls per token) from the loop's start and the returned sequences.
            per_token = rec.timing
            known = (rec.prefix_len, self._loop_prefix) if per_token else (self._loop_prefix, rec.prefix_len)
            prefix = next((p for p in known if p is not None), 0)
            result.prefix_len = prefix
            returned = sequences is not None and sequences.dim() == 2 and sequences.shape[0] > 0
            produced = (int(sequences.shape[1]) - prefix) if returned and sequences is not None else rec.steps
            beams = self.generation_mode in BEAM_MODES
            if beams:
                steps = min(rec.steps, max(produced, 0))
            else:
                steps = max(0, min(rec.steps, produced) if per_token else produced)
            result.steps = steps
            capture = DeviceCapture(
                rows=self.rows,
                layers=self.taps.layers,
                hidden_size=self.hidden_size,
                prefill=self.taps.prefill,
                last_logp=self.reducer.last_logp(),
                beam_indices=self._beam_indices,
                stop=self.stop_on,
            )
            fill = transfer(result, capture, sequences, steps, prefix, beams, num_return_sequences)
            result.pending = functools.partial(_settle, result, fill, self.clock.ends_later(steps))
        except Exception as exc:
            _lost(result, exc)
        if rec.failed is not None:
            result.error = rec.failed
            result.unavailable["logits"] = "capture failed during the generation"
        self._release()
        return result

    # -- generate: decoding-mode bookkeeping ------------------------------------------------
    def processors_for(
        self,
        processors: Any,
        generation_config: Any,
        assistant_model: Any = None,
        loop_prefix: int | None = None,
        model_kwargs: dict | None = None,
    ) -> RecordingProcessorList:
        """``processors`` with our recorder in front, configured for this call's decoding mode.

        ``loop_prefix`` is the length of the ids the decoding loop starts from (``generate``'s
        ``input_ids_seq_length``): the prefix of the returned sequences whatever the decoding.
        """
        try:
            return self._attach(processors, generation_config, assistant_model, loop_prefix, model_kwargs)
        finally:
            if self._deferred:  # whatever failed above, the forward that comes is tapped as it would have been
                self._install()

    def _attach(
        self, processors: Any, generation_config: Any, assistant_model: Any, loop_prefix: Any, model_kwargs: Any
    ) -> RecordingProcessorList:
        self.generation_config = generation_config
        self._loop_prefix = int(loop_prefix) if isinstance(loop_prefix, int) else None
        compiled = compiled_forward(self.taps.model, generation_config, model_kwargs)
        if compiled is not None:  # before the first forward: the compiled graph never sees a tap
            self._deferred = False
            self.taps.compiled_off(compiled)
        try:
            self.generation_mode = str(generation_config.get_generation_mode(assistant_model).value)
        except Exception:
            self.generation_mode = None
        mode = self.generation_mode
        top_k = TOP_K
        if mode in BEAM_MODES:
            top_k = _reduce.default_k(int(getattr(generation_config, "num_beams", 1) or 1))
        elif mode not in SIGNAL_MODES:
            # Assisted and other decoding call the processors on speculative rows.
            if self.recorder.signals:
                self.unavailable["logits"] = f"not captured for {mode or 'this'} decoding"
            self.recorder.signals = False
            if self.taps.active or (self._deferred and self.plan.needs_layers):
                self.unavailable["layers"] = f"not captured for {mode or 'this'} decoding"
                self.taps.remove()
                self._deferred = False
        if mode not in TIMING_MODES:
            self.recorder.timing = False
            self.unavailable["timing"] = f"per-step times not measured for {mode or 'this'} decoding"
        if self._deferred:
            self._install()
        self.reducer.configure(top_k, mode in BEAM_MODES, generation_config)
        self.attached = True
        return RecordingProcessorList(processors, self.recorder)

    def criteria_for(
        self,
        criteria: StoppingCriteriaList,
        conditions: tuple[str, ...],
        high_entropy_bits: float,
        high_entropy_run: int,
        step_callback: Callable[[StepView], Any] | None,
        callback_every: int,
        loop_repeat: int | None = None,
        loop_tail: tuple[int, int, int] = _intervene.DEFAULT_TAIL,
    ) -> StoppingCriteriaList:
        """``generate``'s stopping criteria, with our on-device ``StopOn`` appended when asked for."""
        if not conditions and step_callback is None:
            return criteria
        if not self.recorder.signals and any(c != "repetition_loop" for c in conditions):
            self.unavailable["stop_on"] = "nan_or_inf and high_entropy need the logit capture (capture is off)"
        self.reducer.aside = False  # StopOn reads each step's rows on generate's stream
        self.stop_on = _intervene.StopOn(
            self.recorder,
            self.rows,
            conditions,
            high_entropy_bits,
            high_entropy_run,
            step_callback,
            callback_every,
            beams=self.generation_mode in BEAM_MODES,
            loop_repeat=loop_repeat,
            loop_tail=loop_tail,
        )
        criteria.append(self.stop_on)
        return criteria

    def on_reorder(self, beam_idx: torch.Tensor) -> None:
        """Beam search reordered the cache: row j of the next step continues row beam_idx[j] (never raises)."""
        try:
            self.reducer.follow_beams(beam_idx)
        except Exception as exc:  # beam attribution would be wrong from here: stop the capture
            self.recorder.fail(exc)

    def on_finished_beams(self, beam_indices: torch.Tensor) -> None:
        """Beam search's running record of which row produced each token of the kept beams."""
        self._beam_indices = beam_indices

    # -- scoring: one teacher-forced forward ------------------------------------------------
    def teacher_force(self, prompt_len: int, continuation_len: int) -> None:
        """Make this a scoring call: one forward over prompt + continuation, before :meth:`start`."""
        self._continuation = (prompt_len, continuation_len)
        self.taps.teacher_forced = True
        self.attached = True
        self.generation_mode = SCORE_MODE

    def score(self, logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Turn the scoring forward into the per-step rows a generation would have left (never raises)."""
        if self._continuation is None:
            raise RuntimeError("score() needs teacher_force() first")
        prompt_len, count = self._continuation
        rec = self.recorder
        rec.prefix_len, rec.steps = prompt_len, count
        try:
            reduce_continuation(self.taps, self.rows, self.reducer.top_k, prompt_len, count, logits, ids, mask)
        except Exception as exc:  # the scores are lost, the user's forward is not
            rec.fail(exc)

    # -- internals --------------------------------------------------------------------------
    def _on_step(self, step: int, input_ids: torch.Tensor, scores: torch.Tensor | None) -> None:
        if step == 0:
            self._cached = self._prefill_positions()
        self.reducer.step(step, input_ids, scores, self._cached)
        self.taps.next_step(step + 1)

    def _on_tap_error(self, exc: Exception) -> None:
        if self.recorder.failed is None:  # the other hooks of the same forward may fail too: stop once
            self.recorder.fail(exc)

    def _prefill_positions(self) -> int:
        """The prefix; for ``inputs_embeds`` without ids (no prefix), the positions the prefill forward embedded."""
        prefix = self.recorder.prefix_len or 0
        seen = self.taps.rows_tokens  # (rows, positions) of the latest forward: the prefill's at step 0
        if prefix == 0 and not self.taps.is_seq2seq and seen is not None:
            return seen[1]
        return prefix

    def _on_fail(self) -> None:
        self.taps.remove()
        self.rows.drop()

    def _release(self) -> None:
        self.clock.release()
        self.rows.drop()
        self.reducer.release()
        self.taps.release()
        self._beam_indices = None
        self.stop_on = None


def _settle(result: CaptureResult, fill: Callable[[], None], step_ends: Callable[[], list[float]]) -> None:
    """The host half of :meth:`TransformersSource.finish`: wait for the copy, make the lists (never raises)."""
    try:
        fill()
        result.step_ends = step_ends()
    except Exception as exc:
        _lost(result, exc)


def _lost(result: CaptureResult, exc: Exception) -> None:
    """The read-back failed: the generation's signals are lost (a capture failure named before stays the error)."""
    result.error = result.error or f"{type(exc).__name__}: {exc}"
    result.signals = False
    result.series = []
    result.hidden = result.attention = result.moe = None
    _logger.warning("CoreVital could not read back this generation's capture: %s", result.error)
