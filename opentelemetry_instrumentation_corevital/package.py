"""Libraries this instrumentation wraps.

Mirrors the ``instruments`` extra in ``pyproject.toml``: zero-code loading
(``opentelemetry-instrument``) reads the extra, a manual ``instrument()`` call
reads this tuple.
"""

_instruments = ("transformers >= 5.17, < 6", "torch >= 2.4")

_supports_metrics = True
