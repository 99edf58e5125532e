"""One generation's capture: a logits processor that records on the device, and the final transfer.

The processor is placed first in ``generate``'s processor list, so it sees the
model's raw next-token logits (float32, before repetition penalties and before
temperature/top-k/top-p warping) and returns them untouched. Per step it
launches a few kernels (``logit_stats``), appends the [rows, 4] result to a
Python list and keeps the step's log-probabilities for one step, until the
next call's ``input_ids`` reveals which token was chosen. Nothing is read on
the host until :meth:`CaptureSession.finish`, which stacks everything and
transfers it once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.generation.logits_process import LogitsProcessorList

from ._clock import StepClock
from ._stats import STAT_COLUMNS, chosen_surprisal, logit_stats

_logger = logging.getLogger(__name__)

#: Per-step series of a captured row, in the order they are transferred.
SERIES = (*STAT_COLUMNS, "surprisal")

#: Generation modes whose processor calls map one-to-one onto emitted tokens.
SIGNAL_MODES = frozenset({"greedy_search", "sample"})
#: Modes that call the processors exactly once per decoding step (so step times are real).
TIMING_MODES = SIGNAL_MODES | {"beam_search", "beam_sample", "group_beam_search", "constrained_beam_search"}


@dataclass
class CaptureResult:
    """Host-side result of one generation's capture; no tensors."""

    signals: bool  # whether logit signals were captured
    unavailable: dict[str, str] = field(default_factory=dict)  # signal group -> reason
    prefix_len: int = 0  # length of the sequence fed to step 0 (prompt, or decoder start)
    steps: int = 0  # decoding steps recorded
    series: list[dict[str, list[float | None]]] = field(default_factory=list)  # per row
    sequences: list[list[int]] = field(default_factory=list)  # returned sequences, host copy
    step_ends: list[float] = field(default_factory=list)  # seconds from start to each step's end
    error: str | None = None


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def _row_series(row: list[list[float]]) -> dict[str, list[float | None]]:
    """One row's [series][steps] values as named lists; a step with any non-finite statistic is all None.

    (A NaN logit poisons top-k, but the NaN-skipping entropy sum would read 0.)
    """
    n_stats = len(STAT_COLUMNS)
    bad = {step for i in range(n_stats) for step, v in enumerate(row[i]) if not _finite(v)}
    return {
        name: [None if (step in bad and i < n_stats) or not _finite(v) else v for step, v in enumerate(row[i])]
        for i, name in enumerate(SERIES)
    }


class _StepRecorder:
    """The per-step hook; never raises into ``generate`` and never changes the scores."""

    def __init__(self, session: "CaptureSession", signals: bool) -> None:
        self._session = session
        self.signals = signals
        self.timing = True
        self.steps = 0
        self.prefix_len: int | None = None
        self.stats: list[torch.Tensor] = []
        self.surprisal: list[torch.Tensor] = []
        self.last_logp: torch.Tensor | None = None
        self.failed: str | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.failed is None:
            try:
                self._record(input_ids, scores)
            except Exception as exc:  # never let our bookkeeping break the user's generation
                self.failed = f"{type(exc).__name__}: {exc}"
                self.stats.clear()
                self.surprisal.clear()
                self.last_logp = None
                _logger.warning("CoreVital capture stopped for this generation: %s", self.failed)
        return scores

    def _record(self, input_ids: torch.Tensor, scores: torch.Tensor) -> None:
        if self.prefix_len is None:
            self.prefix_len = int(input_ids.shape[1])
        if self.signals:
            if self.last_logp is not None:
                self.surprisal.append(chosen_surprisal(self.last_logp, input_ids[:, -1]))
            stats, self.last_logp = logit_stats(scores)
            self.stats.append(stats)
        if self.timing:
            self._session.clock.mark()
        self.steps += 1


class RecordingProcessorList(LogitsProcessorList):
    """``generate``'s own processor list, with our recorder called first on the raw scores.

    The recorder is not an entry of the list: ``LogitsProcessorList`` inspects
    every entry's signature on every step (tens of microseconds each), and a
    recorder outside the list costs nothing of that.
    """

    def __init__(self, processors: Any, recorder: _StepRecorder) -> None:
        super().__init__(processors)
        self.recorder = recorder

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.FloatTensor:
        self.recorder(input_ids, scores)
        return super().__call__(input_ids, scores, **kwargs)


class CaptureSession:
    """State of one instrumented ``generate`` call, from entry to the final transfer."""

    def __init__(self, model: Any, device: torch.device | None, signals: bool) -> None:
        self.model = model
        self.clock = StepClock(device)
        self.recorder = _StepRecorder(self, signals)
        self.attached = False
        self.generation_config: Any = None
        self.generation_mode: str | None = None
        self.unavailable: dict[str, str] = {}

    def processors_for(self, processors: Any, generation_config: Any, assistant_model: Any = None) -> RecordingProcessorList:
        """``processors`` with our recorder in front, configured for this call's decoding mode."""
        self.generation_config = generation_config
        try:
            self.generation_mode = str(generation_config.get_generation_mode(assistant_model).value)
        except Exception:
            self.generation_mode = None
        if self.recorder.signals and self.generation_mode not in SIGNAL_MODES:
            # Beam and assisted decoding call processors on reordered or speculative rows;
            # their logit signals need the per-beam bookkeeping of a later release.
            self.recorder.signals = False
            self.unavailable["logits"] = f"not captured for {self.generation_mode or 'this'} decoding"
        if self.generation_mode not in TIMING_MODES:
            self.recorder.timing = False
            self.unavailable["timing"] = f"per-step times not measured for {self.generation_mode or 'this'} decoding"
        self.attached = True
        return RecordingProcessorList(processors, self.recorder)

    def finish(self, sequences: torch.Tensor | None) -> CaptureResult:
        """Stack the device buffers, transfer them once, and free them."""
        rec = self.recorder
        result = CaptureResult(signals=rec.signals and rec.failed is None, unavailable=dict(self.unavailable))
        if not self.attached:
            result.unavailable.setdefault("logits", "the capture could not attach to this generate call")
            result.signals = False
        try:
            if sequences is not None:
                result.sequences = sequences.tolist()
            prefix = rec.prefix_len if rec.prefix_len is not None else 0
            result.prefix_len = prefix
            produced = (len(result.sequences[0]) - prefix) if result.sequences else rec.steps
            steps = max(0, min(rec.steps, produced))
            result.steps = steps
            if result.signals and steps > 0 and rec.stats:
                if len(rec.surprisal) < steps and rec.last_logp is not None and sequences is not None:
                    # The last step's token is known only from the returned sequences.
                    rec.surprisal.append(chosen_surprisal(rec.last_logp, sequences[:, prefix + steps - 1]))
                stats = torch.stack(rec.stats[:steps], dim=2)  # [rows, 4, steps]
                surprisal = torch.cat(rec.surprisal[:steps], dim=1).unsqueeze(1)  # [rows, 1, steps]
                host = torch.cat([stats, surprisal], dim=1).tolist()  # [rows][5][steps]
                result.series = [_row_series(row) for row in host]
            result.step_ends = self.clock.step_ends()[:steps]
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            result.signals = False
            result.series = []
            _logger.warning("CoreVital could not read back this generation's capture: %s", result.error)
        if rec.failed is not None:
            result.error = rec.failed
            result.unavailable["logits"] = "capture failed during the generation"
        rec.stats.clear()
        rec.surprisal.clear()
        rec.last_logp = None
        return result
