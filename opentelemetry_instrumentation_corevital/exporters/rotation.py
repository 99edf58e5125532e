"""Size-based rotation for the OTLP JSON lines files.

Before a line would take ``traces.jsonl`` past ``max_bytes``, the file is
renamed ``traces-<UTC time>-<serial>.jsonl`` (close to the naming the
Collector's file exporter uses for its backups) and a new one is started; only the newest
``backups`` old files are kept. Lines are never split across files, so every
file stays valid JSON Lines that the Collector's ``otlpjsonfile`` receiver
reads. A single line larger than ``max_bytes`` gets a file of its own.
Rotation assumes one writing process per file (the CLI, or one app).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ._private import open_append


@dataclass(frozen=True)
class Rotation:
    """When a file rotates (``max_bytes``) and how many old files stay (``backups``)."""

    max_bytes: int  # 0: never rotate
    backups: int = 5  # old files to keep; 0 keeps none


def backup_files(path: Path) -> list[Path]:
    """Rotated files of ``path``, oldest first."""
    pattern = f"{path.stem}-*{path.suffix}"
    return sorted(p for p in path.parent.glob(pattern) if p != path)


def _backup_name(path: Path) -> Path:
    """``<stem>-<UTC time with milliseconds>-<serial><suffix>``: names sort in the order files were rotated."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}"
    serial = 0
    while True:
        candidate = path.with_name(f"{path.stem}-{stamp}-{serial:03d}{path.suffix}")
        if not candidate.exists():
            return candidate
        serial += 1


def append_line(path: Path, line: str, rotation: Rotation | None) -> None:
    """Append ``line`` (ending in a newline) to ``path`` (created owner-only), rotating first when it would not fit."""
    data = line.encode("utf-8")
    if rotation is not None and rotation.max_bytes > 0:
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            size = 0
        if size > 0 and size + len(data) > rotation.max_bytes:
            os.replace(path, _backup_name(path))
            old = backup_files(path)
            for stale in old[: max(0, len(old) - rotation.backups)]:
                stale.unlink(missing_ok=True)
    with open_append(path) as handle:
        handle.write(data)
