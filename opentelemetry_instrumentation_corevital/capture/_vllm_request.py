"""One vLLM request's rows, picked out of the steps it ran in and turned into its :class:`CaptureResult`.

A request leaves a record in every step it was in the batch: which step,
which row of that step's values, how many tokens it had generated then, and
when. A prompt split into chunks (chunked prefill) is in the batch for several
steps before its first token; those steps sample nothing, so of the records
with the same number of generated tokens only the last one counts. The record
with ``i`` tokens generated holds the distribution token ``i`` was sampled
from; the surprisal of token ``i`` is computed one step later (where the token
is known), or at the end from the last step's kept log-probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..report import CaptureResult
from . import _vllm_stop as _stop
from ._hidden import finish_hidden_tensor
from ._reduce import StepLayout
from ._stats import LN2, SERIES, STAT_COLUMNS, finish_stats

#: Why a vLLM capture lacks a signal group that a full capture of ``transformers`` has.
NO_ATTENTION = "vLLM's attention kernels (paged attention) return no attention weights"
NO_PROMPT = "prompt telemetry needs the prompt's log-probabilities and layer outputs, which vLLM does not keep"


@dataclass(frozen=True)
class Record:
    """Where one step of one request is: step, row in that step's values, tokens generated before it, when."""

    chunk: int
    position: int
    outputs: int
    time: float  # wall clock (s) when the step's logits were ready
    follows: bool  # the request's previous record is the step just before (its carried values are real)


@dataclass
class Chunk:
    """One step's flat host values and what their columns hold."""

    values: torch.Tensor  # [captured rows, layout.width]
    layout: StepLayout
    hidden_size: int = 0
    stops: bool = False  # the last column is the step's stop_on code


@dataclass
class Tracked:
    """One captured request while it is in the batch."""

    key: str
    marker: dict[str, Any]
    params: Any  # vLLM SamplingParams
    prompt_ids: list[int]
    output_ids: list[int]  # vLLM's own list, appended as tokens are sampled
    records: list[Record] = field(default_factory=list)
    last: float | None = None  # the last token's surprisal, read when the request left the batch


@dataclass
class RequestCapture:
    """What the engine captured of one finished request, ready for its report."""

    key: str
    marker: dict[str, Any]
    params: Any
    prompt_ids: list[int]
    output_ids: list[int]
    result: CaptureResult
    config: Any = None  # the engine's VllmConfig
    finish_reason: str | None = None  # stop, length, abort... when known where the capture ended
    first_token_time: float | None = None  # wall clock (s)
    last_token_time: float | None = None


def stop_reason(tracked: Tracked, max_model_len: int | None) -> str | None:
    """Whether the request's last sampled token ends it, as vLLM's scheduler decides: "stop", "length" or None."""
    outputs, params = tracked.output_ids, tracked.params
    if not outputs:
        return None
    last = outputs[-1]
    eos = getattr(params, "eos_token_id", None)
    if (eos is not None and last == eos) or last in (getattr(params, "stop_token_ids", None) or ()):
        return "stop"
    max_tokens = getattr(params, "max_tokens", None)
    if (max_tokens is not None and len(outputs) >= max_tokens) or (
        max_model_len is not None and len(tracked.prompt_ids) + len(outputs) >= max_model_len
    ):
        return "length"
    return None


def sampled_records(records: list[Record], tokens: int) -> list[Record | None]:
    """Per generated token, the record of the step that sampled it (the last with that many tokens before it)."""
    picked: list[Record | None] = [None] * tokens
    for record in records:
        if record.outputs < tokens:
            picked[record.outputs] = record
    return picked


def finish_request(
    tracked: Tracked,
    outputs: list[int],
    chunks: dict[int, Chunk],
    last_surprisal: float | None,
    problem: str | None,
    config: Any = None,
) -> RequestCapture:
    """The request's :class:`CaptureResult`: its series, hidden-state summaries and step times, host-side."""
    n = len(outputs)
    picked = sampled_records(tracked.records, n)
    rows: dict[tuple[int, int], list[float]] = {}

    def values(record: Record) -> list[float] | None:
        chunk = chunks.get(record.chunk)
        if chunk is None:
            return None
        key = (record.chunk, record.position)
        if key not in rows:
            rows[key] = chunk.values[record.position].tolist()
        return rows[key]

    series: dict[str, list[float | None]] = {name: [] for name in SERIES}
    hidden: list[list[Any]] = []
    layer_steps: list[int] = []
    full = all(r is not None and chunks[r.chunk].layout.hidden == "full" for r in picked if r and r.chunk in chunks)
    layers = size = 0
    for i, record in enumerate(picked):
        row = values(record) if record is not None else None
        chunk = chunks.get(record.chunk) if record is not None else None
        if row is None or chunk is None:
            for name in SERIES:
                series[name].append(None)
            continue
        k = chunk.layout.k
        for name, value in zip(STAT_COLUMNS, finish_stats(row[: 1 + k])):
            series[name].append(value if value - value == 0 else None)
        series["surprisal"].append(_surprisal(picked, i, chunks, values, last_surprisal))
        if chunk.layout.hidden != "off":
            layers, size = chunk.layout.layers, chunk.hidden_size
            hidden.append([_layer_values(chunk, row[2 + k :], full)])
            layer_steps.append(i)
    if full and hidden:
        _finish_moments(hidden, size)
    mode = str(tracked.marker.get("capture") or "summary")
    unavailable: dict[str, str] = {}
    if mode != "summary":
        unavailable.update(attention=NO_ATTENTION, prompt=NO_PROMPT)
    if not layer_steps:
        unavailable["hidden"] = problem or "vLLM ran no hooked decoder layer for this request"
    stopped_at, stop_reason = _intervention(picked, chunks, values)
    if _stop.conditions(tracked.marker) and _stop.end_token(tracked.params) is None:
        unavailable["stop_on"] = _stop.NO_EOS
    times = [r.time for r in picked if r is not None]
    arrival = tracked.marker.get("arrival")
    origin = float(arrival) if isinstance(arrival, (int, float)) else (times[0] if times else 0.0)
    result = CaptureResult(
        signals=n > 0 and any(r is not None for r in picked),
        unavailable=unavailable,
        prefix_len=len(tracked.prompt_ids),
        steps=n,
        rows=1,
        series=[series],
        sequences=[[*tracked.prompt_ids, *outputs]],
        step_ends=[r.time - origin for r in picked if r is not None],
        layers=list(range(layers)) if layer_steps else [],
        layer_steps=layer_steps,
        hidden=hidden if layer_steps else None,
        hidden_full=full and bool(layer_steps),
        stopped_at=[stopped_at] if stop_reason else None,
        stop_reason=[stop_reason] if stop_reason else None,
    )
    return RequestCapture(
        tracked.key,
        tracked.marker,
        tracked.params,
        list(tracked.prompt_ids),
        outputs,
        result,
        config=config,
        first_token_time=times[0] if times else None,
        last_token_time=times[-1] if times else None,
    )


def _intervention(picked: list[Record | None], chunks: dict[int, Chunk], row_of: Any) -> tuple[int, str | None]:
    """(the sequence's last step, the condition) of a ``stop_on`` stop; (-1, None) if none fired.

    A loop holds at the token before the stopping step (the forced end token is not part of the answer); a
    NaN or high-entropy distribution holds at the stopping step itself.
    """
    for i, record in enumerate(picked):
        chunk = chunks.get(record.chunk) if record is not None else None
        if record is None or chunk is None or not chunk.stops:
            continue
        row = row_of(record)
        code = int(row[-1]) if row is not None and row[-1] == row[-1] else 0
        if code:
            name = _stop.NAMES[code]
            return (i - 1 if name == "repetition_loop" else i), name
    return -1, None


def _surprisal(
    picked: list[Record | None], i: int, chunks: dict[int, Chunk], row_of: Any, last: float | None
) -> float | None:
    """Token ``i``'s surprisal: the chosen-token column of the step right after the one that sampled it, or the
    kept last one for the final token (None when that step did not directly follow)."""
    if i + 1 == len(picked):
        return last
    current, following = picked[i], picked[i + 1]
    if current is None or following is None or not following.follows or following.chunk != current.chunk + 1:
        return None
    row, chunk = row_of(following), chunks.get(following.chunk)
    if row is None or chunk is None:
        return None
    value = row[1 + chunk.layout.k]
    return -value / LN2 if value - value == 0 else None


def _layer_values(chunk: Chunk, block: list[float], full: bool) -> list[Any]:
    """One step's per-layer values: norms, or the raw moments [layers][8] (:func:`_finish_moments` finishes them)."""
    layers = chunk.layout.layers
    if chunk.layout.hidden == "norm":
        return block[:layers]
    if not full:  # a summary of a step captured in full: the norm alone
        return torch.tensor(block[: layers * 8 : 8]).clamp_min(0.0).sqrt().tolist()
    return [block[i * 8 : i * 8 + 8] for i in range(layers)]


def _finish_moments(hidden: list[list[Any]], size: int) -> None:
    """Every step's raw moments -> the seven hidden-state statistics, in place: one tensor call per request."""
    moments = torch.tensor([step[0] for step in hidden], dtype=torch.float32)  # [steps, layers, 8]
    finished = finish_hidden_tensor(moments, size).tolist()
    for step, values in zip(hidden, finished):
        step[0] = values
