"""Mixture-of-experts router statistics, per layer, for the newest token of every row.

* router entropy: entropy of the router's softmax over experts, normalised by
  ln(experts) to [0, 1] (1 = the router cannot choose, 0 = one expert);
* expert load balance: normalised entropy of how often each expert has been
  picked (top-k) for this sequence so far (1 = every expert used equally,
  0 = always the same experts).
"""

from __future__ import annotations

import math

import torch

MOE_COLUMNS = ("router_entropy", "expert_load_balance")


def router_stats(logits: torch.Tensor, counts: torch.Tensor | None, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits [layers, rows, experts] -> ([rows, layers, 2] statistics, updated pick counts)."""
    experts = logits.shape[-1]
    log_e = math.log(experts) if experts > 1 else 1.0
    probs = torch.softmax(logits.float(), dim=-1)
    entropy = torch.special.entr(probs).sum(dim=-1) / log_e
    picks = probs.topk(min(top_k, experts), dim=-1).indices
    if counts is None:
        counts = torch.zeros_like(probs)
    counts = counts.scatter_add(-1, picks, torch.ones_like(picks, dtype=counts.dtype))
    share = counts / counts.sum(dim=-1, keepdim=True)
    balance = torch.special.entr(share).sum(dim=-1) / log_e
    return torch.stack([entropy, balance], dim=-1).transpose(0, 1), counts
