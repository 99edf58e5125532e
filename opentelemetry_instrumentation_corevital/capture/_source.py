"""What every capture source offers the per-call lifecycle: start, stop, and finish into a CaptureResult.

A source is one engine's way of seeing one call. The lifecycle calls
:meth:`~CaptureSource.start` right before the engine runs,
:meth:`~CaptureSource.stop` right after it returned or raised, and
:meth:`~CaptureSource.finish` once, in every outcome; the report is built from
the :class:`CaptureResult` alone. How steps reach the source is the engine's
own business:

* ``transformers`` (:class:`TransformersSource`): a recorder in ``generate``'s
  logits processors hands each step's raw logits to the device reduce, hooks
  keep layer outputs; scoring a given continuation is a mode of the same source;
* an engine that gives logits rows per step and layer outputs via hooks feeds
  the same device pieces (``StepReducer``, ``StepRows``, one transfer);
* a client that only gets top-k log-probabilities on the host fills the
  result's series from them in ``finish``, with start and stop doing little.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from ..report import CaptureResult


class CaptureSource(Protocol):
    """One engine's capture of one call; never raises into the engine, never changes its output."""

    attached: bool  # the source saw the decoding loop: its prefix length and steps are real
    generation_mode: str | None  # the decoding mode as the engine names it ("greedy_search", "score", ...)
    generation_config: Any  # the engine's own generation parameters, for the request attributes

    def start(self) -> None:
        """The engine is about to run the call: put the taps in place and bind them to this context."""

    def stop(self) -> None:
        """The engine returned or raised: unbind and take the taps out; what was captured waits for :meth:`finish`."""

    def finish(self, sequences: torch.Tensor | None, num_return_sequences: int = 1) -> CaptureResult:
        """Queue the capture's one transfer to the host and free the device buffers (the taps out, if still in);
        the result is read once :meth:`CaptureResult.settled`, which may wait for the transfer."""
