"""The README's Library API examples run, in order, exactly as written (blocks marked ``<!-- example -->``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- example(?P<shell>: shell)? -->\n```(?P<lang>\w+)\n(?P<code>.*?)\n```", re.S)


def examples() -> list[tuple[str, str]]:
    return [("shell" if m.group("shell") else "python", m.group("code")) for m in BLOCK.finditer(README.read_text())]


def test_the_readme_has_its_examples():
    kinds = [kind for kind, _ in examples()]
    assert kinds.count("python") == 7 and kinds.count("shell") == 1


@pytest.mark.slow
def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    namespace: dict = {"__name__": "readme"}
    for number, (kind, code) in enumerate(examples(), 1):
        if kind == "shell":
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", code], capture_output=True, text=True,
                                    env=env, timeout=600)
            assert result.returncode == 0, f"example {number}:\n{code}\n{result.stderr}"
        else:
            exec(compile(code, f"README example {number}", "exec"), namespace)  # noqa: S102
