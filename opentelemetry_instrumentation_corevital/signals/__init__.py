"""Pure functions from per-step summaries to signals, flags and risk.

Nothing here touches torch or OpenTelemetry: every function takes plain numbers
and is unit-tested against hand-computed values. One module per idea:
``logits``, ``aggregate``, ``flags`` (high entropy, non-finite), ``repetition``
(token loops, n-gram repetition), ``layers`` (mid-layer anomaly, attention
collapse, hidden-state recurrence), ``risk``, ``profiles`` (per-family
thresholds shipped as data), ``compound``, ``trend`` (early warnings),
``blame``, ``fingerprint`` and ``narrative``.
"""

from .aggregate import count_nonfinite, finite, finite_or_none, is_finite, maximum, mean, minimum, percentile
from .factor import FactorSpec
from .flags import HighEntropy, NonFinite, high_entropy_steps, nan_or_inf
from .logits import (
    TOP_K,
    entropy_bits,
    perplexity,
    softmax,
    surprisal_bits,
    top1_prob,
    top_k_margin,
    top_k_mass,
)
from .repetition import RepetitionLoop, copied_steps, find_repetition_loop, ngram_repeat_rate
from .risk import Factor, Risk, combine, risk_level, risk_score

__all__ = [
    "Factor",
    "FactorSpec",
    "HighEntropy",
    "NonFinite",
    "RepetitionLoop",
    "Risk",
    "TOP_K",
    "combine",
    "copied_steps",
    "count_nonfinite",
    "entropy_bits",
    "find_repetition_loop",
    "finite",
    "finite_or_none",
    "high_entropy_steps",
    "is_finite",
    "maximum",
    "mean",
    "minimum",
    "nan_or_inf",
    "ngram_repeat_rate",
    "percentile",
    "perplexity",
    "risk_level",
    "risk_score",
    "softmax",
    "surprisal_bits",
    "top1_prob",
    "top_k_margin",
    "top_k_mass",
]
