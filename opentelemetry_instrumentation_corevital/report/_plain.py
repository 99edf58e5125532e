"""Report dataclasses back from their plain (JSON) form, following the type hints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any, TypeVar, get_args, get_origin, get_type_hints

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def from_plain(cls: type[T], data: Mapping[str, Any]) -> T:
    """An instance of dataclass ``cls`` from its ``asdict`` form, nested dataclasses included (unknown keys ignored)."""
    hints = get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**kwargs)


def _dataclass(hint: Any) -> bool:
    return isinstance(hint, type) and is_dataclass(hint)


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(hint)
    args = get_args(hint)
    if _dataclass(hint):
        return from_plain(hint, value)
    if origin is list and args and _dataclass(args[0]):
        return [from_plain(args[0], v) for v in value]
    if args and origin is not list and origin is not dict:  # Optional[X] / X | None
        for arg in args:
            if _dataclass(arg):
                return from_plain(arg, value)
    return value
