"""Per-layer values of a report, read the same way whatever carries them.

Schema 1.1 (deep capture, see docs/report-format.md) adds ``sequences[i].layers``
with ``indices`` (decoder layer numbers) and matrices such as ``hidden_norm``
laid out ``[layer][step]``. Reports of schema 1.0 have no ``layers``; then
there is nothing to read, and per-layer metrics stay empty rather than wrong.
"""

from __future__ import annotations

import math
from typing import Any, Iterator


def _field(container: Any, name: str) -> Any:
    if container is None:
        return None
    if isinstance(container, dict):
        return container.get(name)
    return getattr(container, name, None)


def layer_values(sequence: Any, matrix: str = "hidden_norm") -> Iterator[tuple[int, float]]:
    """(layer index, value) for every finite value of ``layers.<matrix>`` of one sequence."""
    layers = _field(sequence, "layers")
    indices = _field(layers, "indices")
    rows = _field(layers, matrix)
    if not indices or not rows:
        return
    for layer, row in zip(indices, rows):
        for value in row or ():
            if value is not None and math.isfinite(value):
                yield int(layer), float(value)
