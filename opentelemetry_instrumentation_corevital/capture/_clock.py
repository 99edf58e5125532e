"""Per-step timestamps that never synchronise the device.

On CUDA each step's end is an event recorded on the stream (no wait); the
elapsed times are read once, after the generation's final transfer has
synchronised. Events are recycled through a process-wide pool, so a
generation creates none once the pool is warm. On the CPU the host clock is
exact, because the work is synchronous.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

_POOL_LIMIT = 8192
_pool: dict[int, list] = defaultdict(list)
_pool_lock = threading.Lock()


#: Events a clock takes from the pool at a time (one lock for that many steps).
_BLOCK = 32


def _take(device_index: int, count: int = 1) -> list:
    with _pool_lock:
        free = _pool[device_index]
        taken = free[-count:] if free else []
        del free[len(free) - len(taken) :]
    return taken + [torch.cuda.Event(enable_timing=True) for _ in range(count - len(taken))]


# ``torch.cuda.Event.record`` looks up the current stream when given none; ours is known, so the C method is called
# directly (a Python frame less each step).
_record = getattr(getattr(torch._C, "_CudaEventBase", None), "record", None) or torch.cuda.Event.record


def _give(device_index: int, events: list) -> None:
    with _pool_lock:
        free = _pool[device_index]
        free.extend(events[: max(0, _POOL_LIMIT - len(free))])


class StepClock:
    """One generation's step ends: CUDA events on the stream, or the host clock on the CPU."""

    def __init__(self, device: torch.device | None) -> None:
        self._start_wall = time.perf_counter()
        self._stream: Any = None  # a torch.cuda.Stream on CUDA
        self._start_event = None
        self._events: list = []
        self._spare: list = []  # taken from the pool, not recorded yet
        self._marks: list[float] = []
        self._index = 0
        if device is not None and device.type == "cuda" and torch.cuda.is_available():
            self._index = device.index if device.index is not None else torch.cuda.current_device()
            self._stream = torch.cuda.current_stream(device)
            self._start_event = _take(self._index)[0]
            self._start_event.record(self._stream)

    def mark(self) -> None:
        """Mark the end of the step now queued, without waiting for the device."""
        if self._start_event is not None:
            spare = self._spare
            if not spare:
                spare += _take(self._index, _BLOCK)
            event = spare.pop()
            _record(event, self._stream)
            self._events.append(event)
        else:
            self._marks.append(time.perf_counter())

    def ends_later(self, steps: int) -> Callable[[], list[float]]:
        """What reads the seconds from the generation's start to the end of each of the first ``steps`` steps.

        On CUDA it reads the events once the device got past them (after the read-back's copy it does not wait);
        the events go with it and back to the pool when it is read, so that :meth:`release` does not recycle them.
        """
        if self._start_event is None:
            ends = [m - self._start_wall for m in self._marks[:steps]]
            return lambda: ends
        start, events, index = self._start_event, self._events, self._index
        self._start_event, self._events = None, []
        self.release()  # the spare events

        def read() -> list[float]:
            try:
                if events:
                    events[-1].synchronize()  # passed already when the read-back's copy landed; else waits here
                return [start.elapsed_time(e) / 1000.0 for e in events[:steps]]
            finally:
                _give(index, [start, *events])

        return read

    def release(self) -> None:
        """Return the events to the pool (also after a failed generation, unread)."""
        events = [*([self._start_event] if self._start_event is not None else []), *self._events, *self._spare]
        self._events, self._spare, self._start_event = [], [], None
        if events:
            _give(self._index, events)
