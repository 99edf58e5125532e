"""Telemetry finished on a background thread gives the GIL back often.

A thread that waits for the GIL while another runs Python waits up to the
interpreter's switch interval (5 ms by default) before the other is asked to
let go. The emission thread (``background_emit``) builds and emits a report in
tens of milliseconds at batch 8, right after ``generate`` returns: without
pauses, the caller's first blocking call after it (a device sync, a socket
write) came back up to that interval late. So the loops over sequences call
:func:`pause`, which on a thread marked by :func:`pause_often` lets a waiting
thread take the GIL at once, and does nothing anywhere else.
"""

from __future__ import annotations

import threading
import time

_local = threading.local()


def pause_often() -> None:
    """Mark the current thread as one that finishes telemetry in the background (for its whole life)."""
    _local.pausing = True


def pause() -> None:
    """On a marked thread, let any thread waiting for the GIL take it now; elsewhere, nothing."""
    if getattr(_local, "pausing", False):
        time.sleep(0)
