"""Decode OTLP/JSON (the file-exporter encoding) into plain Python values.

OTLP/JSON wraps every attribute value in a one-key object (``stringValue``,
``intValue`` as a decimal string, ``doubleValue`` possibly ``"NaN"``,
``arrayValue``, ``kvlistValue``, ``bytesValue``); this module unwraps them
so the rest of the viewer works with str, int, float, bool, list and dict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

_T = TypeVar("_T")
_D = TypeVar("_D")

SPANS = "resourceSpans"
METRICS = "resourceMetrics"
LOGS = "resourceLogs"


def typed(container: Mapping[str, Any], key: str, kind: type[_T], default: _D) -> _T | _D:
    """``container[key]`` when it is a ``kind``, else ``default``: a file's contents are never trusted."""
    value = container.get(key)
    return value if isinstance(value, kind) else default


def any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` as a Python value (``None`` for an empty or unknown one)."""
    if not isinstance(value, dict) or not value:
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return None
    if "doubleValue" in value:
        return _double(value["doubleValue"])
    if "arrayValue" in value:
        inner = value["arrayValue"]
        items = inner.get("values") if isinstance(inner, dict) else None
        return [any_value(v) for v in items] if isinstance(items, list) else []
    if "kvlistValue" in value:
        inner = value["kvlistValue"]
        return attributes(inner.get("values") if isinstance(inner, dict) else None)
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def _double(raw: Any) -> float | None:
    try:
        number = float(raw)  # "NaN", "Infinity" and "-Infinity" are how protobuf JSON writes non-finite doubles
    except (TypeError, ValueError):
        return None
    return number


def attributes(items: Any) -> dict[str, Any]:
    """A list of OTLP ``KeyValue`` as a dict."""
    out: dict[str, Any] = {}
    if isinstance(items, list):
        for kv in items:
            if isinstance(kv, dict) and isinstance(kv.get("key"), str):
                out[kv["key"]] = any_value(kv.get("value"))
    return out


def finite(value: Any) -> float | None:
    """A number as float, or ``None`` when missing or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def kind(document: Any) -> str | None:
    """Which signal an export request line carries, or ``None`` when it is not one."""
    if isinstance(document, dict):
        for key in (SPANS, LOGS, METRICS):
            if isinstance(document.get(key), list):
                return key
    return None


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The dict items of a list; anything else (a malformed document) gives none."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _items(document: dict[str, Any], top: str, scopes: str, items: str) -> Iterator[tuple[dict, dict]]:
    for resource_block in _dicts(document.get(top)):
        resource = resource_block.get("resource")
        resource = attributes(resource.get("attributes")) if isinstance(resource, dict) else {}
        for scope in _dicts(resource_block.get(scopes)):
            for item in _dicts(scope.get(items)):
                yield resource, item


def spans(document: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(resource attributes, span) for each span of an ``ExportTraceServiceRequest``."""
    return _items(document, SPANS, "scopeSpans", "spans")


def log_records(document: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(resource attributes, log record) for each record of an ``ExportLogsServiceRequest``."""
    return _items(document, LOGS, "scopeLogs", "logRecords")


def nanos(value: Any) -> int | None:
    """A ``fixed64`` nanosecond timestamp (a decimal string in OTLP/JSON) as int; 0 and junk give None."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number or None


def utc(seconds: float | None) -> datetime | None:
    """Unix seconds as a UTC time; None when unknown or past what a date can hold (a file's 25-digit time)."""
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None


def loads(data: str | bytes) -> Any:
    """``json.loads``, with JSON nested past Python's recursion limit a ``ValueError`` like any other bad JSON."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
