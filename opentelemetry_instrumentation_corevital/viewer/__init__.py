"""Viewer for CoreVital telemetry in OTLP JSON lines files (``corevital view``).

The reading side (:mod:`.sources`, :mod:`.otlp`, :mod:`.index`, :mod:`.series`,
:mod:`.deep`, :mod:`.diagnosis`, :mod:`.perf`, :mod:`.compare`, :mod:`.runlist`)
is pure Python with no Streamlit import, so it can be tested and reused on its
own; :mod:`.app` lays it out with Streamlit (the ``viewer`` extra).
"""

from .index import Index, Ref, RunDetail, RunSummary, build_index, load_run

__all__ = ["Index", "Ref", "RunDetail", "RunSummary", "build_index", "load_run", "APP_PATH"]

from pathlib import Path as _Path

#: The Streamlit script that ``corevital view`` runs.
APP_PATH = str(_Path(__file__).with_name("app.py"))
