"""Fingerprint: a fixed-length, versioned vector describing how one generation behaved.

For clustering runs and finding similar ones. Every element is a number that
varies between runs (no padding, no reserved slots) and is computed from what
every ``summary`` capture has — logit signals, token ids and the hidden-state
norms of the captured layers — so vectors from ``summary`` and ``full`` runs
compare directly. The two hidden-state elements are ``None`` only when no
layer was captured. A change to any element's meaning bumps
:data:`FINGERPRINT_VERSION`; compare vectors of the same version only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .aggregate import finite, is_finite, mean
from .trend import slope

FINGERPRINT_VERSION = 1

#: (name, meaning) of each element, in order. docs/diagnosis.md shows the same table.
FINGERPRINT_FIELDS: tuple[tuple[str, str], ...] = (
    ("entropy_mean", "mean next-token entropy (bits)"),
    ("entropy_std", "population standard deviation of entropy over steps (bits)"),
    ("entropy_max", "largest entropy of any step (bits)"),
    ("entropy_slope", "least-squares slope of entropy (bits per step)"),
    ("entropy_late_minus_early", "mean entropy of the last quarter of steps minus that of the first quarter (bits)"),
    ("margin_mean", "mean top-1 minus top-2 probability"),
    ("margin_std", "standard deviation of the margin over steps"),
    ("surprisal_mean", "mean surprisal of the emitted tokens (bits)"),
    ("surprisal_std", "standard deviation of surprisal over steps (bits)"),
    ("tail_mass_mean", "mean probability outside the 10 most likely tokens"),
    ("high_entropy_fraction", "share of steps above the profile's high-entropy threshold"),
    ("entropy_margin_correlation", "Pearson correlation of entropy and margin over steps (0 when either is constant)"),
    ("ngram_repeat_rate", "share of the output's 4-grams that repeat an earlier one (seq-rep-4)"),
    ("distinct_token_ratio", "distinct token ids / generated tokens"),
    ("loop_share", "share of the output inside a flagged repetition loop (0 without one)"),
    ("log2_output_tokens", "log2 of the number of generated tokens"),
    ("last_layer_norm_cv", "coefficient of variation over steps of the last captured layer's hidden-state norm"),
    ("depth_norm_growth", "ln(mean norm of the last captured layer / mean norm of the first captured layer)"),
)
FINGERPRINT_NAMES = tuple(name for name, _ in FINGERPRINT_FIELDS)


def _std(values: list[float]) -> float | None:
    if not values:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def _pearson(xs: Sequence[float | None], ys: Sequence[float | None]) -> float | None:
    pairs = [(x, y) for x, y in zip(xs, ys) if is_finite(x) and is_finite(y)]
    if len(pairs) < 2:
        return None
    mx = sum(x for x, _ in pairs) / len(pairs)
    my = sum(y for _, y in pairs) / len(pairs)
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    syy = sum((y - my) ** 2 for _, y in pairs)
    if sxx <= 0 or syy <= 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in pairs) / math.sqrt(sxx * syy)


def fingerprint(
    *,
    entropy: Sequence[float | None],
    margin: Sequence[float | None],
    surprisal: Sequence[float | None],
    topk_mass: Sequence[float | None],
    high_entropy_bits: float,
    ngram_repeat_rate: float | None,
    distinct_token_ratio: float | None,
    loop_share: float,
    last_layer_norms: Sequence[float | None] | None,
    first_layer_norms: Sequence[float | None] | None,
) -> list[float | None] | None:
    """The vector of :data:`FINGERPRINT_FIELDS`, or ``None`` for a generation without a finite step."""
    h = finite(entropy)
    if not h:
        return None
    n = len(entropy)
    quarter = max(1, n // 4)
    early, late = finite(entropy[:quarter]), finite(entropy[-quarter:])
    m, s = finite(margin), finite(surprisal)
    mass = finite(topk_mass)
    last = finite(last_layer_norms or [])
    first = finite(first_layer_norms or [])
    last_mean = mean(last)
    cv = (_std(last) or 0.0) / last_mean if last_mean else None
    first_mean = mean(first)
    growth = math.log(last_mean / first_mean) if last_mean and first_mean else None
    mass_mean = mean(mass)
    return [
        mean(h),
        _std(h),
        max(h),
        slope(entropy) or 0.0,
        (mean(late) or 0.0) - (mean(early) or 0.0),
        mean(m),
        _std(m),
        mean(s),
        _std(s),
        1.0 - mass_mean if mass_mean is not None else None,
        sum(v > high_entropy_bits for v in h) / n,
        _pearson(entropy, margin) or 0.0,
        ngram_repeat_rate if ngram_repeat_rate is not None else 0.0,
        distinct_token_ratio,
        loop_share,
        math.log2(n),
        cv,
        growth,
    ]
