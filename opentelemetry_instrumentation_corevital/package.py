"""Libraries this instrumentation wraps.

Mirrors the ``instruments`` extra in ``pyproject.toml``: zero-code loading
(``opentelemetry-instrument``) reads the extra, a manual ``instrument()`` call
reads this tuple.
"""

_instruments = ("transformers >= 5.17, < 5.25", "torch >= 2.5, < 3")

_supports_metrics = True
