"""Captured reduce graphs kept between generations, so a generation replays one instead of capturing its own.

Capturing the step reduce as a CUDA graph (a warm-up run, the capture into a
private memory pool, the instantiation) costs milliseconds: as much, on a
compiled decode of a hundred tokens, as all the steps' replays together. A
graph depends only on the shapes it was captured for, so generations of the
same shapes on the same device take one from here and give it back when they
end. A graph serves one generation at a time (it owns its static inputs and
carried state): a concurrent generation of the same shapes captures its own.
The pool is small and bounded; ``clear`` drops it (``uninstrument``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import torch

from ._reduce import GraphedReduce, StepInputs, StepLayout, StepState

#: Graphs kept at most (least recently given back dropped first): a few batch sizes of one or two models
#: (a logit-only batch graph holds at most ``_logit_batch.BUDGET`` bytes).
LIMIT = 4

_kept: OrderedDict[Hashable, list[GraphedReduce]] = OrderedDict()
_lock = threading.Lock()


def _shapes(tensors: dict[str, torch.Tensor | None]) -> tuple:
    return tuple((name, tuple(t.shape), t.dtype) for name, t in tensors.items() if t is not None)


def key_of(layout: StepLayout, state: StepState, inputs: StepInputs, aside: bool) -> Hashable:
    """What a captured graph depends on: the layout, the device, every input's and carried tensor's shape and
    dtype, the state's constants and whether it replays aside."""
    reference = next(t for t in inputs.tensors().values() if t is not None)
    carried = {"logp": state.logp, "out": state.out, "sq": state.sq, "counts": state.counts}
    return (
        layout,
        reference.device,
        _shapes(inputs.tensors()),
        _shapes(carried),
        tuple(sorted(state.extra.items())),
        aside,
    )


def take(key: Hashable) -> GraphedReduce | None:
    """A kept graph of ``key``, now this caller's alone, or None."""
    with _lock:
        graphs = _kept.get(key)
        if not graphs:
            return None
        graph = graphs.pop()
        if not graphs:
            del _kept[key]
        return graph


def give(key: Hashable, graph: GraphedReduce) -> None:
    """Keep ``graph`` for the next generation of ``key`` (the oldest kept graph goes past the limit)."""
    with _lock:
        _kept.setdefault(key, []).append(graph)
        _kept.move_to_end(key)
        while sum(len(g) for g in _kept.values()) > LIMIT:
            oldest = next(iter(_kept))
            _drop(_kept[oldest].pop(0))
            if not _kept[oldest]:
                del _kept[oldest]


def clear() -> None:
    """Drop every kept graph (their memory returns to torch's allocator)."""
    with _lock:
        for graphs in _kept.values():
            for graph in graphs:
                _drop(graph)
        _kept.clear()


def _drop(graph: GraphedReduce) -> None:
    """A graph leaves the pool: its last replay and its last generation's reads must be over before its memory
    returns to the allocator (a generation gives its graph back without waiting for them)."""
    try:
        graph.settle()
    except Exception:  # a failed device: nothing to wait for any more
        pass


def kept() -> int:
    """How many graphs are kept now."""
    with _lock:
        return sum(len(g) for g in _kept.values())
