"""``corevital calibrate``: a profile of one's own model from runs known to be healthy (and, optionally, bad).

The prompts file holds one run per line: plain text (a prompt to generate from) or a JSON object
``{"prompt": ..., "continuation": ..., "label": 0|1}``. With a ``continuation`` the run scores that text
(teacher-forced, :meth:`CoreVitalMonitor.score`) instead of generating; ``label`` 1 marks a bad run (a wrong
answer, a loop) and 0 a healthy one; unlabelled runs count as healthy. The profile written ``extends`` the
model's shipped profile and adds its baseline, recalibrated risk factors and, with enough labels, a probability
map; load it with ``profile="that.json"`` (or ``--profile``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError, CoreVitalError, OutputError
from .._values import parse_capture
from ..report import Report

LINE_KEYS = frozenset({"prompt", "continuation", "label"})


def add_parser(subparsers: Any) -> None:
    """Register ``corevital calibrate``."""
    from ._flags import positive_int

    p = subparsers.add_parser(
        "calibrate",
        help="build a model profile (baseline, risk calibration, probability map) from known runs",
        description="Run the model on known prompts (generating, or scoring given continuations) and write a "
        "profile file: the healthy runs' feature baseline, risk factors recalibrated to them and, with labelled "
        "runs, a fitted probability map. Load it with profile=FILE or corevital run --profile FILE.",
    )
    p.add_argument("--model", help="model folder, .gguf file or hub id (default: the embedded SmolLM2 GGUF)")
    p.add_argument("--gguf-file", help="GGUF file name inside the --model folder")
    p.add_argument(
        "--prompts",
        required=True,
        metavar="FILE",
        help="one run per line: prompt text, or JSON {prompt, continuation?, label? (0 healthy, 1 bad)}",
    )
    p.add_argument("--out", required=True, metavar="PROFILE.json", help="profile file to write")
    p.add_argument("--name", default=None, help="profile name (default: the --out file's stem)")
    p.add_argument("--extends", default=None, help="shipped profile to extend (default: the model's own)")
    p.add_argument(
        "--capture",
        default="full",
        help="capture mode the profile is for (default: %(default)s; layer features need full)",
    )
    chat = p.add_mutually_exclusive_group()
    chat.add_argument("--chat", dest="chat", action="store_true", default=None)
    chat.add_argument("--no-chat", dest="chat", action="store_false")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="tokens per generated run")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=run)


def read_runs(path: Path) -> list[dict[str, Any]]:
    """The runs of a prompts file, each checked; an error names the line and what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"--prompts {path}: {exc.strerror or exc}") from None
    runs: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        if not line.lstrip().startswith("{"):
            runs.append({"prompt": line.strip(), "continuation": None, "label": None})
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{where}: not valid JSON ({exc.msg})") from None
        unknown = sorted(set(item) - LINE_KEYS)
        if unknown:
            raise ConfigurationError(f"{where}: unknown key {unknown[0]!r}; use prompt, continuation and label")
        if not isinstance(item.get("prompt"), str) or not item["prompt"]:
            raise ConfigurationError(f"{where}: 'prompt' must be a non-empty string")
        continuation = item.get("continuation")
        if continuation is not None and (not isinstance(continuation, str) or not continuation):
            raise ConfigurationError(f"{where}: 'continuation' must be a non-empty string")
        label = item.get("label")
        if label is not None and (isinstance(label, bool) or label not in (0, 1)):
            raise ConfigurationError(f"{where}: 'label' must be 0 (healthy) or 1 (bad), got {label!r}")
        runs.append({"prompt": item["prompt"], "continuation": continuation, "label": label})
    if not runs:
        raise ConfigurationError(f"--prompts {path}: no runs in this file")
    return runs


def run(args: argparse.Namespace) -> int:
    """Run the model on the prompts file and write the calibrated profile; the exit code."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    from ..signals.calibration import calibration_profile, sequence_features
    from ..signals.profiles import load_profile, profile_name_for
    from . import _models
    from ._run import _encode, _greedy_kwargs

    capture = parse_capture(args.capture, "--capture")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise OutputError(f"--out {out} exists; use --force to replace it")
    if out.suffix != ".json":
        raise ConfigurationError(f"--out {out}: a profile file must end in .json")
    runs = read_runs(Path(args.prompts))
    if args.extends:
        load_profile(args.extends)  # a bad name fails before the model loads
    source = _models.resolve_model(args.model, args.gguf_file)
    device = _models.resolve_device(args.device)
    tokenizer, model = _models.load(source, device, _models.resolve_dtype(args.dtype, device))

    from .._monitor import CoreVitalMonitor

    # The baseline describes the model's own behaviour, so diagnose with the shipped profile, not an older file.
    monitor = CoreVitalMonitor(capture=capture.value, keep=1)
    rows: list[dict[str, float]] = []
    labels: list[int | None] = []
    for i, item in enumerate(runs):
        inputs = {k: v.to(device) for k, v in _encode(tokenizer, item["prompt"], args.chat).items()}
        report: Report | None
        if item["continuation"] is not None:
            ids = tokenizer(item["continuation"], add_special_tokens=False, return_tensors="pt")["input_ids"]
            report = monitor.score(model, inputs["input_ids"], ids.to(device), inputs.get("attention_mask"))
        else:
            monitor.generate(model, **inputs, **_greedy_kwargs(tokenizer, args.max_new_tokens))
            report = monitor.report
        if report is None or not report.sequences:
            raise CoreVitalError(f"run {i + 1} produced no report; rerun with -v")
        rows.append(sequence_features(report.sequences[0]))
        labels.append(item["label"])
        if not args.quiet and (i + 1) % 10 == 0:
            sys.stderr.write(f"  {i + 1}/{len(runs)} runs\n")

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    extends = args.extends or profile_name_for(model_type, source.display_name)
    try:
        profile, notes = calibration_profile(
            rows,
            labels,
            name=args.name or out.stem,
            extends=extends,
            source=f"{source.display_name} (capture {capture.value})",
        )
    except ValueError as exc:
        raise ConfigurationError(f"--prompts {args.prompts}: {exc}") from None
    text = json.dumps(profile, indent=2) + "\n"
    load_profile_text_check(text, out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(out)
    except OSError as exc:
        raise OutputError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    sys.stdout.write(_summary(profile, notes, out) + "\n")
    return 0


def load_profile_text_check(text: str, out: Path) -> None:
    """The file must load as a profile before it replaces anything (a bug here must not leave a bad file)."""
    from ..signals.profiles import _build, _read_json

    _build(_read_json(text, f"profile file {out}"), f"profile file {out}")


def _summary(profile: dict[str, Any], notes: list[str], out: Path) -> str:
    lines = [f"wrote {out} (profile {profile['name']!r}, extends {profile['extends']!r})"]
    features = profile["baseline"]
    runs = max((s["runs"] for s in features.values()), default=0)
    lines.append(f"baseline: {len(features)} features over {runs} healthy runs")
    for name, spec in profile["risk"].items():
        lines.append(f"risk factor {name}: midpoint {spec['midpoint']:.4g}, scale {spec['scale']:.4g}")
    if "probability" in profile:
        p = profile["probability"]
        lines.append(
            f"probability map: {len(p['features'])} features, {p['runs']} labelled runs, cross-validated "
            f"ECE {p['ece']:.3f}, AUROC {p['auroc']:.3f}"
        )
    lines.extend(f"note: {note}" for note in notes)
    return "\n".join(lines)
