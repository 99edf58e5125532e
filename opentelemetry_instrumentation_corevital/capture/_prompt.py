"""Prompt telemetry from the prefill pass: how surprising each prompt token was to the model.

``generate`` computes logits only for the last prompt position. We take the
base model's final (normalised) hidden states, which the prefill computed
anyway, and apply the output head a few positions at a time, so memory stays
bounded by ``chunk x vocab`` floats however long the prompt is.
"""

from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)
#: Largest float32 logits block materialised at once, in elements (4 MiB).
CHUNK_ELEMENTS = 1 << 20


def prompt_surprisal(hidden: torch.Tensor, ids: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    """Surprisal in bits of prompt token i+1 given tokens 0..i: [rows, prompt] -> [rows, prompt - 1].

    ``hidden`` [rows, prompt, dim] are the final-normed hidden states and
    ``head`` the model's output embedding (``get_output_embeddings()``).
    """
    rows, length = ids.shape
    out = torch.empty(rows, max(length - 1, 0), dtype=torch.float32, device=hidden.device)
    vocab = int(getattr(head, "out_features", 0) or head.get_parameter("weight").shape[0])
    chunk = max(1, CHUNK_ELEMENTS // max(1, rows * vocab))
    for start in range(0, length - 1, chunk):
        stop = min(start + chunk, length - 1)
        logp = torch.log_softmax(head(hidden[:, start:stop]).float(), dim=-1)
        out[:, start:stop] = logp.gather(-1, ids[:, start + 1 : stop + 1, None]).squeeze(-1)
    return out.mul_(-1.0 / LN2)
