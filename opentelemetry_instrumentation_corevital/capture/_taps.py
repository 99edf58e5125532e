"""Hooks put in together and taken out together, and what they keep during one forward pass.

A :class:`Tap` records one installed hook: what it taps and the handle that
removes it. :class:`Taps` installs hooks with one signature and removes them
all at once (the hook-point idea of TransformerLens). :class:`StepBuffers`
holds the references the hooks keep until the step's reduce, and
:class:`Prefill` the prompt telemetry computed once, at the prefill pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch.utils.hooks import RemovableHandle

from ._lanes import moved

#: The one output-hook signature: (module, positional args, keyword args, output).
OutputHook = Callable[[torch.nn.Module, tuple, dict, Any], None]
#: The one input-hook signature: (module, positional args, keyword args).
InputHook = Callable[[torch.nn.Module, tuple, dict], None]

#: What one attention call handed over (a plain tuple: built per layer per step):
#: (query, key, mask or None, position bias or None, scaling, softcap or None).
AttentionCall = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, Any, float, float | None]

T = TypeVar("T")


def all_present(slots: list[T | None]) -> list[T] | None:
    """The slots when every one was filled this forward, else None (a missing layer skips the layer reduce)."""
    present = [slot for slot in slots if slot is not None]
    return present if len(present) == len(slots) else None


@dataclass(frozen=True)
class Tap:
    """One installed hook."""

    target: str  # what it taps, e.g. "layer model.layers.3"
    handle: RemovableHandle


class Taps:
    """Every hook of one call: installed one by one, removed together.

    Each hook runs guarded: what it raises goes to ``on_error`` (the capture stops), never into the model's
    forward, and a hook never returns a value, so it cannot replace the module's inputs or output.
    """

    def __init__(self, on_error: Callable[[Exception], None]) -> None:
        self._taps: list[Tap] = []
        self._on_error = on_error

    def before(self, target: str, module: torch.nn.Module, hook: InputHook) -> None:
        """Call ``hook`` with the module's inputs before each of its forwards."""
        self._taps.append(Tap(target, module.register_forward_pre_hook(self._guarded(hook), with_kwargs=True)))

    def after(self, target: str, module: torch.nn.Module, hook: OutputHook) -> None:
        """Call ``hook`` with the module's inputs and output after each of its forwards."""
        self._taps.append(Tap(target, module.register_forward_hook(self._guarded(hook), with_kwargs=True)))

    def _guarded(self, hook: Callable[..., None]) -> Callable[..., None]:
        on_error = self._on_error

        def guarded(*args: Any) -> None:
            try:
                hook(*args)
            except Exception as exc:
                on_error(exc)

        return guarded

    @property
    def targets(self) -> list[str]:
        """What is tapped now, in installation order (for messages and tests)."""
        return [tap.target for tap in self._taps]

    def remove(self) -> None:
        """Take every hook out; safe to call more than once."""
        for tap in self._taps:
            tap.handle.remove()
        self._taps.clear()


class StepBuffers:
    """References the taps keep during one forward, one slot per captured layer; cleared after each reduce."""

    def __init__(self, slots: int = 0) -> None:
        self.slots = slots
        self.clear()

    def clear(self) -> None:
        """Drop this forward's references (the next forward fills fresh slots)."""
        n = self.slots
        self.out: list[torch.Tensor | None] = [None] * n  # layer outputs (new token, or all positions when scoring)
        self.inp: list[torch.Tensor | None] = [None] * n  # layer inputs (hidden "full")
        self.attn: list[AttentionCall | None] = [None] * n  # attention calls (intercepted attention)
        self.probs: list[torch.Tensor | None] = [None] * n  # attention weights (eager attention)
        self.router: list[torch.Tensor | None] = [None] * n  # router logits (mixture of experts)


@dataclass
class Prefill:
    """Prompt telemetry, computed once at the prefill pass and transferred with the rest."""

    surprisal: torch.Tensor | None = None  # [rows, prompt - 1] bits
    layers: dict[str, list[torch.Tensor | None]] = field(default_factory=dict)  # decoder: hidden_norm, attention
    encoder: dict[str, list[torch.Tensor | None]] = field(default_factory=dict)  # encoder: same columns
    encoder_indices: list[int] = field(default_factory=list)


def prefill_table(columns: dict[str, list[torch.Tensor | None]]) -> torch.Tensor | None:
    """[rows, layers, 4] of (hidden_norm, sparsity, basin, basin_min); NaN where not captured."""
    if not columns:
        return None
    norms, attention = columns.get("hidden_norm", []), columns.get("attention", [])
    present = [t for t in [*norms, *attention] if t is not None]
    if not present:
        return None
    rows, device = present[0].shape[0], present[0].device
    nan1 = torch.full((rows, 1), float("nan"), device=device)
    nan3 = torch.full((rows, 3), float("nan"), device=device)
    table = [  # a model split over devices: each layer's values join the first layer's device (once, at prefill)
        torch.cat(
            [
                moved(n[:, None].float(), device) if n is not None else nan1,
                moved(a.float(), device) if a is not None else nan3,
            ],
            dim=-1,
        )
        for n, a in zip(norms, attention)
    ]
    return torch.stack(table, dim=1)
