"""Per-layer hidden-state statistics for every layer at once, in a handful of kernels.

The layer hooks keep the new token's output (and input) of each layer; once
per step they are concatenated into one [rows, layers, hidden] tensor and a
few batched reductions produce raw *moments* per layer: squared norms, dot
products with the layer's input and with its previous-step output, the sum,
the largest magnitude and the finite count. The host turns those into norm,
mean, std, cosine and update ratio at the end (:func:`finish_hidden`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

#: Statistics reported per layer and step, in order.
HIDDEN_COLUMNS = ("norm", "mean", "std", "max_abs", "nonfinite", "cos_prev", "update_ratio")
#: Raw moments kept per layer and step on the device, in order.
MOMENT_COLUMNS = ("sq", "in_sq", "cross_in", "sum", "max_abs", "finite", "cross_prev", "prev_sq")

_INF = float("inf")


def stack_layers(parts: list[torch.Tensor]) -> torch.Tensor:
    """[rows, 1, hidden] per layer -> [rows, layers, hidden] (one kernel)."""
    return torch.cat(parts, dim=1)


def hidden_norms(outputs: torch.Tensor) -> torch.Tensor:
    """L2 norm of each layer's new-token output, float32 [rows, layers]. NaN/inf in, NaN/inf out."""
    return torch.linalg.vector_norm(outputs, dim=-1, dtype=torch.float32)


def hidden_moments(
    outputs: list[torch.Tensor],
    inputs: list[torch.Tensor | None],
    consecutive: bool,
    previous: torch.Tensor | None,
    previous_sq: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw moments [rows, layers, 8] (:data:`MOMENT_COLUMNS`) of this step's layer outputs.

    ``consecutive`` says the captured layers follow each other, so a layer's
    input is the previous layer's output and only the first input is needed.
    ``previous``/``previous_sq`` are the float32 outputs and squared norms of the
    previous captured step (rows aligned), or None. Returns the moments and this
    step's outputs and squared norms, to pass as ``previous`` next time.
    """
    if consecutive and inputs and inputs[0] is not None:
        stacked = torch.cat([inputs[0], *outputs], dim=1).float()
        out, inp = stacked[:, 1:], stacked[:, :-1]
        squares = torch.linalg.vecdot(stacked, stacked)
        sq, in_sq = squares[:, 1:], squares[:, :-1]
    else:
        out = torch.cat(outputs, dim=1).float()
        inp = torch.cat(inputs, dim=1).float()  # type: ignore[arg-type]
        sq, in_sq = torch.linalg.vecdot(out, out), torch.linalg.vecdot(inp, inp)
    cross_in = torch.linalg.vecdot(out, inp)
    total = out.sum(dim=-1)
    max_abs = torch.linalg.vector_norm(out, ord=_INF, dim=-1)
    finite = torch.isfinite(out).sum(dim=-1, dtype=torch.float32)
    if previous is None or previous_sq is None:
        cross_prev = prev_sq = torch.full_like(sq, float("nan"))
    else:
        cross_prev, prev_sq = torch.linalg.vecdot(out, previous), previous_sq
    packed = torch.stack([sq, in_sq, cross_in, total, max_abs, finite, cross_prev, prev_sq], dim=-1)
    return packed, out, sq


def _finite(value: float) -> bool:
    return value == value and value not in (_INF, -_INF)


def finish_hidden(moments: Sequence[float], size: int) -> tuple[float | None, ...]:
    """One layer-step's :data:`HIDDEN_COLUMNS` from its :data:`MOMENT_COLUMNS` and the hidden size."""
    sq, in_sq, cross_in, total, max_abs, finite, cross_prev, prev_sq = moments
    nonfinite = float(size - finite) if _finite(finite) else None
    if not _finite(sq):
        return None, None, None, None, nonfinite, None, None
    norm = math.sqrt(max(sq, 0.0))
    mean = total / size
    std = math.sqrt(max(sq / size - mean * mean, 0.0))
    update = None
    if _finite(in_sq) and _finite(cross_in) and in_sq > 0:
        update = math.sqrt(max(sq - 2.0 * cross_in + in_sq, 0.0)) / math.sqrt(in_sq)
    cos = None
    if _finite(cross_prev) and _finite(prev_sq) and sq > 0 and prev_sq > 0:
        cos = max(-1.0, min(1.0, cross_prev / math.sqrt(sq * prev_sq)))
    return norm, mean, std, max_abs if _finite(max_abs) else None, nonfinite, cos, update


def finish_hidden_tensor(moments: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`finish_hidden` for a whole generation at once: [..., 8] moments -> [..., 7] (run once, at the end)."""
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
