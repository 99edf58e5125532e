"""Risk score: a monotone noisy-OR of calibrated per-signal scores.

Each factor maps one signal value ``x`` to a score in (0, 1) with a logistic
curve, ``s = 1 / (1 + exp(-(x - midpoint) / scale))`` (or of ``midpoint - x``
for signals where *low* is bad), and carries a weight ``w`` in (0, 1], the most
that factor alone can contribute. The factors combine as

    risk = 1 - prod_i (1 - w_i * s_i)

so the score rises with every factor, no single factor can reach 1 unless its
weight is 1, and several moderate factors add up without a hard cap. A
non-finite value in the logits forces 1.0. This replaces the original
CoreVital's "max of ceilings plus additive bumps", which saturated at 1.0 for
most runs of two of its four models.

Midpoints and scales are per model family (see ``profiles``); these defaults
fit small instruction-tuned Llama-family models on their raw next-token
distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping


@dataclass(frozen=True)
class FactorSpec:
    """How one signal maps to a score."""

    midpoint: float
    scale: float
    weight: float
    higher_is_riskier: bool = True
    description: str = ""

    def score(self, value: float) -> float:
        z = (value - self.midpoint) / self.scale
        if not self.higher_is_riskier:
            z = -z
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)


@dataclass(frozen=True)
class Factor:
    name: str
    value: float  # the signal's own value (bits, probability, share ...)
    score: float  # calibrated score in (0, 1)
    weight: float
    description: str = ""

    @property
    def contribution(self) -> float:
        """What this factor alone would make the risk: weight * score."""
        return self.weight * self.score


@dataclass(frozen=True)
class Risk:
    score: float
    factors: tuple[Factor, ...] = field(default_factory=tuple)
    forced_by: str | None = None  # name of a condition that forced 1.0

    @property
    def level(self) -> str:
        return risk_level(self.score)

    def top_factors(self, n: int = 3) -> list[Factor]:
        return sorted(self.factors, key=lambda f: f.contribution, reverse=True)[:n]


#: Default factor table for the signals every ``summary`` capture has.
DEFAULT_FACTORS: Mapping[str, FactorSpec] = {
    "entropy_mean": FactorSpec(
        2.5, 0.5, 0.45, description="mean next-token entropy (bits): the model was unsure throughout"
    ),
    "high_entropy_fraction": FactorSpec(
        0.25, 0.07, 0.35, description="share of steps above the high-entropy threshold"
    ),
    "margin_mean": FactorSpec(
        0.25, 0.07, 0.3, higher_is_riskier=False, description="mean top-1 minus top-2 probability: close calls"
    ),
    "surprisal_mean": FactorSpec(
        3.0, 0.6, 0.3, description="mean surprisal of the emitted tokens (bits): unlikely picks"
    ),
    "repetition_share": FactorSpec(
        0.15, 0.04, 0.9, description="share of the output inside a repetition loop"
    ),
}

LEVEL_MEDIUM = 0.3
LEVEL_HIGH = 0.7


def risk_level(score: float) -> str:
    if score >= LEVEL_HIGH:
        return "high"
    if score >= LEVEL_MEDIUM:
        return "medium"
    return "low"


def combine(factors: Iterable[Factor]) -> float:
    """Noisy-OR of the factors' contributions."""
    keep = 1.0
    for factor in factors:
        keep *= 1.0 - factor.contribution
    return 1.0 - keep


def risk_score(
    signals: Mapping[str, float | None],
    *,
    nonfinite: bool = False,
    specs: Mapping[str, FactorSpec] = DEFAULT_FACTORS,
) -> Risk:
    """Score one sequence from its signal values.

    ``signals`` maps factor names to values; missing or ``None`` values are
    skipped (the factor is unavailable, not zero). ``nonfinite`` forces 1.0.
    """
    factors = []
    for name, spec in specs.items():
        value = signals.get(name)
        if value is None or not math.isfinite(value):
            continue
        factors.append(Factor(name, float(value), spec.score(float(value)), spec.weight, spec.description))
    if nonfinite:
        return Risk(1.0, tuple(factors), forced_by="nan_or_inf")
    return Risk(combine(factors), tuple(factors))
