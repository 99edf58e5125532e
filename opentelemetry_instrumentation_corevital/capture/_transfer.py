"""The end of a device capture: stack the rows, copy them to the host in one transfer, fill a CaptureResult.

The transfer is two halves. On the caller, at the end of ``generate``: the rows are stacked and one
device-to-host copy of them (and of the sequences) is queued, with an event after it. Then, whenever the result
is settled (:meth:`CaptureResult.settled`): the wait for that event, the only synchronising read of the whole
capture, and the lists made from host memory. With ``background_emit`` the second half runs on the emission
thread, so the caller waits neither for the device to finish the reduce nor for the lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..report import CaptureResult
from . import _beams, _hidden, _intervene
from ._attention import ATTENTION_COLUMNS
from ._moe import MOE_COLUMNS
from ._reduce import StepLayout
from ._rows import StepRows
from ._stats import LN2, finish_stats_tensor, row_series
from ._taps import Prefill, prefill_table


@dataclass
class DeviceCapture:
    """Everything a device source kept for one call, as the transfer reads it."""

    rows: StepRows
    layers: list[int]  # decoder layers captured
    hidden_size: int | None  # the model's, for the hidden-state statistics
    prefill: Prefill
    last_logp: torch.Tensor | None = None  # the last step's log-probabilities (greedy/sample)
    beam_indices: torch.Tensor | None = None  # beam search: [batch, beams, steps] rows of the kept beams
    stop: _intervene.StopOn | None = None


def transfer(
    result: CaptureResult,
    capture: DeviceCapture,
    sequences: torch.Tensor | None,
    steps: int,
    prefix: int,
    beams: bool,
    num_return: int,
) -> Callable[[], None]:
    """Queue the copy of ``capture`` to the host (``steps`` decoding steps after ``prefix``); return what fills
    ``result`` from it, which waits for the copy. Everything read from ``capture`` is read now: its buffers are
    freed (or used by the next generation) before the returned function runs."""
    rows = capture.rows
    result.retained_values = rows.retained_values()
    parts: list[tuple[str, torch.Tensor]] = []
    logit_layout = rows.logit_layout
    if result.signals and steps > 0 and rows.logits and logit_layout is not None:
        parts += _logit_parts(result, capture, logit_layout, sequences, steps, prefix, beams, num_return)
    layer_count = sum(1 for s in rows.layer_steps if s < steps) if steps else len(rows.layer_steps)
    layer_layout = rows.layer_layout
    if rows.layer_steps and layer_count and layer_layout is not None:
        parts += _layer_parts(result, capture, layer_layout, layer_count, beams)
    prefill = capture.prefill
    if prefill.surprisal is not None:
        parts.append(("prompt_surprisal", prefill.surprisal))
    prompt_layers = prefill_table(prefill.layers)
    if prompt_layers is not None:
        parts.append(("prompt_layers", prompt_layers))
    encoder = prefill_table(prefill.encoder)
    if encoder is not None:
        parts.append(("encoder_layers", encoder))
    stop = capture.stop
    if stop is not None and stop.stopped_at is not None and stop.reason is not None and not beams:
        parts.append(("stopped_at", stop.stopped_at.float()))
        parts.append(("stop_reason", stop.reason.float()))
    if stop is not None and stop.failed:
        result.unavailable["stop_on"] = f"stopped checking: {stop.failed}"
    result.layers = list(capture.layers)
    result.layer_steps = [s for s in rows.layer_steps[:layer_count]]
    encoder_indices = list(prefill.encoder_indices)
    columns = (
        result.hidden_full,
        "attention" in (layer_layout.blocks_names() if layer_layout else ()),
        bool(layer_layout and layer_layout.moe),
    )
    copy = HostCopy(parts, sequences)

    def fill() -> None:
        host = copy.read()
        if copy.sequences is not None:
            result.sequences = copy.sequences
        if "stopped_at" in host:
            names = {code: name for name, code in _intervene.CODES.items()}
            result.stopped_at = [int(v) for v in host["stopped_at"]]
            result.stop_reason = [names.get(int(v)) for v in host["stop_reason"]]
        result.hidden = host.get("hidden")
        if "matrices" in host:
            result.matrices = _field_matrices(host["matrices"], host["matrices_finite"], *columns)
        result.attention = host.get("attention")
        result.moe = host.get("moe")
        result.prompt_surprisal = host.get("prompt_surprisal")
        result.prompt_layers = host.get("prompt_layers")
        result.encoder_layers = host.get("encoder_layers")
        result.encoder_indices = encoder_indices if result.encoder_layers is not None else []
        if "series" in host:
            result.series = [row_series(row) for row in host["series"]]
        elif "stats" in host:
            result.series, result.row_of = _beams.beam_series(host, result.sequences, prefix, steps)

    return fill


class HostCopy:
    """Tensors on their way to the host: one copy of every part (as float32) and one of the token ids, queued on
    the device's stream, then read as nested lists by name once the device got there.

    On a GPU the copies land in page-locked memory without a host wait, and an event marks their end; reading
    waits for that event (the one synchronising read). On the CPU the copies are plain ones.
    """

    def __init__(self, parts: list[tuple[str, torch.Tensor]], ids: torch.Tensor | None = None) -> None:
        self._shapes = [(name, tuple(t.shape), t.numel()) for name, t in parts]
        self._flat: torch.Tensor | None = None
        self._ids: torch.Tensor | None = None
        self._events: list[Any] = []
        self.sequences: list[list[int]] | None = None
        if parts:
            device = parts[0][1].device
            flat = torch.cat([t.detach().float().reshape(-1).to(device) for _, t in parts])
            self._flat = self._queue(flat)
        if ids is not None:
            self._ids = self._queue(ids.detach())

    def _queue(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "cuda":
            return tensor.to("cpu", copy=True)  # a snapshot: the caller may change its tensors once it has them
        host = tensor.to("cpu", non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(tensor.device))
        self._events.append(event)
        return host

    def read(self) -> dict[str, Any]:
        """Wait for the copies (once), then the parts as nested lists by name; the ids go to :attr:`sequences`."""
        for event in self._events:
            event.synchronize()
        self._events = []
        if self._ids is not None:
            self.sequences, self._ids = self._ids.tolist(), None
        out: dict[str, Any] = {}
        flat, self._flat = self._flat, None
        offset = 0
        for name, shape, size in self._shapes:
            assert flat is not None
            out[name] = flat[offset : offset + size].view(shape).tolist()
            offset += size
        return out


def _logit_parts(
    result: CaptureResult,
    capture: DeviceCapture,
    layout: StepLayout,
    sequences: torch.Tensor | None,
    steps: int,
    prefix: int,
    beams: bool,
    num_return: int,
) -> list[tuple[str, torch.Tensor]]:
    """The logit statistics, per row and step: with candidates (beams), or with each chosen token's surprisal."""
    rows = torch.stack(capture.rows.logits[:steps], dim=1)  # [rows, steps, 1 + k + (1 | k)]
    result.rows = int(rows.shape[0])
    k = layout.k
    packed = rows[..., : 1 + k]
    stats = finish_stats_tensor(packed)  # [rows, steps, 4]
    if beams:
        parts = [("stats", stats), ("top_logp", packed[..., 1:]), ("top_ids", rows[..., 1 + k :])]
        if capture.beam_indices is not None:
            parts.append(("beam_indices", _beams.returned_rows(capture.beam_indices, num_return, steps)))
        return parts
    # Step t's row holds the log-probability of the token chosen at step t - 1; the last
    # step's token is known only from the returned sequences.
    chosen = rows[..., 1 + k]
    logp = capture.last_logp
    if capture.rows.chosen_aligned:  # scoring: each row already holds its own token's log-probability
        pass
    elif logp is not None and sequences is not None:
        last = logp.gather(1, sequences[:, prefix + steps - 1 : prefix + steps].to(logp.device))
        chosen = torch.cat([chosen[:, 1:], last], dim=1)
    else:
        chosen = torch.cat([chosen[:, 1:], torch.full_like(chosen[:, :1], float("nan"))], dim=1)
    surprisal = chosen.mul(-1.0 / LN2)
    return [("series", torch.cat([stats, surprisal[..., None]], dim=-1).transpose(1, 2))]


def _layer_parts(
    result: CaptureResult, capture: DeviceCapture, layout: StepLayout, count: int, beams: bool
) -> list[tuple[str, torch.Tensor]]:
    """The layer statistics: step-major for beams (attributed on the host), else [row][field][layer][step]."""
    rows = capture.rows
    device = (rows.logits or rows.layers or rows.lanes[0].rows)[0].device  # where the logit rows are, if any
    blocks = rows.layer_blocks(layout, count, device)  # [layer steps, rows, layers, ...]
    result.hidden_full = layout.hidden == "full"
    hidden = blocks["hidden"]
    if result.hidden_full:
        hidden = _hidden.finish_hidden_tensor(hidden, int(capture.hidden_size or 0))
    if beams:  # rows move between steps: keep step-major, attributed on the host
        parts = [("hidden", hidden)]
        if "attention" in blocks:
            parts.append(("attention", blocks["attention"]))
        if "moe" in blocks:
            parts.append(("moe", blocks["moe"]))
        return parts
    fields = _field_stack(hidden if result.hidden_full else hidden[..., None], blocks)
    return [("matrices", fields), ("matrices_finite", torch.isfinite(fields).flatten(2).all(dim=-1).float())]


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
    names = (
        ["hidden_" + c if c not in ("update_ratio",) else c for c in _hidden.HIDDEN_COLUMNS]
        if full
        else ["hidden_norm"]
    )
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
