"""Logit signals of one next-token distribution, as pure functions.

These are the definitions; the capture engine computes the same quantities on
the device in batched form (``capture.logit_stats``) and tests hold the two to
the same hand-computed values. All entropies and surprisals are in bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LN2 = math.log(2.0)
TOP_K = 10


def entropy_bits(probs: Sequence[float]) -> float:
    """Shannon entropy -sum p log2 p; zero-probability terms contribute nothing."""
    return -sum(p * math.log2(p) for p in probs if p > 0.0)


def perplexity(entropy: float) -> float:
    """2 ** entropy: the effective number of equally likely next tokens."""
    return 2.0**entropy


def surprisal_bits(prob_of_chosen: float) -> float:
    """-log2 p(chosen token): how unexpected the token that was actually emitted is."""
    if prob_of_chosen <= 0.0:
        return math.inf
    return -math.log2(prob_of_chosen)


def top1_prob(probs: Sequence[float]) -> float:
    """Probability of the most likely token: how confident the step was."""
    return max(probs)


def top_k_margin(probs: Sequence[float]) -> float:
    """p(top-1) - p(top-2); 0 when fewer than two tokens exist."""
    ranked = sorted(probs, reverse=True)
    return ranked[0] - ranked[1] if len(ranked) > 1 else 0.0


def top_k_mass(probs: Sequence[float], k: int = TOP_K) -> float:
    """Probability mass of the k most likely tokens."""
    return sum(sorted(probs, reverse=True)[:k])


def softmax(logits: Sequence[float]) -> list[float]:
    """Probabilities from logits, shifted by the maximum so large logits do not overflow."""
    peak = max(logits)
    exps = [math.exp(x - peak) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def truncated_stats(top_logprobs: Sequence[float]) -> tuple[float, float, float, float]:
    """(entropy lower bound, top-1, margin, top-k mass) in bits from only the k largest log-probabilities (ln).

    A server that returns top-k log-probabilities hides the tail, whose mass is
    ``1 - topk_mass``. Every hidden token is at most as likely as the k-th, so
    it adds at least ``-log2 p_k`` bits per unit of mass: the entropy returned,
    ``H_k + (1 - M) * -log2 p_k``, is a lower bound (exact when M = 1). Top-1
    and margin are exact for k >= 2.
    """
    ranked = sorted((math.exp(v) for v in top_logprobs), reverse=True)
    if not ranked:
        return math.nan, math.nan, math.nan, math.nan
    mass = sum(ranked)
    tail = max(0.0, 1.0 - mass)
    entropy = -sum(p * math.log2(p) for p in ranked if p > 0)
    if tail > 0 and ranked[-1] > 0:
        entropy += tail * -math.log2(ranked[-1])
    margin = ranked[0] - ranked[1] if len(ranked) > 1 else 0.0
    return entropy, ranked[0], margin, mass
