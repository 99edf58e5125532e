"""vLLM's persistent batch, attributed: every logits row of every step goes to the request it belongs to.

Under continuous batching the rows of one step belong to many requests that
joined at different times, and rows move when others leave. vLLM tells the
logits processor exactly that (rows removed, added with their sampling
parameters and live output list, moved or swapped), so :class:`BatchCapture`
mirrors the row -> request map on the host, at no cost to the device.

Each step, the captured rows are reduced together on the device by the same
:func:`_reduce.reduce_step` as ``transformers`` generation (logit statistics,
the previous token's surprisal, per-layer hidden-state summaries), one batched
call whatever the mix of requests; the previous step's log-probabilities and
layer outputs are re-indexed to this step's rows first. The flat result goes
to the host without a sync (a non-blocking copy on GPUs; vLLM reads its sampled
tokens right after, which orders it). Nothing is read until a request ends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from . import _vllm_stop as _stop
from ._reduce import StepInputs, StepLayout, StepState, reduce_step
from ._stats import LN2, TOP_K
from ._vllm_request import Chunk, Record, RequestCapture, Tracked, finish_request, stop_reason
from ._vllm_taps import NO_MODEL, VLLMLayerTaps

#: The key of CoreVital's entry in a request's ``SamplingParams.extra_args`` (set by the instrumented frontend).
MARKER = "corevital"
#: Capture modes whose requests get hidden-state moments (``on_risk`` decides what to emit only afterwards).
FULL_MODES = ("full", "on_risk")


def _captured(tracked: Tracked) -> bool:
    """Whether a marked request asked for signals (capture ``off`` gets a span and its counts only)."""
    return tracked.marker.get("capture") != "off"


def marker_of(params: Any) -> dict[str, Any] | None:
    """CoreVital's entry in a request's sampling parameters, or None (a request nobody asked us to capture)."""
    extra = getattr(params, "extra_args", None)
    entry = extra.get(MARKER) if isinstance(extra, dict) else None
    return entry if isinstance(entry, dict) and isinstance(entry.get("id"), str) else None


class BatchCapture:
    """One engine's capture: the row map, one batched reduce per step, and each request's record until it ends."""

    def __init__(self, device: torch.device, config: Any = None, model: Callable[[], Any] = lambda: None) -> None:
        self.device = device
        self.config = config  # the engine's VllmConfig (model name and architecture for the reports)
        self._model = model  # the engine's model once loaded (its layers are hooked on the first captured request)
        self.rows: dict[int, Tracked] = {}  # batch row -> captured request
        self.taps: VLLMLayerTaps | None = None
        self.chunks: dict[int, Chunk] = {}
        self._step = 0
        self._prev: dict[str, int] = {}  # request key -> its position in the previous step's chunk
        self._prev_logp: torch.Tensor | None = None
        self._prev_out: torch.Tensor | None = None
        self._prev_sq: torch.Tensor | None = None
        self._prev_run: torch.Tensor | None = None  # stop_on high_entropy: steps in a row above the threshold
        self.removed: list[Tracked] = []  # left the batch and not finished yet
        self.problem: str | None = None  # why layer summaries are missing

    # -- the row map ------------------------------------------------------------------
    def update(self, removed: Any, added: Any, moved: Any) -> None:
        """Apply vLLM's batch update (removed, then added, then moved), as its interface orders."""
        for index in removed:
            self._leave(self.rows.pop(int(index), None))
        for index, params, prompt_ids, output_ids in added:
            self._leave(self.rows.pop(int(index), None))
            marker = marker_of(params)
            if marker is not None:  # capture off too: its request still gets its span, with no signals
                key = marker["id"]
                resumed = next((t for t in self.removed if t.key == key), None)  # preempted, now back
                if resumed is not None:
                    self.removed.remove(resumed)
                    resumed.output_ids, resumed.last = output_ids, None
                self.rows[int(index)] = resumed or Tracked(key, marker, params, list(prompt_ids or ()), output_ids)
        for first, second, direction in moved:
            a, b = self.rows.pop(int(first), None), self.rows.pop(int(second), None)
            if a is not None:
                self.rows[int(second)] = a
            if getattr(direction, "name", "") == "SWAP":
                if b is not None:
                    self.rows[int(first)] = b
            else:
                self._leave(b)
        self._retap()

    def _leave(self, tracked: Tracked | None) -> None:
        """A request left the batch: keep it (and its last token's surprisal, readable only now) until finished."""
        if tracked is not None:
            tracked.last = self._last_surprisal(tracked, tracked.output_ids)
            self.removed.append(tracked)

    def _retap(self) -> None:
        """Hooks on the layers while captured requests run (in full when one of them asks), none otherwise."""
        if not any(_captured(t) for t in self.rows.values()):
            if self.taps is not None:
                self.taps.remove()
            return
        if self.taps is None:
            model = self._model()
            self.taps = VLLMLayerTaps(model, full=False) if model is not None else None
            if self.taps is None:
                self.problem = NO_MODEL
                return
        self.taps.full = any(t.marker.get("capture") in FULL_MODES for t in self.rows.values())
        self.taps.install()

    # -- one step ---------------------------------------------------------------------
    def step(self, logits: torch.Tensor) -> None:
        """Reduce this step's captured rows on the device and keep the values; reads nothing on the host."""
        total = int(logits.shape[0])
        order = sorted(r for r, t in self.rows.items() if r < total and _captured(t))
        if not order:
            self._forget()
            return
        now = time.time()
        tracked = [self.rows[r] for r in order]
        select = None if order == list(range(total)) else torch.tensor(order, device=logits.device)
        scores = logits if select is None else logits.index_select(0, select)
        parents, valid = [], []
        for t in tracked:
            p = self._prev.get(t.key)
            parents.append(p if p is not None else 0)
            valid.append(p is not None)
        in_place = all(valid) and parents == list(range(len(parents)))  # every row continues where it was
        tokens = [t.output_ids[-1] if t.output_ids else 0 for t in tracked]
        stacked = self.taps.take(total, select) if self.taps is not None and self.taps.installed else None
        full = bool(stacked is not None and self.taps is not None and self.taps.full)
        layout = StepLayout(
            signals=True,
            k=min(TOP_K, int(scores.shape[-1])),
            beams=False,
            layers=(int(stacked.shape[1]) - (1 if full else 0)) if stacked is not None else 0,
            hidden=("full" if full else "norm") if stacked is not None else "off",
            attention=False,
            moe=False,
        )
        index = None if in_place else torch.tensor(parents, device=scores.device)
        state = StepState(logp=self._carried(self._prev_logp, index, valid, scores.shape))
        if full and stacked is not None:
            shape = (len(order), layout.layers, int(stacked.shape[-1]))
            state.out = self._carried(self._prev_out, index, valid, shape)
            state.sq = self._carried(self._prev_sq, index, valid, shape[:2])
        inputs = StepInputs(scores=scores, token=torch.tensor(tokens, device=scores.device), stacked=stacked)
        flat = reduce_step(layout, state, inputs)
        self._prev_logp, self._prev_out, self._prev_sq = state.logp, state.out, state.sq
        stops = [_stop.conditions(t.marker) for t in tracked]
        if any(stops):
            flat = self._stop(logits, order, tracked, stops, flat, index, valid)
        else:
            self._prev_run = None
        if flat.device.type != "cpu":
            flat = flat.to("cpu", non_blocking=True)
        self.chunks[self._step] = Chunk(
            flat, layout, int(stacked.shape[-1]) if stacked is not None else 0, stops=any(stops)
        )
        self._prev = {}
        for position, t in enumerate(tracked):
            t.records.append(Record(self._step, position, len(t.output_ids), now, valid[position]))
            self._prev[t.key] = position
        self._step += 1

    def _stop(
        self,
        logits: torch.Tensor,
        order: list[int],
        tracked: list[Tracked],
        stops: list[tuple[str, ...]],
        flat: torch.Tensor,
        index: torch.Tensor | None,
        valid: list[bool],
    ) -> torch.Tensor:
        """``stop_on``: each row's stop code (host loops, device NaN and entropy runs); stopped rows may sample only
        their end token. Returns ``flat`` with the codes as one more column."""
        device = flat.device
        loops = [
            _stop.CODES["repetition_loop"]
            if "repetition_loop" in s and _stop.tail_loops(t.output_ids, t.marker.get("stop_loop_repeat"))
            else 0
            for t, s in zip(tracked, stops)
        ]
        wants = [("nan_or_inf" in s, "high_entropy" in s) for s in stops]
        nats = [float(t.marker.get("high_entropy_bits") or math.inf) * LN2 for t in tracked]
        needed = [int(t.marker.get("high_entropy_run") or 8) for t in tracked]
        run = self._carried(self._prev_run, index, valid, (len(tracked),))
        codes, self._prev_run = _stop.device_codes(flat, run, wants, nats, needed)
        host = torch.tensor(loops, device=device)
        codes = torch.where(host > 0, host, codes)
        ends = [_stop.end_token(t.params) for t in tracked]
        can = torch.tensor([e is not None for e in ends], device=device)
        _stop.force_end(
            logits,
            torch.tensor(order, device=logits.device),
            (codes > 0) & can,
            torch.tensor([e or 0 for e in ends], device=device),
        )
        return torch.cat([flat, codes.to(flat.dtype).view(-1, 1)], dim=1)

    def _carried(
        self, previous: torch.Tensor | None, index: torch.Tensor | None, valid: list[bool], shape: Any
    ) -> torch.Tensor:
        """The previous step's tensor re-indexed to this step's rows; zeros where a row has no previous step.

        ``index`` None: every row continues in place, so the previous tensor's first rows are used as they are
        (the reduce reads them before it overwrites them in place): no copy of [rows, vocabulary] per step.
        """
        if previous is None or tuple(previous.shape[1:]) != tuple(shape[1:]):
            return torch.zeros(shape, device=self.device if index is None else index.device)
        if index is None:
            return previous[: shape[0]]
        carried = previous.index_select(0, index)
        if not all(valid):
            mask = torch.tensor(valid, device=index.device).view(-1, *([1] * (carried.dim() - 1)))
            carried = carried * mask
        return carried

    def _forget(self) -> None:
        """No captured request in the batch: drop the carried state and every chunk no request needs."""
        self._prev, self._prev_logp, self._prev_out, self._prev_sq, self._prev_run = {}, None, None, None, None
        if not self.removed:
            self.chunks.clear()

    # -- a request ends ---------------------------------------------------------------
    def after_step(self, max_model_len: int | None = None) -> list[RequestCapture]:
        """The captured requests whose last sampled token ended them (stop token, ``max_tokens``, context length).

        Called right after vLLM appended the step's sampled tokens, so that a request is reported when it ends
        even when the scheduler that frees it runs in another process. (Stop strings and aborts are the
        frontend's: such a request is reported when it leaves the batch.)
        """
        done = []
        for tracked in list(self.rows.values()):
            reason = stop_reason(tracked, max_model_len)
            if reason is not None:
                found = self.finish(tracked.key, reason=reason)
                if found is not None:
                    done.append(found)
        return done

    def finish(self, key: str, output_ids: list[int] | None = None, reason: str | None = None) -> RequestCapture | None:
        """The record of request ``key`` (in the batch or just removed) as a :class:`RequestCapture`; None if unknown.

        ``output_ids`` are the engine's final output tokens when it knows them (the request's own list otherwise).
        The last token's surprisal is read from the last step's log-probabilities while they are still kept.
        """
        tracked = next((t for t in self.rows.values() if t.key == key), None)
        if tracked is not None:
            self.rows = {r: t for r, t in self.rows.items() if t.key != key}
        else:
            tracked = next((t for t in self.removed if t.key == key), None)
            if tracked is None:
                return None
            self.removed = [t for t in self.removed if t.key != key]
        outputs = list(output_ids if output_ids is not None else tracked.output_ids)
        last = self._last_surprisal(tracked, outputs) if tracked.last is None else tracked.last
        problem = self.taps.problem if self.taps is not None else self.problem
        result = finish_request(tracked, outputs, self.chunks, last, problem, self.config)
        result.finish_reason = reason
        self._prune()
        return result

    def drain(self) -> list[RequestCapture]:
        """Every request that left the batch without an engine-side finish (e.g. another process's scheduler)."""
        done = [self.finish(t.key) for t in list(self.removed)]
        return [r for r in done if r is not None]

    def _last_surprisal(self, tracked: Tracked, outputs: list[int]) -> float | None:
        position = self._prev.get(tracked.key)
        if position is None or self._prev_logp is None or not outputs or not tracked.records:
            return None
        if tracked.records[-1].outputs != len(outputs) - 1:  # the last step did not produce the last token
            return None
        value = self._prev_logp[position, outputs[-1]]
        return float(-value.item() / LN2)

    def _prune(self) -> None:
        """Free the chunks older than every remaining request's first record."""
        live = [t.records[0].chunk for t in (*self.rows.values(), *self.removed) if t.records]
        oldest = min(live) if live else self._step
        for chunk in [c for c in self.chunks if c < oldest]:
            del self.chunks[chunk]
