"""Span and trace ids that do not depend on Python's ``random`` module.

The SDK's default generator draws ids from ``random``, which applications
seed: vLLM seeds it with 0 in every engine process, so each server restart
would hand out the same trace and span ids. The providers ``configure()``
builds draw theirs from the operating system instead.
"""

from __future__ import annotations

import os

from opentelemetry.sdk.trace.id_generator import IdGenerator


def _nonzero(size: int) -> int:
    while True:  # zero is the invalid id
        value = int.from_bytes(os.urandom(size), "big")
        if value:
            return value


class SystemRandomIds(IdGenerator):
    """Ids from ``os.urandom``: unique whatever the application does with ``random.seed``."""

    def generate_span_id(self) -> int:
        """A 64-bit span id."""
        return _nonzero(8)

    def generate_trace_id(self) -> int:
        """A 128-bit trace id."""
        return _nonzero(16)
