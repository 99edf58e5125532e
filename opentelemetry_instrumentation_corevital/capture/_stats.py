"""Batched, device-side logit statistics: six kernels per step, no host reads.

Decoding is launch-bound on GPUs, so what matters is the number of kernels we
add per step, not their arithmetic. Per step we keep only raw material,
``[sum p ln p, top-k log-probabilities]`` per row; the arithmetic that turns it
into entropy, top-1, margin and top-k mass runs on the host once the
generation is over (:func:`finish_stats`), on a few numbers per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

LN2 = math.log(2.0)
TOP_K = 10

#: The per-step statistics derived from the packed values, in order.
STAT_COLUMNS = ("entropy", "top1_prob", "margin", "topk_mass")


def logit_stats(logits: torch.Tensor, k: int = TOP_K) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw material for the statistics of the distributions in ``logits`` [rows, vocab].

    Returns ``(packed, logp, top_ids)``: ``packed`` is float32 [rows, 1 + k] holding
    ``sum p ln p`` and the k largest log-probabilities (descending); ``logp`` are
    the float32 log-probabilities, kept by the caller for one step to read the
    chosen token's surprisal; ``top_ids`` the ids of the k most likely tokens.

    Six kernels: log-softmax, top-k, exp, multiply, a NaN-skipping sum (a masked
    token has p = 0 and ln p = -inf, whose product is NaN and contributes
    nothing) and one concatenation. A NaN or +inf logit makes the row's top-k
    NaN, which the host turns into a non-finite step.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    k = min(k, logp.shape[-1])
    top = logp.topk(k, dim=-1, sorted=True)
    sum_p_log_p = logp.exp().mul_(logp).nansum(dim=-1, keepdim=True)
    return torch.cat([sum_p_log_p, top.values], dim=-1), logp, top.indices


def finish_stats(packed: Sequence[float]) -> tuple[float, float, float, float]:
    """(entropy bits, top-1 probability, top-1 - top-2 margin, top-k mass) from one row's packed values."""
    top = [math.exp(v) if v == v else math.nan for v in packed[1:]]
    entropy = -packed[0] / LN2
    if any(v != v for v in top):  # a NaN logit: the NaN-skipping sum alone would read 0
        return math.nan, math.nan, math.nan, math.nan
    margin = top[0] - top[1] if len(top) > 1 else 0.0
    return entropy, top[0], margin, sum(top)


def finish_stats_tensor(packed: torch.Tensor) -> torch.Tensor:
    """:func:`finish_stats` for a whole generation at once: [..., 1 + k] -> [..., 4] (run once, at the end)."""
    top = packed[..., 1:].exp()
    margin = top[..., 0] - top[..., 1] if top.shape[-1] > 1 else torch.zeros_like(top[..., 0])
    stats = torch.stack([packed[..., 0] * (-1.0 / LN2), top[..., 0], margin, top.sum(dim=-1)], dim=-1)
    bad = torch.isnan(top).any(dim=-1, keepdim=True)
    return stats.masked_fill(bad, float("nan"))


def chosen_log_prob(logp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Natural-log probability of ``tokens`` [rows] under ``logp`` [rows, vocab]; returns [rows, 1] (one kernel)."""
    return logp.gather(1, tokens.view(-1, 1))


def chosen_surprisal(logp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Surprisal in bits of ``tokens`` under ``logp``; [rows, 1]."""
    return chosen_log_prob(logp, tokens).mul(-1.0 / LN2)


#: Per-step series of a captured row, in the order they are transferred.
SERIES = (*STAT_COLUMNS, "surprisal")


def row_series(row: list[list[float]]) -> dict[str, list[float | None]]:
    """One row's [series][steps] values as named lists, non-finite values as None.

    (A NaN logit makes every statistic of its step NaN on the device already.)
    """
    return {name: [v if v - v == 0 else None for v in row[i]] for i, name in enumerate(SERIES)}
