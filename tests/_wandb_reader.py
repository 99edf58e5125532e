"""Reads an offline W&B run file (``run-<id>.wandb``) back, for tests only.

The format is wandb's internal one (pinned: wandb 0.31.0): a 7-byte header
(``:W&B``, uint16 0xBEE1, uint8 0), then LevelDB-log framing in 32 KiB blocks;
each record has a 7-byte header (crc32, uint16 length, uint8 type: FULL=1,
FIRST=2, MIDDLE=3, LAST=4). Each payload is a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    position = 7
    pending = b""
    while position + HEADER <= len(data):
        block_left = BLOCK - (position % BLOCK)
        if block_left < HEADER:
            position += block_left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        if kind == 0 and length == 0:  # zero padding
            position += block_left
            continue
        chunk = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def read_run(folder: Path) -> dict[str, Any]:
    """{"history": [row, ...], "summary": {...}, "config": {...}} of the offline run in ``folder``."""
    from wandb.proto import wandb_internal_pb2

    (run_file,) = folder.glob("run-*.wandb")
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for payload in payloads(run_file):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "run":
            for item in record.run.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return {"history": history, "summary": summary, "config": config}
