"""Stopping a generation while it runs, decided on the device.

:class:`StopOn` is a ``transformers`` stopping criterion. ``generate`` already
reads its stopping decision on the host once per step; a criterion that
returns a device boolean rides on that read, so checking conditions here adds
a few small kernels per step and no synchronisation.

Conditions:

* ``repetition_loop`` - the report's ``repetition_loop`` rule at every step
  (:class:`LoopCheck`): the *tail* of the generated ids repeats with a fixed
  period p (1..32) for at least 3 whole periods and 12 tokens (the profile's
  thresholds), or 9 of the last 16 steps close a 4-gram already said 3 times
  in the 128 steps before (:class:`~..signals.repetition.NgramLoopRule`: edit-
  tolerant, any period). With ``stop_loop_repeat=R`` a tail that repeats R
  tokens of its previous period (and 12 in all) is enough: long sentences are
  stopped on their second saying, at the cost of stopping some clauses said
  twice (see BENCHMARKS.md);
* ``nan_or_inf`` - the step's next-token distribution is not finite;
* ``high_entropy`` - ``run`` consecutive steps above ``high_entropy_bits``.

A Python ``step_callback`` can also stop generation; it needs the step's values
on the host, which costs one synchronisation each time it runs (every
``callback_every`` steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._config import STOP_CONDITIONS as CONDITIONS
from .._config import StepView
from ..signals.repetition import (
    DEFAULT_MAX_PERIOD,
    DEFAULT_MIN_CYCLES,
    DEFAULT_MIN_TOKENS,
    NGRAM_LOOP,
    NgramLoopRule,
)
from ._lanes import moved
from ._recorder import StepRecorder
from ._rows import StepRows

CODES = {name: i + 1 for i, name in enumerate(CONDITIONS)}
CALLBACK = "step_callback"
CODES[CALLBACK] = len(CONDITIONS) + 1
LN2 = math.log(2.0)
#: The exact tail test's (min_cycles, min_tokens, max_period) when no profile gives them.
DEFAULT_TAIL = (DEFAULT_MIN_CYCLES, DEFAULT_MIN_TOKENS, DEFAULT_MAX_PERIOD)


def loop_length(period: int, min_cycles: int, min_tokens: int, min_repeat: int | None) -> int:
    """Tokens a periodic tail needs before ``repetition_loop`` stops it.

    By default ``min_cycles`` whole periods (and ``min_tokens``): a loop is
    certain, but a long sentence is only stopped on its third saying. With
    ``min_repeat`` the tail may instead repeat ``min_repeat`` tokens of the
    previous period: earlier, at the risk of stopping a clause said twice.
    """
    need = min_cycles * period
    if min_repeat is not None:
        need = min(need, period + min_repeat)
    return max(need, min_tokens)


class _TailLoops:
    """Index tables to test every period at once: one gather pair, one compare, two reductions."""

    def __init__(
        self,
        device: torch.device,
        max_period: int = 32,
        min_cycles: int = 3,
        min_tokens: int = 12,
        min_repeat: int | None = None,
    ) -> None:
        self.max_period, self.min_cycles, self.min_tokens = max_period, min_cycles, min_tokens
        needs = [loop_length(p, min_cycles, min_tokens, min_repeat) for p in range(1, max_period + 1)]
        width = max(n - p for p, n in zip(range(1, max_period + 1), needs))
        front = torch.zeros(max_period, width, dtype=torch.long)
        back = torch.zeros(max_period, width, dtype=torch.long)
        for row, (p, need) in enumerate(zip(range(1, max_period + 1), needs)):
            count = need - p  # tokens that must equal the one p positions earlier
            front[row, :count] = torch.arange(count)
            back[row, :count] = torch.arange(count) + p
        # Unused cells compare position 0 with itself: always equal.
        self.front, self.back = front.to(device), back.to(device)
        self.depth = max(needs)

        self.needs = needs

    def periods(self, generated: int) -> int:
        """How many periods can already qualify after ``generated`` tokens (host arithmetic, no device read)."""
        return sum(1 for need in self.needs if need <= generated)

    def __call__(self, input_ids: torch.Tensor, generated: int) -> torch.Tensor | None:
        count = self.periods(generated)
        if count == 0:
            return None
        recent = input_ids[:, -self.depth :].flip(-1)  # recent[:, d] is the token d steps back
        equal = recent[:, self.front[:count]] == recent[:, self.back[:count]]
        return equal.all(dim=-1).any(dim=-1)


class _NgramLoops:
    """:class:`NgramLoopRule` on the device: the last ``window`` n-grams against the ``history`` before each.

    Stateless: every step compares the tail of the ids again (window x history x n
    element compares per row), so a skipped or repeated call cannot put it out of step.
    """

    def __init__(self, device: torch.device, rule: NgramLoopRule = NGRAM_LOOP) -> None:
        self.rule = rule
        self.depth = rule.window + rule.history + rule.n - 1  # positions the check reads
        ends = torch.arange(self.depth - rule.window, self.depth)  # n-gram ends checked: the last `window`
        before = ends.view(-1, 1) - rule.history + torch.arange(rule.history)  # each one's `history` predecessors
        self.ends, self.before = ends.to(device), before.to(device)
        self.least = rule.n + rule.seen + rule.hits - 1  # fewer generated tokens cannot hold the rule

    def __call__(self, input_ids: torch.Tensor, generated: int) -> torch.Tensor | None:
        rule = self.rule
        if generated < self.least:
            return None
        tail = input_ids[:, -self.depth :]
        if tail.shape[1] < self.depth:  # a short prompt: pad on the left; the padding is never a generated n-gram
            tail = torch.nn.functional.pad(tail, (self.depth - tail.shape[1], 0))
        same = tail[:, self.ends].unsqueeze(-1) == tail[:, self.before]
        for k in range(1, rule.n):
            same &= tail[:, self.ends - k].unsqueeze(-1) == tail[:, self.before - k]
        first = self.depth - generated + rule.n - 1  # the first position ending an n-gram of generated tokens
        earlier = (same & (self.before >= first)).sum(dim=-1)
        recurs = (earlier >= rule.seen) & (self.ends >= first)
        return recurs.sum(dim=-1) >= rule.hits


class LoopCheck:
    """The ``repetition_loop`` stop: an exact periodic tail or an n-gram near-loop (the report's flag, per step)."""

    def __init__(
        self,
        device: torch.device,
        min_cycles: int = DEFAULT_MIN_CYCLES,
        min_tokens: int = DEFAULT_MIN_TOKENS,
        max_period: int = DEFAULT_MAX_PERIOD,
        min_repeat: int | None = None,
        rule: NgramLoopRule = NGRAM_LOOP,
    ) -> None:
        self.tails = _TailLoops(device, max_period, min_cycles, min_tokens, min_repeat)
        self.ngrams = _NgramLoops(device, rule)

    def __call__(self, input_ids: torch.Tensor, generated: int) -> torch.Tensor | None:
        found = [f for f in (self.tails(input_ids, generated), self.ngrams(input_ids, generated)) if f is not None]
        return found[0] | found[1] if len(found) == 2 else (found[0] if found else None)


class StopOn:
    """A stopping criterion for ``generate``; returns a device bool per row, never syncs (except callbacks)."""

    def __init__(
        self,
        recorder: StepRecorder,
        rows: StepRows,
        conditions: Sequence[str],
        high_entropy_bits: float,
        high_entropy_run: int = 8,
        step_callback: Callable[[StepView], Any] | None = None,
        callback_every: int = 1,
        beams: bool = False,
        loop_repeat: int | None = None,
        loop_tail: tuple[int, int, int] = DEFAULT_TAIL,
    ) -> None:
        self.recorder = recorder  # the step count and prefix length
        self.rows = rows  # this step's logit row
        self.conditions = tuple(conditions)
        self.high_entropy_nats = high_entropy_bits * LN2
        self.high_entropy_run = high_entropy_run
        self.step_callback = step_callback
        self.callback_every = max(1, callback_every)
        self.loop_repeat = loop_repeat
        self.loop_tail = loop_tail  # the exact tail test's min_cycles, min_tokens, max_period: the profile's
        self.beams = beams  # beam rows are candidates, not our per-row statistics: token conditions only
        self.loops: LoopCheck | None = None
        self.run: torch.Tensor | None = None
        self.stopped_at: torch.Tensor | None = None  # [rows] step of the stop, -1 if none
        self.reason: torch.Tensor | None = None  # [rows] code of the condition
        self.stop_all = False
        self.failed: str | None = None

    def __deepcopy__(self, memo: dict) -> StopOn:  # transformers may deep-copy criteria lists
        return self

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        rows = input_ids.shape[0]
        stop = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        if self.failed is not None:
            return stop
        try:
            return self._check(input_ids, stop)
        except Exception as exc:  # never break the user's generation
            self.failed = f"{type(exc).__name__}: {exc}"
            return stop

    def _check(self, input_ids: torch.Tensor, stop: torch.Tensor) -> torch.Tensor:
        step = self.recorder.steps - 1  # the recorder already counted this step
        prefix = self.recorder.prefix_len or 0
        generated = input_ids.shape[1] - prefix
        device = input_ids.device
        rows = input_ids.shape[0]
        stopped_at, reason = self.stopped_at, self.reason
        if stopped_at is None or reason is None or stopped_at.shape[0] != rows:
            stopped_at = torch.full((rows,), -1, dtype=torch.long, device=device)
            reason = torch.zeros(rows, dtype=torch.long, device=device)
            self.stopped_at, self.reason = stopped_at, reason
        fired: list[tuple[int, torch.Tensor]] = []
        if "repetition_loop" in self.conditions:
            if self.loops is None:
                self.loops = LoopCheck(device, *self.loop_tail, min_repeat=self.loop_repeat)
            loop = self.loops(input_ids, generated)
            if loop is not None:
                fired.append((CODES["repetition_loop"], loop))
        last = self.rows.last_logits() if not self.beams else None
        if last is not None:  # a model split over devices may keep the logits elsewhere
            last = moved(last, device)
        if last is not None and last.shape[0] == rows:
            if "nan_or_inf" in self.conditions:
                fired.append((CODES["nan_or_inf"], torch.isnan(last[:, 1])))
            if "high_entropy" in self.conditions:
                high = (-last[:, 0]) > self.high_entropy_nats
                self.run = high.long() if self.run is None else (self.run + 1) * high
                fired.append((CODES["high_entropy"], self.run >= self.high_entropy_run))
        if self.step_callback is not None and step % self.callback_every == 0 and last is not None:
            values = last[:, :2].tolist()  # one synchronisation, paid only by callback users
            view = StepView(
                step, [-v[0] / LN2 for v in values], [math.exp(v[1]) for v in values], input_ids[:, -1].tolist()
            )
            if self.step_callback(view):
                self.stop_all = True
        if self.stop_all:
            fired.append((CODES[CALLBACK], torch.ones(rows, dtype=torch.bool, device=device)))
        for code, condition in fired:
            new = condition & (stopped_at < 0)
            stopped_at = torch.where(new, step, stopped_at)
            reason = torch.where(new, code, reason)
            stop = stop | condition
        self.stopped_at, self.reason = stopped_at, reason
        return stop
