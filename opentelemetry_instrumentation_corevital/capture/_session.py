"""One generation's capture: taps inside the forward pass, one reduce per step, one transfer at the end.

* A step recorder runs in front of ``generate``'s logits processors on the raw
  float32 logits (before repetition penalties and temperature/top-k/top-p)
  and returns them untouched.
* Forward hooks on the decoder layers keep a *reference* to each layer's
  new-token output (and input): no kernels inside the forward. Attention is
  seen through the wrapped attention functions (``_intercept``) or, for eager
  models, the attention modules' own weights; MoE routers through hooks on
  the routers.
* Once per step, at the recorder call, everything the hooks kept is reduced
  for all layers at once into small [rows, layers, stats] tensors appended to
  lists. Layer data can be limited to some layers and every n-th step.
* Nothing is read on the host until :meth:`CaptureSession.finish`, which
  stacks the lists and transfers them in one copy.

Every tap is removed in ``finish``; any failure inside the capture stops the
capture for that generation (telemetry lost), never the generation.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.generation.logits_process import LogitsProcessorList

from . import _attention, _hidden, _intervene, _prompt, _reduce
from ._clock import StepClock
from ._intercept import ACTIVE_SESSION
from ._layers import discover, first_tensor
from ._plan import CapturePlan
from ..report._input import CaptureResult
from ._stats import LN2, STAT_COLUMNS, TOP_K, finish_stats_tensor, logit_stats

_logger = logging.getLogger(__name__)

#: Per-step series of a captured row, in the order they are transferred.
SERIES = (*STAT_COLUMNS, "surprisal")

#: Generation modes whose processor calls map one-to-one onto emitted tokens of fixed rows.
SIGNAL_MODES = frozenset({"greedy_search", "sample"})
BEAM_MODES = frozenset({"beam_search", "beam_sample"})
#: Modes that call the processors exactly once per decoding step (so step times are real).
TIMING_MODES = SIGNAL_MODES | BEAM_MODES | {"group_beam_search", "constrained_beam_search"}


def _row_series(row: list[list[float]]) -> dict[str, list[float | None]]:
    """One row's [series][steps] values as named lists, non-finite values as None.

    (A NaN logit makes every statistic of its step NaN on the device already.)
    """
    return {name: [v if v - v == 0 else None for v in row[i]] for i, name in enumerate(SERIES)}


class _StepRecorder:
    """The per-step hook; never raises into ``generate`` and never changes the scores."""

    def __init__(self, session: "CaptureSession") -> None:
        self._session = session
        self.signals = session.plan.signals
        self.timing = True
        self.steps = 0
        self.prefix_len: int | None = None
        self.top_k = TOP_K
        self.failed: str | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.failed is None:
            try:
                self._record(input_ids, scores)
            except Exception as exc:  # never let our bookkeeping break the user's generation
                self.fail(exc)
        return scores

    def fail(self, exc: BaseException) -> None:
        self.failed = f"{type(exc).__name__}: {exc}"
        self._session.stop_layers()
        self._session.drop_rows()
        _logger.warning("CoreVital capture stopped for this generation: %s", self.failed)

    def _record(self, input_ids: torch.Tensor, scores: torch.Tensor) -> None:
        session = self._session
        if self.prefix_len is None:
            self.prefix_len = int(input_ids.shape[1])
        session.step(self.steps, input_ids, scores if self.signals else None)
        if self.timing:
            session.clock.mark()
        self.steps += 1
        session.set_recording(self.steps)


class RecordingProcessorList(LogitsProcessorList):
    """``generate``'s own processor list, with our recorder called first on the raw scores.

    The recorder is not an entry of the list: ``LogitsProcessorList`` inspects
    every entry's signature on every step (tens of microseconds each), and a
    recorder outside the list costs nothing of that.
    """

    def __init__(self, processors: Any, recorder: _StepRecorder) -> None:
        super().__init__(processors)
        self.recorder = recorder

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.FloatTensor:
        self.recorder(input_ids, scores)
        return super().__call__(input_ids, scores, **kwargs)


class CaptureSession:
    """State of one instrumented ``generate`` call, from entry to the final transfer."""

    def __init__(
        self,
        model: Any,
        device: torch.device | None,
        plan: CapturePlan,
        prompt_ids: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> None:
        self.model = model
        self.plan = plan
        self.clock = StepClock(device)
        self.recorder = _StepRecorder(self)
        self.attached = False
        self.generation_config: Any = None
        self.generation_mode: str | None = None
        self.unavailable: dict[str, str] = {}
        self.prompt_ids = prompt_ids if isinstance(prompt_ids, torch.Tensor) and not prompt_ids.is_floating_point() else None
        self.prompt_mask = prompt_mask if isinstance(prompt_mask, torch.Tensor) else None
        config = getattr(model, "config", None)
        self.is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        self.hidden_size = next((getattr(text, k) for k in ("hidden_size", "n_embd", "d_model")
                                 if getattr(text, k, None)), None)
        # taps and per-forward buffers
        self._handles: list[Any] = []
        self.taps_active = False
        self.recording = True
        self.forwards = 0
        self._rows_tokens: tuple[int, int] | None = None  # (rows, tokens) of the forward in progress
        self.layers: list[int] = []
        self.attention_source: str | None = None
        self._attention_slots: dict[int, tuple[str, int]] = {}
        self._out: list[torch.Tensor | None] = []
        self._in: list[torch.Tensor | None] = []
        self._attn: list[tuple | None] = []
        self._probs: list[torch.Tensor | None] = []
        self._router: list[torch.Tensor | None] = []
        self._top_k_experts = 2
        # device-side results
        self.layer_steps: list[int] = []
        self.logit_rows: list[torch.Tensor] = []  # per step [rows, logits block]
        self.layer_rows: list[torch.Tensor] = []  # per layer step [rows, layer blocks]
        self._layouts: dict[tuple, _reduce.StepLayout] = {}
        self._states: dict[_reduce.StepLayout, _reduce.StepState] = {}
        self._graph: Any = None
        self._graph_ok = plan.cuda_graphs
        self.graph_used = False
        self._routers = False
        self._stack_budget = _stack_budget(model)
        self.stop_on: _intervene.StopOn | None = None
        self.score: tuple[int, int] | None = None  # scoring: (prompt length, continuation length)
        self.chosen_aligned = False
        self._consecutive = True  # captured layers follow each other: a layer's input is the previous output
        self._tables: Any = None  # attention KeyTables, built at the first step
        self._prompt_surprisal: torch.Tensor | None = None
        self._prompt_layers: dict[str, list[torch.Tensor | None]] = {}
        self._encoder: dict[str, list[torch.Tensor | None]] = {}
        self.encoder_indices: list[int] = []
        self.parent_rows: torch.Tensor | None = None  # beam search: row -> row of the previous step
        self.beam_indices: torch.Tensor | None = None  # beam search: final [returned, steps] rows
        self._install_taps()

    # -- set-up ----------------------------------------------------------------------------
    def _install_taps(self) -> None:
        plan = self.plan
        if not plan.needs_layers:
            return
        try:
            layout = discover(self.model)
        except Exception as exc:  # an unusual model: logits only
            self.unavailable["layers"] = f"model layout not understood: {exc}"
            return
        if layout.problems:
            self.unavailable["layers"] = "; ".join(layout.problems)
        count = len(layout.decoder_layers)
        if count == 0:
            return
        wanted = list(range(count)) if plan.layers is None else sorted({i for i in plan.layers if 0 <= i < count})
        if not wanted:
            self.unavailable["layers"] = f"none of the requested layers {list(plan.layers or [])} exist (model has {count})"
            return
        self.layers = wanted
        self._consecutive = wanted == list(range(wanted[0], wanted[0] + len(wanted)))
        n = len(wanted)
        self._out, self._in, self._attn, self._probs, self._router = [None] * n, [None] * n, [None] * n, [None] * n, [None] * n
        add = self._handles.append
        add(self.model.register_forward_pre_hook(self._on_forward, with_kwargs=True))
        for slot, index in enumerate(wanted):
            target = layout.decoder_layers[index]
            add(target.module.register_forward_hook(self._layer_hook(slot, target.output_index), with_kwargs=True))
        attn_impl = str(getattr(getattr(self.model, "config", None), "_attn_implementation", "") or "")
        if plan.attention:
            if not layout.decoder_attention:
                self.unavailable["attention"] = "attention modules not found for this architecture"
            elif attn_impl == "eager":
                self.attention_source = "eager attention weights"
                for slot, index in enumerate(wanted):
                    target = layout.decoder_attention[index]
                    add(target.module.register_forward_hook(self._eager_hook(slot, target.output_index)))
            else:
                from . import _intercept

                if not _intercept.installed():
                    self.unavailable["attention"] = "attention interception is not installed"
                else:
                    self.attention_source = f"query row recomputed beside {attn_impl or 'the model'} attention"
                    for slot, index in enumerate(wanted):
                        for sub in layout.decoder_attention[index].module.modules():
                            self._attention_slots[id(sub)] = ("decoder", slot, getattr(sub, "scaling", None))
        if plan.moe and layout.routers:
            self._routers = True
            self._top_k_experts = int(getattr(self.model.config, "num_experts_per_tok", 2) or 2)
            for slot, index in enumerate(wanted):
                target = layout.routers[index]
                add(target.module.register_forward_hook(self._router_hook(slot, target.output_index)))
        if plan.prompt:
            self._prompt_layers = {"hidden_norm": [None] * n, "attention": [None] * n}
            if self.is_seq2seq:
                self.unavailable["prompt"] = "prompt surprisal does not apply to encoder-decoder models (see encoder)"
            elif layout.base_decoder is not None and layout.lm_head is not None and self.prompt_ids is not None:
                add(layout.base_decoder.register_forward_hook(self._base_decoder_hook(layout.lm_head)))
            else:
                self.unavailable["prompt_surprisal"] = "needs input_ids and the model's output head"
        if plan.encoder and self.is_seq2seq and layout.encoder_layers:
            m = len(layout.encoder_layers)
            self.encoder_indices = list(range(m))
            self._encoder = {"hidden_norm": [None] * m, "attention": [None] * m}
            for slot, target in enumerate(layout.encoder_layers):
                add(target.module.register_forward_hook(self._encoder_hook(slot, target.output_index)))
            if attn_impl != "eager" and layout.encoder_attention:
                for slot, target in enumerate(layout.encoder_attention):
                    for sub in target.module.modules():
                        self._attention_slots.setdefault(id(sub), ("encoder", slot, getattr(sub, "scaling", None)))
        self.taps_active = True

    def stop_layers(self) -> None:
        """Remove every tap; layer data captured so far is kept, nothing more is recorded."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.taps_active = False

    # -- hooks (all cheap: keep references, compute only at prefill) -------------------
    def _mine(self) -> bool:
        return ACTIVE_SESSION.get() is self

    def _on_forward(self, module: Any, args: Any, kwargs: dict) -> None:
        if self._mine():
            self.forwards += 1
            inputs = kwargs.get("decoder_input_ids") if self.is_seq2seq else kwargs.get("input_ids")
            if inputs is None:
                inputs = kwargs.get("decoder_inputs_embeds" if self.is_seq2seq else "inputs_embeds")
            if inputs is None and args and isinstance(args[0], torch.Tensor):
                inputs = args[0]
            self._rows_tokens = (int(inputs.shape[0]), int(inputs.shape[1])) if inputs is not None else None

    def _layer_hook(self, slot: int, out_index: int) -> Any:
        full = self.plan.hidden == "full"

        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            if not self.recording or not self._mine():
                return
            out = first_tensor(output, out_index)
            if out is None:
                return
            inp = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("hidden_states")
            if self.score is not None:  # one teacher-forced forward: keep every position, reduced afterwards
                self._out[slot] = out
                self._in[slot] = inp
                return
            if out.shape[1] != 1:  # prefill (or no cache): keep only the last position, as a copy
                if self._prompt_layers and self.forwards == 1 and not self.recorder.steps:
                    self._prompt_layers["hidden_norm"][slot] = _hidden.masked_token_norm_mean(out, self._valid_mask(out))
                out = out[:, -1:].clone()
                inp = inp[:, -1:].clone() if full and isinstance(inp, torch.Tensor) else None
            self._out[slot] = out
            if full and (slot == 0 or not self._consecutive):
                self._in[slot] = inp

        return hook

    def _eager_hook(self, slot: int, out_index: int) -> Any:
        def hook(module: Any, args: tuple, output: Any) -> None:
            if not self.recording or not self._mine():
                return
            weights = first_tensor(output, out_index)
            if weights is not None and weights.dim() == 4:
                self._probs[slot] = weights if self.score is not None else weights[:, :, -1, :].float()

        return hook

    def _router_hook(self, slot: int, out_index: int) -> Any:
        def hook(module: Any, args: tuple, output: Any) -> None:
            if not self.recording or not self._mine():
                return
            logits = first_tensor(output, out_index)
            shape = self._rows_tokens
            if logits is None or shape is None or logits.shape[0] != shape[0] * shape[1]:
                return
            logits = logits.view(shape[0], shape[1], logits.shape[-1])
            self._router[slot] = logits if self.score is not None else logits[:, -1]

        return hook

    def _base_decoder_hook(self, head: Any) -> Any:
        def hook(module: Any, args: tuple, output: Any) -> None:
            if not self._mine() or self.forwards != 1 or self.recorder.steps or self._prompt_surprisal is not None:
                return
            hidden = first_tensor(output, 0)
            if hidden is None or hidden.dim() != 3:
                return
            ids = _expand_rows(self.prompt_ids, hidden.shape[0], hidden.shape[1], hidden.device)
            if ids is None:
                return
            try:
                self._prompt_surprisal = _prompt.prompt_surprisal(hidden, ids, head)
            except Exception as exc:
                self.unavailable["prompt_surprisal"] = f"{type(exc).__name__}: {exc}"

        return hook

    def _encoder_hook(self, slot: int, out_index: int) -> Any:
        def hook(module: Any, args: tuple, output: Any) -> None:
            if not self._mine() or self.forwards:
                return
            out = first_tensor(output, out_index)
            if out is not None and out.dim() == 3:
                self._encoder["hidden_norm"][slot] = _hidden.masked_token_norm_mean(out, self._valid_mask(out))

        return hook

    def _valid_mask(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """The prompt's attention mask, expanded like generate expands rows (beams, samples)."""
        return _expand_rows(self.prompt_mask, hidden.shape[0], hidden.shape[1], hidden.device)

    def on_attention(self, module: Any, query: torch.Tensor, key: torch.Tensor, mask: Any, kwargs: dict) -> None:
        """Called by the wrapped attention functions, after the model's own attention ran."""
        place = self._attention_slots.get(id(module))
        if place is None or not self.taps_active:
            return
        try:
            kind, slot, scaling = place
            if kind == "decoder" and query.shape[2] == 1:  # the per-step path: keep references, nothing else
                if self.recording:
                    explicit = kwargs.get("scaling")
                    self._attn[slot] = (query, key, mask if isinstance(mask, torch.Tensor) else None,
                                        kwargs.get("position_bias"),
                                        explicit if explicit is not None else (
                                            scaling if scaling is not None else query.shape[-1] ** -0.5),
                                        kwargs.get("softcap"))
                return
            scaling = _attention.scaling_of(module, kwargs, query.shape[-1])
            bias = kwargs.get("position_bias")
            softcap = kwargs.get("softcap")
            if kind == "encoder":
                if not self.forwards and self._encoder and self._encoder["attention"][slot] is None:
                    valid = self._valid_mask(query.transpose(1, 2))
                    valid = valid if valid is not None else torch.ones(query.shape[0], key.shape[-2], device=query.device)
                    self._encoder["attention"][slot] = _attention.prompt_attention_stats(
                        query, key, mask if isinstance(mask, torch.Tensor) else None, scaling, valid, bias, softcap,
                        causal=False)
                return
            if not self.recording:
                return
            if self.score is not None:
                self._attn[slot] = (query, key, mask if isinstance(mask, torch.Tensor) else None, bias, scaling, softcap)
                return
            if query.shape[2] != 1:  # prefill
                if self._prompt_layers and self.forwards == 1 and not self.recorder.steps:
                    valid = self._valid_mask(query.transpose(1, 2))
                    if valid is None:
                        valid = torch.ones(query.shape[0], key.shape[-2], device=query.device)
                    self._prompt_layers["attention"][slot] = _attention.prompt_attention_stats(
                        query, key, mask if isinstance(mask, torch.Tensor) else None, scaling, valid, bias, softcap)
                query = query[:, :, -1:].clone()
                if isinstance(mask, torch.Tensor) and mask.dim() == 4:
                    mask = mask[..., -1:, :].clone()
                if isinstance(bias, torch.Tensor):
                    bias = bias[..., -1:, :].clone()
            self._attn[slot] = (query, key, mask if isinstance(mask, torch.Tensor) else None, bias, scaling, softcap)
        except Exception as exc:
            self.unavailable["attention"] = f"{type(exc).__name__}: {exc}"
            self._attention_slots.clear()

    # -- per-step reduce --------------------------------------------------------------------
    def set_recording(self, next_step: int) -> None:
        self.recording = self.taps_active and next_step % self.plan.step_stride == 0

    def step(self, step: int, input_ids: torch.Tensor, scores: torch.Tensor | None) -> None:
        """Reduce this step: logits always (when captured), layer data on recorded steps."""
        layer_step = self.taps_active and self.recording and bool(self._out) and all(o is not None for o in self._out)
        if scores is None and not layer_step:
            self._clear()
            return
        inputs: dict[str, torch.Tensor | None] | None = None
        if layer_step:
            inputs = self._layer_inputs(step)
            layer_step = inputs is not None
        rows = int((scores if scores is not None else self._out[0]).shape[0])
        inputs = dict(inputs or {}, scores=scores, token=input_ids[:, -1] if scores is not None else None)
        for name in ("stacked", "heads", "inv_valid", "inv_rest", "router"):
            inputs.setdefault(name, None)
        if scores is not None and layer_step and not self._logits_in_graph(scores):
            # A large batch x vocabulary: the logit part stays eager, so no static copy of the logits is kept.
            logits = {k: (v if k in ("scores", "token") else None) for k, v in inputs.items()}
            self._append(self._layout(False, rows), logits, step, layer_step=False)
            inputs.update(scores=None, token=None)
            self._append(self._layout(True, rows, signals=False), inputs, step, layer_step=True)
        else:
            self._append(self._layout(layer_step, rows), inputs, step, layer_step=layer_step)
        self._clear()

    def _append(self, layout: _reduce.StepLayout, inputs: dict[str, torch.Tensor | None], step: int,
                layer_step: bool) -> None:
        if layout.width == 0:
            return
        inputs["parents"] = self.parent_rows if layout.beams else None
        if layout.beams and inputs["parents"] is None and layout.hidden == "full":
            inputs["parents"] = torch.arange(int(inputs["stacked"].shape[0]), device=inputs["stacked"].device)
        state = self._state_for(layout, inputs)
        out = self._run(layout, state, inputs, step)
        width = layout.blocks[0][1] + layout.blocks[1][1] if layout.signals else 0
        if layout.signals:
            self.logit_rows.append(out[:, :width])
        if layer_step:
            self.layer_rows.append(out[:, width:])
            self.layer_steps.append(step)

    def _logits_in_graph(self, scores: torch.Tensor) -> bool:
        """Graph the logit part too only while its static buffers fit the memory budget."""
        return scores.numel() * 4 * 3 <= self._stack_budget

    def _layout(self, layers: bool, rows: int, signals: bool | None = None) -> _reduce.StepLayout:
        plan = self.plan
        signals = self.recorder.signals if signals is None else signals
        key = (layers, rows, signals)
        layout = self._layouts.get(key)
        if layout is None:
            layout = _reduce.StepLayout(
                signals=signals,
                k=self.recorder.top_k,
                beams=self.generation_mode in BEAM_MODES,
                layers=len(self.layers) if layers else 0,
                hidden=(plan.hidden if layers else "off"),
                attention=bool(layers and self._wants_attention),
                moe=bool(layers and plan.moe and self._routers),
                interleaved=not self._consecutive,
            )
            self._layouts[key] = layout
        return layout

    @property
    def _wants_attention(self) -> bool:
        return self.plan.attention and (bool(self._attention_slots) or self.attention_source == "eager attention weights")

    def _layer_inputs(self, step: int) -> dict[str, torch.Tensor | None] | None:
        """The fixed-shape tensors the taps kept for this step, ready for ``reduce_step``."""
        plan = self.plan
        outs = self._out
        rows = int(outs[0].shape[0])
        graph = self._graph
        static = graph.inputs if graph is not None else {}
        inputs: dict[str, torch.Tensor | None] = {}
        if plan.hidden == "full":
            if self._consecutive:
                if self._in[0] is None:
                    return None
                parts = [self._in[0], *outs]
            else:
                if any(i is None for i in self._in):
                    return None
                parts = [t for pair in zip(self._in, outs) for t in pair]
            target = static.get("stacked")
            inputs["stacked"] = torch.cat(parts, dim=1, out=target) if target is not None else torch.cat(parts, dim=1)
        else:
            target = static.get("stacked")
            inputs["stacked"] = torch.cat(outs, dim=1, out=target) if target is not None else torch.cat(outs, dim=1)
        if self._wants_attention:
            heads = self._attention_heads(rows, step, static.get("heads"))
            if heads is None:
                return None
            prefix = self.recorder.prefix_len or 0
            expected = prefix + step
            _, inv_valid, inv_rest = self._key_tables(rows, prefix, expected).at(0, expected)
            inputs.update(heads=heads, inv_valid=inv_valid, inv_rest=inv_rest)
        if plan.moe and self._routers:
            if any(r is None for r in self._router):
                return None
            target = static.get("router")
            inputs["router"] = torch.stack(self._router, out=target) if target is not None else torch.stack(self._router)
        return inputs

    def _attention_heads(self, rows: int, step: int, target: torch.Tensor | None) -> torch.Tensor | None:
        """[layers, rows, heads, 4] head values of this step's new query row (the shape-changing part)."""
        prefix = self.recorder.prefix_len or 0
        expected = prefix + step  # keys the cache should hold after this step's forward
        tables = self._key_tables(rows, prefix, expected)
        if self.attention_source == "eager attention weights":
            probs = self._probs
            if any(p is None for p in probs) or len({p.shape for p in probs}) != 1:
                return None
            stacked = torch.stack(probs)
            weights, _, _ = tables.at(stacked.shape[-1], expected)
            return _reduce.head_values(stacked, weights)
        groups: dict[tuple, list[int]] = {}
        for slot, item in enumerate(self._attn):
            if item is None:
                return None
            query, key, mask, bias, scaling, softcap = item
            signature = (tuple(query.shape), tuple(key.shape), id(mask), id(bias), scaling, softcap, key.dtype)
            groups.setdefault(signature, []).append(slot)
        parts: list[tuple[list[int], torch.Tensor]] = []
        for group in groups.values():
            first = self._attn[group[0]]
            _, key0, mask, bias, scaling, softcap = first
            keys = key0.shape[-2]
            if keys > expected:  # a cache holding more than this step's positions: not ours to interpret
                return None
            weights, _, _ = tables.at(keys, expected)
            # Stacking layers' key caches copies them: batch as many layers as the memory budget allows.
            per_layer = key0.numel() * key0.element_size()
            size = max(1, self._stack_budget // max(1, per_layer))
            for start in range(0, len(group), size):
                slots = group[start : start + size]
                if len(slots) == 1:  # a view, no copy
                    query, key = self._attn[slots[0]][0][None], self._attn[slots[0]][1][None]
                else:
                    query = torch.stack([self._attn[s][0] for s in slots])
                    key = torch.stack([self._attn[s][1] for s in slots])
                probs = _attention.query_row_probs(query, key, mask, scaling, bias, softcap)
                parts.append((slots, _reduce.head_values(probs, weights)))
        if len(parts) == 1 and parts[0][0] == list(range(len(self.layers))):
            values = parts[0][1]
            return target.copy_(values) if target is not None else values
        order = [slot for slots, _ in parts for slot in slots]
        values = torch.cat([v for _, v in parts])
        if order != sorted(order):
            values = values[torch.tensor(sorted(range(len(order)), key=order.__getitem__), device=values.device)]
        return target.copy_(values) if target is not None else values

    def _state_for(self, layout: _reduce.StepLayout, inputs: dict[str, torch.Tensor | None]) -> _reduce.StepState:
        state = self._states.get(layout)
        if state is None:
            scores, stacked, router = inputs["scores"], inputs["stacked"], inputs["router"]
            reference = next(t for t in (scores, stacked) if t is not None)
            state = _reduce.StepState.zeros(
                layout, int(reference.shape[0]), int(scores.shape[-1]) if scores is not None else 0,
                int(stacked.shape[-1]) if stacked is not None else 0,
                int(router.shape[-1]) if router is not None else 0, reference.device)
            state.extra["top_k"] = self._top_k_experts
            # logits-only and layer steps share the logit state
            for other in self._states.values():
                if other.logp is not None and state.logp is not None and other.logp.shape == state.logp.shape:
                    state.logp = other.logp
            self._states[layout] = state
        return state

    def _run(self, layout: _reduce.StepLayout, state: _reduce.StepState, inputs: dict[str, torch.Tensor | None],
             step: int) -> torch.Tensor:
        """One CUDA-graph replay when possible (full layout, steady state), else eager."""
        graph = self._graph
        if graph is not None and graph.layout == layout:
            return graph(inputs)
        device = next(t for t in inputs.values() if t is not None).device
        if (device.type == "cuda" and step >= 1 and self._graph_ok and layout.attention == self._wants_attention
                and layout.layers == len(self.layers) and not torch.cuda.is_current_stream_capturing()):
            try:
                graph = _reduce.GraphedReduce(layout, state, inputs)
                graph.layout = layout
                self._graph = graph
                self.graph_used = True
                return graph(inputs)
            except Exception as exc:  # capture not possible here: stay eager for this generation
                self._graph_ok = False
                self.unavailable.setdefault("cuda_graph", f"eager reduce ({type(exc).__name__}: {exc})")
        return _reduce.reduce_step(layout, state, **inputs)

    def _key_tables(self, rows: int, prefix: int, expected: int) -> "_attention.KeyTables":
        tables = self._tables
        if tables is None or not tables.covers(expected) or tables.weights.shape[0] != rows:
            span = max(expected - prefix, self._max_new_tokens())
            tables = _attention.KeyTables(self._valid_prompt(rows), self._sink_index(rows), prefix, span)
            self._tables = tables
        return tables

    def _max_new_tokens(self) -> int:
        config = self.generation_config
        prefix = self.recorder.prefix_len or 0
        max_new = getattr(config, "max_new_tokens", None)
        if max_new is None and getattr(config, "max_length", None) is not None:
            max_new = int(config.max_length) - prefix
        return int(max_new) if max_new and max_new > 0 else 256

    def _valid_prompt(self, rows: int) -> torch.Tensor:
        prefix = self.recorder.prefix_len or 0
        device = self._out[0].device
        mask = self.prompt_mask
        if mask is not None and not self.is_seq2seq and mask.dim() == 2 and mask.shape[1] == prefix:
            valid = mask.to(device).sum(dim=-1)
            if valid.shape[0] != rows and rows % valid.shape[0] == 0:
                valid = valid.repeat_interleave(rows // valid.shape[0])
            return valid
        return torch.full((rows,), float(prefix), device=device)

    def _sink_index(self, rows: int) -> torch.Tensor:
        device = self._out[0].device
        mask = self.prompt_mask
        prefix = self.recorder.prefix_len or 0
        if mask is not None and not self.is_seq2seq and mask.dim() == 2 and mask.shape[1] == prefix:
            first = mask.to(device).float().argmax(dim=-1)
            if first.shape[0] != rows and rows % first.shape[0] == 0:
                first = first.repeat_interleave(rows // first.shape[0])
            return first.long()
        return torch.zeros(rows, dtype=torch.long, device=device)

    def _clear(self) -> None:
        n = len(self.layers)
        self._out = [None] * n
        self._in = [None] * n
        self._attn = [None] * n
        self._probs = [None] * n
        self._router = [None] * n

    # -- scoring: one teacher-forced forward ---------------------------------------------------------
    def reduce_score(self, logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Turn one forward over prompt + continuation into the per-step rows a generation would have left.

        Position ``P - 1 + t`` predicts continuation token ``t``; its logits, its layer states and its
        attention row become "step" t. ``logits`` holds at least the last ``C + 1`` positions.
        """
        prompt_len, count = self.score
        rows = int(ids.shape[0])
        positions = torch.arange(prompt_len - 1, prompt_len - 1 + count, device=ids.device)
        targets = ids[:, prompt_len : prompt_len + count]
        lg = logits[:, -(count + 1) : -1] if logits.shape[1] > count else logits[:, :count]
        packed, chosen = _score_logits(lg, targets, self.recorder.top_k)
        self.chosen_aligned = True
        self.logit_rows.extend(torch.cat([packed, chosen[..., None]], dim=-1).unbind(1))
        self._layouts[(False, rows, True)] = _reduce.StepLayout(
            signals=True, k=self.recorder.top_k, beams=False, layers=0, hidden="off", attention=False, moe=False)
        self.recorder.prefix_len, self.recorder.steps = prompt_len, count
        if not self.taps_active or any(o is None for o in self._out):
            return
        layout = _reduce.StepLayout(signals=False, k=self.recorder.top_k, beams=False, layers=len(self.layers),
                                    hidden=self.plan.hidden, attention=self._wants_attention,
                                    moe=bool(self.plan.moe and self._routers and all(r is not None for r in self._router)),
                                    interleaved=not self._consecutive)
        flat = rows * count
        inputs: dict[str, torch.Tensor | None] = {name: None for name in (
            "scores", "token", "parents", "stacked", "heads", "inv_valid", "inv_rest", "router")}
        state = _reduce.StepState()
        outs = [o[:, positions] for o in self._out]
        if self.plan.hidden == "full":
            if self._consecutive:
                parts = [self._in[0][:, positions], *outs]
            else:
                parts = [t for pair in zip((i[:, positions] for i in self._in), outs) for t in pair]
            inputs["stacked"] = torch.stack(parts, dim=2).reshape(flat, len(parts), -1)
            previous = torch.stack([o[:, (positions - 1).clamp_min(0)] for o in self._out], dim=2).float()
            previous = previous.reshape(flat, len(outs), -1)
            state.out, state.sq = previous, torch.linalg.vecdot(previous, previous)
            state.sq.view(rows, count, -1)[:, 0] = float("nan")  # like a generation's first step: no previous state
        else:
            inputs["stacked"] = torch.stack(outs, dim=2).reshape(flat, len(outs), -1)
        if layout.attention:
            heads = self._score_heads(rows, count, prompt_len, positions, mask)
            if heads is None:
                layout = dataclasses.replace(layout, attention=False)
            else:
                inputs.update(heads)
        if layout.moe:
            router = torch.stack([r[:, positions] for r in self._router])  # [layers, rows, count, experts]
            state.counts = torch.zeros(len(self.layers), flat, router.shape[-1], device=router.device)
            state.extra["top_k"] = self._top_k_experts
            inputs["router"] = router.reshape(len(self.layers), flat, -1)
        out = _reduce.reduce_step(layout, state, **inputs).view(rows, count, -1)
        if layout.moe:  # picks so far along the continuation, not across independent rows
            out = _score_moe_balance(out, layout, router, self._top_k_experts)
        self._layouts[(True, rows, False)] = layout
        self.layer_rows.extend(out.unbind(1))
        self.layer_steps.extend(range(count))
        self._clear()

    def _score_heads(self, rows: int, count: int, prompt_len: int, positions: torch.Tensor,
                     mask: torch.Tensor | None) -> dict[str, torch.Tensor] | None:
        """Head values of every continuation position's attention row, causal and padding-aware."""
        device = positions.device
        valid_keys = mask.bool() if mask is not None else None
        heads = []
        for item, probs in zip(self._attn, self._probs):
            if probs is not None:  # eager: the model's own weights [rows, heads, T, T]
                rows_probs = probs[:, :, positions].float()
            elif item is not None:
                query, key, attn_mask, bias, scaling, softcap = item
                q = query[:, :, positions]  # [rows, q_heads, count, d]
                total = key.shape[-2]
                kv_heads, q_heads = key.shape[1], q.shape[1]
                scores = torch.matmul(q.reshape(rows, kv_heads, (q_heads // kv_heads) * count, -1),
                                      key.transpose(-1, -2)).reshape(rows, q_heads, count, total).float() * scaling
                if isinstance(bias, torch.Tensor):
                    scores = scores + bias[..., positions, :].float()
                if softcap:
                    scores = torch.tanh(scores / softcap) * softcap
                allowed = torch.arange(total, device=device)[None, :] <= positions[:, None]  # causal
                allowed = allowed[None, None]
                if valid_keys is not None:
                    allowed = allowed & valid_keys[:, None, None, :total]
                scores = scores.masked_fill(~allowed, float("-inf"))
                rows_probs = torch.softmax(scores, dim=-1)
            else:
                return None
            heads.append(rows_probs)  # [rows, heads, count, T]
        probs = torch.stack(heads).permute(0, 1, 3, 2, 4)  # [layers, rows, count, heads, T]
        layers, _, _, n_heads, total = probs.shape
        probs = probs.reshape(layers, rows * count, n_heads, total)
        first = valid_keys.float().argmax(dim=-1) if valid_keys is not None else torch.zeros(rows, device=device)
        weights = torch.zeros(rows, total, 2, device=device)
        weights[:, :prompt_len, 0] = 1.0
        weights[torch.arange(rows, device=device), first.long(), 1] = 1.0
        weights = weights.repeat_interleave(count, dim=0)
        pads = (~valid_keys).float().sum(dim=-1) if valid_keys is not None else torch.zeros(rows, device=device)
        valid = (positions[None, :].float() + 1.0 - pads[:, None]).reshape(-1)
        return {
            "heads": _reduce.head_values(probs, weights),
            "inv_valid": 1.0 / valid.log().clamp_min(1e-6),
            "inv_rest": 1.0 / (valid - 1.0).clamp_min(1.0).log().clamp_min(1e-6),
        }

    # -- decoding-mode bookkeeping ---------------------------------------------------------------
    def processors_for(self, processors: Any, generation_config: Any, assistant_model: Any = None) -> RecordingProcessorList:
        """``processors`` with our recorder in front, configured for this call's decoding mode."""
        self.generation_config = generation_config
        try:
            self.generation_mode = str(generation_config.get_generation_mode(assistant_model).value)
        except Exception:
            self.generation_mode = None
        mode = self.generation_mode
        if mode in BEAM_MODES:
            beams = int(getattr(generation_config, "num_beams", 1) or 1)
            self.recorder.top_k = _reduce.default_k(beams)
        elif mode not in SIGNAL_MODES:
            # Assisted and other decoding call the processors on speculative rows.
            if self.recorder.signals:
                self.unavailable["logits"] = f"not captured for {mode or 'this'} decoding"
            self.recorder.signals = False
            if self.taps_active:
                self.unavailable["layers"] = f"not captured for {mode or 'this'} decoding"
                self.stop_layers()
                self.recording = False
        if mode not in TIMING_MODES:
            self.recorder.timing = False
            self.unavailable["timing"] = f"per-step times not measured for {mode or 'this'} decoding"
        self.attached = True
        return RecordingProcessorList(processors, self.recorder)

    def criteria_for(self, criteria: Any, conditions: tuple[str, ...], high_entropy_bits: float,
                     high_entropy_run: int, step_callback: Any, callback_every: int,
                     loop_repeat: int | None = None) -> Any:
        """``generate``'s stopping criteria, with our on-device ``StopOn`` appended when asked for."""
        if not conditions and step_callback is None:
            return criteria
        if not self.recorder.signals and any(c != "repetition_loop" for c in conditions):
            self.unavailable["stop_on"] = "nan_or_inf and high_entropy need the logit capture (capture is off)"
        self.stop_on = _intervene.StopOn(
            self, conditions, high_entropy_bits, high_entropy_run, step_callback, callback_every,
            beams=self.generation_mode in BEAM_MODES, loop_repeat=loop_repeat)
        criteria.append(self.stop_on)
        return criteria

    def last_logit_row(self) -> torch.Tensor | None:
        """This step's packed logit values [rows, ...] (sum p ln p, top-k log-probs, ...), on the device."""
        return self.logit_rows[-1] if self.logit_rows else None

    def on_reorder(self, beam_idx: torch.Tensor) -> None:
        """Beam search reordered the cache: row j of the next step continues row beam_idx[j]."""
        self.parent_rows = beam_idx

    def on_finished_beams(self, beam_indices: torch.Tensor) -> None:
        """Beam search's running record of which row produced each token of the kept beams."""
        self.beam_indices = beam_indices

    # -- the end -------------------------------------------------------------------------------
    def finish(self, sequences: torch.Tensor | None, num_return_sequences: int = 1) -> CaptureResult:
        """Remove the taps, stack the device buffers, transfer them once, and free them."""
        self.stop_layers()
        rec = self.recorder
        result = CaptureResult(signals=rec.signals and rec.failed is None, unavailable=dict(self.unavailable))
        result.attention_source = self.attention_source
        if not self.attached:
            result.unavailable.setdefault("logits", "the capture could not attach to this generate call")
            result.signals = False
        try:
            if sequences is not None:
                result.sequences = sequences.tolist()
            prefix = rec.prefix_len if rec.prefix_len is not None else 0
            result.prefix_len = prefix
            produced = (len(result.sequences[0]) - prefix) if result.sequences else rec.steps
            beams = self.generation_mode in BEAM_MODES
            steps = max(0, min(rec.steps, produced)) if not beams else min(rec.steps, max(produced, 0))
            result.steps = steps
            self._transfer(result, sequences, steps, prefix, beams, num_return_sequences)
            result.step_ends = self.clock.step_ends()[:steps]
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            result.signals = False
            result.series = []
            result.hidden = result.attention = result.moe = None
            _logger.warning("CoreVital could not read back this generation's capture: %s", result.error)
        if rec.failed is not None:
            result.error = rec.failed
            result.unavailable["logits"] = "capture failed during the generation"
        self._release()
        return result

    def retained_values(self) -> int:
        """How many numbers the per-step buffers hold: the capture's whole memory cost that grows with steps."""
        return sum(t.numel() for t in (*self.logit_rows, *self.layer_rows))

    def drop_rows(self) -> None:
        self.logit_rows.clear()
        self.layer_rows.clear()
        self.layer_steps.clear()

    def _transfer(self, result: CaptureResult, sequences: torch.Tensor | None, steps: int, prefix: int, beams: bool,
                  num_return: int) -> None:
        rec = self.recorder
        result.retained_values = self.retained_values()
        parts: list[tuple[str, torch.Tensor]] = []
        logit_layout = next((l for l in self._layouts.values() if l.signals), None)
        if result.signals and steps > 0 and self.logit_rows and logit_layout is not None:
            rows = torch.stack(self.logit_rows[:steps], dim=1)  # [rows, steps, 1 + k + (1 | k)]
            result.rows = int(rows.shape[0])
            k = logit_layout.k
            packed = rows[..., : 1 + k]
            stats = finish_stats_tensor(packed)  # [rows, steps, 4]
            if beams:
                parts.append(("stats", stats))
                parts.append(("top_logp", packed[..., 1:]))
                parts.append(("top_ids", rows[..., 1 + k :]))
                if self.beam_indices is not None:
                    chosen = self.beam_indices[:, :num_return, :].reshape(-1, self.beam_indices.shape[-1])
                    parts.append(("beam_indices", chosen[:, :steps].float()))
            else:
                # Step t's row holds the log-probability of the token chosen at step t - 1; the last
                # step's token is known only from the returned sequences.
                chosen = rows[..., 1 + k]
                state = next((st for st in self._states.values() if st.logp is not None), None)
                if self.chosen_aligned:  # scoring: each row already holds its own token's log-probability
                    pass
                elif state is not None and sequences is not None:
                    last = state.logp.gather(1, sequences[:, prefix + steps - 1 : prefix + steps].to(state.logp.device))
                    chosen = torch.cat([chosen[:, 1:], last], dim=1)
                else:
                    chosen = torch.cat([chosen[:, 1:], torch.full_like(chosen[:, :1], float("nan"))], dim=1)
                surprisal = chosen.mul(-1.0 / LN2)
                parts.append(("series", torch.cat([stats, surprisal[..., None]], dim=-1).transpose(1, 2)))
        layer_count = sum(1 for s in self.layer_steps if s < steps) if steps else len(self.layer_steps)
        layer_layout = next((l for l in self._layouts.values() if l.layers), None)
        if self.layer_rows and layer_count and layer_layout is not None:
            layer = torch.stack(self.layer_rows[:layer_count])  # [layer steps, rows, width]
            offset_layout = _reduce.StepLayout(signals=False, k=layer_layout.k, beams=layer_layout.beams,
                                               layers=layer_layout.layers, hidden=layer_layout.hidden,
                                               attention=layer_layout.attention, moe=layer_layout.moe,
                                               interleaved=layer_layout.interleaved)
            blocks = offset_layout.split(layer)
            result.hidden_full = layer_layout.hidden == "full"
            hidden = blocks["hidden"]
            if result.hidden_full:
                hidden = _hidden.finish_hidden_tensor(hidden, int(self.hidden_size or 0))
            if beams:  # rows move between steps: keep step-major, attributed on the host
                parts.append(("hidden", hidden))
                if "attention" in blocks:
                    parts.append(("attention", blocks["attention"]))
                if "moe" in blocks:
                    parts.append(("moe", blocks["moe"]))
            else:  # one row per sequence: ship each field as [row][layer][step], ready for the report
                fields = _field_stack(hidden if result.hidden_full else hidden[..., None], blocks)
                parts.append(("matrices", fields))
                parts.append(("matrices_finite", torch.isfinite(fields).flatten(2).all(dim=-1).float()))
        if self._prompt_surprisal is not None:
            parts.append(("prompt_surprisal", self._prompt_surprisal))
        prompt_layers = self._prompt_table(self._prompt_layers)
        if prompt_layers is not None:
            parts.append(("prompt_layers", prompt_layers))
        encoder = self._prompt_table(self._encoder)
        if encoder is not None:
            parts.append(("encoder_layers", encoder))
        stop = self.stop_on
        if stop is not None and stop.stopped_at is not None and not beams:
            parts.append(("stopped_at", stop.stopped_at.float()))
            parts.append(("stop_reason", stop.reason.float()))
        host = _one_transfer(parts)
        if "stopped_at" in host:
            names = {code: name for name, code in _intervene.CODES.items()}
            result.stopped_at = [int(v) for v in host["stopped_at"]]
            result.stop_reason = [names.get(int(v)) for v in host["stop_reason"]]
        if stop is not None and stop.failed:
            result.unavailable["stop_on"] = f"stopped checking: {stop.failed}"
        result.layers = list(self.layers)
        result.layer_steps = [s for s in self.layer_steps[:layer_count]]
        result.hidden = host.get("hidden")
        if "matrices" in host:
            result.matrices = _field_matrices(host["matrices"], host["matrices_finite"], result.hidden_full,
                                              "attention" in (layer_layout.blocks_names() if layer_layout else ()),
                                              bool(layer_layout and layer_layout.moe))
        result.attention = host.get("attention")
        result.moe = host.get("moe")
        result.prompt_surprisal = host.get("prompt_surprisal")
        result.prompt_layers = host.get("prompt_layers")
        result.encoder_layers = host.get("encoder_layers")
        result.encoder_indices = list(self.encoder_indices) if result.encoder_layers is not None else []
        if "series" in host:
            result.series = [_row_series(row) for row in host["series"]]
        elif "stats" in host:
            result.series, result.row_of = _beam_series(host, result.sequences, prefix, steps)

    @staticmethod
    def _prompt_table(columns: dict[str, list[torch.Tensor | None]]) -> torch.Tensor | None:
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
        table = [
            torch.cat([n[:, None].float() if n is not None else nan1, a.float() if a is not None else nan3], dim=-1)
            for n, a in zip(norms, attention)
        ]
        return torch.stack(table, dim=1)

    def _release(self) -> None:
        self.clock.release()
        self.drop_rows()
        self._states.clear()
        self._graph = None
        self._tables = None
        self._prompt_surprisal = None
        self.parent_rows = self.beam_indices = None
        self.stop_on = None
        self._clear()


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


def _score_logits(logits: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed statistics [rows, count, 1 + k] and the targets' log-probabilities [rows, count], in chunks."""
    rows, count, vocab = logits.shape
    flat, tokens = logits.reshape(rows * count, vocab), targets.reshape(-1)
    chunk = max(1, (8 << 20) // max(1, vocab * 4))
    packed, chosen = [], []
    for start in range(0, rows * count, chunk):
        part, logp, _ = logit_stats(flat[start : start + chunk], k)
        packed.append(part)
        chosen.append(logp.gather(1, tokens[start : start + chunk, None]).squeeze(1))
    return torch.cat(packed).view(rows, count, -1), torch.cat(chosen).view(rows, count)


def _score_moe_balance(out: torch.Tensor, layout: _reduce.StepLayout, router: torch.Tensor, top_k: int) -> torch.Tensor:
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


def _expand_rows(value: torch.Tensor | None, rows: int, length: int, device: torch.device) -> torch.Tensor | None:
    """A [batch, length] prompt tensor repeated per row the way generate expands beams and samples."""
    if value is None or value.dim() != 2 or value.shape[1] != length or rows % value.shape[0]:
        return None
    if value.shape[0] != rows:
        value = value.repeat_interleave(rows // value.shape[0], dim=0)
    return value.to(device)


def _one_transfer(parts: list[tuple[str, torch.Tensor]]) -> dict[str, Any]:
    """Copy every tensor to the host in one transfer; return nested lists by name.

    The single device-to-host copy is the only synchronising read; the nested
    lists are then made from host memory by torch itself (``tolist`` per part).
    """
    if not parts:
        return {}
    device = parts[0][1].device
    flat = torch.cat([t.detach().float().reshape(-1).to(device) for _, t in parts]).cpu()
    out: dict[str, Any] = {}
    offset = 0
    for name, tensor in parts:
        size = tensor.numel()
        out[name] = flat[offset : offset + size].view(tensor.shape).tolist()
        offset += size
    return out


def _field_stack(hidden: torch.Tensor, blocks: dict[str, torch.Tensor]) -> torch.Tensor:
    """[layer steps, rows, layers, fields] blocks -> one [rows, fields, layers, layer steps] tensor."""
    parts = [hidden]
    if "attention" in blocks:
        parts.append(blocks["attention"])
    if "moe" in blocks:
        parts.append(blocks["moe"])
    return torch.cat(parts, dim=-1).permute(1, 3, 2, 0)


def _field_matrices(values: list, finite: list, full: bool, attention: bool, moe: bool) -> dict[str, list]:
    """Name the fields of [row][field][layer][step] lists; non-finite values become None where there are any."""
    from ._attention import ATTENTION_COLUMNS
    from ._moe import MOE_COLUMNS

    names = ["hidden_" + c if c not in ("update_ratio",) else c for c in _hidden.HIDDEN_COLUMNS] if full else [
        "hidden_norm"]
    if attention:
        names += ["attn_" + c for c in ATTENTION_COLUMNS]
    if moe:
        names += list(MOE_COLUMNS)
    matrices: dict[str, list] = {name: [] for name in names}
    for row, flags in zip(values, finite):
        for index, name in enumerate(names):
            matrix = row[index]
            if not flags[index]:
                matrix = [[v if v - v == 0 else None for v in layer] for layer in matrix]
            matrices[name].append(matrix)
    return matrices


def _beam_series(host: dict[str, Any], sequences: list[list[int]], prefix: int, steps: int) -> tuple[list, list]:
    """Attribute per-row beam statistics to the returned sequences, with surprisal from the kept candidates."""
    stats = host["stats"]  # [rows][steps][4]
    top_logp, top_ids = host["top_logp"], host["top_ids"]  # [rows][steps][k]
    rows_of = host.get("beam_indices")  # [returned][steps]
    series, row_of = [], []
    for r, seq in enumerate(sequences):
        rows = [int(x) for x in rows_of[r]] if rows_of is not None else [r] * steps
        columns: list[list[float]] = [[] for _ in SERIES]
        used: list[int] = []
        for t in range(steps):
            row = rows[t] if t < len(rows) else -1
            if row < 0:
                break
            used.append(row)
            for i, value in enumerate(stats[row][t]):
                columns[i].append(value)
            token = seq[prefix + t] if prefix + t < len(seq) else None
            value = float("nan")
            for candidate, logp in zip(top_ids[row][t], top_logp[row][t]):
                if token is not None and int(candidate) == token:
                    value = -logp / LN2
                    break
            columns[-1].append(value)
        series.append(_row_series(columns))
        row_of.append(used)
    return series, row_of
