"""The text at the top of a run page: the prompt and output when content capture kept them, else how to get them.

Imported absolutely, like the app, because Streamlit runs the app as a script.
"""

from __future__ import annotations

import streamlit as st

from opentelemetry_instrumentation_corevital.viewer import messages, text
from opentelemetry_instrumentation_corevital.viewer.index import RunDetail


def show_text(detail: RunDetail, sequences: int) -> None:
    """Prompt and output side by side (a batch: its riskiest sequence's), or what turns content capture on."""
    found = text.texts(detail.report, detail.span)
    if found.prompt is None and found.output is None:
        st.caption(messages.NO_TEXT)
        return
    which = " (riskiest sequence)" if sequences > 1 else ""
    for column, (part, value) in zip(st.columns(2), (("Prompt", found.prompt), ("Output" + which, found.output))):
        with column:
            st.markdown(f"**{part}**")
            if value is None:
                st.caption("not captured")
            else:
                st.code(value, language=None, wrap_lines=True)
