"""``stop_on`` inside vLLM: the conditions of ``transformers`` generation, and a stop vLLM itself carries out.

vLLM cannot be told to end a request from a logits processor, but it ends
every request that samples its end-of-sequence token. So a row whose
condition holds gets logits that allow only that token (greedy or sampled, it
is then chosen), and vLLM finishes the request as it would any other.

* ``repetition_loop`` is decided on the host from vLLM's own output list (the
  exact tail part of the ``transformers`` rule: a period of 1..32 tokens
  repeated for 3 periods and 12 tokens, or ``stop_loop_repeat``; the n-gram
  near-loop part is not applied here): the tokens are already there, nothing
  is read from the device. The tail holds at the token before
  this step's, which is the sequence's last token.
* ``nan_or_inf`` and ``high_entropy`` are decided on the device from the step's
  own statistics (the run of high-entropy steps is carried like the previous
  step's log-probabilities); the stop code of each row goes to the host with
  the step's values. This step's token is the forced end-of-sequence token.

A request without an end-of-sequence token (``ignore_eos`` and no stop token)
cannot be stopped; its report says so.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._config import STOP_CONDITIONS
from ._intervene import loop_length

#: Stop codes in a step's values: 0 none, then the conditions in their declared order.
CODES = {name: i + 1 for i, name in enumerate(STOP_CONDITIONS)}
NAMES = {code: name for name, code in CODES.items()}
NO_EOS = "stop_on: the request has no end-of-sequence token to end it with (ignore_eos), so it was not stopped"
_MAX_PERIOD = 32


def conditions(marker: dict[str, Any]) -> tuple[str, ...]:
    """The ``stop_on`` conditions a request's marker asks for."""
    asked = marker.get("stop_on") or ()
    return tuple(c for c in asked if c in CODES)


def end_token(params: Any) -> int | None:
    """The token that ends the request: its end-of-sequence token, else its first stop token."""
    eos = getattr(params, "eos_token_id", None)
    if eos is not None:
        return int(eos)
    stops = list(getattr(params, "stop_token_ids", None) or ())
    return int(stops[0]) if stops else None


def tail_loops(tokens: list[int], min_repeat: int | None) -> bool:
    """Whether the tail of ``tokens`` repeats with a period of 1..32 long enough to stop (the host rule)."""
    n = len(tokens)
    for period in range(1, min(_MAX_PERIOD, n - 1) + 1):
        if tokens[-1] != tokens[-1 - period]:
            continue
        need = loop_length(period, 3, 12, min_repeat)
        if need <= n and all(tokens[-1 - i] == tokens[-1 - i - period] for i in range(need - period)):
            return True
    return False


def device_codes(
    flat: torch.Tensor, run: torch.Tensor, wants: list[tuple[bool, bool]], entropy_nats: list[float], needed: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(stop code per row, the new run of high-entropy steps) from a step's flat values, on the device.

    ``flat[:, 0]`` is ``sum p ln p`` and ``flat[:, 1]`` the top log-probability (NaN for a non-finite
    distribution); ``wants`` says per row whether ``nan_or_inf`` and ``high_entropy`` are asked for.
    """
    device = flat.device
    nan_wanted = torch.tensor([w[0] for w in wants], device=device)
    high_wanted = torch.tensor([w[1] for w in wants], device=device)
    threshold = torch.tensor(entropy_nats, device=device)
    high = (-flat[:, 0]) > threshold
    run = (run + 1) * high
    codes = torch.zeros(flat.shape[0], dtype=torch.long, device=device)
    codes = torch.where(high_wanted & (run >= torch.tensor(needed, device=device)), CODES["high_entropy"], codes)
    codes = torch.where(nan_wanted & torch.isnan(flat[:, 1]), CODES["nan_or_inf"], codes)
    return codes, run


def force_end(logits: torch.Tensor, rows: torch.Tensor, stop: torch.Tensor, ends: torch.Tensor) -> None:
    """Let row ``rows[i]`` of ``logits`` sample only ``ends[i]`` where ``stop[i]``; in place, on the device."""
    picked = logits.index_select(0, rows)
    only = torch.full_like(picked, -math.inf)
    only.scatter_(1, ends.view(-1, 1), 0.0)
    logits.index_copy_(0, rows, torch.where(stop.view(-1, 1), only, picked))
