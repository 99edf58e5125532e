"""Scoring a given continuation: one teacher-forced forward, reduced into the rows a generation would have left.

Position ``P - 1 + t`` predicts continuation token ``t``; its logits, its
layer states and its attention row become "step" t, with the same layouts as
a generation's steps, so the transfer and the report need nothing special.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from . import _attention, _reduce
from ._model_taps import ModelTaps
from ._reduce import StepInputs, StepLayout, StepState
from ._rows import StepRows
from ._stats import logit_stats
from ._taps import all_present


def reduce_continuation(
    taps: ModelTaps,
    rows: StepRows,
    top_k: int,
    prompt_len: int,
    count: int,
    logits: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor | None,
) -> None:
    """Append the logit rows and layer rows of ``count`` continuation tokens after ``prompt_len`` prompt tokens.

    ``logits`` holds at least the last ``count + 1`` positions of the forward over ``ids``.
    """
    n = int(ids.shape[0])
    positions = torch.arange(prompt_len - 1, prompt_len - 1 + count, device=ids.device)
    targets = ids[:, prompt_len : prompt_len + count]
    lg = logits[:, -(count + 1) : -1] if logits.shape[1] > count else logits[:, :count]
    packed, chosen = _score_logits(lg, targets, top_k)
    rows.chosen_aligned = True
    rows.logits.extend(torch.cat([packed, chosen[..., None]], dim=-1).unbind(1))
    rows.layouts[(False, n, True)] = StepLayout(
        signals=True, k=top_k, beams=False, layers=0, hidden="off", attention=False, moe=False
    )
    buffers = taps.buffers
    plan = taps.plan
    layer_outs = all_present(buffers.out) if taps.active else None
    # full hidden: the layer inputs too (consecutive layers: the first one's; the rest are outputs)
    layer_ins = all_present(buffers.inp[:1] if taps.consecutive else buffers.inp) if plan.hidden == "full" else []
    if layer_outs is None or layer_ins is None:
        return
    routers = all_present(buffers.router)
    layers = len(taps.layers)
    layout = StepLayout(
        signals=False,
        k=top_k,
        beams=False,
        layers=layers,
        hidden=plan.hidden,
        attention=taps.wants_attention,
        moe=bool(plan.moe and taps.routers and routers is not None),
        interleaved=not taps.consecutive,
    )
    flat = n * count
    inputs = StepInputs()
    state = StepState()
    outs = [_at(o, positions) for o in layer_outs]
    if plan.hidden == "full":
        if taps.consecutive:
            parts = [_at(layer_ins[0], positions), *outs]
        else:
            parts = [t for pair in zip((_at(i, positions) for i in layer_ins), outs) for t in pair]
        inputs.stacked = torch.stack(parts, dim=2).reshape(flat, len(parts), -1)
        previous = torch.stack([_at(o, (positions - 1).clamp_min(0)) for o in layer_outs], dim=2).float()
        previous = previous.reshape(flat, len(outs), -1)
        state.out, state.sq = previous, torch.linalg.vecdot(previous, previous)
        state.sq.view(n, count, -1)[:, 0] = float("nan")  # like a generation's first step: no previous state
    else:
        inputs.stacked = torch.stack(outs, dim=2).reshape(flat, len(outs), -1)
    if layout.attention:
        heads = _score_heads(taps, n, count, prompt_len, positions, mask)
        if heads is None:
            layout = dataclasses.replace(layout, attention=False)
        else:
            inputs.heads, inputs.inv_valid, inputs.inv_rest = heads
    if layout.moe and routers is not None:
        router = torch.stack([_at(r, positions) for r in routers])  # [layers, rows, count, experts]
        state.counts = torch.zeros(layers, flat, router.shape[-1], device=router.device)
        state.extra["top_k"] = taps.top_k_experts
        inputs.router = router.reshape(layers, flat, -1)
    out = _reduce.reduce_step(layout, state, inputs).view(n, count, -1)
    if layout.moe:  # picks so far along the continuation, not across independent rows
        out = _score_moe_balance(out, layout, router, taps.top_k_experts)
    rows.layouts[(True, n, False)] = layout
    rows.layers.extend(out.unbind(1))
    rows.layer_steps.extend(range(count))
    buffers.clear()


def _at(tensor: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``tensor[:, positions]`` on the device of ``positions`` (a model split over devices: gathered once)."""
    return tensor[:, positions.to(tensor.device)].to(positions.device)


def _score_heads(
    taps: ModelTaps, rows: int, count: int, prompt_len: int, positions: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(heads, inv_valid, inv_rest) of every continuation position's attention row, causal and padding-aware."""
    device = positions.device
    valid_keys = mask.bool() if mask is not None else None
    heads = []
    for item, probs in zip(taps.buffers.attn, taps.buffers.probs):
        if probs is not None:  # eager: the model's own weights [rows, heads, T, T]
            rows_probs = probs[:, :, positions.to(probs.device)].float()
        elif item is not None:
            query, key, _, bias, scaling, softcap = item
            here = positions.to(query.device)  # a model split over devices: each layer where it lives
            q = query[:, :, here]  # [rows, q_heads, count, d]
            total = key.shape[-2]
            kv_heads, q_heads = key.shape[1], q.shape[1]
            scores = (
                torch.matmul(q.reshape(rows, kv_heads, (q_heads // kv_heads) * count, -1), key.transpose(-1, -2))
                .reshape(rows, q_heads, count, total)
                .float()
                * scaling
            )
            if isinstance(bias, torch.Tensor):
                scores = scores + bias[..., here, :].float()
            if softcap:
                scores = torch.tanh(scores / softcap) * softcap
            allowed = torch.arange(total, device=here.device)[None, :] <= here[:, None]  # causal
            allowed = allowed[None, None]
            if valid_keys is not None:
                allowed = allowed & valid_keys.to(here.device)[:, None, None, :total]
            scores = scores.masked_fill(~allowed, float("-inf"))
            rows_probs = torch.softmax(scores, dim=-1)
        else:
            return None
        heads.append(rows_probs.to(device))  # [rows, heads, count, T]
    probs = torch.stack(heads).permute(0, 1, 3, 2, 4)  # [layers, rows, count, heads, T]
    layers, _, _, n_heads, total = probs.shape
    probs = probs.reshape(layers, rows * count, n_heads, total)
    first = valid_keys.float().argmax(dim=-1) if valid_keys is not None else torch.zeros(rows, device=device)
    weights = _attention.key_weights(rows, total, prompt_len, first).repeat_interleave(count, dim=0)
    pads = (~valid_keys).float().sum(dim=-1) if valid_keys is not None else torch.zeros(rows, device=device)
    valid = (positions[None, :].float() + 1.0 - pads[:, None]).reshape(-1)
    # The key each row's previous token sits at (a first real token has none: aggregate_heads leaves it NaN).
    before = (positions - 1).clamp_min(0)
    previous = torch.zeros(count, total, device=device)
    previous[torch.arange(count, device=device), before] = 1.0
    return (
        _reduce.head_values(probs, weights, previous.repeat(rows, 1)),
        1.0 / valid.log().clamp_min(1e-6),
        _attention.inv_log_rest(valid),
    )


def _score_logits(logits: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed statistics [rows, count, 1 + k] and the targets' log-probabilities [rows, count], in chunks."""
    rows, count, vocab = logits.shape
    flat, tokens = logits.reshape(rows * count, vocab), targets.reshape(-1).to(logits.device)
    chunk = max(1, (8 << 20) // max(1, vocab * 4))
    packed, chosen = [], []
    for start in range(0, rows * count, chunk):
        part, logp, _ = logit_stats(flat[start : start + chunk], k)
        packed.append(part)
        chosen.append(logp.gather(1, tokens[start : start + chunk, None]).squeeze(1))
    return torch.cat(packed).view(rows, count, -1), torch.cat(chosen).view(rows, count)


def _score_moe_balance(out: torch.Tensor, layout: StepLayout, router: torch.Tensor, top_k: int) -> torch.Tensor:
    """Replace the load-balance column with picks accumulated along each row's continuation."""
    probs = torch.softmax(router.float(), dim=-1)  # [layers, rows, count, experts]
    experts = probs.shape[-1]
    picks = torch.zeros_like(probs).scatter_(-1, probs.topk(min(top_k, experts), dim=-1).indices, 1.0)
    share = picks.cumsum(dim=2)
    share = share / share.sum(dim=-1, keepdim=True)
    balance = torch.special.entr(share).sum(dim=-1) / (math.log(experts) if experts > 1 else 1.0)
    blocks = layout.split(out)
    blocks["moe"][..., 1] = balance.permute(1, 2, 0)
    return out
