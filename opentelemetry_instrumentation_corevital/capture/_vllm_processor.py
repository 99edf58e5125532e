"""CoreVital's vLLM logits processor: sees every step's full logits and hands them to the batch capture.

vLLM loads it in every engine from the ``vllm.logits_processors`` entry point.
It never changes the logits (so it is not argmax-invariant only in name: vLLM
applies non-invariant processors to greedy batches too, which is what we need)
and does nothing for requests the instrumentation did not mark.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from . import _vllm_engine

_logger = logging.getLogger(__name__)


class CoreVitalLogitsProcessor(LogitsProcessor):
    """Reads the logits of marked requests each step; returns them unchanged."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.engine = None
        try:
            self.engine = _vllm_engine.new_engine(vllm_config, device)
        except Exception as exc:  # never stop vLLM from starting
            _logger.warning("CoreVital capture is off in this vLLM engine: %r", exc)

    def is_argmax_invariant(self) -> bool:
        """False, so that vLLM calls it for greedy requests too (it changes nothing)."""
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Follow the batch: rows removed, added and moved; requests that left go to the instrumentation."""
        engine = self.engine
        if engine is None or batch_update is None:
            return
        try:
            engine.update(batch_update.removed, batch_update.added, batch_update.moved)
            _vllm_engine.drain(engine)
        except Exception as exc:
            self._disable(exc)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Reduce this step's marked rows on the device; the logits go on untouched."""
        engine = self.engine
        if engine is not None and engine.rows:
            try:
                engine.step(logits)
            except Exception as exc:
                self._disable(exc)
        return logits

    def _disable(self, exc: Exception) -> None:
        _logger.warning("CoreVital capture stopped in this vLLM engine (telemetry lost, output unaffected): %r", exc)
        if self.engine is not None and self.engine.taps is not None:
            self.engine.taps.remove()
        self.engine = None
