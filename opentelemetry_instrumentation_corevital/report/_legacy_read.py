"""Reading untrusted JSON field by field, with errors that name the field (``timeline[3].entropy: expected a number``).

Used by the converter of the original CoreVital's reports (``_legacy``); split from it by idea.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .._errors import CoreVitalError


class MigrationError(CoreVitalError, ValueError):
    """A source report cannot be converted; the message names the offending field."""


#: Integers are carried into OpenTelemetry attributes, which hold 64-bit signed integers.
MAX_INT = 2**63 - 1
#: No logit signal in bits reaches this (a vocabulary of 2**1024 tokens); 2**bits would overflow a float.
MAX_BITS = 1024.0


def shown(value: Any) -> str:
    """A value as it reads in an error message, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Obj:
    """A JSON object with the path it was found at, for errors that name the field."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise MigrationError(f"{path or 'top level'}: expected an object, got {shown(data)}")
        self.data, self.path = data, path

    def where(self, key: str) -> str:
        """The path of a field of this object."""
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        """Whether the field is present and not null."""
        return self.data.get(key) is not None

    def _value(self, key: str, required: bool) -> Any:
        value = self.data.get(key)
        if value is None and required:
            raise MigrationError(f"{self.where(key)}: missing")
        return value

    def get(self, key: str, check: Callable[[Any, str], Any], required: bool = False) -> Any:
        """The field checked by ``check`` (None when absent and not required)."""
        value = self._value(key, required)
        return None if value is None else check(value, self.where(key))

    def obj(self, key: str) -> Obj | None:
        """The field as an object, or None when absent."""
        value = self._value(key, False)
        return None if value is None else Obj(value, self.where(key))

    def required(self, key: str) -> Obj:
        """The field as an object; a :class:`MigrationError` when absent."""
        return Obj(self._value(key, True), self.where(key))

    def items(self, key: str, required: bool = False) -> list[tuple[Any, str]]:
        """The field as a list of (value, path) pairs (empty when absent and not required)."""
        value = self._value(key, required)
        if value is None:
            return []
        if not isinstance(value, list):
            raise MigrationError(f"{self.where(key)}: expected a list, got {shown(value)}")
        return [(v, f"{self.where(key)}[{i}]") for i, v in enumerate(value)]


def as_number(value: Any, where: str) -> float | None:
    """A finite number (non-finite -> None), or an error naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MigrationError(f"{where}: expected a number, got {shown(value)}")
    value = float(value)
    return value if math.isfinite(value) else None


def as_bits(value: Any, where: str) -> float | None:
    """A number of bits (entropy, surprisal) below :data:`MAX_BITS` (non-finite -> None)."""
    bits = as_number(value, where)
    if bits is not None and bits >= MAX_BITS:
        raise MigrationError(f"{where}: expected bits below {MAX_BITS:g}, got {shown(value)}")
    return bits


def as_int(value: Any, where: str) -> int:
    """A 64-bit integer, or an error naming the field."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MigrationError(f"{where}: expected an integer, got {shown(value)}")
    if not -MAX_INT - 1 <= value <= MAX_INT:
        raise MigrationError(f"{where}: expected a 64-bit integer, got {shown(value)}")
    return value


def as_count(value: Any, where: str) -> int:
    """An integer >= 0, or an error naming the field."""
    value = as_int(value, where)
    if value < 0:
        raise MigrationError(f"{where}: expected a count >= 0, got {value}")
    return value


def as_str(value: Any, where: str) -> str:
    """A string, or an error naming the field."""
    if not isinstance(value, str):
        raise MigrationError(f"{where}: expected a string, got {shown(value)}")
    return value


def as_bool(value: Any, where: str) -> bool:
    """true or false, or an error naming the field."""
    if not isinstance(value, bool):
        raise MigrationError(f"{where}: expected true or false, got {shown(value)}")
    return value


def as_ints(items: list[tuple[Any, str]]) -> list[int]:
    """Integers from (value, path) pairs."""
    return [as_int(v, w) for v, w in items]


def as_numbers(
    items: list[tuple[Any, str]], check: Callable[[Any, str], float | None] = as_number
) -> list[float | None]:
    """Numbers (None kept) from (value, path) pairs."""
    return [None if v is None else check(v, w) for v, w in items]
