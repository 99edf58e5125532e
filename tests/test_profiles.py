"""Model profiles: shipped as package data (checked in an installed wheel), chosen per model, overridable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from opentelemetry_instrumentation_corevital import ConfigurationError
from opentelemetry_instrumentation_corevital.signals.profiles import (
    THRESHOLD_NAMES,
    builtin_names,
    load_profile,
    profile_name_for,
    resolve_profile,
)

ROOT = Path(__file__).resolve().parents[1]
PROFILE_DIR = ROOT / "opentelemetry_instrumentation_corevital" / "profiles"
FAMILIES = {
    "gpt2": "gpt2",
    "llama": "llama",
    "mistral": "mistral",
    "mixtral": "mixtral",
    "qwen2": "qwen2",
    "phi3": "phi3",
    "t5": "t5",
}


def test_every_family_has_a_profile_and_every_file_loads():
    assert set(builtin_names()) == {p.stem for p in PROFILE_DIR.glob("*.json")}
    assert set(FAMILIES.values()) | {"default", "smollm2"} == set(builtin_names())
    for name in builtin_names():
        profile = load_profile(name)
        assert profile.name == name
        assert profile.calibration, f"{name}: say where the numbers come from"
        assert all(0 < spec.weight < 1 for spec in profile.factors.values())


def test_default_defines_every_threshold_and_families_only_override():
    default = json.loads((PROFILE_DIR / "default.json").read_text())
    assert set(default["thresholds"]) == set(THRESHOLD_NAMES)
    for path in PROFILE_DIR.glob("*.json"):
        data = json.loads(path.read_text())
        if path.stem != "default":
            assert data["extends"] in ("default", "llama"), path.name


@pytest.mark.parametrize(
    "model_type, name, expected",
    [
        *[(t, None, p) for t, p in FAMILIES.items()],
        ("llama", "SmolLM2-135M-Instruct.Q4_1", "smollm2"),
        ("llama", "meta-llama/Llama-3.1-8B-Instruct", "llama"),
        ("LLAMA", None, "llama"),
        ("bert", None, "default"),
        (None, None, "default"),
    ],
)
def test_chosen_from_model_type_and_name(model_type, name, expected):
    assert profile_name_for(model_type, name) == expected
    assert resolve_profile(model_type, model_name=name).name == expected


def test_family_overrides_keep_the_rest_of_default():
    default, gpt2, t5 = load_profile("default"), load_profile("gpt2"), load_profile("t5")
    assert gpt2.thresholds.high_entropy_bits == 5.0 and default.thresholds.high_entropy_bits == 4.0
    assert gpt2.thresholds.mid_layer_norm_ratio == default.thresholds.mid_layer_norm_ratio
    assert t5.factors["mid_layer_norm_ratio"].midpoint == 4.0 == t5.thresholds.mid_layer_norm_ratio
    assert t5.factors["mid_layer_norm_ratio"].weight == default.factors["mid_layer_norm_ratio"].weight
    smollm2 = load_profile("smollm2")
    assert smollm2.thresholds.context_loss_ratio == 0.35 and smollm2.factors["entropy_mean"].midpoint == 4.901


def test_event_factor_midpoints_sit_on_their_flag_thresholds():
    for name in builtin_names():
        profile = load_profile(name)
        assert profile.factors["mid_layer_norm_ratio"].midpoint == profile.thresholds.mid_layer_norm_ratio, name
        assert profile.factors["attention_collapse_share"].midpoint == profile.thresholds.attention_collapse_share


def test_user_overrides_on_top_of_a_profile():
    profile = resolve_profile(
        "llama",
        thresholds={"high_entropy_bits": 5.5},
        factors={"entropy_mean": {"midpoint": 3.0}, "surprisal_mean": None},
    )
    assert profile.name == "llama" and profile.thresholds.high_entropy_bits == 5.5
    assert profile.factors["entropy_mean"].midpoint == 3.0
    assert profile.factors["entropy_mean"].scale == load_profile("llama").factors["entropy_mean"].scale
    assert "surprisal_mean" not in profile.factors
    assert profile.overridden == ("high_entropy_bits", "risk.entropy_mean", "risk.surprisal_mean")
    assert resolve_profile("llama", profile="gpt2").name == "gpt2"


def test_a_profile_file_of_ones_own(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(
        json.dumps(
            {"format": 1, "name": "mine", "extends": "smollm2", "thresholds": {"window": 6}, "calibration": "my data"}
        )
    )
    profile = resolve_profile("llama", profile=str(path))
    assert (profile.name, profile.thresholds.window, profile.thresholds.high_entropy_bits) == ("mine", 6, 7.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: load_profile("gpt3"), "unknown profile 'gpt3'; shipped profiles: default, gpt2"),
        (lambda: resolve_profile(thresholds={"high_entropy": 4}), "thresholds: unknown threshold 'high_entropy'"),
        (lambda: resolve_profile(thresholds={"window": 2.5}), "threshold 'window' must be a whole number >= 1"),
        (lambda: resolve_profile(thresholds={"high_entropy_bits": "4"}), "must be a finite number, got '4'"),
        (lambda: resolve_profile(factors={"entropy_mean": {"weight": 1.0}}), "weight must be in (0, 1), got 1.0"),
        (lambda: resolve_profile(factors={"entropy_mean": {"scale": 0}}), "scale must be > 0"),
        (lambda: resolve_profile(factors={"new_factor": {"midpoint": 1}}), "risk factor 'new_factor' needs 'scale'"),
        (lambda: resolve_profile(factors={"entropy_mean": {"centre": 1}}), "unknown key(s) ['centre']"),
    ],
)
def test_bad_values_name_what_is_wrong(call, message):
    with pytest.raises(ConfigurationError) as caught:
        call()
    assert message in str(caught.value)


def test_bad_profile_files(tmp_path):
    cases = {
        "notjson.json": ("{", "not valid JSON"),
        "format.json": (json.dumps({"format": 2, "name": "x"}), "format must be 1, got 2"),
        "missing.json": (json.dumps({"format": 1, "name": "x", "thresholds": {"window": 8}}), "missing threshold(s)"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigurationError, match=None) as caught:
            load_profile(str(tmp_path / name))
        assert message in str(caught.value) and name in str(caught.value)
    with pytest.raises(ConfigurationError, match="no-such.json"):
        load_profile(str(tmp_path / "no-such.json"))


@pytest.mark.slow
def test_profiles_load_from_an_installed_wheel(tmp_path):
    """The original CoreVital read profiles relative to its source tree, so installs silently used defaults."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = (
        "import json, opentelemetry_instrumentation_corevital as pkg\n"
        "from opentelemetry_instrumentation_corevital.signals.profiles import builtin_names, load_profile, "
        "profile_name_for\n"
        "from opentelemetry_instrumentation_corevital import report_schema\n"
        "print(json.dumps({'file': pkg.__file__, 'names': builtin_names(),\n"
        "  'entropy': {n: load_profile(n).factors['entropy_mean'].midpoint for n in builtin_names()},\n"
        "  'smollm2': profile_name_for('llama', 'SmolLM2-135M'), 'schema': report_schema()['title']}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["file"].startswith(str(target))  # the wheel's copy, not the source tree
    assert found["names"] == builtin_names()
    assert found["entropy"] == {n: load_profile(n).factors["entropy_mean"].midpoint for n in builtin_names()}
    assert found["smollm2"] == "smollm2" and found["schema"] == "CoreVital generation report"
