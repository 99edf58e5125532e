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

Midpoints, scales and weights are data: each model profile
(``profiles/*.json``, loaded by :mod:`.profiles`) carries its factor table;
see docs/diagnosis.md for how the shipped ones were calibrated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .aggregate import is_finite
from .factor import FactorSpec
from .profiles import load_profile


@dataclass(frozen=True)
class Factor:
    """One signal's part in the risk: its value, calibrated score and weight."""

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
    """A sequence's risk score and the factors behind it."""

    score: float
    factors: tuple[Factor, ...] = field(default_factory=tuple)
    forced_by: str | None = None  # name of a condition that forced 1.0

    @property
    def level(self) -> str:
        """``low``, ``medium`` or ``high``."""
        return risk_level(self.score)

    def top_factors(self, n: int = 3) -> list[Factor]:
        """The ``n`` factors that contribute most, largest first."""
        return sorted(self.factors, key=lambda f: f.contribution, reverse=True)[:n]


LEVEL_MEDIUM = 0.3
LEVEL_HIGH = 0.7


def risk_level(score: float) -> str:
    """The level of a risk score: ``low`` below 0.3, ``medium`` below 0.7, else ``high``."""
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
    specs: Mapping[str, FactorSpec] | None = None,
) -> Risk:
    """Score one sequence from its signal values.

    ``signals`` maps factor names to values; missing or ``None`` values are
    skipped (the factor is unavailable, not zero). ``nonfinite`` forces 1.0.
    ``specs`` defaults to the ``default`` profile's factor table.
    """
    if specs is None:
        specs = load_profile("default").factors
    factors = []
    for name, spec in specs.items():
        value = signals.get(name)
        if not is_finite(value):
            continue
        factors.append(Factor(name, float(value), spec.score(float(value)), spec.weight, spec.description))
    if nonfinite:
        return Risk(1.0, tuple(factors), forced_by="nan_or_inf")
    return Risk(combine(factors), tuple(factors))
