"""Early-warning trend detectors over per-step series: entropy acceleration and margin collapse.

Both are one-sided CUSUM detectors (Page 1954). The in-control level is the
model's typical level (``reference``, calibrated per profile) or the run's own
opening (the mean of its first ``window`` finite steps), whichever is further
from trouble — the higher for entropy, the lower for margin — so neither a
formulaic, very confident opening ("The capital of France is ...") nor a run
that starts uncertain raises a warning by itself. Then

    S(t) = max(0, S(t-1) + d(t)),   d(t) = x(t) - (baseline + slack)   (upward: entropy)
                                     d(t) = (baseline - slack) - x(t)   (downward: margin)

accumulates only sustained excess over the slack. The alarm step is the first
t with S(t) >= threshold; the onset is the step after the last time S was 0
before it, the standard CUSUM estimate of where the change began. A single
spike costs at most one step's excess, so per-step noise does not alarm; a
drift that keeps going does, and the further it goes the faster S grows,
which is what "accelerating away from the opening level" means here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .aggregate import is_finite


@dataclass(frozen=True)
class Alarm:
    """Where a CUSUM detector fired, where the change began and how large it is."""

    detected_step: int  # first step at which the accumulated excess crossed the threshold
    onset_step: int  # estimated start of the change
    baseline: float  # mean of the opening window
    shift: float  # mean excess of x over the baseline between onset and detection, in x's units (>= 0)


def cusum(
    values: Sequence[float | None],
    *,
    window: int,
    slack: float,
    threshold: float,
    upward: bool = True,
    reference: float | None = None,
) -> Alarm | None:
    """One-sided CUSUM alarm; ``None`` if it never fires.

    Baseline: the mean of the first ``window`` finite values, or ``reference`` when that is higher (upward) or
    lower (downward). The opening window itself is not scanned. Non-finite steps are skipped.
    """
    opening = [(i, v) for i, v in enumerate(values) if is_finite(v)][:window]
    if len(opening) < window:
        return None
    baseline = sum(v for _, v in opening) / window
    if reference is not None:
        baseline = max(baseline, reference) if upward else min(baseline, reference)
    start = opening[-1][0] + 1
    total = 0.0
    last_zero = start - 1
    for t in range(start, len(values)):
        x = values[t]
        if not is_finite(x):
            continue
        excess = (x - baseline - slack) if upward else (baseline - slack - x)
        total = max(0.0, total + excess)
        if total == 0.0:
            last_zero = t
        elif total >= threshold:
            onset = last_zero + 1
            span = [v for v in values[onset : t + 1] if is_finite(v)]
            mean = sum(span) / len(span)
            shift = (mean - baseline) if upward else (baseline - mean)
            return Alarm(t, onset, baseline, max(0.0, shift))
    return None


def slope(values: Sequence[float | None]) -> float | None:
    """Least-squares slope per step over the finite values (their step index as x); ``None`` with fewer than 2."""
    points = [(i, v) for i, v in enumerate(values) if is_finite(v)]
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(i for i, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((i - mx) ** 2 for i, _ in points)
    return sum((i - mx) * (v - my) for i, v in points) / sxx


def rolling_mean(values: Sequence[float | None], window: int) -> list[float | None]:
    """Mean of the finite values in the ``window`` steps ending at each step (``None`` until the window is full)."""
    out: list[float | None] = []
    for t in range(len(values)):
        if t + 1 < window:
            out.append(None)
            continue
        kept = [v for v in values[t + 1 - window : t + 1] if is_finite(v)]
        out.append(sum(kept) / len(kept) if kept else None)
    return out


@dataclass(frozen=True)
class EarlyWarning:
    """A trend that announces trouble before a flag fires: onset, detection step and severity."""

    name: str
    onset_step: int  # where the trend began
    detected_step: int  # where a streaming detector would have raised it
    value: float  # size of the shift from the in-control level (bits for entropy, probability for margin)
    severity: float  # 1 - exp(-value / reference): 0.63 at one reference shift


#: Shift that makes a warning's severity 0.63: 2 bits of entropy, 0.3 of margin.
ENTROPY_REFERENCE_BITS = 2.0
MARGIN_REFERENCE = 0.3


def entropy_acceleration(
    entropy: Sequence[float | None],
    *,
    window: int,
    slack_bits: float,
    threshold_bits: float,
    reference_bits: float | None = None,
) -> EarlyWarning | None:
    """Entropy climbing away from its in-control level (upward CUSUM, bits)."""
    alarm = cusum(
        entropy, window=window, slack=slack_bits, threshold=threshold_bits, upward=True, reference=reference_bits
    )
    return _warning("entropy_acceleration", alarm, ENTROPY_REFERENCE_BITS)


def margin_collapse(
    margin: Sequence[float | None], *, window: int, slack: float, threshold: float, reference: float | None = None
) -> EarlyWarning | None:
    """The top-1/top-2 margin falling away from its in-control level (downward CUSUM, probability)."""
    alarm = cusum(margin, window=window, slack=slack, threshold=threshold, upward=False, reference=reference)
    return _warning("margin_collapse", alarm, MARGIN_REFERENCE)


def _warning(name: str, alarm: Alarm | None, reference_shift: float) -> EarlyWarning | None:
    """The warning of a CUSUM alarm, its severity scaled by the shift that makes it 0.63."""
    if alarm is None:
        return None
    severity = 1.0 - math.exp(-alarm.shift / reference_shift)
    return EarlyWarning(name, alarm.onset_step, alarm.detected_step, alarm.shift, severity)


def suffix_slopes(values: Sequence[float | None]) -> list[float | None]:
    """``slope(values[start:])`` for every start, in one backward pass (O(n) instead of O(n^2))."""
    n = len(values)
    out: list[float | None] = [None] * n
    count = sx = sxx = sy = sxy = 0.0
    for i in range(n - 1, -1, -1):
        v = values[i]
        if is_finite(v):
            count += 1
            sx += i
            sxx += i * i
            sy += v
            sxy += i * v
        if count >= 2:
            denominator = sxx - sx * sx / count
            out[i] = (sxy - sx * sy / count) / denominator if denominator > 0 else None
    return out
