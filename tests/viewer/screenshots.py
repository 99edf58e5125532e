"""Regenerate the viewer screenshots of docs/viewer.md and the README: ``make screenshots``.

(That runs ``python -m tests.viewer.screenshots docs/img``.)

Two real SmolLM2 generations (`corevital run`: greedy with `--content`, and a sampled one with
capture="full" for the layer heatmaps) and the hand-made example files of the tests are served by `corevital view`
and photographed by the same browser scenario as tests/viewer/test_browser.py.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from opentelemetry_instrumentation_corevital.viewer import build_index

from ..conftest import free_port
from . import handmade
from .conftest import corevital_run
from .served import browser_missing, drive, serve

#: The scenario's pictures that docs/viewer.md and the README show (it takes more, for its own checks).
DOCUMENTED = ("runs", "run", "timeline", "layers", "compare", "performance")


def main(target: str) -> int:
    missing = browser_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 1
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        real = Path(tmp) / "corevital-data"
        corevital_run(real, "--max-new-tokens", "48", "--content")
        corevital_run(
            real,
            "--max-new-tokens",
            "32",
            "--prompt",
            "Write a haiku about the sea.",
            "--do-sample",
            "--seed",
            "3",
            "--temperature",
            "1.3",
            "--capture",
            "full",
        )
        examples = handmade.write_good(Path(tmp) / "examples")
        full, first = build_index([str(real)]).runs  # newest first: the full-capture run, then the greedy one
        shots = Path(tmp) / "shots"
        shots.mkdir()
        with serve([real, examples], free_port(), Path(tmp) / "view.log") as url:
            taken = drive(url, shots, first.label, full.label)
        for shot in (s for s in taken if s["name"] in DOCUMENTED):
            shutil.copyfile(shot["file"], out / f"viewer-{shot['name']}.png")
            print(out / f"viewer-{shot['name']}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/img"))
