"""Answer uncertainty: a label-free score of how likely the answer is wrong (RAUQ, arXiv 2505.20045).

Distinct from the risk score, which says whether the *generation* went wrong
(loops, numerical faults, degenerate sampling): a fluent, well-formed answer
can be confidently wrong, and this score is the one meant to rank that.

RAUQ's observation: some attention heads put much of their weight on the
previous token, and put less there when the model produces a wrong token.
Per layer it carries a recurrent confidence along the answer,

    c_0 = p_0,    c_j = alpha * p_j + (1 - alpha) * a_j * c_{j-1},

where ``p_j`` is the probability of the emitted token ``j`` and ``a_j`` the
previous-token attention weight seen at step ``j`` (the capture's
``attn_prev_token``: the largest weight any head of the layer puts on the
token before the query). A layer's uncertainty is ``-mean(ln c_j)``; the
answer's is the largest over the middle third of the layers, where the paper
found these heads. The score reported is ``1 - exp(-u)``: one minus the
geometric mean of the recurrent confidences, in [0, 1).

Differences from the paper, kept deliberately: the head is the one with the
largest previous-token weight at each step rather than the one with the
largest mean over the whole answer (a streaming capture cannot wait for the
whole answer to choose, and the per-step maximum ranked as well on the
benchmark), and step ``j``'s attention is the query of token ``j - 1``, the
forward that produced token ``j`` (the last token's own forward never runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: The paper's weight of the token's own probability against the attention-carried confidence.
ALPHA = 0.2
_FLOOR = 1e-30


@dataclass(frozen=True)
class Uncertainty:
    """A sequence's answer uncertainty and where it came from."""

    score: float  # 1 - exp(-value), in [0, 1)
    value: float  # the largest per-layer mean of -ln c (nats)
    layer: int  # the layer index that gave it
    tokens: int  # answer tokens it covers


def middle_third(count: int) -> range:
    """Positions of the middle third of ``count`` layers (the paper's ``n // 3 .. ceil(2n / 3)``)."""
    return range(count // 3, min(count, math.ceil(count * 2 / 3) + 1))


def recurrent_confidence(
    probabilities: Sequence[float], attention: Sequence[float], alpha: float = ALPHA
) -> list[float]:
    """The confidences ``c_j`` of one layer (``attention[0]`` is not used: the first token has no predecessor)."""
    out: list[float] = []
    for j, p in enumerate(probabilities):
        out.append(p if j == 0 else alpha * p + (1.0 - alpha) * attention[j] * out[-1])
    return out


def layer_uncertainty(probabilities: Sequence[float], attention: Sequence[float], alpha: float = ALPHA) -> float:
    """``-mean(ln c_j)`` of one layer."""
    conf = recurrent_confidence(probabilities, attention, alpha)
    return -sum(math.log(max(c, _FLOOR)) for c in conf) / len(conf)


def answer_uncertainty(
    surprisal_bits: Sequence[float | None],
    prev_token: Sequence[Sequence[float | None]],
    layer_indices: Sequence[int],
    alpha: float = ALPHA,
) -> Uncertainty | None:
    """RAUQ over the answer's tokens; None without a complete series (a missing probability or weight).

    ``surprisal_bits[j]`` is token ``j``'s surprisal; ``prev_token[l][j]`` layer ``l``'s previous-token weight at
    step ``j`` (same steps); ``layer_indices`` names the rows of ``prev_token``.
    """
    n = len(surprisal_bits)
    if n == 0 or not prev_token or any(s is None or not math.isfinite(s) for s in surprisal_bits):
        return None
    probabilities = [2.0 ** -float(s) for s in surprisal_bits]  # type: ignore[arg-type]
    best: tuple[float, int] | None = None
    for position in middle_third(len(prev_token)):
        row = prev_token[position]
        if len(row) < n or any(v is None or not math.isfinite(v) for v in row[1:n]):
            continue
        value = layer_uncertainty(probabilities, [0.0 if v is None else float(v) for v in row[:n]], alpha)
        if best is None or value > best[0]:
            best = (value, layer_indices[position])
    if best is None:
        return None
    return Uncertainty(score=1.0 - math.exp(-best[0]), value=best[0], layer=best[1], tokens=n)
