"""Attention statistics of the newest query row, without eager attention.

The model keeps its own attention kernel (SDPA, flash, flex) for its output;
we recompute only the probabilities of the one new query row per head,
``softmax(q k^T * scale + bias + mask)``, from the query and the key cache the
attention function was handed. That is one small matmul against K per layer,
batched over layers whenever their shapes agree.

Statistics per head, then aggregated per layer (columns of
:data:`ATTENTION_COLUMNS`):

* entropy, normalised by ``ln(valid keys)`` to [0, 1]: mean and minimum over heads;
* the largest weight, mean over heads;
* sink mass: weight on the first real (non-padding) token;
* prompt mass: weight on prompt positions, against generated ones (the Lookback-Lens ratio);
* collapsed fraction: share of heads whose entropy *over the non-sink keys*
  (renormalised) is below :data:`COLLAPSE_THRESHOLD` of its maximum. Excluding
  the sink matters: most heads of real models park weight on the first token
  (attention sinks), which is healthy and would otherwise read as collapse.
  The non-sink mass and its sum p ln p are summed over the non-sink keys
  themselves (never ``1 - sink``, which float32 and bfloat16 cannot resolve
  for a head with nearly all its weight on the sink); a head with no weight
  off the sink is not collapsed. A step with fewer than :data:`MIN_REST_KEYS`
  non-sink keys cannot be judged: its collapsed fraction is NaN (None in the
  report);
* previous-token weight: the largest weight any head puts on the token just
  before the query (the "uncertainty-aware" heads of RAUQ, arXiv 2505.20045,
  look there less when the model is unsure; ``signals.uncertainty``).
"""

from __future__ import annotations

import math

import torch

ATTENTION_COLUMNS = (
    "entropy",
    "entropy_min",
    "max_weight",
    "sink_mass",
    "prompt_mass",
    "collapsed_fraction",
    "prev_token",
)
COLLAPSE_THRESHOLD = 0.03
#: Non-sink keys needed to judge collapse: over one key every distribution is one-hot.
MIN_REST_KEYS = 2
SPARSE_WEIGHT = 0.01
_TINY = 1e-6


def _row_mask(mask: torch.Tensor | None, keys: int) -> torch.Tensor | None:
    """The model's mask for the last query row, as [.., rows, 1|heads, keys] (bool keep, or float additive)."""
    if mask is None:
        return None
    if mask.dim() == 2:  # flash-style key padding mask [rows, keys], 1 = keep
        row = mask[:, None, :].bool()
    else:
        row = mask[..., -1, :]
    return row[..., -keys:] if row.shape[-1] != keys else row


def query_row_probs(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """float32 attention probabilities of the last query row: [.., rows, q_heads, keys].

    ``query`` [.., rows, q_heads, T, d] and ``key`` [.., rows, kv_heads, keys, d]
    may carry a leading layer dimension; grouped-query attention is handled by
    viewing the query heads as kv_heads x groups, so K is never repeated.
    """
    *lead, rows, q_heads, _, dim = query.shape
    kv_heads, keys = key.shape[-3], key.shape[-2]
    groups = q_heads // kv_heads
    q = query[..., -1, :].reshape(*lead, rows, kv_heads, groups, dim)
    scores = torch.matmul(q, key.transpose(-1, -2)).reshape(*lead, rows, q_heads, keys).float()
    scores.mul_(scaling)
    if bias is not None:
        scores += bias[..., -1, :].float()
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    row = _row_mask(mask, keys)
    if row is not None:
        if row.dtype == torch.bool:
            scores = torch.where(row, scores, float("-inf"))
        else:
            scores = scores + row.float()
    return torch.softmax(scores, dim=-1)


def inv_log_rest(valid: torch.Tensor) -> torch.Tensor:
    """1 / ln(non-sink keys) for ``valid`` keys; NaN where there are too few non-sink keys to judge collapse."""
    rest = valid - 1.0
    return torch.where(rest >= MIN_REST_KEYS, 1.0 / rest.clamp_min(MIN_REST_KEYS).log(), float("nan"))


def key_weights(rows: int, total: int, prompt: int, sink_index: torch.Tensor) -> torch.Tensor:
    """[rows, total, 3] weights of each key position: prompt, sink, non-sink (summed against probabilities)."""
    device = sink_index.device
    weights = torch.zeros(rows, total, 3, device=device)
    weights[:, :prompt, 0] = 1.0
    weights[torch.arange(rows, device=device), sink_index.long().clamp_max(total - 1), 1] = 1.0
    weights[..., 2] = 1.0 - weights[..., 1]
    return weights


class KeyTables:
    """Per-generation constants of the attention statistics, indexed by key count without kernels.

    Built once per generation for key counts ``prefix .. prefix + span``: the
    prompt/sink weights of every key position and the inverse log of the
    number of valid keys (padding excluded). A step with ``keys`` keys reads
    slices (views) of them.
    """

    def __init__(self, valid_prompt: torch.Tensor, sink_index: torch.Tensor, prefix: int, span: int) -> None:
        device = valid_prompt.device
        rows = valid_prompt.shape[0]
        self.weights = key_weights(rows, prefix + span, prefix, sink_index.to(device))
        valid = valid_prompt.float()[:, None] + torch.arange(span + 1, device=device, dtype=torch.float32)[None, :]
        self.inv_log_valid = 1.0 / valid.log().clamp_min(_TINY)
        self.inv_log_rest = inv_log_rest(valid)
        self.prefix = prefix
        self.span = span

    def covers(self, expected_keys: int) -> bool:
        """Whether a step expecting ``expected_keys`` keys can read these tables (else they are rebuilt)."""
        return self.prefix <= expected_keys <= self.prefix + self.span

    def at(self, keys: int, expected_keys: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights, inv_log_valid, inv_log_rest) when the cache holds the last ``keys`` of ``expected_keys``."""
        offset = expected_keys - keys  # > 0 for sliding-window caches that dropped old positions
        step = expected_keys - self.prefix
        return self.weights[:, offset:expected_keys], self.inv_log_valid[:, step], self.inv_log_rest[:, step]


def prompt_attention_stats(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    valid: torch.Tensor,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    queries: int = 32,
    causal: bool = True,
) -> torch.Tensor:
    """Prompt telemetry of one layer at prefill: [rows, 3] = sparsity, basin (mean over heads), basin (min).

    Uses the last ``queries`` query positions, the ones that see most of the
    prompt. ``valid`` [rows, prompt] marks real (non-padding) tokens; ``causal``
    is False for an encoder's bidirectional self-attention.

    * sparsity: share of the keys a query may see that get less than 1% of its attention;
    * basin (as defined by the original CoreVital): attention mass on the middle
      third of the prompt divided by the mass elsewhere, averaged over queries;
      1.0 for prompts shorter than 3 tokens.
    """
    rows, q_heads, total, dim = query.shape
    kv_heads, keys = key.shape[-3], key.shape[-2]
    n_q = min(queries, total)
    groups = q_heads // kv_heads
    q = query[:, :, -n_q:, :].reshape(rows, kv_heads, groups * n_q, dim)
    scores = torch.matmul(q, key.transpose(-1, -2)).reshape(rows, q_heads, n_q, keys).float() * scaling
    if bias is not None:
        scores = scores + bias[..., -n_q:, :].float()
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    positions = torch.arange(keys, device=query.device)
    query_pos = positions[-n_q:]
    allowed = valid[:, None, None, -keys:].bool().expand(rows, 1, n_q, keys)
    if causal:
        allowed = allowed & (positions[None, :] <= query_pos[:, None])[None, None]
    if mask is not None and mask.dim() == 4:
        row_mask = mask[..., -n_q:, -keys:]
        allowed = allowed & (
            row_mask if row_mask.dtype == torch.bool else torch.isfinite(row_mask) & (row_mask > -1e30)
        )
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)

    # Only real (non-padding) query positions count: a padding query attends to nothing.
    query_weight = valid[:, None, -n_q:].float()  # [rows, 1, queries]
    query_count = query_weight.sum(dim=-1).clamp_min(1.0)  # [rows, 1]
    visible = allowed.float().sum(dim=-1).clamp_min(1.0)
    heavy = ((probs >= SPARSE_WEIGHT) & allowed).float().sum(dim=-1)
    sparsity = ((1.0 - heavy / visible) * query_weight).sum(dim=-1) / query_count  # [rows, heads]
    sparsity = sparsity.mean(dim=-1)

    first = valid.float().argmax(dim=-1)  # first real token per row
    length = valid.float().sum(dim=-1)
    rel = positions[None, :] - first[:, None]
    middle = (rel * 3 >= length[:, None]) & (rel * 3 < 2 * length[:, None]) & valid[:, -keys:].bool()
    mid_mass = (probs * middle[:, None, None, :]).sum(dim=-1)
    other_mass = (probs * (~middle)[:, None, None, :]).sum(dim=-1)
    basin = (mid_mass / (other_mass + 1e-10) * query_weight).sum(dim=-1) / query_count  # [rows, heads]
    basin = torch.where(length[:, None] < 3, torch.ones_like(basin), basin)
    return torch.stack([sparsity, basin.mean(dim=-1), basin.amin(dim=-1)], dim=-1)


def scaling_of(module: torch.nn.Module, kwargs: dict, head_dim: int) -> float:
    """The softmax scale the model's attention uses (explicit argument, module attribute, or 1/sqrt(d))."""
    scale = kwargs.get("scaling")
    if scale is None:
        scale = getattr(module, "scaling", None)
    return float(scale) if scale is not None else 1.0 / math.sqrt(head_dim)
