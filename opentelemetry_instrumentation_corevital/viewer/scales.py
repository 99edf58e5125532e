"""Colours and scales that follow the run's own figures: the profile's entropy threshold, each layer's own range.

Pure functions, so the values a chart or table shows can be checked exactly.
"""

from __future__ import annotations

import math
from typing import Any

from .. import names as n
from ..signals import profiles
from .index import RunDetail

#: Step-table backgrounds: above the threshold, at least half of it, below half.
HIGH, MIDDLE, LOW = "#f8d0d0", "#fbefc4", "#d5f0d5"
#: Layer matrices whose values grow with depth: each layer is scaled to its own range (else the last layers drown
#: the rest).
PER_LAYER = ("hidden_norm", "hidden_std", "hidden_max_abs")
PER_LAYER_NOTE = " (each layer scaled to its own range)"


def high_entropy_bits(detail: RunDetail) -> float | None:
    """The threshold this run was diagnosed with: the report's ``thresholds``, else the span's built-in profile's."""
    bits = ((detail.report or {}).get("thresholds") or {}).get("high_entropy_bits")
    if isinstance(bits, (int, float)) and not isinstance(bits, bool) and math.isfinite(bits):
        return float(bits)
    name = (detail.span or {}).get(n.PROFILE) if detail.report is None else None
    if isinstance(name, str) and name in profiles.builtin_names():
        return float(profiles.load_profile(name).thresholds.high_entropy_bits)
    return None


def entropy_colour(value: Any, threshold: float | None) -> str:
    """A step-table entropy cell: red above the profile's threshold, yellow from half of it, else green; no colour
    without a threshold (a hard-coded one would call a confident model's forks red)."""
    if threshold is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""
    colour = HIGH if value > threshold else MIDDLE if value >= threshold / 2 else LOW
    return f"background-color: {colour}"


def per_layer_scaled(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Heatmap cells with ``scaled``: each layer's value within that layer's own min..max (0..1; 0.5 for a layer
    whose values are all equal; None where the value is missing). ``value`` keeps the figure itself."""
    ranges: dict[Any, tuple[float, float]] = {}
    for cell in cells:
        if (v := cell["value"]) is not None:
            low, high = ranges.get(cell["layer"], (v, v))
            ranges[cell["layer"]] = (min(low, v), max(high, v))
    out = []
    for cell in cells:
        v = cell["value"]
        low, high = ranges.get(cell["layer"], (0.0, 0.0))
        scaled = None if v is None else 0.5 if high == low else (v - low) / (high - low)
        out.append({**cell, "scaled": scaled})
    return out
