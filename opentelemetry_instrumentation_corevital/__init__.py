"""OpenTelemetry instrumentation that sees inside Hugging Face ``transformers`` generation.

Usage::

    from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure
    CoreVitalInstrumentor().instrument()          # or: opentelemetry-instrument python app.py
    model.generate(...)                           # one span per call, with corevital.* signals

    config = configure(exporters="otlp-json")     # exporters of CoreVital's own, if you have none
    CoreVitalInstrumentor().instrument(**config.instrument_kwargs())

Everything public is importable from here; submodules are internal.
"""

from ._config import StepView
from ._errors import ConfigurationError, CoreVitalError, ModelLoadError, OutputError, ReportValidationError
from ._monitor import CoreVitalMonitor
from ._values import CaptureMode, ContentMode
from .configuration import configure
from .instrument import CoreVitalInstrumentor, generation_context
from .report import SCHEMA_VERSION, Report, report_schema, validate_report
from .version import __version__

__all__ = [
    "SCHEMA_VERSION",
    "StepView",
    "CaptureMode",
    "ConfigurationError",
    "ContentMode",
    "CoreVitalError",
    "CoreVitalInstrumentor",
    "CoreVitalMonitor",
    "ModelLoadError",
    "OutputError",
    "Report",
    "ReportValidationError",
    "__version__",
    "configure",
    "generation_context",
    "report_schema",
    "validate_report",
]
