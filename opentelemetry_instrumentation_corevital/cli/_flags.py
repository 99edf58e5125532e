"""``corevital`` flags: those derived from the option tables of :mod:`.._config`, and the CLI's own number types.

Each option with a flag becomes ``--flag VALUE`` (``--exporter`` may repeat);
values are parsed by the option's own parser after argparse, so a bad value
gives the same one-line error as the keyword, naming the flag. The CLI's own
flags (``--max-new-tokens``, ``--port``...) use the argparse types below.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._config import default_text, specs
from .._values import EXPORTER_NAMES

#: argparse settings beyond ``help`` for flags that need them.
_EXTRA: dict[str, dict[str, Any]] = {
    "--exporter": {"action": "append", "choices": EXPORTER_NAMES, "metavar": "NAME"},
    # One word turns content capture on (content stays off by default, the CLI included); a mode may follow.
    "--content": {"nargs": "?", "const": "true", "metavar": "MODE"},
}


def add_flags(parser: argparse.ArgumentParser, table: type, defaults: dict[str, str] | None = None) -> None:
    """Add a flag for every option of ``table`` that has one; ``defaults`` says what the CLI uses instead."""
    for key, f, spec in specs(table):
        if spec.flag is None:
            continue
        default = (defaults or {}).get(key) or default_text(f, spec)
        extra = {"metavar": spec.flag.lstrip("-").replace("-", "_").upper(), **_EXTRA.get(spec.flag, {})}
        alone = f"; {spec.flag} alone: {extra['const']}" if "const" in extra else ""
        parser.add_argument(spec.flag, dest=key, default=None, help=f"{spec.doc}{alone} (default: {default})", **extra)


def parsed(args: argparse.Namespace, table: type) -> dict[str, Any]:
    """The flags of ``table`` the user gave, parsed by their options' parsers (errors name the flag)."""
    values = {}
    for key, _, spec in specs(table):
        raw = getattr(args, key, None)
        if spec.flag is not None and raw is not None:
            values[key] = spec.parse(raw, spec.flag)
    return values


def whole(text: str, low: int, high: int | None = None) -> int:
    """A whole number from ``low`` (to ``high``), or argparse's usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if high is not None and not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {value}")
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (token counts, runs)."""
    return whole(text, 1)


def port(text: str) -> int:
    """A TCP port to listen on, 1..65535."""
    return whole(text, 1, 65535)


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (sampling settings, seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value
