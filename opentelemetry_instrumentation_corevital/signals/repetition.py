"""Repetition loops found in the generated token ids.

Two rules; the ``repetition_loop`` flag and ``stop_on="repetition_loop"``
apply both (:func:`find_loop`), so a live stop and the flag agree:

* an exact loop - a stretch in which ``tokens[i] == tokens[i - period]`` for
  every ``i``, spanning at least ``min_cycles`` whole periods and
  ``min_tokens`` tokens, so a doubled word or a short table rule is not a loop
  but "the the the ..." or a sentence said three times is;
* an n-gram near-loop (:class:`NgramLoopRule`) - most recent steps close an
  n-gram already said several times not long before: the sentence loops with
  small variations (an edit, a paragraph break) that break an exact period.

The original CoreVital looked only at the last five steps' hidden states; its
n-gram check was unreachable. These run on the ids on the host after the
generation (they are transferred anyway), so they cost no device work.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_MIN_CYCLES = 3
DEFAULT_MIN_TOKENS = 12
DEFAULT_MAX_PERIOD = 32


@dataclass(frozen=True)
class RepetitionLoop:
    """A periodic stretch of output tokens: where it starts, its period and how much it covers."""

    onset_step: int  # first step of the periodic stretch (0 = first generated token)
    period: int  # tokens per cycle
    length: int  # tokens in the periodic stretch, the first cycle included
    share: float  # length / number of generated tokens


def find_repetition_loop(
    tokens: Sequence[int],
    *,
    min_cycles: int = DEFAULT_MIN_CYCLES,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    max_period: int = DEFAULT_MAX_PERIOD,
) -> RepetitionLoop | None:
    """Earliest qualifying periodic stretch; among equal onsets, the longest.

    ``min_cycles`` whole periods and ``min_tokens`` tokens are both required.
    Runs in O(len(tokens) * max_period).
    """
    n = len(tokens)
    best: RepetitionLoop | None = None
    for period in range(1, min(max_period, n // max(min_cycles, 1)) + 1):
        needed = max(min_cycles * period, min_tokens)
        run = 0  # consecutive i with tokens[i] == tokens[i - period]
        for i in range(period, n + 1):
            if i < n and tokens[i] == tokens[i - period]:
                run += 1
                continue
            span = run + period
            if run and span >= needed:
                onset = i - span
                if best is None or onset < best.onset_step or (onset == best.onset_step and span > best.length):
                    best = RepetitionLoop(onset, period, span, span / n)
            run = 0
    return best


@dataclass(frozen=True)
class NgramLoopRule:
    """A near-loop: most recent steps close an n-gram already said several times not long before.

    Edit-tolerant (a changed word only breaks the n n-grams around it) and blind
    to the period (any period up to ``history``), unlike the exact tail test.
    The on-device ``stop_on`` criterion evaluates the same rule at every step.
    """

    n: int = 4  # n-gram length
    seen: int = 3  # a step recurs when its n-gram ended at this many earlier steps (its 4th saying)
    history: int = 128  # ... within this many steps before it
    window: int = 16  # the rule holds at a step when, among the last ``window`` steps,
    hits: int = 9  # at least this many recur

    def __post_init__(self) -> None:
        if min(self.n, self.seen, self.history) < 1 or not 1 <= self.hits <= self.window:
            raise ValueError(f"{self}: n, seen and history must be >= 1 and 1 <= hits <= window")


NGRAM_LOOP = NgramLoopRule()


def recurring_steps(tokens: Sequence[int], rule: NgramLoopRule = NGRAM_LOOP) -> list[bool]:
    """Per step, whether its n-gram already ended at ``rule.seen`` or more of the ``rule.history`` steps before."""
    ends: dict[tuple[int, ...], list[int]] = {}
    out = [False] * len(tokens)
    for i in range(rule.n - 1, len(tokens)):
        earlier = ends.setdefault(tuple(tokens[i - rule.n + 1 : i + 1]), [])
        out[i] = len(earlier) - bisect_left(earlier, i - rule.history) >= rule.seen
        earlier.append(i)
    return out


def ngram_loop_steps(tokens: Sequence[int], rule: NgramLoopRule = NGRAM_LOOP) -> list[bool]:
    """Per step, whether the rule holds there: at least ``hits`` of the last ``window`` steps recur."""
    recurs = recurring_steps(tokens, rule)
    held, count = [], 0
    for i, r in enumerate(recurs):
        count += r - (recurs[i - rule.window] if i >= rule.window else 0)
        held.append(count >= rule.hits)
    return held


def find_ngram_loop(tokens: Sequence[int], rule: NgramLoopRule = NGRAM_LOOP) -> RepetitionLoop | None:
    """The near-loop the rule finds first: from the first recurring step of the window where it first holds.

    ``period`` is the distance from that step's n-gram back to its previous
    saying; ``length`` runs from the onset to the last recurring step.
    """
    held = ngram_loop_steps(tokens, rule)
    if not any(held):
        return None
    recurs = recurring_steps(tokens, rule)
    stop = held.index(True)
    onset = next(i for i in range(max(0, stop - rule.window + 1), stop + 1) if recurs[i])
    gram = list(tokens[stop - rule.n + 1 : stop + 1])
    period = next(p for p in range(1, stop - rule.n + 2) if list(tokens[stop - p - rule.n + 1 : stop - p + 1]) == gram)
    length = max(i for i, r in enumerate(recurs) if r) + 1 - onset
    return RepetitionLoop(onset, period, length, length / len(tokens))


def find_loop(
    tokens: Sequence[int],
    *,
    min_cycles: int = DEFAULT_MIN_CYCLES,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    max_period: int = DEFAULT_MAX_PERIOD,
    rule: NgramLoopRule = NGRAM_LOOP,
) -> RepetitionLoop | None:
    """The ``repetition_loop`` rule: an exact periodic stretch or an n-gram near-loop, the one with the earlier onset.

    ``stop_on="repetition_loop"`` stops at the first step where either holds, so
    the flag fires exactly when a live stop would have (with the same thresholds).
    """
    exact = find_repetition_loop(tokens, min_cycles=min_cycles, min_tokens=min_tokens, max_period=max_period)
    near = find_ngram_loop(tokens, rule)
    if exact is None or near is None:
        return exact or near
    return near if near.onset_step < exact.onset_step else exact


def ngram_repeat_rate(tokens: Sequence[int], n: int = 4) -> float | None:
    """Share of the output's n-grams that repeat an earlier one: Welleck et al.'s seq-rep-n, 1 - unique/total.

    0 for text that never repeats an n-gram, close to 1 for a loop. Unlike the
    periodic-loop test it also sees loops with small variations ("1. I like
    cats. 2. I like cats. ..."). ``None`` when the output has fewer than ``n`` tokens.
    """
    total = len(tokens) - n + 1
    if total <= 0:
        return None
    unique = len({tuple(tokens[i : i + n]) for i in range(total)})
    return 1.0 - unique / total


def copied_steps(tokens: Sequence[int], n: int = 4) -> list[bool]:
    """Per step, whether the n-gram ending at that step already ended at an earlier step (the model copies itself)."""
    seen: set[tuple[int, ...]] = set()
    copied = [False] * len(tokens)
    for i in range(n - 1, len(tokens)):
        gram = tuple(tokens[i - n + 1 : i + 1])
        copied[i] = gram in seen
        seen.add(gram)
    return copied
