"""Distribution metadata that zero-code loading relies on, and files the package must ship."""

from __future__ import annotations

from importlib import metadata, resources

from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts
from packaging.requirements import Requirement

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, report_schema
from opentelemetry_instrumentation_corevital.configuration import ZeroCodeInstrumentor
from opentelemetry_instrumentation_corevital.package import _instruments

DIST = "opentelemetry-instrumentation-corevital"


def test_entry_point_is_named_corevital_and_loads_the_zero_code_instrumentor():
    """Zero-code loads a thin class that configures exporters from the environment, then instruments with the
    plain CoreVitalInstrumentor (which takes providers only)."""
    (entry,) = [ep for ep in metadata.entry_points(group="opentelemetry_instrumentor") if ep.name == "corevital"]
    assert entry.load() is ZeroCodeInstrumentor
    assert entry.dist.name == DIST
    assert ZeroCodeInstrumentor().instrumentation_dependencies() == _instruments


def test_instruments_extra_mirrors_package_py():
    declared = [Requirement(r) for r in metadata.requires(DIST)]
    extra = {(r.name, r.specifier) for r in declared if r.marker and r.marker.evaluate({"extra": "instruments"})}
    assert extra == {(Requirement(r).name, Requirement(r).specifier) for r in _instruments}
    assert {name for name, _ in extra} == {"transformers", "torch"}
    assert CoreVitalInstrumentor().instrumentation_dependencies() == _instruments


def test_zero_code_dependency_check_passes_here():
    (entry,) = [ep for ep in metadata.entry_points(group="opentelemetry_instrumentor") if ep.name == "corevital"]
    assert get_dist_dependency_conflicts(entry.dist) is None


def test_core_dependencies_are_api_only():
    names = sorted(Requirement(r).name for r in metadata.requires(DIST) if Requirement(r).marker is None)
    assert names == [
        "opentelemetry-api",
        "opentelemetry-instrumentation",
        "opentelemetry-semantic-conventions",
        "wrapt",
    ]


def test_schema_and_typing_marker_ship_with_the_package():
    files = resources.files("opentelemetry_instrumentation_corevital")
    assert files.joinpath("py.typed").is_file()
    assert files.joinpath("report/schema/report.schema.json").is_file()
    assert report_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_importing_the_package_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, opentelemetry_instrumentation_corevital; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
