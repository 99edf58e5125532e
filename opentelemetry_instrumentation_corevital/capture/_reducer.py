"""Once per step: what the taps kept, as typed :class:`StepInputs`, reduced to fixed-shape rows on the device.

Logits are reduced every step; layer data on recorded steps, for all layers
at once. On a CUDA device the fixed-shape reduce is captured as one graph at
the first decoding step (or taken from the graphs kept from an earlier
generation of the same shapes, ``_graph_pool``) and replayed afterwards (see
``_reduce``); a large batch x vocabulary keeps the logit part eager, so no
static copy of the logits is kept. Steps with logits only (a compiled forward)
are reduced a ring at a time (``_logit_batch``), on a side stream. A model
split over devices reduces each device's layers on that device, in its own
lane (see ``_lanes``). Nothing is read on the host.
"""

from __future__ import annotations

from typing import Any

import torch

from ._lanes import Lane, LaneReduce, LaneRows, lanes_of, moved
from ._logit_batch import LogitBatch, ring_shape
from ._model_taps import ModelTaps
from ._reduce import StepInputs, StepLayout, StepState
from ._rows import StepRows
from ._stats import TOP_K
from ._step_attention import StepAttention
from ._taps import all_present


class StepReducer:
    """Turns each step's logits and tapped layer data into rows of :class:`StepRows`."""

    def __init__(self, model: Any, taps: ModelTaps, rows: StepRows, unavailable: dict[str, str]) -> None:
        self._taps = taps
        self._rows = rows
        self._unavailable = unavailable  # shared with the source
        self.top_k = TOP_K
        self.beams = False  # beam search: rows are candidates, kept with their top-k ids
        self._parents: torch.Tensor | None = None  # beam search: row -> row of the previous step
        self._graphs = taps.plan.cuda_graphs
        self._engines = [LaneReduce(self._graphs, unavailable)]  # one per lane (one device: the only one)
        self._logit_engine: LaneReduce | None = None  # split models: logits on a device no lane reduces in graph
        self._lanes: list[Lane] | None = None  # learnt at the first layer step
        self._lane_layouts: dict[tuple[int, int, bool], StepLayout] = {}
        self._ids_with_logits: bool | None = None  # learnt at the first step
        self._logit_memo: tuple[int, StepLayout, StepState] | None = None  # rows, layout, state of logit-only steps
        # Logit-only replays run on a side stream, and logit-only steps are batched, unless something reads the
        # rows during the loop (stop_on).
        self.aside = True
        self._batch: LogitBatch | None = None
        self.attention = StepAttention(taps, model)

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
        if self._batch is not None and scores is not None:  # a ring in use: no layer is tapped (``_logit_step``)
            return self._batch.add(step, input_ids, scores, self._rows, self.aside)
        taps = self._taps
        outs = all_present(taps.buffers.out) if taps.active and taps.recording else None
        if not outs and scores is not None and self._lanes is None:
            self._logit_step(step, input_ids, scores)
            taps.buffers.clear()
            return
        reference = scores if scores is not None else (outs[0] if outs else None)
        if reference is None:  # neither logits nor a recorded layer step
            taps.buffers.clear()
            return
        if outs and self._lanes is None:
            self._lanes = lanes_of(outs)
        rows = int(reference.shape[0])
        # The token chosen at the previous step; step 0 of an ``inputs_embeds`` call has none (its row is dropped).
        if input_ids.shape[1]:
            token = input_ids.select(1, -1)
        else:
            token = torch.zeros(rows, dtype=torch.long, device=input_ids.device)
        if scores is not None and not self._same_device(input_ids, scores):  # a split model: logits elsewhere
            token = moved(token, scores.device)
        if self._split(scores):
            self._split_step(step, prefix, rows, scores, token, outs)
            taps.buffers.clear()
            return
        inputs: StepInputs | None = None
        if outs:
            inputs = self._layer_inputs(step, prefix, outs, self._engines[0], None)
        layer_step = inputs is not None
        if inputs is None:
            inputs = StepInputs()
        inputs.scores = scores
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

    def _logit_step(self, step: int, input_ids: torch.Tensor, scores: torch.Tensor) -> None:
        """A step with logits only, on one device (every step of a compiled forward): :meth:`step`'s logit path
        with its layout and carried state looked up once a generation, and the ring started when it may."""
        rows = int(scores.shape[0])
        memo = self._logit_memo
        layout, state = memo[1:] if memo is not None and memo[0] == rows else (self._layout(False, rows, True), None)
        engine = self._engines[0]
        graphable = not self._taps.layers and not self._taps.wants_attention  # the layout's: no layers, no attention
        if state is not None and graphable and self.aside and not layout.beams:  # from step 1 (state: step 0's)
            shape = ring_shape(rows, int(scores.shape[-1]))
            if shape[0]:
                self._batch = LogitBatch(layout, state, engine, shape, scores)
                self._batch.add(step, input_ids, scores, self._rows, self.aside)
                return
        if input_ids.shape[1]:
            token = input_ids.select(1, -1)
        else:  # step 0 of an ``inputs_embeds`` call: no token chosen yet (its row is dropped)
            token = torch.zeros(rows, dtype=torch.long, device=input_ids.device)
        if not self._same_device(input_ids, scores):
            token = moved(token, scores.device)
        inputs = StepInputs(scores=scores, token=token, parents=self._parents if layout.beams else None)
        if state is None:
            state = engine.state_for(layout, inputs, self._taps.top_k_experts)
            self._logit_memo = (rows, layout, state)
        self._rows.append(layout, engine.run(layout, state, inputs, step, graphable, self.aside), step, False)

    def last_logp(self) -> torch.Tensor | None:
        """The last step's log-probabilities [rows, vocab] (the last token's surprisal is read from them)."""
        engines = [*self._engines, *([self._logit_engine] if self._logit_engine else [])]
        return next((st.logp for e in engines for st in e.states.values() if st.logp is not None), None)

    def settle(self, flush: bool = True) -> None:
        """The end of the loop: reduce the logit steps still batched (``flush``) and make the caller's stream wait
        (on the device) for every replay run aside, so the rows and the state can be read or freed."""
        if flush and self._batch is not None:
            self._batch.flush(self._rows)
        for engine in self._engines:
            engine.join()

    def release(self) -> None:
        """Free the carried state, the graphs and the tables (end of the generation); no host wait: a graph given
        back is adopted after where this stream got (``GraphedReduce.put_away``)."""
        self.settle(flush=False)
        for engine in self._engines:
            engine.give_back()
        self._engines = [LaneReduce(self._graphs, self._unavailable)]
        self._logit_engine = None
        self._lanes = None
        self._lane_layouts.clear()
        self._ids_with_logits = None
        self._logit_memo = None
        self._batch = None
        self._parents = None
        self.attention.release()

    def _same_device(self, input_ids: torch.Tensor, scores: torch.Tensor) -> bool:
        """Whether the ids and the logits share a device (asked once a generation: neither moves)."""
        if self._ids_with_logits is None:
            self._ids_with_logits = input_ids.device == scores.device
        return self._ids_with_logits

    def _split(self, scores: torch.Tensor | None) -> bool:
        """Whether this generation reduces in several lanes (layers on several devices, or logits on another)."""
        lanes = self._lanes
        if not lanes:
            return False
        return len(lanes) > 1 or (scores is not None and scores.device != lanes[0].device)

    def _split_step(
        self,
        step: int,
        prefix: int,
        rows: int,
        scores: torch.Tensor | None,
        token: torch.Tensor,
        outs: list[torch.Tensor] | None,
    ) -> None:
        """One step of a model split over devices: each lane reduces its layers where they live.

        The logits ride in the graph of the lane on their device when they fit, else they are reduced eagerly on
        their own. Nothing is gathered across devices until the transfer.
        """
        lanes = self._lanes or []
        while len(self._engines) < len(lanes):
            self._engines.append(LaneReduce(self._graphs, self._unavailable))
        if len(self._rows.lanes) != len(lanes):
            self._rows.lanes = [LaneRows(lane, self._lane_layout(i, rows, False)) for i, lane in enumerate(lanes)]
        inputs = [self._layer_inputs(step, prefix, outs, self._engines[i], lane) for i, lane in enumerate(lanes)]
        layer_step = bool(outs) and all(i is not None for i in inputs)
        # The last lane on the logits' device reduces them (with its layers, in its graph, when they fit).
        home = next(
            (i for i in reversed(range(len(lanes))) if lanes[i].device == getattr(scores, "device", None)), None
        )
        carrier = home if scores is not None and layer_step and self._logits_in_graph(scores) else None
        if scores is not None and carrier is not None:
            self._layout(False, rows, True)  # the layout the transfer reads the logit rows with
        elif scores is not None:
            if home is not None:
                engine = self._engines[home]
            else:
                engine = self._logit_engine = self._logit_engine or LaneReduce(False, self._unavailable)
            logits = StepInputs(scores=scores, token=token)
            self._append(self._layout(False, rows, True), logits, step, layer_step=False, engine=engine)
        if not layer_step:
            return
        self._layout(True, rows, False)  # the merged layout the transfer reads the lanes' rows with
        for i, lane_inputs in enumerate(inputs):
            assert lane_inputs is not None
            if i == carrier:
                lane_inputs.scores, lane_inputs.token = scores, token
            layout = self._lane_layout(i, rows, i == carrier)
            self._append(layout, lane_inputs, step, True, engine=self._engines[i], lane=self._rows.lanes[i])
        self._rows.layer_steps.append(step)

    def _append(
        self,
        layout: StepLayout,
        inputs: StepInputs,
        step: int,
        layer_step: bool,
        engine: LaneReduce | None = None,
        lane: LaneRows | None = None,
    ) -> None:
        if layout.width == 0:
            return
        engine = engine or self._engines[0]
        parents = self._parents if layout.beams else None
        if parents is not None and lane is not None:
            parents = moved(parents, lane.lane.device)
        inputs.parents = parents
        if layout.beams and inputs.parents is None and layout.hidden == "full" and inputs.stacked is not None:
            inputs.parents = torch.arange(int(inputs.stacked.shape[0]), device=inputs.stacked.device)
        state = engine.state_for(layout, inputs, self._taps.top_k_experts)
        layers = len(lane.lane.slots) if lane is not None else len(self._taps.layers)
        graphable = layout.layers == layers and layout.attention == self._taps.wants_attention
        out = engine.run(layout, state, inputs, step, graphable)
        self._rows.append(layout, out, step, layer_step, lane)

    def _logits_in_graph(self, scores: torch.Tensor) -> bool:
        """Graph the logit part too only while its static buffers fit the memory budget."""
        return scores.numel() * 4 * 3 <= self.attention.stack_budget()

    def _layout(self, layers: bool, rows: int, signals: bool) -> StepLayout:
        key = (layers, rows, signals)
        layout = self._rows.layouts.get(key)
        if layout is None:
            layout = self._make_layout(len(self._taps.layers) if layers else 0, signals, self._taps.consecutive)
            self._rows.layouts[key] = layout
        return layout

    def _lane_layout(self, index: int, rows: int, signals: bool) -> StepLayout:
        """Lane ``index``'s layout (its own layers; the logits too when it carries them)."""
        key = (index, rows, signals)
        layout = self._lane_layouts.get(key)
        if layout is None:
            lanes = self._lanes or []
            lane = lanes[index]
            consecutive = self._taps.consecutive and lane.contiguous
            layout = self._lane_layouts[key] = self._make_layout(len(lane.slots), signals, consecutive)
        return layout

    def _make_layout(self, layers: int, signals: bool, consecutive: bool) -> StepLayout:
        taps = self._taps
        plan = taps.plan
        return StepLayout(
            signals=signals,
            k=self.top_k,
            beams=self.beams,
            layers=layers,
            hidden=(plan.hidden if layers else "off"),
            attention=bool(layers and taps.wants_attention),
            moe=bool(layers and plan.moe and taps.routers),
            interleaved=not consecutive,
        )

    def _layer_inputs(
        self, step: int, prefix: int, outs: list[torch.Tensor] | None, engine: LaneReduce, lane: Lane | None
    ) -> StepInputs | None:
        """The fixed-shape tensors the taps kept for this step, for ``reduce_step``: every layer's (``lane``
        None), or one lane's, on its device."""
        if not outs:
            return None
        taps = self._taps
        plan = taps.plan
        buffers = taps.buffers
        slots = list(lane.slots) if lane is not None else list(range(len(outs)))
        device = lane.device if lane is not None else outs[0].device
        mine = [outs[s] for s in slots]
        rows = int(mine[0].shape[0])
        static = engine.static
        inputs = StepInputs()
        if plan.hidden == "full":
            if taps.consecutive and (lane is None or lane.contiguous):
                first = buffers.inp[slots[0]]
                if first is None:
                    return None
                parts = [first, *mine]
            else:
                inps = all_present([buffers.inp[s] for s in slots])
                if inps is None:
                    return None
                parts = [t for pair in zip(inps, mine) for t in pair]
        else:
            parts = mine
        if lane is not None:  # a lane's first input comes from the device before it
            parts = [moved(p, device) for p in parts]
        target = static.stacked
        inputs.stacked = torch.cat(parts, dim=1, out=target) if target is not None else torch.cat(parts, dim=1)
        if taps.wants_attention:
            attention = self.attention.inputs(rows, step, prefix, static.heads, device, slots)
            if attention is None:
                return None
            inputs.heads, inputs.inv_valid, inputs.inv_rest = attention
        if plan.moe and taps.routers:
            routers = all_present([buffers.router[s] for s in slots])
            if routers is None:
                return None
            target = static.router
            inputs.router = torch.stack(routers, out=target) if target is not None else torch.stack(routers)
        return inputs
