"""docs/model-compatibility.md is generated from the architecture matrix and must be current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_compatibility_table_is_current():
    spec = importlib.util.spec_from_file_location("model_compatibility", ROOT / "tools" / "model_compatibility.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render(module.matrix())
    current = (ROOT / "docs" / "model-compatibility.md").read_text(encoding="utf-8")
    assert current == expected, "run: python tools/model_compatibility.py"
    assert "**no**" not in current  # every architecture keeps its tokens and gets a diagnosis in every decoding
