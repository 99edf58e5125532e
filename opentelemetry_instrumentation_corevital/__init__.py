"""OpenTelemetry instrumentation that sees inside Hugging Face ``transformers`` generation.

Usage::

    from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
    CoreVitalInstrumentor().instrument()          # or: opentelemetry-instrument python app.py
    model.generate(...)                           # one span per call, with corevital.* signals

Everything public is importable from here; submodules are internal.
"""

from ._config import CaptureMode, ContentMode, StepView
from ._errors import ConfigurationError, CoreVitalError, ModelLoadError, OutputError, ReportValidationError
from ._monitor import CoreVitalMonitor
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
    "generation_context",
    "report_schema",
    "validate_report",
]
