"""Logit-only steps reduced several at a time: one copy a step, one reduce a ring.

When no layer is captured (a compiled forward, or layers past the model's),
a step's only device work is the logit reduce. A compiled decode is bound by
the host, where each launch is wall time, so each step's raw logits are copied
into a ring on the device (one copy) and the ring is reduced when it fills: one
replay of a graph captured for the ring (see ``_lanes``). The graph reduces the
ring in chunks of steps, each chunk's steps at once: launching a graph costs
host time for every kernel in it, so a chunk's kernels serve all its steps,
while the chunk bounds the working memory. The steps left at the end are
reduced once more. The tokens the steps need (each the one chosen at the step
before) are then the ids' last columns. Not for beam search (rows are reordered
every step) or when the rows are read during the loop (``stop_on``).
"""

from __future__ import annotations

import torch

from ._lanes import LaneReduce, moved
from ._reduce import StepInputs, StepLayout, StepState, reduce_chunks
from ._rows import StepRows

#: Steps a ring holds at most.
MAX_STEPS = 16
#: Device bytes a ring and its reduce's working memory (about twice a chunk) may take.
BUDGET = 64 << 20


def ring_shape(rows: int, vocab: int) -> tuple[int, int]:
    """(chunks, steps a chunk) of a ring within :data:`BUDGET`; (0, 0) when fewer than two steps fit.

    The most steps first (a replay's host time is mostly fixed: on the H200, 2 x 3 steps cost more a generation
    than 11 x 1, ``benchmarks/ring_host.py``), then the largest chunk that still leaves room for its working
    memory (two chunks' worth). The ring's steps divide evenly into chunks.
    """
    fit = BUDGET // max(1, 4 * rows * vocab)  # steps of float32 logits
    steps = min(MAX_STEPS, fit - 2)
    if steps < 2:
        return (0, 0)
    chunk = max(c for c in range(1, steps + 1) if steps % c == 0 and steps + 2 * c <= fit)
    return (steps // chunk, chunk)


class LogitBatch:
    """The ring of one generation's logit-only steps and their reduce, on one engine (its graph and state)."""

    def __init__(
        self, layout: StepLayout, state: StepState, engine: LaneReduce, shape: tuple[int, int], scores: torch.Tensor
    ):
        self.layout = layout
        self.state = state
        self.engine = engine
        self.shape = shape  # (chunks, steps a chunk)
        self.steps = shape[0] * shape[1]
        self.count = 0  # steps in the ring now
        self.ids: torch.Tensor | None = None  # the latest step's ids (their last columns are the ring's tokens)
        self._ring: torch.Tensor | None = torch.empty((*shape, *scores.shape), dtype=scores.dtype, device=scores.device)
        self._slots: tuple[torch.Tensor, ...] = self._ring.flatten(0, 1).unbind(0)  # per-step views of the ring

    def _target(self) -> torch.Tensor:
        """The ring in use: the graph's own static one once it is captured (no copy at the replay)."""
        scores = self.engine.static.scores
        if self.engine.graph is None or scores is None:
            assert self._ring is not None
            return self._ring
        if self._ring is not None:  # the graph's ring from now on
            self._ring = None
            self._slots = scores.flatten(0, 1).unbind(0)
        return scores

    def add(self, step: int, input_ids: torch.Tensor, scores: torch.Tensor, rows: StepRows, aside: bool) -> None:
        """Copy this step's logits into the ring (on the caller's stream, before any processor edits them); reduce
        the ring when it is full."""
        if self.count == 0:
            self.engine.join()  # the last replay (run aside) has read the ring
            self._target()
        self._slots[self.count].copy_(scores)
        self.count += 1
        self.ids = input_ids
        if self.count == self.steps:
            out = self.engine.run(self.layout, self.state, self._inputs(self.steps), step, True, aside)
            self._keep(out, rows, self.steps)

    def flush(self, rows: StepRows) -> None:
        """Reduce the steps still in the ring (the end of the generation), on the caller's stream: by the ring's
        graph when there is one (the unused slots reduced too, and ignored), else eagerly."""
        count = self.count
        if not count:
            return
        self.engine.join()
        if self.engine.graph is None:
            inputs = self._inputs(count)
            assert inputs.scores is not None and inputs.token is not None
            chunk = self.shape[1]
            pieces = zip(inputs.scores.split(chunk), inputs.token.split(chunk), strict=True)
            self._keep(reduce_chunks(self.layout, self.state, pieces), rows, count)
            return
        self.padded(rows)

    def padded(self, rows: StepRows) -> None:
        """The steps in the ring, reduced by a replay of the whole ring: the slots past them hold older logits and
        a zero token, and their rows are dropped; the carried log-probabilities are then the last real step's."""
        count = self.count
        inputs = self._inputs(count)
        assert inputs.token is not None and inputs.scores is not None
        token = inputs.token.new_zeros((self.steps, inputs.token.shape[1]))
        token[:count] = inputs.token
        inputs.scores = self._target()
        inputs.token = token.unflatten(0, self.shape)
        out = self.engine.run(self.layout, self.state, inputs, -1, True, False)
        self.engine.join()
        assert self.state.logp is not None
        self.state.logp.copy_(torch.log_softmax(self._slots[count - 1].float(), dim=-1))
        self._keep(out[:count], rows, count)

    def _inputs(self, count: int) -> StepInputs:
        """The ring, whole ([chunks, steps, rows, vocab]), or its first ``count`` steps ([count, rows, vocab]),
        with their tokens."""
        ids = self.ids
        assert ids is not None
        ring = self._target()
        token = ids[:, -count:].t()  # [steps, rows]: each step's previous token
        if token.device != ring.device:
            token = moved(token, ring.device)
        if count == self.steps:
            return StepInputs(scores=ring, token=token.unflatten(0, self.shape))
        return StepInputs(scores=ring.flatten(0, 1)[:count], token=token)

    def _keep(self, out: torch.Tensor, rows: StepRows, count: int) -> None:
        for row in out.unbind(0):
            rows.append(self.layout, row, -1, False)
        self.count = 0
