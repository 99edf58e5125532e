"""The documentation's examples run, in order, exactly as written (blocks marked ``<!-- example -->``), and its
relative links lead somewhere: the README and every page of docs/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- example(?P<shell>: shell)? -->\n```(?P<lang>\w+)\n(?P<code>.*?)\n```", re.S)
LINK = re.compile(r"\]\((?!https?://|mailto:)(?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def pages() -> list[Path]:
    """The README first, then docs/ in name order: the order the examples run in."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def examples() -> list[tuple[str, str, str]]:
    """(page, kind, code) of every example block, in running order."""
    return [
        (page.relative_to(ROOT).as_posix(), "shell" if m.group("shell") else "python", m.group("code"))
        for page in pages()
        for m in BLOCK.finditer(page.read_text(encoding="utf-8"))
    ]


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a page: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_docs_have_their_examples():
    found = [(page, kind) for page, kind, _ in examples()]
    assert (
        found
        == [("docs/api.md", "python")] * 6
        + [("docs/api.md", "shell"), ("docs/api.md", "python")]
        + [("docs/backends.md", "python")] * 2
    )


def test_every_relative_link_resolves():
    broken = []
    for page in pages():
        for m in LINK.finditer(FENCE.sub("", page.read_text(encoding="utf-8"))):
            path, _, anchor = m.group("target").partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists() or (anchor and target.suffix == ".md" and anchor not in anchors(target)):
                broken.append(f"{page.relative_to(ROOT)}: {m.group('target')}")
    assert broken == []


@pytest.mark.slow
def test_doc_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    namespace: dict = {"__name__": "readme"}
    for number, (page, kind, code) in enumerate(examples(), 1):
        if kind == "shell":
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code], capture_output=True, text=True, env=env, timeout=600
            )
            assert result.returncode == 0, f"{page} example {number}:\n{code}\n{result.stderr}"
        else:
            exec(compile(code, f"{page} example {number}", "exec"), namespace)  # noqa: S102
