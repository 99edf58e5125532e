"""Exporters shipped with the package (they need ``opentelemetry-sdk``: the ``cli`` extra)."""
