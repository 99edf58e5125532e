"""What the report builder is handed: the capture's record and what the call knows besides.

Every capture source (``transformers`` generate and score today) fills one
:class:`CaptureResult` with plain host numbers; :func:`report.build_report`
reads nothing else from the capture. Next to it, the instrumented call hands
over what it saw itself (:class:`GenerationRequest`) and, with content capture,
the texts (:class:`ContentInput`). They live with the report, which never
needs torch, so that sources depend on the report and not the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._model import RequestInfo


@dataclass
class CaptureResult:
    """Host-side result of one generation's capture; plain Python numbers only."""

    signals: bool  # whether logit signals were captured
    unavailable: dict[str, str] = field(default_factory=dict)  # signal group -> reason
    prefix_len: int = 0  # length of the sequence fed to step 0 (prompt, or decoder start)
    steps: int = 0  # decoding steps recorded
    rows: int = 0  # rows the model ran per step (batch x beams)
    series: list[dict[str, list[float | None]]] = field(default_factory=list)  # per row
    sequences: list[list[int]] = field(default_factory=list)  # returned sequences, host copy
    step_ends: list[float] = field(default_factory=list)  # seconds from start to each step's end
    row_of: list[list[int]] | None = None  # beam search: [returned sequence][step] -> row
    layers: list[int] = field(default_factory=list)  # decoder layer indices captured
    layer_steps: list[int] = field(default_factory=list)  # steps with layer data
    hidden: list | None = None  # [layer_step][row][layer] norm, or [..][..][..][7] full stats
    hidden_full: bool = False
    attention: list | None = None  # [layer_step][row][layer][6]
    moe: list | None = None  # [layer_step][row][layer][2]
    prompt_surprisal: list | None = None  # [input row][prompt - 1]
    prompt_layers: list | None = None  # [input row][layer][4]: hidden_norm, sparsity, basin, basin_min
    encoder_layers: list | None = None  # [input row][encoder layer][4]: same columns
    encoder_indices: list[int] = field(default_factory=list)
    attention_source: str | None = None
    matrices: dict[str, list] | None = None  # greedy/sample: field -> [row][layer][layer step], non-finite as None
    stopped_at: list[int] | None = None  # stop_on: per row, the step at which a condition stopped it (-1: none)
    stop_reason: list[str | None] | None = None  # stop_on: per row, the condition
    retained_values: int = 0  # numbers the capture kept on the device for this generation (memory is O(steps x layers))
    error: str | None = None
    #: what is left to fill the fields above from the host copy (see :meth:`settled`); None once done
    pending: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def settled(self) -> CaptureResult:
        """This result, complete: a device source may queue its copy to the host and leave the wait for it, and
        the lists made from it, to whoever reads the result first (with ``background_emit``, the emission thread,
        so that ``generate()`` returns without waiting for them)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending()
        return self


@dataclass
class GenerationRequest:
    """What the instrumented call knows about its request beyond the capture: parameters, inputs, timing, trace."""

    params: RequestInfo  # the report's ``request`` section, as the call resolved it
    capture_mode: str
    duration_s: float
    input_lengths: list[int] = field(default_factory=list)  # non-pad prompt tokens per input row
    input_masks: list[list[int]] | None = None  # [input row][prompt] attention mask (for prompt telemetry)
    eos_token_ids: list[int] = field(default_factory=list)  # (finish reasons)
    pad_token_id: int | None = None
    step_stride: int = 1  # layer data every n-th step
    trace_id: str | None = None
    span_id: str | None = None


@dataclass
class ContentInput:
    """Content capture is on: how to decode token ids, and the inputs as text and as GenAI messages."""

    decode: Callable[[list[int]], str] | None = None
    decode_each: Callable[[list[int]], list[str]] | None = None  # each token id's own text (special tokens kept)
    input_texts: list[str] | None = None  # per input row
    input_messages: Any = None  # GenAI ``gen_ai.input.messages`` format
    system_instructions: Any = None  # GenAI ``gen_ai.system_instructions`` format (parts)
    quote_tokens: bool = False  # the narrative may quote a token (``ContentPolicy.quoted_tokens``)
