"""``corevital compare A B``: the viewer's Compare table as text, for terminals and CI logs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._errors import CoreVitalError
from ._telemetry import DEFAULT_OUT

DIFFERS = "≠"  # marks a figure that differs between the runs


def add_parser(subparsers: Any) -> None:
    """Register ``corevital compare``."""
    p = subparsers.add_parser(
        "compare",
        help="compare runs in OTLP JSON lines files: the viewer's Compare table as text",
        description="Print the figures of two or more runs side by side (those that differ marked "
        f"{DIFFERS}) and their fingerprint distances, read from OTLP JSON lines files or folders.",
    )
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="a run's trace id, trace_id:span_id, span id or report id, or the start of one (8 characters "
        "as the viewer shows them); two or more",
    )
    p.add_argument(
        "--in",
        dest="paths",
        action="append",
        metavar="PATH",
        help=f"file or folder to read, repeatable (default: ./{DEFAULT_OUT})",
    )
    p.set_defaults(handler=compare_runs)


def find(runs: list[Any], wanted: str, where: str) -> Any:
    """The one run an id or id prefix names; an error naming the candidates otherwise."""
    from ..viewer import links

    found = links.matching(runs, wanted)
    if len(found) == 1:
        return found[0]
    if not found:
        raise CoreVitalError(f"no run matches {wanted!r} in {where}")
    raise CoreVitalError(f"{wanted!r} matches {len(found)} runs: " + ", ".join(r.label for r in found[:5]))


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _distance(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def render(details: list[Any]) -> str:
    """The runs (one line each), the figures table and the fingerprint distances, as plain text."""
    from ..viewer import compare, messages

    ids = [d.summary.short_id for d in details]
    lines = [f"{i}  {d.summary.label}" for i, d in zip(ids, details)] + [""]
    rows = compare.table(details)
    body = [
        [DIFFERS if differs else "", row["figure"], *(row[d.summary.label] for d in details)]
        for row, differs in zip(rows, compare.differing(rows))
    ]
    lines += _grid([["", "figure", *ids], *body]) + ["", "fingerprint distance"]
    matrix, missing = compare.fingerprint_distances(details)
    if matrix is None:
        short = [d.summary.short_id for d in details if d.summary.label in missing]
        lines.append(messages.NO_FINGERPRINT.format(runs=", ".join(short)))
    else:
        # Four decimals, "–" across fingerprint versions: as the viewer shows them.
        cells = [[i, *(_distance(r[d.summary.label]) for d in details)] for i, r in zip(ids, matrix)]
        lines += _grid([["", *ids], *cells])
    return "\n".join(lines) + "\n"


def compare_runs(args: argparse.Namespace) -> int:
    """Read the files, find each named run, print the comparison; the exit code."""
    if len(args.runs) < 2:
        raise CoreVitalError("name two or more runs to compare")
    paths = args.paths or [DEFAULT_OUT]
    for path in paths:
        if not Path(path).exists():
            raise CoreVitalError(f"{path}: no such file or folder")
    from ..viewer import build_index, load_run

    index = build_index([str(p) for p in paths])
    details = [load_run(find(index.runs, wanted, ", ".join(paths))) for wanted in args.runs]
    sys.stdout.write(render(details))
    return 0
