"""The versions we declare are the versions we test.

The capture leans on ``transformers`` internals; ``pyproject.toml`` bounds ``transformers`` to the range that
``make test-compat`` runs this file, the capture tests and the architecture matrix
(tests/test_compatibility_table.py) against, at both ends, each in a virtualenv of its own. The main suite runs
it against the installed release.
"""

from __future__ import annotations

import inspect
import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from opentelemetry_instrumentation_corevital import testing
from opentelemetry_instrumentation_corevital.instrument import _targets
from opentelemetry_instrumentation_corevital.instrument._wrappers import Wrappers
from opentelemetry_instrumentation_corevital.package import _instruments

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
#: OpenTelemetry's two version lines: API/SDK/exporters 1.M.x ship with the 0.(M+21)bx packages.
STABLE = ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-")
#: Released on their own lines (the GenAI packages beside ours in the tests).
OWN_LINE = ("opentelemetry-instrumentation-openai-v2", "opentelemetry-util-genai")


def declared() -> list[Requirement]:
    """Every requirement of pyproject.toml: the dependencies and every extra."""
    texts = list(PYPROJECT["dependencies"])
    for extra in PYPROJECT["optional-dependencies"].values():
        texts += extra
    return [Requirement(t) for t in texts]


def specifiers(name: str) -> set[str]:
    return {str(r.specifier) for r in declared() if r.name == name}


class TestDeclaredRanges:
    def test_one_transformers_and_one_torch_range_everywhere(self):
        instruments = {Requirement(r).name: str(Requirement(r).specifier) for r in _instruments}
        assert specifiers("transformers") == {instruments["transformers"]}
        assert specifiers("torch") == {instruments["torch"]}
        for name in ("transformers", "torch"):
            assert any(s.operator == "<" for s in SpecifierSet(instruments[name])), f"{name} has no upper bound"

    def test_make_test_compat_runs_both_ends_of_the_transformers_range(self):
        makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
        ends = dict(re.findall(r"^COMPAT_(low|high)\s*:=\s*transformers==(\S+)$", makefile, re.MULTILINE))
        (spec,) = [Requirement(r).specifier for r in _instruments if Requirement(r).name == "transformers"]
        (lowest,) = [Version(s.version) for s in spec if s.operator == ">="]
        low, high = Version(ends["low"]), Version(ends["high"])
        assert low == lowest  # the lower bound is tested exactly
        assert high in spec and Version(f"{high.major}.{high.minor + 1}") not in spec  # the newest minor allowed

    def test_opentelemetry_requirements_are_one_release_line(self):
        otel = [r for r in declared() if r.name.startswith("opentelemetry-") and r.name not in OWN_LINE]
        stable = {str(r.specifier) for r in otel if r.name.startswith(STABLE)}
        contrib = {str(r.specifier) for r in otel if not r.name.startswith(STABLE)}
        assert len(stable) == len(contrib) == 1 and re.fullmatch(r"~=1\.\d+\.0", next(iter(stable)))
        (minor,) = {Version(s.version).minor for r in otel if r.name.startswith(STABLE) for s in r.specifier}
        assert SpecifierSet(next(iter(contrib))) == SpecifierSet(f">=0.{minor + 21}b0,<0.{minor + 22}")  # one release

    def test_every_report_and_trace_backend_has_an_upper_bound(self):
        for name in ("wandb", "ddtrace", "wrapt", "streamlit"):
            for spec in specifiers(name):
                if "==" not in spec:  # the test extra pins exact releases
                    assert "<" in spec, f"{name} {spec} has no upper bound"

    @pytest.mark.parametrize("name", ["transformers", "torch", "opentelemetry-api", "opentelemetry-instrumentation"])
    def test_installed_release_is_in_the_declared_range(self, name):
        (spec,) = {r.specifier for r in declared() if r.name == name}
        assert Version(metadata.version(name)) in spec


class TestTransformersInternals:
    """Each private name the capture uses, present with the shape it is used with."""

    def test_every_wrapped_function_exists(self):
        names = [f"{owner.__name__}.{name}" for owner, name, _ in _targets(Wrappers(lambda: None))]
        assert names == [
            "GenerationMixin.generate",
            "GenerationMixin._get_logits_processor",
            "GenerationMixin._get_stopping_criteria",
            "GenerationMixin._update_finished_beams",
            "TextStreamer.__init__",
            "Cache.reorder_cache",
            "EncoderDecoderCache.reorder_cache",
            "PreTrainedTokenizerBase.apply_chat_template",
            "PreTrainedTokenizerBase.__call__",
        ]

    def test_positional_arguments_we_read(self):
        from transformers.cache_utils import Cache
        from transformers.generation.utils import GenerationMixin

        def positions(function) -> list[str]:
            return list(inspect.signature(function).parameters)[1:]

        assert positions(GenerationMixin._get_logits_processor)[:2] == ["generation_config", "input_ids_seq_length"]
        assert positions(Cache.reorder_cache)[:1] == ["beam_idx"]

    def test_attention_registry(self):
        from transformers.modeling_utils import AttentionInterface

        assert {"sdpa", "flash_attention_2"} <= set(AttentionInterface._global_mapping)

    @pytest.mark.parametrize("arch", ["llama", "mistral", "mixtral", "qwen2", "phi3", "gpt2"])
    def test_models_declare_their_recorded_outputs(self, arch):
        from opentelemetry_instrumentation_corevital.capture._layers import discover

        model = testing.tiny_causal_lm(arch)
        layout = discover(model)
        assert layout.problems == []
        assert len(layout.decoder_layers) == len(layout.decoder_attention) == 2
        assert len(layout.routers) == (2 if arch == "mixtral" else 0)

    def test_generation_modes_are_named_as_we_read_them(self):
        from transformers import GenerationConfig

        model = testing.tiny_causal_lm()
        modes = {
            "greedy_search": GenerationConfig(),
            "sample": GenerationConfig(do_sample=True),
            "beam_search": GenerationConfig(num_beams=2),
            "beam_sample": GenerationConfig(num_beams=2, do_sample=True),
        }
        for expected, config in modes.items():
            assert config.get_generation_mode().value == expected
        assert GenerationConfig().get_generation_mode(model).value == "assisted_generation"
        assert GenerationConfig(prompt_lookup_num_tokens=3).get_generation_mode().value == "assisted_generation"
