"""Fixture files for the viewer tests: hand-made ones with exact values, and real ones from `corevital run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import handmade

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def good_dir(tmp_path_factory) -> Path:
    return handmade.write_good(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="session")
def bad_dir(tmp_path_factory) -> Path:
    return handmade.write_bad(tmp_path_factory.mktemp("bad"))


def corevital_run(out: Path, *args: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "opentelemetry_instrumentation_corevital.cli",
            "run",
            "--out",
            str(out),
            "--quiet",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def real_dir(tmp_path_factory) -> Path:
    """Two real SmolLM2 generations in one folder (files append): greedy, summary capture, with content capture;
    then sampled with capture="full" (layer matrices and prompt analysis)."""
    out = tmp_path_factory.mktemp("real") / "corevital-data"
    corevital_run(out, "--max-new-tokens", "20", env={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"})
    corevital_run(
        out,
        "--max-new-tokens",
        "16",
        "--prompt",
        "Name three colours.",
        "--do-sample",
        "--seed",
        "3",
        "--temperature",
        "1.5",
        "--capture",
        "full",
    )
    return out


@pytest.fixture(scope="session")
def batch_dir(tmp_path_factory) -> Path:
    """Real SmolLM2 runs that the diagnosis-aware run page is about: a batch of four greedy sequences whose riskiest
    (a loop) is sequence 1 (tests/viewer/batch.py), then a looping prompt stopped by ``--stop-on repetition_loop``."""
    out = tmp_path_factory.mktemp("batch") / "corevital-data"
    result = subprocess.run(
        [sys.executable, "-m", "tests.viewer.batch", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    corevital_run(
        out,
        "--no-chat",
        "--prompt",
        "one two one two one two one two one two one two",
        "--max-new-tokens",
        "24",
        "--stop-on",
        "repetition_loop",
    )
    return out


def real_reports(folder: Path) -> list[dict]:
    """The reports in a real logs.jsonl, oldest first, read directly (not through the viewer)."""
    out = []
    for line in (folder / "logs.jsonl").read_text(encoding="utf-8").splitlines():
        for rl in json.loads(line)["resourceLogs"]:
            for sl in rl["scopeLogs"]:
                for record in sl["logRecords"]:
                    if record.get("eventName") == "corevital.generation.report":  # full capture adds step records
                        out.append(json.loads(record["body"]["stringValue"]))
    return out


@pytest.fixture(scope="session")
def short_dir(tmp_path_factory) -> Path:
    """One more real SmolLM2 run (greedy, 8 tokens), so that real runs alone make five to compare."""
    out = tmp_path_factory.mktemp("short") / "corevital-data"
    corevital_run(out, "--max-new-tokens", "8", "--prompt", "Say hello.")
    return out
