"""Rewrite the option tables in docs/options.md from the declarations in ``_config.py``.

python tools/render_options.py        # tests/test_options.py fails until the file is up to date
"""

from __future__ import annotations

import re
from pathlib import Path

from opentelemetry_instrumentation_corevital._config import options_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "options.md"
START, END = "<!-- options:start -->", "<!-- options:end -->"


def rendered(text: str) -> str:
    """``text`` with the part between the markers replaced by the current tables."""
    block = f"{START}\n{options_markdown()}\n{END}"
    return re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)


if __name__ == "__main__":
    DOC.write_text(rendered(DOC.read_text(encoding="utf-8")), encoding="utf-8")
