"""Find OTLP JSON lines files and stream their lines without loading a file whole.

The viewer accepts what people actually have: the three files ``corevital run``
writes, a Collector ``file`` exporter's output with rotated siblings
(``traces-2026-01-01T10-00-00.000.jsonl``, ``traces.jsonl.1``) and gzip
copies. Compression is recognised by the file's first bytes, not its name.
Every line comes with its byte offset in the (decompressed) stream so a run
page can later read just that line again instead of keeping it in memory.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import messages

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: File names a folder scan picks up (rotated and compressed variants included).
_MARKERS = (".jsonl", ".json", ".ndjson")


@dataclass(frozen=True)
class Line:
    """One line of a file: where it starts (offset into the decompressed stream) and its bytes."""

    number: int  # 1-based
    offset: int
    data: bytes


def is_candidate(name: str) -> bool:
    """Whether a folder scan should read a file of this name."""
    lowered = name.lower()
    return not lowered.startswith(".") and any(m in lowered for m in _MARKERS)


def roots_of(paths: list[str]) -> tuple[Path, ...]:
    """The folders a viewer started on ``paths`` may read under: each folder, and the folder of each file."""
    resolved = [Path(p).expanduser().resolve() for p in paths]
    return tuple(dict.fromkeys(p if p.is_dir() else p.parent for p in resolved))


def _outside(path: Path, roots: tuple[Path, ...] | None) -> bool:
    """Whether ``path`` (links followed) lies outside every root; nothing is outside when there are no roots."""
    if roots is None:
        return False
    real = path.resolve()
    return not any(real == root or root in real.parents for root in roots)


def discover(paths: list[str], roots: tuple[Path, ...] | None = None) -> tuple[list[str], list[str]]:
    """Files to read, in a stable order, and the problems met finding them.

    A folder is scanned recursively for candidate names; a file named
    explicitly is read whatever its name. With ``roots``, a path or a file
    (a planted link included) that leads outside them is refused, not read.
    """
    files: list[str] = []
    problems: list[str] = []
    where = ", ".join(str(r) for r in roots or ())
    for raw in paths:
        path = Path(raw).expanduser()
        if _outside(path, roots):
            problems.append(messages.OUTSIDE.format(path=raw, root=where))
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_candidate(p.name))
            if not found:
                problems.append(messages.NO_FILES.format(path=raw))
            for p in found:
                if _outside(p, roots):
                    problems.append(messages.OUTSIDE.format(path=str(p), root=where))
                else:
                    files.append(str(p))
        elif path.is_file():
            files.append(str(path))
        else:
            problems.append(messages.NOT_FOUND.format(path=raw))
    return list(dict.fromkeys(files)), list(dict.fromkeys(problems))


def signature(files: list[str]) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of each file: changes when a file grows, so caches re-read it."""
    out = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((f, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((f, -1, -1))
    return tuple(out)


class UnreadableFile(Exception):
    """A file the viewer cannot read at all; the message is the documented one."""


def _open(path: str) -> IO[bytes]:
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise UnreadableFile(messages.UNREADABLE.format(file=path, detail=exc.strerror or exc)) from None
    head = raw.read(4)
    raw.seek(0)
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if head == _ZSTD_MAGIC:
        raw.close()
        raise UnreadableFile(messages.ZSTD.format(file=path))
    return raw


def iter_lines(path: str) -> Iterator[Line]:
    """Each non-blank line of ``path`` with its offset; raises :class:`UnreadableFile`.

    A gzip stream that ends early (a file still being written) stops the
    iteration with :class:`UnreadableFile` after the lines read so far.
    """
    handle = _open(path)
    offset = 0
    number = 0
    try:
        while True:
            try:
                data = handle.readline()
            except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
                raise UnreadableFile(messages.BROKEN_GZIP.format(file=path, line=number + 1, detail=exc)) from None
            if not data:
                return
            number += 1
            start = offset
            offset += len(data)
            if data.strip():
                yield Line(number, start, data)
    finally:
        handle.close()


def read_line_at(path: str, offset: int) -> bytes:
    """The line that starts at ``offset`` (as given by :func:`iter_lines`).

    For gzip files the seek decompresses up to the offset in small blocks,
    so memory stays bounded whatever the file size.
    """
    handle = _open(path)
    try:
        handle.seek(offset)
        return handle.readline()
    finally:
        handle.close()


def missing_report(span_file: str, files_read: list[str]) -> str:
    """Where the report of a run known only from its span should be: the logs file beside the span's, by name."""
    span = Path(span_file)
    if "traces" not in span.name:  # one file for every signal (a Collector's file exporter)
        return messages.LOGS_ELSEWHERE
    logs = span.with_name(span.name.replace("traces", "logs", 1))
    if str(logs) in files_read:
        return messages.LOGS_WITHOUT.format(file=logs)
    return (messages.LOGS_NOT_READ if logs.exists() else messages.LOGS_MISSING).format(file=logs)
