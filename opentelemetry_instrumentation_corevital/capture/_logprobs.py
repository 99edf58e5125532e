"""The capture source of an OpenAI-compatible client: CoreVital's logit signals from returned log-probabilities.

The server's model runs elsewhere, so nothing is tapped: the client hands each
generated token's log-probability and its top-k alternatives to the source as
the response (or stream) brings them, and :meth:`LogprobsSource.finish` turns
them into the :class:`CaptureResult` series on the host. Surprisal is exact;
entropy, top-1, margin and top-k mass come from the top-k
(:func:`signals.logits.truncated_stats`: the entropy is a lower bound, the
hidden mass per step is ``1 - topk_mass``); a response without alternatives
(chat ``logprobs=True`` alone) gives surprisal only. Token strings get ids of this call
only (the same string, the same id), so repetition is detected on them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

from ..report import CaptureResult
from ..signals.logits import LN2, truncated_stats
from ._stats import SERIES, STAT_COLUMNS

#: Why a client capture has no layer signals.
NO_LAYERS = "an OpenAI-compatible server returns no layer outputs or attention to its clients"
NO_LOGPROBS = (
    "the response carried no top log-probabilities: request them (chat: logprobs=True, top_logprobs=k; completions: "
    "logprobs=k) or turn on the request_logprobs option"
)
NO_TOP_LOGPROBS = (
    "the response carried each token's log-probability but no top alternatives: surprisal is exact; entropy, "
    "top-1, margin and top-k mass need them (chat: top_logprobs=k; completions: logprobs=k)"
)


def truncation_note(k: int) -> str:
    """What the report says about signals computed from the top-k alone."""
    return (
        f"the server returned the top {k} log-probabilities per token, not the full distribution: surprisal and "
        "top-1 are exact; entropy is a lower bound H_k + (1 - topk_mass) * -log2 p_k; the probability mass "
        "outside the top-k is 1 - topk_mass at each step"
    )


class LogprobsSource:
    """One client request's capture: tokens and their log-probabilities, per returned choice."""

    attached = True  # every generated token comes with the response
    generation_mode: str | None = None
    generation_config = None

    def __init__(self, streaming: bool = False) -> None:
        self.streaming = streaming  # tokens arrive one by one: their arrival times are the step ends
        self.started = time.perf_counter()
        self.rows: dict[int, list[tuple[str, float | None, list[float]]]] = {}
        self.step_ends: list[float] = []
        self.missing = False  # a token came without log-probabilities
        self.top_k = 0

    def start(self) -> None:
        """Nothing to tap: the clock starts."""
        self.started = time.perf_counter()

    def stop(self) -> None:
        """Nothing to untap."""

    def choice(self, row: int) -> None:
        """Choice ``row`` exists, whether or not its tokens come with log-probabilities."""
        self.rows.setdefault(row, [])

    def add(self, row: int, token: str, logprob: float | None, top: Sequence[float]) -> None:
        """One generated token of choice ``row``: its log-probability and its top-k alternatives' (natural log)."""
        tokens = self.rows.setdefault(row, [])
        if row == 0 and self.streaming:
            self.step_ends.append(time.perf_counter() - self.started)
        if logprob is None:
            self.missing = True
        self.top_k = max(self.top_k, len(top))
        tokens.append((token, logprob, list(top)))

    def finish(self, sequences: torch.Tensor | None = None, num_return_sequences: int = 1) -> CaptureResult:
        """The series of every choice, computed on the host; ``unavailable`` says what is missing and why."""
        vocab: dict[str, int] = {}
        rows = [self.rows[i] for i in sorted(self.rows)]
        ids = [[vocab.setdefault(token, len(vocab)) for token, _, _ in row] for row in rows]
        signals = any(rows) and not self.missing
        unavailable = {"hidden": NO_LAYERS, "attention": NO_LAYERS, "prompt": NO_LAYERS}
        if signals and self.top_k:
            unavailable["full_distribution"] = truncation_note(self.top_k)
        elif signals:
            unavailable["top_logprobs"] = NO_TOP_LOGPROBS
        else:
            unavailable["logits"] = NO_LOGPROBS
        return CaptureResult(
            signals=signals,
            unavailable=unavailable,
            prefix_len=0,
            steps=max((len(row) for row in rows), default=0),
            rows=len(rows),
            series=[_series(row) for row in rows] if signals else [],
            sequences=ids,
            step_ends=self.step_ends,
        )

    def token_strings(self) -> dict[int, str]:
        """Id -> token string for this call's ids (content capture decodes with it)."""
        vocab: dict[str, int] = {}
        for row in (self.rows[i] for i in sorted(self.rows)):
            for token, _, _ in row:
                vocab.setdefault(token, len(vocab))
        return {i: token for token, i in vocab.items()}


def _series(row: list[tuple[str, float | None, list[float]]]) -> dict[str, list[float | None]]:
    """The timeline columns of one choice: exact surprisal, top-k statistics."""
    series: dict[str, list[float | None]] = {name: [] for name in SERIES}
    for _, logprob, top in row:
        stats = truncated_stats(top)
        for name, value in zip(STAT_COLUMNS, stats):
            series[name].append(value if math.isfinite(value) else None)
        series["surprisal"].append(None if logprob is None else -logprob / LN2)
    return series
