"""Hooks on vLLM's own decoder layers: each layer's residual stream at the rows that get sampled.

A vLLM forward runs every scheduled token of every request as one flat
``[tokens, hidden]`` batch (prompt chunks and decode tokens mixed). The rows
whose logits are sampled are the last token of each request,
``query_start_loc[1:] - 1`` in the attention metadata of the forward context,
in the order of the logits rows the logits processor then sees. A vLLM decoder
layer returns ``(hidden, residual)`` and the next layer's fused norm adds them
in place, so each hook gathers ``hidden + residual`` at those rows at once (a
copy, on the device, no host read).
"""

from __future__ import annotations

from typing import Any

import torch

from ._taps import OutputHook, Taps, all_present

#: Why a vLLM capture has no layer summaries, by cause.
NO_MODEL = "the vLLM model was loaded before instrument(): its decoder layers could not be hooked"
NO_LAYERS = "the vLLM model has no decoder layer list (model.layers) to hook"
NO_ROWS = "vLLM's forward context carried no query_start_loc: the sampled rows are unknown"


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The decoder layers of a vLLM model (``model.model.layers`` or ``model.layers``), this rank's only."""
    for owner in (getattr(model, "model", None), model):
        layers = getattr(owner, "layers", None)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            start = int(getattr(owner, "start_layer", 0) or 0)
            end = int(getattr(owner, "end_layer", len(layers)) or len(layers))
            return list(layers)[start:end]
    return []


def sampled_rows() -> torch.Tensor | None:
    """The token rows of this forward whose logits are sampled (``query_start_loc[1:] - 1``), on the device."""
    try:
        from vllm.forward_context import get_forward_context

        metadata = get_forward_context().attn_metadata
    except Exception:
        return None
    if isinstance(metadata, list):
        metadata = metadata[0] if metadata else None
    for value in (metadata or {}).values():
        start = getattr(value, "query_start_loc", None)
        if isinstance(start, torch.Tensor):
            return start[1:] - 1
    return None


def _stream(args: tuple) -> torch.Tensor | None:
    """The residual stream entering a layer: ``hidden`` (first layer) or ``hidden + residual``."""
    hidden = args[1] if len(args) > 1 else None
    residual = args[2] if len(args) > 2 else None
    if not isinstance(hidden, torch.Tensor):
        return None
    return hidden if not isinstance(residual, torch.Tensor) else hidden + residual


class VLLMLayerTaps:
    """Forward hooks on the decoder layers, installed while captured requests run and removed when none do."""

    def __init__(self, model: Any, full: bool) -> None:
        self.layers = decoder_layers(model)
        self.full = full  # also the first layer's input (hidden-state moments need each layer's input)
        self.problem: str | None = None if self.layers else NO_LAYERS
        self._taps = Taps(self._failed)
        self._rows: torch.Tensor | None = None
        self._out: list[torch.Tensor | None] = []
        self._first_in: torch.Tensor | None = None

    @property
    def installed(self) -> bool:
        """Whether the hooks are in place."""
        return bool(self._taps.targets)

    def install(self) -> None:
        """Hook every decoder layer (the first one's input too)."""
        if self.installed or not self.layers:
            return
        self._out = [None] * len(self.layers)
        self._taps.before("vllm layer 0 input", self.layers[0], self._before_first)
        for i, layer in enumerate(self.layers):
            self._taps.after(f"vllm layer {i}", layer, self._after(i))

    def remove(self) -> None:
        """Take the hooks out and drop what they kept."""
        self._taps.remove()
        self._clear()

    def _failed(self, exc: Exception) -> None:
        """A hook raised: this forward's layer data is dropped, the engine's forward goes on."""
        self.problem = f"a layer hook failed: {type(exc).__name__}: {exc}"
        self._clear()

    def _clear(self) -> None:
        self._rows = None
        self._first_in = None
        self._out = [None] * len(self.layers)

    def _before_first(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self._clear()
        self._rows = sampled_rows()
        if self._rows is None:
            self.problem = NO_ROWS
            return
        if self.full:
            stream = _stream(args)
            self._first_in = stream.index_select(0, self._rows) if stream is not None else None

    def _after(self, index: int) -> OutputHook:
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            rows = self._rows
            if rows is None:
                return
            if isinstance(output, tuple) and len(output) >= 2 and isinstance(output[1], torch.Tensor):
                hidden, residual = output[0], output[1]
                if hidden.shape[0] <= 2 * rows.shape[0]:  # (nearly) decode only: add all rows, then pick (2 ops)
                    self._out[index] = (hidden + residual).index_select(0, rows)
                else:  # prompt chunks: pick the few sampled rows first
                    self._out[index] = hidden.index_select(0, rows) + residual.index_select(0, rows)
            elif isinstance(output, torch.Tensor):
                self._out[index] = output.index_select(0, rows)

        return hook

    def take(self, rows: int, select: torch.Tensor | None) -> torch.Tensor | None:
        """This forward's stacked layer data [rows, (1 +) layers, hidden] for the selected logits rows; then clear.

        ``rows`` is the number of logits rows (the sampled-row list may be padded past it);
        ``select`` the captured rows among them (None: all).
        """
        outs = all_present(self._out)
        first = self._first_in
        self._clear()
        if outs is None or (self.full and first is None):
            return None
        parts = [first, *outs] if self.full and first is not None else outs
        stacked = torch.stack([p[:rows] for p in parts], dim=1)
        return stacked if select is None else stacked.index_select(0, select)
