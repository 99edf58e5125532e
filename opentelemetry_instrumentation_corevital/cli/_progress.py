"""A progress indicator on stderr that never touches the generation itself.

On a terminal it is a spinner with elapsed seconds, redrawn by a background
thread; elsewhere (CI logs, pipes) one line when a phase starts and one when
it ends. It reads nothing from the model, so it adds no device work.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


@contextmanager
def progress(label: str, stream: IO[str] | None = None, enabled: bool = True) -> Iterator[None]:
    """Show ``label`` with elapsed seconds on ``stream`` while the block runs (a spinner on a terminal)."""
    stream = stream or sys.stderr
    if not enabled:
        yield
        return
    start = time.perf_counter()
    tty = hasattr(stream, "isatty") and stream.isatty()
    stop = threading.Event()
    thread = None
    if tty:

        def spin() -> None:
            i = 0
            while not stop.wait(0.1):
                stream.write(f"\r{FRAMES[i % len(FRAMES)]} {label} {time.perf_counter() - start:5.1f}s")
                stream.flush()
                i += 1

        thread = threading.Thread(target=spin, name="corevital-progress", daemon=True)
        thread.start()
    else:
        stream.write(f"{label} ...\n")
        stream.flush()
    ok = False
    try:
        yield
        ok = True
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        elapsed = time.perf_counter() - start
        mark = "✓" if ok else "✗"
        stream.write(
            f"\r{mark} {label} {elapsed:5.1f}s\n"
            if tty
            else f"{label} {'done' if ok else 'failed'} in {elapsed:.1f}s\n"
        )
        stream.flush()
