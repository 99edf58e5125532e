"""Beam search: which row produced each token of the returned sequences, and their series from the kept rows.

Beam rows are candidates that move between steps; per step the reduce keeps
each row's statistics and its top-k candidates. ``generate``'s running record
of which row produced each token of the kept beams says, at the end, which
rows to read for each returned sequence; its tokens' surprisal is found among
the kept candidates.
"""

from __future__ import annotations

from typing import Any

import torch

from ._stats import LN2, SERIES, row_series


def returned_rows(beam_indices: torch.Tensor, num_return: int, steps: int) -> torch.Tensor:
    """[returned sequences, steps] rows (float, -1 past a sequence's end), from ``[batch, beams, steps]`` indices."""
    chosen = beam_indices[:, :num_return, :].reshape(-1, beam_indices.shape[-1])
    return chosen[:, :steps].float()


def beam_series(host: dict[str, Any], sequences: list[list[int]], prefix: int, steps: int) -> tuple[list, list]:
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
        series.append(row_series(columns))
        row_of.append(used)
    return series, row_of
