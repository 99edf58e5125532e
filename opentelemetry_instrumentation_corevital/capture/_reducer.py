"""Once per step: what the taps kept, as typed :class:`StepInputs`, reduced to fixed-shape rows on the device.

Logits are reduced every step; layer data on recorded steps, for all layers
at once. On a CUDA device the fixed-shape reduce is captured as one graph per
generation at the first decoding step and replayed afterwards (see
``_reduce``); a large batch x vocabulary keeps the logit part eager, so no
static copy of the logits is kept. Nothing is read on the host.
"""

from __future__ import annotations

from typing import Any

import torch

from . import _reduce
from ._model_taps import ModelTaps
from ._reduce import StepInputs, StepLayout, StepState
from ._rows import StepRows
from ._stats import TOP_K
from ._step_attention import StepAttention
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


class StepReducer:
    """Turns each step's logits and tapped layer data into rows of :class:`StepRows`."""

    def __init__(self, model: Any, taps: ModelTaps, rows: StepRows, unavailable: dict[str, str]) -> None:
        self._taps = taps
        self._rows = rows
        self._unavailable = unavailable  # shared with the source
        self.top_k = TOP_K
        self.beams = False  # beam search: rows are candidates, kept with their top-k ids
        self._parents: torch.Tensor | None = None  # beam search: row -> row of the previous step
        self._states: dict[StepLayout, StepState] = {}
        self._graph: _reduce.GraphedReduce | None = None
        self._graph_ok = taps.plan.cuda_graphs
        self._stack_budget = _stack_budget(model)
        self.attention = StepAttention(taps, self._stack_budget)

    def configure(self, top_k: int, beams: bool, generation_config: Any) -> None:
        """Set what the decoding mode decides, before the first step."""
        self.top_k = top_k
        self.beams = beams
        self.attention.generation_config = generation_config

    def follow_beams(self, parents: torch.Tensor | None) -> None:
        """Beam search: row j of the next step continues row ``parents[j]`` (None: each row itself)."""
        self._parents = parents

    def step(self, step: int, input_ids: torch.Tensor, scores: torch.Tensor | None, prefix: int) -> None:
        """Reduce this step: logits when given, layer data on recorded steps; then clear the taps' buffers."""
        taps = self._taps
        outs = all_present(taps.buffers.out) if taps.active and taps.recording else None
        reference = scores if scores is not None else (outs[0] if outs else None)
        if reference is None:  # neither logits nor a recorded layer step
            taps.buffers.clear()
            return
        inputs: StepInputs | None = None
        if outs:
            inputs = self._layer_inputs(step, prefix, outs)
        layer_step = inputs is not None
        if inputs is None:
            inputs = StepInputs()
        rows = int(reference.shape[0])
        inputs.scores = scores
        # The token chosen at the previous step; step 0 of an ``inputs_embeds`` call has none (its row is dropped).
        token = input_ids[:, -1] if input_ids.shape[1] else torch.zeros(rows, dtype=torch.long, device=input_ids.device)
        inputs.token = token if scores is not None else None
        if scores is not None and layer_step and not self._logits_in_graph(scores):
            # A large batch x vocabulary: the logit part stays eager, so no static copy of the logits is kept.
            self._append(
                self._layout(False, rows, True), StepInputs(scores=scores, token=inputs.token), step, layer_step=False
            )
            inputs.scores = inputs.token = None
            self._append(self._layout(True, rows, False), inputs, step, layer_step=True)
        else:
            self._append(self._layout(layer_step, rows, scores is not None), inputs, step, layer_step=layer_step)
        taps.buffers.clear()

    def last_logp(self) -> torch.Tensor | None:
        """The last step's log-probabilities [rows, vocab] (the last token's surprisal is read from them)."""
        return next((st.logp for st in self._states.values() if st.logp is not None), None)

    def release(self) -> None:
        """Free the carried state, the graph and the tables (end of the generation)."""
        self._states.clear()
        self._graph = None
        self._parents = None
        self.attention.release()

    def _append(self, layout: StepLayout, inputs: StepInputs, step: int, layer_step: bool) -> None:
        if layout.width == 0:
            return
        inputs.parents = self._parents if layout.beams else None
        if layout.beams and inputs.parents is None and layout.hidden == "full" and inputs.stacked is not None:
            inputs.parents = torch.arange(int(inputs.stacked.shape[0]), device=inputs.stacked.device)
        state = self._state_for(layout, inputs)
        self._rows.append(layout, self._run(layout, state, inputs, step), step, layer_step)

    def _logits_in_graph(self, scores: torch.Tensor) -> bool:
        """Graph the logit part too only while its static buffers fit the memory budget."""
        return scores.numel() * 4 * 3 <= self._stack_budget

    def _layout(self, layers: bool, rows: int, signals: bool) -> StepLayout:
        key = (layers, rows, signals)
        layout = self._rows.layouts.get(key)
        if layout is None:
            taps = self._taps
            plan = taps.plan
            layout = StepLayout(
                signals=signals,
                k=self.top_k,
                beams=self.beams,
                layers=len(taps.layers) if layers else 0,
                hidden=(plan.hidden if layers else "off"),
                attention=bool(layers and taps.wants_attention),
                moe=bool(layers and plan.moe and taps.routers),
                interleaved=not taps.consecutive,
            )
            self._rows.layouts[key] = layout
        return layout

    def _layer_inputs(self, step: int, prefix: int, outs: list[torch.Tensor]) -> StepInputs | None:
        """The fixed-shape tensors the taps kept for this step (``outs``: every layer's output), for ``reduce_step``."""
        taps = self._taps
        plan = taps.plan
        buffers = taps.buffers
        rows = int(outs[0].shape[0])
        static = self._graph.inputs if self._graph is not None else StepInputs()
        inputs = StepInputs()
        if plan.hidden == "full":
            if taps.consecutive:
                first = buffers.inp[0]
                if first is None:
                    return None
                parts = [first, *outs]
            else:
                inps = all_present(buffers.inp)
                if inps is None:
                    return None
                parts = [t for pair in zip(inps, outs) for t in pair]
        else:
            parts = outs
        target = static.stacked
        inputs.stacked = torch.cat(parts, dim=1, out=target) if target is not None else torch.cat(parts, dim=1)
        if taps.wants_attention:
            attention = self.attention.inputs(rows, step, prefix, static.heads, outs[0].device)
            if attention is None:
                return None
            inputs.heads, inputs.inv_valid, inputs.inv_rest = attention
        if plan.moe and taps.routers:
            routers = all_present(buffers.router)
            if routers is None:
                return None
            target = static.router
            inputs.router = torch.stack(routers, out=target) if target is not None else torch.stack(routers)
        return inputs

    def _state_for(self, layout: StepLayout, inputs: StepInputs) -> StepState:
        state = self._states.get(layout)
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
            state.extra["top_k"] = self._taps.top_k_experts
            # logits-only and layer steps share the logit state
            for other in self._states.values():
                if other.logp is not None and state.logp is not None and other.logp.shape == state.logp.shape:
                    state.logp = other.logp
            self._states[layout] = state
        return state

    def _run(self, layout: StepLayout, state: StepState, inputs: StepInputs, step: int) -> torch.Tensor:
        """One CUDA-graph replay when possible (full layout, steady state), else eager."""
        graph = self._graph
        if graph is not None and graph.layout == layout:
            return graph(inputs)
        taps = self._taps
        device = next(t for t in inputs.tensors().values() if t is not None).device
        if (
            device.type == "cuda"
            and step >= 1
            and self._graph_ok
            and layout.attention == taps.wants_attention
            and layout.layers == len(taps.layers)
            and not torch.cuda.is_current_stream_capturing()
        ):
            try:
                graph = _reduce.GraphedReduce(layout, state, inputs)
                self._graph = graph
                return graph(inputs)
            except Exception as exc:  # capture not possible here: stay eager for this generation
                self._graph_ok = False
                self._unavailable.setdefault("cuda_graph", f"eager reduce ({type(exc).__name__}: {exc})")
        return _reduce.reduce_step(layout, state, inputs)
