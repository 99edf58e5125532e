"""Order statistics over per-step series that may hold non-finite values.

Non-finite entries (None, NaN, inf) are skipped: they are counted by the
``nan_or_inf`` flag instead of poisoning every aggregate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TypeGuard


def is_finite(value: float | None) -> TypeGuard[float]:
    """Whether a series entry counts: present and neither NaN nor infinite."""
    return value is not None and math.isfinite(value)


def finite_or_none(value: float | None) -> float | None:
    """A series entry as float, non-finite ones as None (the report's and exporters' missing value)."""
    return float(value) if is_finite(value) else None


def finite(values: Iterable[float | None]) -> list[float]:
    """The entries that count, in order."""
    return [v for v in values if is_finite(v)]


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the finite entries; None without any."""
    kept = finite(values)
    return sum(kept) / len(kept) if kept else None


def maximum(values: Iterable[float | None]) -> float | None:
    """Largest finite entry; None without any."""
    kept = finite(values)
    return max(kept) if kept else None


def minimum(values: Iterable[float | None]) -> float | None:
    """Smallest finite entry; None without any."""
    kept = finite(values)
    return min(kept) if kept else None


def percentile(values: Iterable[float | None], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    kept = sorted(finite(values))
    if not kept:
        return None
    rank = (q / 100.0) * (len(kept) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(kept) - 1)
    return kept[low] + (kept[high] - kept[low]) * (rank - low)


def count_nonfinite(values: Sequence[float | None]) -> int:
    """How many entries are missing, NaN or infinite."""
    return sum(1 for v in values if not is_finite(v))
