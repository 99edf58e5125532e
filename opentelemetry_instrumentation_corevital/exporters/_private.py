"""The files we create hold telemetry that may carry content (prompt and output text): readable by their owner only."""

from __future__ import annotations

import os
from typing import BinaryIO

#: Mode of every file CoreVital creates (the umask may only narrow it); an existing file keeps its own.
PRIVATE_MODE = 0o600


def open_append(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for appending bytes, created owner-only if missing."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_MODE), "ab")


def create_private(path: str | os.PathLike[str]) -> None:
    """Create ``path`` empty and owner-only unless it exists (SQLite then gives its journal files the same mode)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        pass
