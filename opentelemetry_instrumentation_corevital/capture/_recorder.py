"""The per-step hook in ``generate``: called first on the raw logits, returns them untouched.

The recorder runs in front of ``generate``'s logits processors on the raw
float32 logits (before repetition penalties and temperature/top-k/top-p).
It never raises into ``generate`` and never changes the scores: a failure
stops the capture for this generation, never the generation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from transformers.generation.logits_process import LogitsProcessorList

from ._clock import StepClock

_logger = logging.getLogger(__name__)

#: (step, input ids, raw scores or None when logits are not captured) -> None; reduces the step.
OnStep = Callable[[int, torch.Tensor, torch.Tensor | None], None]


class StepRecorder:
    """Counts decoding steps, hands each to the source's reduce and marks its end on the clock."""

    def __init__(self, signals: bool, clock: StepClock, on_step: OnStep, on_fail: Callable[[], None]) -> None:
        self.signals = signals  # logits are captured
        self.timing = True  # each call is one decoding step (per-step times are real)
        self.steps = 0
        self.prefix_len: int | None = None  # length of the sequence fed to step 0
        self.failed: str | None = None
        self._clock = clock
        self._on_step = on_step
        self._on_fail = on_fail

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Record this step (never raising into ``generate``); the scores come back untouched."""
        if self.failed is None:
            try:
                self._record(input_ids, scores)
            except Exception as exc:  # never let our bookkeeping break the user's generation
                self.fail(exc)
        return scores

    def fail(self, exc: BaseException) -> None:
        """Stop the capture for this generation (telemetry lost), keep the generation going."""
        self.failed = f"{type(exc).__name__}: {exc}"
        self._on_fail()
        _logger.warning("CoreVital capture stopped for this generation: %s", self.failed)

    def _record(self, input_ids: torch.Tensor, scores: torch.Tensor) -> None:
        if self.prefix_len is None:
            self.prefix_len = int(input_ids.shape[1])
        self._on_step(self.steps, input_ids, scores if self.signals else None)
        if self.timing:
            self._clock.mark()
        self.steps += 1


class RecordingProcessorList(LogitsProcessorList):
    """``generate``'s own processor list, with our recorder called first on the raw scores.

    The recorder is not an entry of the list: ``LogitsProcessorList`` inspects
    every entry's signature on every step (tens of microseconds each), and a
    recorder outside the list costs nothing of that.
    """

    def __init__(self, processors: LogitsProcessorList, recorder: StepRecorder) -> None:
        super().__init__(processors)
        self.recorder = recorder

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The recorder first, on the raw scores; then ``generate``'s own processors, unchanged."""
        self.recorder(input_ids, scores)
        return super().__call__(input_ids, scores, **kwargs)
