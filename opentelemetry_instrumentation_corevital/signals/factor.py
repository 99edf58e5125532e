"""One risk factor's calibration curve: a signal value to a score in (0, 1), and the most it may contribute.

Profiles (:mod:`.profiles`) carry a table of these per model family; :mod:`.risk` combines the scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FactorSpec:
    """How one signal maps to a score."""

    midpoint: float
    scale: float
    weight: float
    higher_is_riskier: bool = True
    description: str = ""

    def score(self, value: float) -> float:
        """The logistic score of ``value``: 0.5 at the midpoint, towards 1 on the risky side (overflow-safe)."""
        z = (value - self.midpoint) / self.scale
        if not self.higher_is_riskier:
            z = -z
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)
