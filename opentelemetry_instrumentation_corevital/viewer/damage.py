"""What a line that is not JSON still tells: whether it was cut short, and whose report it held.

A file still being written, or copied or rotated mid-line, ends in a line whose JSON stops unfinished. Saying
"truncated line" (not the parser's column number) and naming the run it belonged to lets the run page explain
why that run shows only its span.
"""

from __future__ import annotations

import json
import re

from . import messages

# A report record's body is the report as an escaped JSON string: its own ids come first in the line, the record's
# traceId and spanId only after the body (the first part a cut loses).
_BODY = {name: re.compile(rf'\\"{name}\\":\s*\\"([^"\\]{{1,200}})\\"') for name in ("trace_id", "span_id", "report_id")}
_RECORD = {name: re.compile(rf'"{name}":\s*"([0-9a-fA-F]{{8,64}})"') for name in ("traceId", "spanId")}
_MODEL = re.compile(r'\\"model\\":\s*\{\\"name\\":\s*\\"([^"\\]{1,200})\\"')
_REPORT_EVENT = "corevital.generation.report"


def cut_short(exc: ValueError, data: bytes) -> bool:
    """Whether the JSON parser ran out of line: an unterminated string, or the error at the line's very end."""
    if not isinstance(exc, json.JSONDecodeError):
        return False
    return exc.msg.startswith("Unterminated string") or exc.pos >= len(exc.doc.rstrip())


def _found(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    return match.group(1) if match else None


def truncated(file: str, line: int, data: bytes) -> tuple[str, str | None]:
    """The message for a cut-short line, and the key of the run whose report it held when the line still says."""
    text = data.decode("utf-8", "replace")
    run = key = None
    if _REPORT_EVENT in text or '\\"report_id\\"' in text:
        trace = _found(_BODY["trace_id"], text) or _found(_RECORD["traceId"], text)
        span = _found(_BODY["span_id"], text) or _found(_RECORD["spanId"], text)
        report, model = _found(_BODY["report_id"], text), _found(_MODEL, text)
        if trace and span:
            key = f"{trace}:{span}"
            run = messages.TRUNCATED_RUN.format(run=key)
        elif report:
            run = messages.TRUNCATED_REPORT.format(report=report, model=model or "unknown model")
    said = messages.TRUNCATED.format(file=file, line=line, size=len(data.rstrip(b"\r\n")), run=run or "")
    return said, key
