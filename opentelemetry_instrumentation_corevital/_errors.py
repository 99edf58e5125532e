"""Error hierarchy.

Every error we raise on purpose derives from :class:`CoreVitalError`, so callers
can catch ours without catching the model's. Errors are only ever raised for the
caller's own mistakes (bad arguments, bad files); failures inside a running
generation are swallowed and logged, never raised into ``generate()``.
"""

from __future__ import annotations


class CoreVitalError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(CoreVitalError, ValueError):
    """An option or environment variable has a value we cannot use."""


class ModelLoadError(CoreVitalError):
    """The CLI could not load the requested model or tokenizer."""


class ReportValidationError(CoreVitalError, ValueError):
    """A report does not match the shipped JSON Schema, or cannot be read."""


class OutputError(CoreVitalError):
    """A file or folder we were asked to write cannot be written."""


def shorten(value: object, width: int = 80) -> str:
    """``repr(value)`` cut to ``width`` characters: error messages about hostile values stay readable."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= width else f"{text[: width - 30]}... ({len(text)} characters)"
