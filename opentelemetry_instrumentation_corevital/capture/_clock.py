"""Per-step timestamps that never synchronise the device.

On CUDA each step's end is an event recorded on the stream (no wait); the
elapsed times are read once, after the generation's final transfer has
synchronised. On the CPU the host clock is exact, because the work is
synchronous.
"""

from __future__ import annotations

import time

import torch


class StepClock:
    def __init__(self, device: torch.device | None) -> None:
        self._start_wall = time.perf_counter()
        self._stream = None
        self._start_event = None
        self._events: list = []
        self._marks: list[float] = []
        if device is not None and device.type == "cuda" and torch.cuda.is_available():
            self._stream = torch.cuda.current_stream(device)
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record(self._stream)

    @property
    def on_device(self) -> bool:
        return self._start_event is not None

    def mark(self) -> None:
        if self._start_event is not None:
            event = torch.cuda.Event(enable_timing=True)
            event.record(self._stream)
            self._events.append(event)
        else:
            self._marks.append(time.perf_counter())

    def step_ends(self) -> list[float]:
        """Seconds from the generation's start to the end of each step.

        On CUDA, call only once the device has caught up (after the final
        transfer); reading an event before that would block.
        """
        if self._start_event is None:
            return [m - self._start_wall for m in self._marks]
        return [self._start_event.elapsed_time(e) / 1000.0 for e in self._events]
