"""Bad CoreVital configuration: always a ConfigurationError naming the option, never another exception; under
zero-code it is logged and the instrumentors loaded after ours still load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opentelemetry_instrumentation_corevital import ConfigurationError
from opentelemetry_instrumentation_corevital._config import resolve_options
from opentelemetry_instrumentation_corevital._values import MAX_LAYERS, parse_layers
from opentelemetry_instrumentation_corevital.signals.profiles import MAX_PROFILE_BYTES

PROFILE = "OTEL_INSTRUMENTATION_COREVITAL_PROFILE"
LAYERS = "OTEL_INSTRUMENTATION_COREVITAL_LAYERS"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def hostile_profiles(folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (PROFILE value, what the error must say); each raised a non-ConfigurationError before."""
    profile = {"format": 1, "name": "p", "extends": "default"}
    return {
        "long_name": ("x" * 5000, "unknown profile"),  # OSError: file name too long
        "wrong_types": (write(folder / "types.json", json.dumps({**profile, "model_types": 5})), "model_types"),
        "deep_nesting": (
            write(folder / "deep.json", '{"format": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"),
            "nested too deeply",
        ),
        "null_byte": ("bad\x00.json", "cannot be read"),  # ValueError: embedded null byte
        "device": ("/dev/zero", "not a regular file"),  # read whole, it exhausted memory
        "fifo": (fifo(folder / "p.json"), "not a regular file"),  # blocked instrument() forever
        "huge_file": (write(folder / "huge.json", " " * (MAX_PROFILE_BYTES + 1)), "larger than 1048576 bytes"),
        "not_utf8": (write_bytes(folder / "latin.json", b'{"name": "\xe9"}'), "cannot be read"),
    }


def fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


def write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    "case", ["long_name", "wrong_types", "deep_nesting", "null_byte", "device", "fifo", "huge_file", "not_utf8"]
)
def test_a_hostile_profile_is_a_configuration_error(case, tmp_path):
    value, says = hostile_profiles(tmp_path)[case]
    with pytest.raises(ConfigurationError, match=f"^{PROFILE}=") as caught:
        resolve_options({}, {PROFILE: value})
    assert says in str(caught.value)
    assert len(str(caught.value)) < 1000  # the value is shortened in the message


def test_a_wrong_type_anywhere_in_a_profile_file_is_a_configuration_error(tmp_path):
    """Every top-level key of the wrong type: a ConfigurationError (before, some were TypeError/AttributeError)."""
    base = {"format": 1, "name": "p", "extends": "default"}
    for key, bad in [
        ("model_types", 5),
        ("name_patterns", [1, 2]),
        ("thresholds", {"high_entropy_bits": "4"}),
        ("risk", {"entropy_mean": {"midpoint": []}}),
        ("extends", ["default"]),
        ("description", {"a": 1}),
        ("baseline", [1]),
        ("probability", {"features": 5}),
        ("name", 7),
    ]:
        path = write(tmp_path / f"{key}.json", json.dumps({**base, key: bad}))
        with pytest.raises(ConfigurationError, match=f"^{PROFILE}="):
            resolve_options({}, {PROFILE: path})


def test_any_parser_failure_becomes_a_configuration_error_naming_the_option():
    """A keyword whose parser trips over it (here: a profile given as an object without a string form)."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    with pytest.raises(ConfigurationError, match="^profile=.*RuntimeError: no text"):
        resolve_options({"profile": Unprintable()}, {})


@pytest.mark.parametrize("value", ["0-20000000", f"{MAX_LAYERS}", f"-{MAX_LAYERS + 1}", "0-5000,every:2"])
def test_an_oversized_layer_selection_is_refused(value):
    with pytest.raises(ConfigurationError, match=f"^{LAYERS}="):
        resolve_options({}, {LAYERS: value})


def test_a_layer_selection_within_the_bound_is_kept():
    assert parse_layers(f"0-{MAX_LAYERS - 1}").indices == tuple(range(MAX_LAYERS))
    assert parse_layers(f"-{MAX_LAYERS}").indices == (-MAX_LAYERS,)
    assert parse_layers("0-3,2,-1").indices == (0, 1, 2, 3, 2, -1)


def test_a_layer_selection_is_bounded_by_the_model():
    """Indices past the model's layers are dropped, and repeats captured once."""
    assert parse_layers("0-3,2,-1,40,-41").resolve(4) == (0, 1, 2, 3)
    assert parse_layers("5,1").resolve(4) == (1,)


# -- zero-code ------------------------------------------------------------------------------------------

# Runs under opentelemetry-instrument: prints whether ours and the openai-v2 instrumentor (whose entry point loads
# after ours) are on.
PROBE = """
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
print("corevital", CoreVitalInstrumentor().is_instrumented_by_opentelemetry)
print("openai", OpenAIInstrumentor().is_instrumented_by_opentelemetry)
"""


def run_probe(env: dict[str, str]) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    full_env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        **env,
    }
    return subprocess.run(
        [str(bin_dir / "opentelemetry-instrument"), sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=300,
        env=full_env,
    )


def test_entry_point_order_puts_another_instrumentor_after_ours():
    """The zero-code test below proves something only while the openai-v2 instrumentor loads after ours."""
    from importlib.metadata import entry_points

    names = [e.name for e in entry_points(group="opentelemetry_instrumentor")]
    assert names.index("corevital") < names.index("openai")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["long_name", "wrong_types", "deep_nesting", "layers"])
def test_bad_configuration_under_zero_code_is_logged_and_other_instrumentors_still_load(case, tmp_path):
    env = {LAYERS: "0-20000000"} if case == "layers" else {PROFILE: hostile_profiles(tmp_path)[case][0]}
    result = run_probe(env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:2] == ["corevital False", "openai True"], result.stderr[-3000:]
    assert "CoreVital instrumentation is off: ConfigurationError: OTEL_INSTRUMENTATION_COREVITAL_" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_good_configuration_under_zero_code_loads_both():
    result = run_probe({PROFILE: "llama", LAYERS: "0-3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:2] == ["corevital True", "openai True"], result.stderr[-3000:]
