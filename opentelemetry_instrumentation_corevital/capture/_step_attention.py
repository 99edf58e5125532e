"""One decoding step's attention inputs for the reduce: head values of the new query row, and key-count tables.

This is the shape-changing part of a step (the key cache grows): it runs
eagerly before the fixed-shape reduce, batched over layers whose shapes agree,
within a memory budget for the stacked key caches.
"""

from __future__ import annotations

from typing import Any

import torch

from . import _attention, _reduce
from ._model_taps import ModelTaps
from ._taps import all_present

#: Largest key-cache copy the per-step attention reduce may make: 0.5% of the model's parameter bytes
#: (at least 4 MiB), so that peak memory stays within 1% of plain generate.
_STACK_FRACTION = 0.005
_STACK_FLOOR = 4 << 20


def _stack_budget(model: Any) -> int:
    try:
        size = sum(p.numel() * p.element_size() for p in model.parameters())
    except Exception:
        size = 0
    return max(_STACK_FLOOR, int(size * _STACK_FRACTION))


class StepAttention:
    """Builds ``heads``, ``inv_valid`` and ``inv_rest`` of :class:`StepInputs` from what the taps kept."""

    def __init__(self, taps: ModelTaps, model: Any) -> None:
        self._taps = taps
        self._model = model
        self._budget: int | None = None  # computed when first needed: summing the parameters takes a while
        self._tables: dict[torch.device, _attention.KeyTables] = {}  # per device, built at the first step
        self.generation_config: Any = None  # sizes the key tables to the generation's length

    def inputs(
        self, rows: int, step: int, prefix: int, target: torch.Tensor | None, device: torch.device, slots: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(heads [layers, rows, heads, 4], inv_valid [rows], inv_rest [rows]) of the layers in ``slots`` (all on
        ``device``), or None when a layer is missing."""
        expected = prefix + step  # keys the cache should hold after this step's forward
        heads = self._heads(rows, prefix, expected, target, device, slots)
        if heads is None:
            return None
        _, inv_valid, inv_rest = self._key_tables(rows, prefix, expected, device).at(0, expected)
        return heads, inv_valid, inv_rest

    def stack_budget(self) -> int:
        """The memory budget of the static copies (:func:`_stack_budget`), computed once a call, when needed."""
        if self._budget is None:
            self._budget = _stack_budget(self._model)
        return self._budget

    def release(self) -> None:
        """Free the tables (end of the generation)."""
        self._tables.clear()

    def _heads(
        self, rows: int, prefix: int, expected: int, target: torch.Tensor | None, device: torch.device, slots: list[int]
    ) -> torch.Tensor | None:
        """[layers, rows, heads, 4] head values of this step's new query row, for the layers in ``slots``."""
        taps = self._taps
        buffers = taps.buffers
        tables = self._key_tables(rows, prefix, expected, device)
        if taps.eager_attention:
            weights_per_layer = all_present([buffers.probs[s] for s in slots])
            if weights_per_layer is None or len({p.shape for p in weights_per_layer}) != 1:
                return None
            stacked = torch.stack(weights_per_layer)
            weights, _, _ = tables.at(stacked.shape[-1], expected)
            return _reduce.head_values(stacked, weights)
        calls = all_present([buffers.attn[s] for s in slots])
        if calls is None:
            return None
        groups: dict[tuple, list[int]] = {}
        for slot, (query, key, mask, bias, scaling, softcap) in enumerate(calls):
            signature = (tuple(query.shape), tuple(key.shape), id(mask), id(bias), scaling, softcap, key.dtype)
            groups.setdefault(signature, []).append(slot)
        parts: list[tuple[list[int], torch.Tensor]] = []
        for group in groups.values():
            _, key0, mask, bias, scaling, softcap = calls[group[0]]
            keys = key0.shape[-2]
            if keys > expected:  # a cache holding more than this step's positions: not ours to interpret
                return None
            weights, _, _ = tables.at(keys, expected)
            # Stacking layers' key caches copies them: batch as many layers as the memory budget allows.
            per_layer = key0.numel() * key0.element_size()
            size = max(1, self.stack_budget() // max(1, per_layer))
            for start in range(0, len(group), size):
                chunk = group[start : start + size]
                if len(chunk) == 1:  # a view, no copy
                    query, key = calls[chunk[0]][0][None], calls[chunk[0]][1][None]
                else:
                    query = torch.stack([calls[s][0] for s in chunk])
                    key = torch.stack([calls[s][1] for s in chunk])
                probs = _attention.query_row_probs(query, key, mask, scaling, bias, softcap)
                parts.append((chunk, _reduce.head_values(probs, weights)))
        if len(parts) == 1 and parts[0][0] == list(range(len(calls))):
            values = parts[0][1]
            return target.copy_(values) if target is not None else values
        order = [slot for chunk, _ in parts for slot in chunk]
        values = torch.cat([v for _, v in parts])
        if order != sorted(order):
            values = values[torch.tensor(sorted(range(len(order)), key=order.__getitem__), device=values.device)]
        return target.copy_(values) if target is not None else values

    def _key_tables(self, rows: int, prefix: int, expected: int, device: torch.device) -> _attention.KeyTables:
        tables = self._tables.get(device)
        if tables is None or not tables.covers(expected) or tables.weights.shape[0] != rows:
            span = max(expected - prefix, self._max_new_tokens(prefix))
            tables = _attention.KeyTables(
                self._valid_prompt(rows, prefix, device), self._sink_index(rows, prefix, device), prefix, span
            )
            self._tables[device] = tables
        return tables

    def _max_new_tokens(self, prefix: int) -> int:
        config = self.generation_config
        max_new = getattr(config, "max_new_tokens", None)
        if max_new is None and getattr(config, "max_length", None) is not None:
            max_new = int(config.max_length) - prefix
        return int(max_new) if max_new and max_new > 0 else 256

    def _prompt_mask(self, prefix: int) -> torch.Tensor | None:
        """The prompt's mask when it covers exactly the prefix (decoder-only models)."""
        taps = self._taps
        mask = taps.prompt_mask
        if mask is not None and not taps.is_seq2seq and mask.dim() == 2 and mask.shape[1] == prefix:
            return mask
        return None

    def _valid_prompt(self, rows: int, prefix: int, device: torch.device) -> torch.Tensor:
        mask = self._prompt_mask(prefix)
        if mask is not None:
            valid = mask.to(device).sum(dim=-1)
            if valid.shape[0] != rows and rows % valid.shape[0] == 0:
                valid = valid.repeat_interleave(rows // valid.shape[0])
            return valid
        return torch.full((rows,), float(prefix), device=device)

    def _sink_index(self, rows: int, prefix: int, device: torch.device) -> torch.Tensor:
        mask = self._prompt_mask(prefix)
        if mask is not None:
            first = mask.to(device).float().argmax(dim=-1)
            if first.shape[0] != rows and rows % first.shape[0] == 0:
                first = first.repeat_interleave(rows // first.shape[0])
            return first.long()
        return torch.zeros(rows, dtype=torch.long, device=device)
