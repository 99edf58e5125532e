"""docs/guarantees.md names the test proving each promise: every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "guarantees.md"
# `tests/x.py::name` starts a run of references; later `::name` ones in the same cell belong to the same file.
_CELL_REFS = re.compile(r"`(tests/[\w/]+\.py)(?:::([\w…]+))?`|`::([\w…]+)`")


def _references() -> list[tuple[str, str | None]]:
    refs: list[tuple[str, str | None]] = []
    for line in DOC.read_text().splitlines():
        current: str | None = None
        for match in _CELL_REFS.finditer(line):
            path, name, more = match.groups()
            if path is not None:
                current = path
                refs.append((path, name))
            elif current is not None:
                refs.append((current, more))
    return refs


def _names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.ClassDef)}


def test_the_page_names_tests():
    assert len(_references()) >= 20


@pytest.mark.parametrize(("path", "name"), sorted(set(_references()), key=str))
def test_every_named_test_exists(path, name):
    file = ROOT / path
    assert file.is_file(), f"{path} named in docs/guarantees.md does not exist"
    if name is None:
        return
    names = _names(file)
    if "…" in name:  # a family: `…_score` stands for the test names sharing that tail
        tail = name.split("…")[-1]
        assert any(n.startswith("test_") and n.endswith(tail) for n in names), f"no test ending {tail!r} in {path}"
    else:
        assert name in names, f"{path}::{name} named in docs/guarantees.md does not exist"
