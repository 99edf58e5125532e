"""The captures of the vLLM engines of this process, and the models they hook: what the instrumentation reaches.

vLLM builds the logits processor itself (from the ``vllm.logits_processors``
entry point) and loads the model elsewhere; both register here, keyed by the
engine's ``VllmConfig``, so that the processor finds its model's layers and
the instrumentation finds a finished request's capture. Only the first
tensor-parallel rank captures: after each all-reduce the residual stream is
the same on every rank, so the others would add nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

from ._vllm_batch import BatchCapture
from ._vllm_request import RequestCapture

_models: dict[int, weakref.ReferenceType[Any]] = {}  # id(VllmConfig) -> the model it loaded
_engines: weakref.WeakSet[BatchCapture] = weakref.WeakSet()
#: Where requests finished without the instrumentation asking (they left the batch in another process's engine).
_sink: list[Callable[[RequestCapture], None]] = []


def register_model(config: Any, model: Any) -> None:
    """The model an engine with ``config`` loaded (its first model: a draft model loads later)."""
    if id(config) not in _models or _models[id(config)]() is None:
        try:
            _models[id(config)] = weakref.ref(model)
        except TypeError:
            pass


def model_of(config: Any) -> Any:
    """The model registered for ``config``; the only registered one when configs differ; else None."""
    ref = _models.get(id(config))
    if ref is None and len(_models) == 1:
        ref = next(iter(_models.values()))
    return ref() if ref is not None else None


def first_rank() -> bool:
    """Whether this process is the first tensor-parallel rank (or vLLM runs without model parallelism)."""
    try:
        from vllm.distributed import get_tensor_model_parallel_rank

        return int(get_tensor_model_parallel_rank()) == 0
    except Exception:  # no parallel state set up: one process
        return True


def new_engine(config: Any, device: torch.device) -> BatchCapture | None:
    """A capture for a logits processor vLLM builds; None on ranks that add nothing."""
    if not first_rank():
        return None
    engine = BatchCapture(device, config, model=lambda: model_of(config))
    _engines.add(engine)
    return engine


def finish(key: str, output_ids: list[int] | None = None) -> RequestCapture | None:
    """The capture of request ``key`` in whichever engine of this process ran it (None: not here, or not captured)."""
    for engine in list(_engines):
        result = engine.finish(key, output_ids)
        if result is not None:
            return result
    return None


def after_step() -> None:
    """vLLM appended this step's sampled tokens: hand the requests they ended to the sink."""
    for engine in list(_engines):
        if engine.rows:
            config = getattr(engine.config, "model_config", None)
            done = engine.after_step(getattr(config, "max_model_len", None))
            for sink in _sink:
                for request in done:
                    sink(request)


def set_sink(sink: Callable[[RequestCapture], None] | None) -> None:
    """Who receives requests that left a batch without :func:`finish` (None: nobody; they are dropped)."""
    _sink.clear()
    if sink is not None:
        _sink.append(sink)


def drain(engine: BatchCapture) -> None:
    """Hand the requests that left ``engine``'s batch unfinished to the sink."""
    if not engine.removed:
        return
    done = engine.drain()
    for sink in _sink:
        for request in done:
            sink(request)
