"""Logit-only steps reduced several at a time: one copy a step, one reduce a batch.

When no layer is captured (a compiled forward, or layers past the model's),
a step's only device work is the logit reduce. A compiled decode is bound by
the host, where each launch is wall time, so each step's raw logits are copied
into a ring on the device (one copy) and the ring is reduced when it fills (one
replay of a graph captured for the ring's shape, see ``_lanes``), and once more
for the steps left at the end. The tokens the steps need (each the one chosen at
the step before) are then the ids' last columns. Not for beam search (rows are
reordered every step) or when the rows are read during the loop (``stop_on``).
"""

from __future__ import annotations

import torch

from ._lanes import LaneReduce, moved
from ._reduce import StepInputs, StepLayout, StepState, reduce_step
from ._rows import StepRows

#: Steps a ring holds at most.
MAX_STEPS = 16
#: Device bytes the ring and its reduce's temporaries (about three times the ring) may take.
BUDGET = 64 << 20


def batch_steps(rows: int, vocab: int) -> int:
    """How many steps' logits one ring holds within :data:`BUDGET` (below 2: no batching)."""
    return min(MAX_STEPS, BUDGET // max(1, 3 * 4 * rows * vocab))


class LogitBatch:
    """The ring of one generation's logit-only steps and their reduce, on one engine (its graph and state)."""

    def __init__(self, layout: StepLayout, state: StepState, engine: LaneReduce, steps: int, scores: torch.Tensor):
        self.layout = layout
        self.state = state
        self.engine = engine
        self.steps = steps
        self.count = 0  # steps in the ring now
        self.ids: torch.Tensor | None = None  # the latest step's ids (their last columns are the ring's tokens)
        self._ring = torch.empty((steps, *scores.shape), dtype=torch.float32, device=scores.device)

    def _target(self) -> torch.Tensor:
        """Where the logits go: the graph's own static ring once it is captured (no copy at the replay)."""
        scores = self.engine.static.scores
        return scores if scores is not None and self.engine.graph is not None else self._ring

    def add(self, step: int, input_ids: torch.Tensor, scores: torch.Tensor, rows: StepRows, aside: bool) -> None:
        """Copy this step's logits into the ring (on the caller's stream, before any processor edits them); reduce
        the ring when it is full."""
        if self.count == 0:
            self.engine.join()  # the last replay (run aside) has read the ring
        self._target()[self.count].copy_(scores)
        self.count += 1
        self.ids = input_ids
        if self.count == self.steps:
            self._reduce(step, rows, aside, self.steps)

    def flush(self, rows: StepRows) -> None:
        """Reduce the steps still in the ring, eagerly, on the caller's stream (the end of the generation)."""
        if self.count:
            self.engine.join()
            self._reduce(-1, rows, False, self.count)

    def _reduce(self, step: int, rows: StepRows, aside: bool, count: int) -> None:
        ids = self.ids
        assert ids is not None
        ring = self._target()
        token = ids[:, -count:].t()  # [steps, rows]: each step's previous token
        if token.device != ring.device:
            token = moved(token, ring.device)
        if count == self.steps:  # a full ring: the graph's shape
            out = self.engine.run(self.layout, self.state, StepInputs(scores=ring, token=token), step, True, aside)
        else:
            out = reduce_step(self.layout, self.state, StepInputs(scores=ring[:count], token=token))
        for row in out.unbind(0):
            rows.append(self.layout, row, step, False)
        self.count = 0
