"""Per-layer hidden-state statistics for every layer at once, in a handful of kernels.

The layer hooks keep the new token's output (and input) of each layer; once
per step they are concatenated into one [rows, layers, hidden] tensor and
every statistic below is a single batched reduction over the last dimension.
"""

from __future__ import annotations

import torch

#: Columns of the full hidden-state statistics, in order.
HIDDEN_COLUMNS = ("norm", "mean", "std", "max_abs", "finite", "cos_prev", "update_ratio")
#: ``finite`` is the count of finite elements; the report turns it into a non-finite count.

_INF = float("inf")


def stack_layers(parts: list[torch.Tensor]) -> torch.Tensor:
    """[rows, 1, hidden] per layer -> [rows, layers, hidden] (one kernel)."""
    return torch.cat(parts, dim=1)


def hidden_norms(outputs: torch.Tensor) -> torch.Tensor:
    """L2 norm of each layer's new-token output, float32 [rows, layers]. NaN/inf in, NaN/inf out."""
    return torch.linalg.vector_norm(outputs, dim=-1, dtype=torch.float32)


def hidden_stats(
    outputs: torch.Tensor, inputs: torch.Tensor, previous: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All :data:`HIDDEN_COLUMNS` for [rows, layers, hidden] outputs and inputs.

    ``previous`` is the same layers' float32 outputs at the previous captured
    step (rows already aligned), or None at the first step. Returns the
    [rows, layers, 7] statistics and this step's float32 outputs, to pass as
    ``previous`` next time. ``std`` is the population standard deviation over
    the hidden dimension; ``update_ratio`` is ``|out - in| / |in|``, how much
    the layer changed the residual stream.
    """
    x = outputs.float()
    std, mean = torch.std_mean(x, dim=-1, correction=0)
    norm = torch.linalg.vector_norm(x, dim=-1)
    max_abs = torch.linalg.vector_norm(x, ord=_INF, dim=-1)
    finite = torch.isfinite(x).sum(dim=-1, dtype=torch.float32)
    xin = inputs.float()
    update = torch.linalg.vector_norm(x - xin, dim=-1) / torch.linalg.vector_norm(xin, dim=-1)
    if previous is None:
        cos = torch.full_like(norm, float("nan"))
    else:
        cos = torch.linalg.vecdot(x, previous) / (norm * torch.linalg.vector_norm(previous, dim=-1))
    return torch.stack([norm, mean, std, max_abs, finite, cos, update], dim=-1), x


def masked_token_norm_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over (non-padding) tokens of each token's L2 norm: [rows, tokens, hidden] -> [rows]."""
    norms = torch.linalg.vector_norm(hidden, dim=-1, dtype=torch.float32)
    if mask is None:
        return norms.mean(dim=-1)
    weights = mask.to(norms.dtype)
    return (norms * weights).sum(dim=-1) / weights.sum(dim=-1).clamp_min(1.0)
