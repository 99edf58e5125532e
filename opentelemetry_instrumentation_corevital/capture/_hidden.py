"""Per-layer hidden-state statistics: raw moments on the device per step, finished once at the end.

The step reduce (``_reduce.reduce_step``) turns every captured layer's
new-token output (and input) into raw *moments* per layer: squared norms, dot
products with the layer's input and with its previous-step output, the sum,
the largest magnitude and the finite count (:data:`MOMENT_COLUMNS`). After the
generation they become norm, mean, std, cosine and update ratio
(:func:`finish_hidden_tensor`), for the whole generation at once.
"""

from __future__ import annotations

import torch

#: Statistics reported per layer and step, in order.
HIDDEN_COLUMNS = ("norm", "mean", "std", "max_abs", "nonfinite", "cos_prev", "update_ratio")
#: Raw moments kept per layer and step on the device, in order.
MOMENT_COLUMNS = ("sq", "in_sq", "cross_in", "sum", "max_abs", "finite", "cross_prev", "prev_sq")


def finish_hidden_tensor(moments: torch.Tensor, size: int) -> torch.Tensor:
    """:data:`HIDDEN_COLUMNS` from :data:`MOMENT_COLUMNS`: [..., 8] -> [..., 7], once for a whole generation."""
    sq, in_sq, cross_in, total, max_abs, finite, cross_prev, prev_sq = moments.unbind(dim=-1)
    norm = sq.clamp_min(0.0).sqrt()
    mean = total / size
    std = (sq / size - mean * mean).clamp_min(0.0).sqrt()
    update = (sq - 2.0 * cross_in + in_sq).clamp_min(0.0).sqrt() / in_sq.sqrt()
    cos = (cross_prev / (sq * prev_sq).sqrt()).clamp(-1.0, 1.0)
    nonfinite = size - finite
    stats = torch.stack([norm, mean, std, max_abs, nonfinite, cos, update], dim=-1)
    bad = ~torch.isfinite(sq)[..., None]
    keep_count = torch.zeros_like(stats, dtype=torch.bool)
    keep_count[..., 4] = True
    return stats.masked_fill(bad & ~keep_count, float("nan"))


def masked_token_norm_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over (non-padding) tokens of each token's L2 norm: [rows, tokens, hidden] -> [rows]."""
    norms = torch.linalg.vector_norm(hidden, dim=-1, dtype=torch.float32)
    if mask is None:
        return norms.mean(dim=-1)
    weights = mask.to(norms.dtype)
    return (norms * weights).sum(dim=-1) / weights.sum(dim=-1).clamp_min(1.0)
