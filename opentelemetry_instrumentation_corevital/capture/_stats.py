"""Batched, device-side logit statistics: a handful of kernels per step, no host reads.

Decoding is launch-bound on GPUs, so what matters is the number of kernels we
add per step, not their arithmetic. One ``log_softmax`` pass gives the
log-probabilities; entropy, top-k and the chosen-token gather all read from it.
"""

from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)
TOP_K = 10

#: Columns of the per-step statistics tensor, in order.
STAT_COLUMNS = ("entropy", "top1_prob", "margin", "topk_mass")

# [-sum p ln p (negated), top-k probabilities] @ _PROJECTION -> the four STAT_COLUMNS in one matmul.
_PROJECTION_CACHE: dict[tuple[torch.device, int], torch.Tensor] = {}


def _projection(device: torch.device, k: int) -> torch.Tensor:
    key = (device, k)
    proj = _PROJECTION_CACHE.get(key)
    if proj is None:
        proj = torch.zeros(k + 1, 4, dtype=torch.float32)
        proj[0, 0] = -1.0 / LN2  # entropy in bits from sum p ln p
        proj[1, 1] = 1.0  # top-1 probability
        proj[1, 2] = 1.0  # top-1 ...
        if k > 1:
            proj[2, 2] = -1.0  # ... minus top-2
        proj[1:, 3] = 1.0  # top-k mass
        proj = proj.to(device)
        _PROJECTION_CACHE[key] = proj
    return proj


def logit_stats(logits: torch.Tensor, k: int = TOP_K) -> tuple[torch.Tensor, torch.Tensor]:
    """Statistics of the next-token distributions in ``logits`` [rows, vocab].

    Returns ``(stats, logp)``: ``stats`` is float32 [rows, 4] with the columns of
    :data:`STAT_COLUMNS` (entropy in bits, top-1 probability, top-1 minus top-2
    probability, top-k mass), and ``logp`` the float32 natural-log probabilities,
    kept by the caller for one step to read the chosen token's surprisal.

    Eight kernels: log-softmax, top-k, exp, multiply, NaN-skipping sum (a
    masked token has p = 0 and ln p = -inf, whose product is NaN and
    contributes nothing), exp of the top-k, concatenation and one small
    matmul. A NaN or +inf logit makes the row's top-k NaN, so the host
    treats every statistic of that step as non-finite.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    k = min(k, logp.shape[-1])
    top_logp = logp.topk(k, dim=-1, sorted=True).values
    sum_p_log_p = logp.exp().mul_(logp).nansum(dim=-1, keepdim=True)
    stats = torch.cat([sum_p_log_p, top_logp.exp()], dim=-1) @ _projection(logp.device, k)
    return stats, logp


def chosen_surprisal(logp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Surprisal in bits of ``tokens`` [rows] under ``logp`` [rows, vocab]; returns [rows, 1]."""
    return logp.gather(1, tokens.view(-1, 1)).mul_(-1.0 / LN2)
