"""A model split over devices: each device reduces its own layers, and the rows meet once, at the transfer.

A model loaded with ``device_map`` (accelerate) runs its layers on several
GPUs (or a GPU and the CPU). Gathering every layer's tensors onto one device
each step would add cross-device copies to the decode loop, and a CUDA graph is
bound to one device. So the captured layers are grouped into *lanes*, one per
device their outputs live on: each lane reduces its own layers on its own
device, with its own carried state and its own CUDA graph, and keeps its own
rows. :func:`merge_lanes` puts the lanes' rows back in layer order at the end
of the generation, one copy per lane, before the single transfer to the host.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

from . import _graph_pool, _reduce
from ._reduce import StepInputs, StepLayout, StepState


def moved(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``: asynchronous between GPUs (ordered by the streams, no host wait), and a plain copy
    where the CPU is on either side (an asynchronous copy to the host could be read before it lands)."""
    if tensor.device == device:
        return tensor
    return tensor.to(device, non_blocking=tensor.device.type == "cuda" and device.type == "cuda")


def lane_key(slot: int, tensor: torch.Tensor) -> Hashable:
    """What decides a layer's lane: the device its output lives on (a function, so tests can split one device)."""
    return tensor.device


@dataclass(frozen=True)
class Lane:
    """Captured layers (slots, in layer order) whose outputs live on one device."""

    device: torch.device
    slots: tuple[int, ...]

    @property
    def contiguous(self) -> bool:
        """Whether the lane's layers follow one another (then each one's input is the output before it)."""
        return self.slots == tuple(range(self.slots[0], self.slots[0] + len(self.slots)))


def lanes_of(outs: list[torch.Tensor]) -> list[Lane]:
    """The lanes of one step's layer outputs, in the order their first layer runs."""
    groups: dict[Hashable, list[int]] = {}
    for slot, out in enumerate(outs):
        groups.setdefault(lane_key(slot, out), []).append(slot)
    return [Lane(outs[slots[0]].device, tuple(slots)) for slots in groups.values()]


@dataclass
class LaneRows:
    """One lane's layer rows: per layer step, ``[rows, layout.width]`` on the lane's device."""

    lane: Lane
    layout: StepLayout
    rows: list[torch.Tensor] = field(default_factory=list)


def merge_lanes(lanes: list[LaneRows], count: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The blocks of the first ``count`` layer steps of every lane, on ``device`` and in layer order.

    Each block comes out as ``[layer steps, rows, layers, ...]``, as one device's rows would give it.
    """
    parts: dict[str, list[torch.Tensor]] = {}
    order: list[int] = []
    for lane in lanes:
        blocks = lane.layout.split(torch.stack(lane.rows[:count]))
        for name, block in blocks.items():  # the layer axis is 2 in every block (hidden norms have no more)
            parts.setdefault(name, []).append(moved(block, device))
        order.extend(lane.lane.slots)
    merged = {name: torch.cat(blocks, dim=2) for name, blocks in parts.items()}
    if order != sorted(order):
        index = torch.tensor(sorted(range(len(order)), key=order.__getitem__), device=device)
        merged = {name: block.index_select(2, index) for name, block in merged.items()}
    return merged


class LaneReduce:
    """The reduce of one device: the state carried between steps and the CUDA graph, per layout."""

    def __init__(self, graphs: bool, unavailable: dict[str, str]) -> None:
        self.states: dict[StepLayout, StepState] = {}
        self.graph: _reduce.GraphedReduce | None = None
        self._graph_key: Hashable = None  # what the graph was captured for (given back to the pool under it)
        self._graphs = graphs
        self._unavailable = unavailable  # shared with the source

    @property
    def static(self) -> StepInputs:
        """The graph's static inputs (the step's tensors are written straight into them), or empty ones."""
        return self.graph.inputs if self.graph is not None else StepInputs()

    def state_for(self, layout: StepLayout, inputs: StepInputs, top_k_experts: int) -> StepState:
        """The carried state of ``layout`` (zeros before its first step)."""
        state = self.states.get(layout)
        if state is None:
            scores, stacked, router = inputs.scores, inputs.stacked, inputs.router
            reference = next(t for t in (scores, stacked) if t is not None)
            state = StepState.zeros(
                layout,
                int(reference.shape[0]),
                int(scores.shape[-1]) if scores is not None else 0,
                int(stacked.shape[-1]) if stacked is not None else 0,
                int(router.shape[-1]) if router is not None else 0,
                reference.device,
            )
            state.extra["top_k"] = top_k_experts
            # logits-only and layer steps share the logit state
            for other in self.states.values():
                if other.logp is not None and state.logp is not None and other.logp.shape == state.logp.shape:
                    state.logp = other.logp
            self.states[layout] = state
        return state

    def run(
        self, layout: StepLayout, state: StepState, inputs: StepInputs, step: int, graphable: bool, aside: bool = False
    ) -> torch.Tensor:
        """One CUDA-graph replay when possible (the steady-state layer layout), else eager; ``aside``: the replays
        run on a side stream (:class:`_reduce.GraphedReduce`; the caller joins before reading the outputs)."""
        graph = self.graph
        if graph is not None and (graph.layout is layout or graph.layout == layout):
            return graph(inputs)
        if not (self._graphs and graphable and step >= 1):
            return _reduce.reduce_step(layout, state, inputs)
        device = next(t for t in inputs.tensors().values() if t is not None).device
        if device.type != "cuda":
            self._graphs = False  # a lane never changes device: no need to look again
        elif not torch.cuda.is_current_stream_capturing():
            try:
                aside = aside and device.index == torch.cuda.current_device()  # streams switch devices too
                key = _graph_pool.key_of(layout, state, inputs, aside)
                with torch.cuda.device(device):
                    graph = _graph_pool.take(key)
                    if graph is None:
                        graph = _reduce.GraphedReduce(layout, state, inputs, aside)
                    else:
                        shared = state.logp
                        graph.adopt(state)
                        for other in self.states.values():  # a layout sharing the logit state follows it
                            if shared is not None and other.logp is shared:
                                other.logp = state.logp
                self.graph, self._graph_key = graph, key
                return graph(inputs)
            except Exception as exc:  # capture not possible here: stay eager for this generation
                self._graphs = False
                self._unavailable.setdefault("cuda_graph", f"eager reduce ({type(exc).__name__}: {exc})")
        return _reduce.reduce_step(layout, state, inputs)

    def give_back(self) -> None:
        """The generation is over: its graph goes to the pool for the next generation of the same shapes."""
        graph, self.graph = self.graph, None
        if graph is not None:
            graph.put_away()
            _graph_pool.give(self._graph_key, graph)

    def join(self) -> None:
        """The caller's stream waits for this lane's last replay (a no-op unless it ran aside)."""
        if self.graph is not None:
            self.graph.join()
