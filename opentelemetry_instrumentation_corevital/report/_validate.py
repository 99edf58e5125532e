"""Validate report dictionaries against the JSON Schema shipped in the package."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from .._errors import ReportValidationError
from ._model import SCHEMA_MAJOR


@functools.lru_cache(maxsize=1)
def report_schema() -> dict[str, Any]:
    """The report JSON Schema (draft 2020-12), read from the installed package."""
    text = resources.files(__package__).joinpath("schema/report.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate_report(data: dict[str, Any]) -> None:
    """Raise :class:`ReportValidationError` naming the first offending field, if any.

    Needs the ``jsonschema`` package (installed by the ``test`` extra).
    """
    version = str(data.get("schema_version", ""))
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) != SCHEMA_MAJOR:
        raise ReportValidationError(
            f"schema_version {version!r} is not readable by this version (expects {SCHEMA_MAJOR}.x.y)."
        )
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ReportValidationError(
            "validating a report needs the 'jsonschema' package: pip install jsonschema"
        ) from exc
    validator = jsonschema.Draft202012Validator(report_schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise ReportValidationError(f"report field {where}: {first.message}")
