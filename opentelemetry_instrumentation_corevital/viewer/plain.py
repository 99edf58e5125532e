"""Text from the files, made safe for Streamlit's Markdown: shown as its characters, never as formatting.

Streamlit renders titles, captions, alerts and ``st.markdown`` as Markdown (links, images, emphasis, ``:color[]``
directives, emoji codes, ``$`` maths). A model name, flag or message read from a file goes through :func:`plain`
first, so a remote image link in a flag name is shown as text and never fetched.
"""

from __future__ import annotations

import re
import string

#: Every ASCII punctuation character: CommonMark lets a backslash escape each of them.
_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")


def plain(text: object) -> str:
    """``text`` with every Markdown-significant character backslash-escaped."""
    return _SPECIAL.sub(r"\\\1", str(text))
