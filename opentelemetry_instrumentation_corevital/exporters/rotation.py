"""Size-based rotation for the OTLP JSON lines files.

Before a line would take ``traces.jsonl`` past ``max_bytes``, the file is
renamed ``traces-<UTC time>-<serial>.jsonl`` (close to the naming the
Collector's file exporter uses for its backups) and a new one is started; only the newest
``backups`` old files are kept. Lines are never split across files, so every
file stays valid JSON Lines that the Collector's ``otlpjsonfile`` receiver
reads. A single line larger than ``max_bytes`` gets a file of its own.
Rotation assumes one writing process per file (the CLI, or one app).

Only regular files are written: a symlink planted at ``traces.jsonl`` (or a
FIFO, a device) is refused with :class:`UnsafeTarget`, never followed or
waited on, so a write cannot land outside the folder or block.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from ._private import PRIVATE_MODE


@dataclass(frozen=True)
class Rotation:
    """When a file rotates (``max_bytes``) and how many old files stay (``backups``)."""

    max_bytes: int  # 0: never rotate
    backups: int = 5  # old files to keep; 0 keeps none


class UnsafeTarget(OSError):
    """The path to write is not a regular file (a symlink, a FIFO, a device): refused."""


_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _refuse(path: Path, what: str) -> UnsafeTarget:
    return UnsafeTarget(errno.ELOOP, f"refusing to write through {what}", str(path))


def _regular_size(path: Path) -> int:
    """The size of ``path`` (0 when missing); refuses anything but a regular file, without following links."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(path, "a symlink")
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(path, "a file that is not a regular file")
    return info.st_size


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
        if not os.path.lexists(candidate):
            return candidate
        serial += 1


def append_line(path: Path, line: str, rotation: Rotation | None) -> None:
    """Append ``line`` (ending in a newline) to ``path`` (created owner-only), rotating first when it would not fit."""
    data = line.encode("utf-8")
    size = _regular_size(path)
    if rotation is not None and rotation.max_bytes > 0:
        if size > 0 and size + len(data) > rotation.max_bytes:
            os.replace(path, _backup_name(path))
            old = backup_files(path)
            for stale in old[: max(0, len(old) - rotation.backups)]:
                stale.unlink(missing_ok=True)
    try:  # no symlink followed, no FIFO waited on (O_NONBLOCK), even if one is planted after the check above
        fd = os.open(path, _APPEND, PRIVATE_MODE)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise _refuse(path, "a symlink or a FIFO") from exc
        raise
    with open(fd, "ab") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise _refuse(path, "a file that is not a regular file")
        handle.write(data)
