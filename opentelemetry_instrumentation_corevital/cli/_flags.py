"""``corevital run`` flags derived from the option tables of :mod:`.._config`.

Each option with a flag becomes ``--flag VALUE`` (``--exporter`` may repeat);
values are parsed by the option's own parser after argparse, so a bad value
gives the same one-line error as the keyword, naming the flag.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._config import default_text, specs
from .._values import EXPORTER_NAMES

#: argparse settings beyond ``help`` for flags that need them.
_EXTRA: dict[str, dict[str, Any]] = {
    "--exporter": {"action": "append", "choices": EXPORTER_NAMES, "metavar": "NAME"},
}


def add_flags(parser: argparse.ArgumentParser, table: type, defaults: dict[str, str] | None = None) -> None:
    """Add a flag for every option of ``table`` that has one; ``defaults`` says what the CLI uses instead."""
    for key, f, spec in specs(table):
        if spec.flag is None:
            continue
        default = (defaults or {}).get(key) or default_text(f, spec)
        extra = {"metavar": spec.flag.lstrip("-").replace("-", "_").upper(), **_EXTRA.get(spec.flag, {})}
        parser.add_argument(spec.flag, dest=key, default=None, help=f"{spec.doc} (default: {default})", **extra)


def parsed(args: argparse.Namespace, table: type) -> dict[str, Any]:
    """The flags of ``table`` the user gave, parsed by their options' parsers (errors name the flag)."""
    values = {}
    for key, _, spec in specs(table):
        raw = getattr(args, key, None)
        if spec.flag is not None and raw is not None:
            values[key] = spec.parse(raw, spec.flag)
    return values
