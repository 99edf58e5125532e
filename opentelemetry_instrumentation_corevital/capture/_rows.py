"""The fixed-shape rows a device source keeps per step, on the device, until its one transfer."""

from __future__ import annotations

import dataclasses

import torch

from ._lanes import LaneRows, merge_lanes
from ._reduce import StepLayout


class StepRows:
    """Per-step logit rows and per-layer-step layer rows, with the layouts that say what their columns hold."""

    def __init__(self) -> None:
        self.logits: list[torch.Tensor] = []  # per step [rows, logits block]
        self.layers: list[torch.Tensor] = []  # per layer step [rows, layer blocks]
        self.lanes: list[LaneRows] = []  # a model split over devices: each lane's layer rows instead
        self.layer_steps: list[int] = []
        self.layouts: dict[tuple, StepLayout] = {}  # (layer step, rows, signals) -> layout
        self.chosen_aligned = False  # scoring: each logit row holds its own token's log-probability

    def append(
        self, layout: StepLayout, out: torch.Tensor, step: int, layer_step: bool, lane: LaneRows | None = None
    ) -> None:
        """Keep one step's flat [rows, layout.width] output: its logit part, and its layer part on layer steps
        (a lane's part: the caller counts the step once every lane has its part)."""
        width = layout.logit_width
        if layout.signals:
            self.logits.append(out if width == layout.width else out[:, :width])  # a view costs microseconds
        if layer_step and lane is not None:
            lane.rows.append(out[:, width:])
        elif layer_step:
            self.layers.append(out[:, width:])
            self.layer_steps.append(step)

    def layer_blocks(self, layout: StepLayout, count: int, device: torch.device) -> dict[str, torch.Tensor]:
        """The first ``count`` layer steps as ``layout``'s blocks [layer steps, rows, layers, ...], on ``device``."""
        if self.lanes:
            return merge_lanes(self.lanes, count, device)
        return dataclasses.replace(layout, signals=False).split(torch.stack(self.layers[:count]))

    @property
    def logit_layout(self) -> StepLayout | None:
        """The layout the logit rows were made with."""
        return next((layout for layout in self.layouts.values() if layout.signals), None)

    @property
    def layer_layout(self) -> StepLayout | None:
        """The layout the layer rows were made with."""
        return next((layout for layout in self.layouts.values() if layout.layers), None)

    def last_logits(self) -> torch.Tensor | None:
        """This step's packed logit values [rows, ...] (sum p ln p, top-k log-probs, ...), on the device."""
        return self.logits[-1] if self.logits else None

    def retained_values(self) -> int:
        """How many numbers the rows hold: the capture's whole memory cost that grows with steps."""
        lanes = [t for lane in self.lanes for t in lane.rows]
        return sum(t.numel() for t in (*self.logits, *self.layers, *lanes))

    def drop(self) -> None:
        """Free the rows (after the transfer, or when the capture stopped)."""
        self.logits.clear()
        self.layers.clear()
        self.lanes = []
        self.layer_steps.clear()
