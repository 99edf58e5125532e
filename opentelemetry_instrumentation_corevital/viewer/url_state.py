"""The URL names what the page shows (``?view=...&run=...&seq=...&tab=...``): read when it changes (a link, a reload,
Back and Forward), written back after every run of the page. Imported absolutely, like the app, because Streamlit
runs the app as a script."""

from __future__ import annotations

import streamlit as st

from opentelemetry_instrumentation_corevital.viewer import links
from opentelemetry_instrumentation_corevital.viewer.index import Index
from opentelemetry_instrumentation_corevital.viewer.run_tabs import SEQUENCE_PICKERS, sequence_key

WRITTEN = "url_written"  # the query parameters this page last wrote
TAB = "run_tab"  # the run page's active tab


def follow_link(index: Index, views: tuple[str, ...]) -> str | None:
    """Open what the URL names (``?view=``, ``?run=``) when it is not what this page last wrote there: a link or a
    reload (a session's first page), or the browser's Back and Forward (Streamlit reruns with the URL they went to).
    Returns the run id no run matched."""
    params = st.query_params.to_dict()
    if params == st.session_state.get(WRITTEN):
        return None
    st.session_state[WRITTEN] = params
    named = {v.lower(): v for v in views}
    if (view := named.get(params.get(links.VIEW, "").lower())) is not None:
        st.session_state["view"] = view
    wanted = params.get(links.RUN)
    if not wanted:
        return None
    run = links.linked(index.runs, wanted)
    if run is None:
        return wanted
    st.session_state["run"] = run.key
    st.session_state["view"] = "Run"
    st.session_state[TAB] = links.tab_label(params.get(links.TAB))
    seq = links.seq_number(params.get(links.SEQ))
    for picker in SEQUENCE_PICKERS:  # none named: the run opens on its riskiest sequence
        key = sequence_key(picker, run.key)
        if seq is None:
            st.session_state.pop(key, None)
        else:
            st.session_state[key] = seq
    return None


def write_link(view: str, index: Index) -> None:
    """The URL names the view (and the run shown, its sequence and tab), so a reload, a shared link and Back return
    to it. A one-sequence run has no ``seq=``, the first tab no ``tab=``."""
    shown = index.by_key(st.session_state.get("run", "")) if view == "Run" else None
    params = {links.VIEW: view.lower()}
    if shown is not None:
        params[links.RUN] = links.run_param(shown)
        seq = st.session_state.get(sequence_key(SEQUENCE_PICKERS[0], shown.key))
        if seq is not None:
            params[links.SEQ] = str(seq)
        if (tab := links.tab_name(st.session_state.get(TAB))) is not None:
            params[links.TAB] = tab
    st.session_state[WRITTEN] = params
    st.query_params.from_dict(params)
