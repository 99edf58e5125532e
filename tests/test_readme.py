"""The documentation's examples run, in order, exactly as written (blocks marked ``<!-- example -->``), and its
relative links lead somewhere: the README and every page of docs/."""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from opentelemetry_instrumentation_corevital import CoreVitalMonitor
from opentelemetry_instrumentation_corevital._config import VLLM_PLUGIN_ENV, ExporterSettings, Options, keywords, specs

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- example(?P<shell>: shell)? -->\n```(?P<lang>\w+)\n(?P<code>.*?)\n```", re.S)
LINK = re.compile(r"\]\((?!https?://|mailto:)(?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"^```python\n(.*?)^```|`([^`\n]+)`", re.S | re.M)
VARIABLE = re.compile(r"(?:OTEL_INSTRUMENTATION_COREVITAL|…)_([A-Z][A-Z_]*)")


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
    assert found == [("docs/api.md", "python")] * 6 + [("docs/api.md", "shell"), ("docs/api.md", "python")] + [
        ("docs/backends.md", "python")
    ] * 2 + [("docs/migration.md", "python")]


def test_every_relative_link_resolves():
    broken = []
    for page in pages():
        for m in LINK.finditer(FENCE.sub("", page.read_text(encoding="utf-8"))):
            path, _, anchor = m.group("target").partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists() or (anchor and target.suffix == ".md" and anchor not in anchors(target)):
                broken.append(f"{page.relative_to(ROOT)}: {m.group('target')}")
    assert broken == []


def documented_calls() -> list[tuple[str, str, str]]:
    """(page, function, keyword) of every keyword passed to configure(), instrument() or CoreVitalMonitor() in the
    pages' Python blocks, inline code and examples/ (docs/migration.md shows the old API on purpose)."""
    texts = [p for p in pages() if p.name != "migration.md"] + [ROOT / "collector" / "README.md"]
    texts += [ROOT / "dashboards" / "README.md", *sorted((ROOT / "examples").glob("*/*.py"))]
    found = []
    for page in texts:
        text = page.read_text(encoding="utf-8")
        for code in [text] if page.suffix == ".py" else [a or b for a, b in CODE.findall(text)]:
            try:
                tree = ast.parse(code)
            except SyntaxError:
                continue  # prose in backticks, shell
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                    found += [(page.relative_to(ROOT).as_posix(), name, k.arg) for k in node.keywords if k.arg]
    return found


def test_documented_keywords_and_variables_exist():
    monitor = [p for p in inspect.signature(CoreVitalMonitor).parameters if p != "options"]
    accepted = {
        "configure": set(keywords(ExporterSettings)),
        "instrument": {"tracer_provider", "meter_provider", "logger_provider", "on_report", *keywords(Options)},
        "CoreVitalMonitor": {*monitor, *keywords(Options)},
    }
    calls = documented_calls()
    assert {name for _, name, _ in calls} >= set(accepted)  # the parsing still sees the calls it checks
    unknown = [call for call in calls if call[1] in accepted and call[2] not in accepted[call[1]]]
    assert unknown == []
    variables = {name for table in (Options, ExporterSettings) for _, _, spec in specs(table) for name in spec.env}
    variables.add(VLLM_PLUGIN_ENV)
    stale = [
        f"{page.relative_to(ROOT)}: {m.group(0)}"
        for page in pages()
        if page.name != "migration.md"
        for m in VARIABLE.finditer(page.read_text(encoding="utf-8"))
        if f"OTEL_INSTRUMENTATION_COREVITAL_{m.group(1)}" not in variables
    ]
    assert stale == []


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
