"""The fixed-shape part of one step's reduce, as one function: eager on CPUs, one CUDA-graph replay on GPUs.

Everything whose shapes do not change from step to step (logit statistics,
hidden-state moments, the per-layer aggregation of attention heads, MoE
routers) is computed by :func:`reduce_step` into one flat ``[rows, width]``
tensor, with the few values that carry over between steps (previous
log-probabilities, previous hidden states, expert pick counts) kept in
:class:`StepState`. On a CUDA device the function is captured once for
its shapes and kept for the next generations of the same shapes
(``_graph_pool``); each step then costs a handful of copies into static
inputs and a single graph launch instead of dozens of kernel launches.
The eager and graphed paths run the same code, so they agree exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import torch

from ._attention import ATTENTION_COLUMNS, COLLAPSE_THRESHOLD
from ._stats import TOP_K

ATTENTION_WIDTH = len(ATTENTION_COLUMNS)
#: ``inv_valid`` above this means a single valid key (two give 1/ln 2 = 1.44).
_ONE_VALID_KEY = 2.0


@dataclass(frozen=True)
class StepLayout:
    """What one step's flat output holds, and where."""

    signals: bool
    k: int
    beams: bool
    layers: int
    hidden: str  # "off", "norm" or "full"
    attention: bool
    moe: bool
    interleaved: bool = False  # hidden "full": stacked is [in_0, out_0, in_1, out_1, ...] (non-consecutive layers)

    @cached_property
    def blocks(self) -> tuple[tuple[str, int], ...]:
        """(name, width per row) of each block of the flat output, in order (computed once: read every step)."""
        out: list[tuple[str, int]] = []
        if self.signals:
            out.append(("packed", 1 + self.k))
            out.append(("top_ids" if self.beams else "chosen", self.k if self.beams else 1))
        if self.hidden == "norm":
            out.append(("hidden", self.layers))
        elif self.hidden == "full":
            out.append(("hidden", self.layers * 8))
        if self.attention:
            out.append(("attention", self.layers * ATTENTION_WIDTH))
        if self.moe:
            out.append(("moe", self.layers * 2))
        return tuple(out)

    def blocks_names(self) -> list[str]:
        """The names of :attr:`blocks`, in order."""
        return [name for name, _ in self.blocks]

    @cached_property
    def width(self) -> int:
        """Columns of one row of the flat output."""
        return sum(w for _, w in self.blocks)

    @cached_property
    def logit_width(self) -> int:
        """Columns of the logit part (packed values and chosen or top ids), which comes first."""
        return sum(w for name, w in self.blocks if name in ("packed", "chosen", "top_ids"))

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of the blocks of [..., width] outputs (shaped per layer where it applies)."""
        views: dict[str, torch.Tensor] = {}
        offset = 0
        for name, width in self.blocks:
            block = flat[..., offset : offset + width]
            if name == "hidden" and self.hidden == "full":
                block = block.unflatten(-1, (self.layers, 8))
            elif name == "attention":
                block = block.unflatten(-1, (self.layers, ATTENTION_WIDTH))
            elif name == "moe":
                block = block.unflatten(-1, (self.layers, 2))
            views[name] = block
            offset += width
        return views


@dataclass
class StepState:
    """Device tensors carried from one step to the next (zeros before the first)."""

    logp: torch.Tensor | None = None  # [rows, vocab] previous step's log-probabilities
    out: torch.Tensor | None = None  # [rows, layers, hidden] previous step's float32 layer outputs
    sq: torch.Tensor | None = None  # [rows, layers] their squared norms
    counts: torch.Tensor | None = None  # [layers, rows, experts] expert picks so far
    extra: dict = field(default_factory=dict)

    @classmethod
    def zeros(
        cls, layout: StepLayout, rows: int, vocab: int, hidden: int, experts: int, device: torch.device
    ) -> StepState:
        """The state before the first step: zeros of the shapes ``layout`` carries over."""
        state = cls()
        if layout.signals and not layout.beams:
            state.logp = torch.zeros(rows, vocab, device=device)
        if layout.hidden == "full":
            state.out = torch.zeros(rows, layout.layers, hidden, device=device)
            state.sq = torch.zeros(rows, layout.layers, device=device)
        if layout.moe:
            state.counts = torch.zeros(layout.layers, rows, experts, device=device)
        return state


@dataclass
class StepInputs:
    """The tensors of one step's reduce (see :func:`reduce_step`); None where the layout does not use them."""

    scores: torch.Tensor | None = None
    token: torch.Tensor | None = None
    parents: torch.Tensor | None = None
    stacked: torch.Tensor | None = None
    heads: torch.Tensor | None = None
    inv_valid: torch.Tensor | None = None
    inv_rest: torch.Tensor | None = None
    router: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor | None]:
        """The fields by name (a view of this record: the CUDA graph copies into its static ones by name)."""
        return vars(self)


def reduce_step(layout: StepLayout, state: StepState, inputs: StepInputs) -> torch.Tensor:
    """One step's statistics as a flat [rows, layout.width] float32 tensor; updates ``state`` in place.

    ``inputs`` (:class:`StepInputs`):

    * ``scores`` [rows, vocab] raw logits; ``token`` [rows] the token chosen at the previous step (or, logits
      only, [steps, rows, vocab] and [steps, rows]: several steps at once, giving [steps, rows, width]; or
      [chunks, steps, rows, vocab] and [chunks, steps, rows]: chunks of steps in order, one chunk's working
      memory at a time, giving [chunks x steps, rows, width]);
    * ``stacked`` [rows, 1 + layers, hidden]: the first captured layer's input, then every
      captured layer's output (hidden "full"; or each layer's input and output interleaved
      when the captured layers are not consecutive), or [rows, layers, hidden] outputs ("norm");
    * ``parents`` [rows]: the previous step's row each row continues (beam search; identity otherwise);
    * ``heads`` [layers, rows, heads, 7]: per head (:func:`head_values`) sum p ln p, max weight, prompt mass,
      sink mass, non-sink mass, non-sink sum p ln p, weight on the previous token;
    * ``inv_valid``/``inv_rest`` [rows]: 1 / ln(valid keys), 1 / ln(valid keys - 1) (NaN: too few to judge);
    * ``router`` [layers, rows, experts] router logits.
    """
    scores, token, parents, stacked = inputs.scores, inputs.token, inputs.parents, inputs.stacked
    if scores is not None and scores.dim() == 4 and token is not None:  # chunks of steps, in order
        return reduce_chunks(layout, state, zip(scores.unbind(0), token.unbind(0), strict=True))
    heads, inv_valid, inv_rest, router = inputs.heads, inputs.inv_valid, inputs.inv_rest, inputs.router
    blocks: list[torch.Tensor] = []
    if layout.signals:
        assert scores is not None
        logp = torch.log_softmax(scores.float(), dim=-1)
        top = logp.topk(layout.k, dim=-1, sorted=True)
        sum_p_log_p = logp.exp().mul_(logp).nansum(dim=-1, keepdim=True)
        blocks.append(sum_p_log_p)
        blocks.append(top.values)
        if layout.beams:
            blocks.append(top.indices.float())
        elif scores.dim() == 3:  # logit-only steps at once (``_logit_batch``): each one's previous is the last
            assert state.logp is not None and token is not None
            first = state.logp.gather(1, token[0].unsqueeze(-1))
            rest = logp[:-1].gather(2, token[1:].unsqueeze(-1))
            blocks.append(torch.cat([first[None], rest]))
            state.logp.copy_(logp[-1])
        else:
            assert state.logp is not None and token is not None
            blocks.append(state.logp.gather(1, token.view(-1, 1)))  # the previous step's chosen token
            state.logp.copy_(logp)
    if layout.hidden == "norm":
        assert stacked is not None
        blocks.append(torch.linalg.vector_norm(stacked, dim=-1, dtype=torch.float32))
    elif layout.hidden == "full":
        assert stacked is not None and state.out is not None and state.sq is not None
        y = stacked.float()
        squares = torch.linalg.vecdot(y, y)
        if layout.interleaved:
            out, inp, sq, in_sq = y[:, 1::2], y[:, 0::2], squares[:, 1::2], squares[:, 0::2]
        else:
            out, inp, sq, in_sq = y[:, 1:], y[:, :-1], squares[:, 1:], squares[:, :-1]
        previous, previous_sq = state.out, state.sq
        if parents is not None:
            previous, previous_sq = previous.index_select(0, parents), previous_sq.index_select(0, parents)
        moments = torch.stack(
            [
                sq,
                in_sq,
                torch.linalg.vecdot(out, inp),
                out.sum(dim=-1),
                torch.linalg.vector_norm(out, ord=math.inf, dim=-1),
                torch.isfinite(out).sum(dim=-1, dtype=torch.float32),
                torch.linalg.vecdot(out, previous),
                previous_sq,
            ],
            dim=-1,
        )
        blocks.append(moments.flatten(1))
        state.out.copy_(out)
        state.sq.copy_(sq)
    if layout.attention:
        assert heads is not None and inv_valid is not None and inv_rest is not None
        blocks.append(aggregate_heads(heads, inv_valid, inv_rest).transpose(0, 1).flatten(1))
    if layout.moe:
        assert router is not None and state.counts is not None
        probs = torch.softmax(router.float(), dim=-1)
        experts = probs.shape[-1]
        log_e = math.log(experts) if experts > 1 else 1.0
        entropy = torch.special.entr(probs).sum(dim=-1) / log_e
        picks = probs.topk(min(state.extra.get("top_k", 2), experts), dim=-1).indices
        counts = state.counts.scatter_add(-1, picks, torch.ones_like(picks, dtype=state.counts.dtype))
        share = counts / counts.sum(dim=-1, keepdim=True)
        balance = torch.special.entr(share).sum(dim=-1) / log_e
        state.counts.copy_(counts)
        blocks.append(torch.stack([entropy, balance], dim=-1).transpose(0, 1).flatten(1))
    return torch.cat(blocks, dim=-1)


def reduce_chunks(
    layout: StepLayout, state: StepState, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Logit-only chunks of steps in order, each ([steps, rows, vocab] logits, [steps, rows] tokens) reduced at
    once by :func:`reduce_step`: [all steps, rows, width]."""
    return torch.cat([reduce_step(layout, state, StepInputs(scores=s, token=t)) for s, t in chunks])


def head_values(probs: torch.Tensor, weights: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
    """Per head [.., rows, heads, 7]: sum p ln p, max weight, prompt mass, sink mass, non-sink mass, non-sink
    sum p ln p, and the weight on the previous token.

    ``weights`` [rows, keys, 3] (:func:`_attention.key_weights`). The non-sink sums are taken over the keys, in
    float32 whatever the probabilities' dtype, so a head almost entirely on the sink keeps an exact remainder.
    The previous token is the key before the query's own: the last but one key of a decoding step's row, or
    where ``previous`` [rows, keys] (one-hot; a scored continuation's rows) puts it.
    """
    probs = probs.float()
    p_log_p = torch.special.xlogy(probs, probs)
    if previous is not None:
        prev = torch.matmul(probs, previous[..., None])
    elif probs.shape[-1] > 1:
        prev = probs[..., -2:-1]
    else:  # a query with only itself to look at has no previous token
        prev = torch.full_like(probs[..., :1], float("nan"))
    return torch.cat(
        [
            p_log_p.sum(dim=-1, keepdim=True),
            probs.amax(dim=-1, keepdim=True),
            torch.matmul(probs, weights),  # prompt, sink, non-sink mass
            torch.matmul(p_log_p, weights[..., 2:]),
            prev,
        ],
        dim=-1,
    )


def aggregate_heads(heads: torch.Tensor, inv_valid: torch.Tensor, inv_rest: torch.Tensor) -> torch.Tensor:
    """[.., rows, heads, 7] head values -> [.., rows, 7] per-layer statistics (see ``_attention``).

    Collapsed: the entropy of the renormalised non-sink attention, -sum(p ln p)/m + ln m over the non-sink keys
    with mass m, below :data:`COLLAPSE_THRESHOLD` of its maximum; a head with m = 0 (all on the sink) is not.
    """
    sum_p_log_p, max_weight, prompt, sink, rest, rest_p_log_p, previous = heads.unbind(dim=-1)
    norm_entropy = sum_p_log_p * -inv_valid[:, None]
    mass = rest.clamp_min(torch.finfo(rest.dtype).tiny)
    rest_entropy = -rest_p_log_p / mass + torch.log(mass)
    collapsed = ((rest > 0) & (rest_entropy * inv_rest[:, None] < COLLAPSE_THRESHOLD)).float()
    collapsed = torch.where(torch.isnan(inv_rest)[:, None], float("nan"), collapsed)  # too few keys to judge
    per_head = torch.stack([norm_entropy, max_weight, sink, prompt, collapsed], dim=-1).mean(dim=-2)
    # A query that is the first real token (one valid key: 1/ln 1 clamps to 1e6) has no previous token.
    previous = torch.where(inv_valid > _ONE_VALID_KEY, float("nan"), previous.amax(dim=-1))
    return torch.cat(
        [per_head[..., :1], norm_entropy.amin(dim=-1, keepdim=True), per_head[..., 1:], previous[..., None]], dim=-1
    )


class GraphedReduce:
    """:func:`reduce_step` captured as a CUDA graph over static input buffers.

    Built at the first decoding step from that step's real inputs: a warm-up
    run on cloned state (lazy library initialisation must not happen during
    capture), then the capture on a side stream, then a replay for the step
    itself. Raises if capture is impossible; the caller falls back to eager.
    """

    def __init__(self, layout: StepLayout, state: StepState, inputs: StepInputs, aside: bool = False) -> None:
        device = next(t for t in inputs.tensors().values() if t is not None).device
        self.layout = layout
        self.inputs = StepInputs(
            **{name: (t.clone() if t is not None else None) for name, t in inputs.tensors().items()}
        )
        self.state = state
        warm = StepState(
            logp=state.logp.clone() if state.logp is not None else None,
            out=state.out.clone() if state.out is not None else None,
            sq=state.sq.clone() if state.sq is not None else None,
            counts=state.counts.clone() if state.counts is not None else None,
            extra=dict(state.extra),
        )
        self._fed = [(name, t) for name, t in self.inputs.tensors().items() if t is not None]  # copied per step
        self.graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream(device)
        current = torch.cuda.current_stream(device)
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            reduce_step(layout, warm, self.inputs)
            self.graph.capture_begin()
            try:
                self.output = reduce_step(layout, state, self.inputs)
            finally:
                self.graph.capture_end()
        current.wait_stream(stream)
        # Aside: replays run on the capture stream, off the stream generate waits on (see __call__).
        self.device = device
        self._main = current
        self._aside = stream if aside else None
        self._fed_ready = torch.cuda.Event()
        self._done = torch.cuda.Event()
        self._put_away = torch.cuda.Event()  # where the last generation's stream was when it ended (put_away)
        self._replayed = False

    def adopt(self, state: StepState) -> None:
        """Serve another generation (a graph kept between generations, ``_graph_pool``): its carried ``state`` so
        far is copied into the graph's own, which ``state`` names from now on; replays follow the caller's stream,
        which first waits (on the device) for the last generation to be done with the graph (:meth:`put_away`)."""
        self._main = torch.cuda.current_stream(self.device)
        self._main.wait_event(self._put_away)
        for name in ("logp", "out", "sq", "counts"):
            mine, theirs = getattr(self.state, name), getattr(state, name)
            if mine is not None and theirs is not None:
                mine.copy_(theirs)
                setattr(state, name, mine)
        self._replayed = False

    def __call__(self, inputs: StepInputs) -> torch.Tensor:
        """Copy this step's inputs into the static ones, replay, and return a copy of the output.

        The copies always run on the caller's stream, in order with what produced the inputs and before any later
        in-place change to them (``generate``'s own processors edit the scores in place). Aside, the replay and
        the output copy then run on the side stream: ``generate`` synchronises its stream every step, and a
        compiled decode is launch-bound, so the reduce's device time would otherwise be waited for every step.
        The next step's copies wait (on the device, not the host) for the last replay to have read the inputs.
        """
        aside = self._aside
        if aside is not None and self._replayed:
            self._main.wait_event(self._done)
        for name, static in self._fed:
            value = getattr(inputs, name)
            if value is not None and value is not static:
                static.copy_(value)
        if aside is None:
            self.graph.replay()
            return self.output.clone()
        self._fed_ready.record(self._main)
        aside.wait_event(self._fed_ready)
        torch.cuda.set_stream(aside)
        try:
            self.graph.replay()
            out = self.output.clone()
            self._done.record(aside)
        finally:
            torch.cuda.set_stream(self._main)
        self._replayed = True
        return out

    def join(self) -> None:
        """Make the caller's stream wait for the last replay (before anything reads the outputs or the state)."""
        if self._aside is not None and self._replayed:
            self._main.wait_event(self._done)

    def put_away(self) -> None:
        """The generation is over (its last reads of the outputs are queued): mark where its stream got, so that
        the next generation to adopt the graph starts from there, on whatever stream, without a host wait."""
        self.join()
        self._put_away.record(self._main)

    def settle(self) -> None:
        """Wait on the host until the last generation is done with the graph (before the graph is dropped)."""
        self._done.synchronize()
        self._put_away.synchronize()


def default_k(beams: int = 1) -> int:
    """Top-k kept per row: enough candidates to find every beam's chosen token among them."""
    return max(TOP_K, 2 * beams) if beams > 1 else TOP_K
