"""Health flags computed from one sequence's per-step summaries.

Each flag is a small pure function; thresholds are arguments so model
profiles can override them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .aggregate import is_finite


@dataclass(frozen=True)
class HighEntropy:
    """Result of the high-entropy flag: how many steps, the longest run and the first."""

    count: int  # steps whose entropy exceeds the threshold
    longest_run: int  # longest run of consecutive such steps
    first_step: int | None  # first such step
    threshold_bits: float

    @property
    def fired(self) -> bool:
        """Whether any step was above the threshold."""
        return self.count > 0


def high_entropy_steps(entropy_bits: Sequence[float | None], threshold_bits: float) -> HighEntropy:
    """Steps whose next-token entropy exceeds ``threshold_bits`` (non-finite steps excluded)."""
    count = longest = run = 0
    first: int | None = None
    for step, value in enumerate(entropy_bits):
        if is_finite(value) and value > threshold_bits:
            count += 1
            run += 1
            longest = max(longest, run)
            if first is None:
                first = step
        else:
            run = 0
    return HighEntropy(count, longest, first, threshold_bits)


@dataclass(frozen=True)
class NonFinite:
    """Result of the non-finite flag: how many steps and the first."""

    count: int  # steps with a NaN or infinite summary
    first_step: int | None

    @property
    def fired(self) -> bool:
        """Whether any step was non-finite."""
        return self.count > 0


def nan_or_inf(*series: Sequence[float | None]) -> NonFinite:
    """Steps where any of the given per-step series is NaN, infinite or missing.

    A NaN or +inf logit makes the whole distribution's entropy NaN, so the
    entropy series alone already catches non-finite logits.
    """
    bad_steps: set[int] = set()
    for values in series:
        for step, value in enumerate(values):
            if not is_finite(value):
                bad_steps.add(step)
    return NonFinite(len(bad_steps), min(bad_steps) if bad_steps else None)
