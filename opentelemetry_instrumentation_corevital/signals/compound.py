"""Compound signals: patterns that only mean something when several signals agree, each with an onset step.

* ``confident_repetition`` — the model copies its own recent output *and* is sure of it: the loop signature
  of Xu et al. (NeurIPS 2022), repetition that reinforces itself with falling entropy.
* ``context_loss`` — the new tokens stop looking at the prompt (attention on prompt keys, sink excluded, falls
  well below its opening level) while entropy rises: the model is generating away from its input.
* ``degeneration`` — over a trailing stretch entropy trends up, the margin down and surprisal up, all three.
* ``attention_bottleneck`` — many heads collapsed while the output distribution is wide: information is not
  reaching the prediction.

Each takes plain per-step lists (``None`` = missing) and a ``window`` in steps; thresholds come from the
model profile. Severity is in [0, 1] and defined per signal below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .aggregate import mean
from .trend import suffix_slopes


@dataclass(frozen=True)
class CompoundSignal:
    """A pattern across several signals at once, where it began and how severe it is."""

    name: str
    onset_step: int
    severity: float
    evidence: dict[str, float] = field(default_factory=dict)


def confident_repetition(
    entropy: Sequence[float | None],
    top1: Sequence[float | None],
    copied: Sequence[bool],
    *,
    window: int,
    max_entropy_bits: float,
    min_copied_share: float,
) -> CompoundSignal | None:
    """First window of ``window`` steps in which at least ``min_copied_share`` of the steps repeat an earlier
    n-gram of the output and the mean entropy is below ``max_entropy_bits``.

    Onset: the first copied step of that window. Severity: the mean top-1 probability from the onset to the end
    (how locked in the model is).
    """
    n = len(copied)
    for start in range(0, n - window + 1):
        share = sum(copied[start : start + window]) / window
        if share < min_copied_share:
            continue
        mean_entropy = mean(entropy[start : start + window])
        if mean_entropy is None or mean_entropy >= max_entropy_bits:
            continue
        onset = next(i for i in range(start, start + window) if copied[i])
        locked = mean(top1[onset:]) or 0.0
        return CompoundSignal(
            "confident_repetition",
            onset,
            locked,
            {"copied_share": share, "entropy_mean": mean_entropy, "top1_mean": locked},
        )
    return None


def context_loss(
    prompt_share: Sequence[float | None],
    entropy: Sequence[float | None],
    *,
    window: int,
    min_ratio: float,
    entropy_rise_bits: float,
) -> CompoundSignal | None:
    """First window whose mean prompt attention share is below ``min_ratio`` times the opening window's while its
    mean entropy is at least ``entropy_rise_bits`` above the opening window's.

    ``prompt_share`` is, per step, the attention the new token gives to prompt keys as a share of its non-sink
    attention (mean over captured layers). The opening window is the first ``window`` steps after step 0 (step 0's
    query sees only the prompt). Severity: 1 - (window share / opening share).
    """
    if len(prompt_share) < 2 * window + 1:
        return None
    opening_share = mean(prompt_share[1 : 1 + window])
    opening_entropy = mean(entropy[1 : 1 + window])
    if not opening_share or opening_entropy is None:
        return None
    for start in range(1 + window, len(prompt_share) - window + 1):
        share = mean(prompt_share[start : start + window])
        ent = mean(entropy[start : start + window])
        if share is None or ent is None:
            continue
        if share < min_ratio * opening_share and ent >= opening_entropy + entropy_rise_bits:
            return CompoundSignal(
                "context_loss",
                start,
                max(0.0, 1.0 - share / opening_share),
                {
                    "prompt_share": share,
                    "opening_prompt_share": opening_share,
                    "entropy_mean": ent,
                    "opening_entropy_mean": opening_entropy,
                },
            )
    return None


def degeneration(
    entropy: Sequence[float | None],
    margin: Sequence[float | None],
    surprisal: Sequence[float | None],
    *,
    window: int,
    entropy_slope: float,
    margin_slope: float,
    surprisal_slope: float,
) -> CompoundSignal | None:
    """The longest trailing stretch (at least ``2 * window`` steps, starting on a multiple of ``window``) over which
    the least-squares slopes per step are all adverse: entropy > ``entropy_slope``, margin < ``-margin_slope``,
    surprisal > ``surprisal_slope``.

    Onset: the stretch's first step. Severity: 1 - exp(-rise / 2 bits), rise = entropy slope x stretch length.
    """
    n = len(entropy)
    entropy_slopes, margin_slopes, surprisal_slopes = (
        suffix_slopes(entropy),
        suffix_slopes(margin),
        suffix_slopes(surprisal),
    )
    for start in range(0, n - 2 * window + 1, window):
        e, m, s = entropy_slopes[start], margin_slopes[start], surprisal_slopes[start]
        if e is None or m is None or s is None:
            continue
        if e > entropy_slope and m < -margin_slope and s > surprisal_slope:
            rise = e * (n - start)
            return CompoundSignal(
                "degeneration",
                start,
                1.0 - math.exp(-rise / 2.0),
                {"entropy_slope": e, "margin_slope": m, "surprisal_slope": s},
            )
    return None


def attention_bottleneck(
    collapsed_share: Sequence[float | None],
    entropy: Sequence[float | None],
    *,
    window: int,
    min_share: float,
    min_entropy_bits: float,
) -> CompoundSignal | None:
    """First window with a mean collapsed-head share of at least ``min_share`` and a mean entropy of at least
    ``min_entropy_bits``. ``collapsed_share`` is per step over all captured layers (``None`` where not captured).

    Severity: the window's collapsed share divided by ``2 * min_share``, at most 1.
    """
    for start in range(0, len(collapsed_share) - window + 1):
        share = mean(collapsed_share[start : start + window])
        ent = mean(entropy[start : start + window])
        if share is None or ent is None:
            continue
        if share >= min_share and ent >= min_entropy_bits:
            return CompoundSignal(
                "attention_bottleneck",
                start,
                min(1.0, share / (2 * min_share)),
                {"collapsed_share": share, "entropy_mean": ent},
            )
    return None
