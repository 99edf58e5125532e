"""The versioned report of one generation, its builder and its JSON Schema."""

from ._build import build_report, sequence_length, trim_to_summary
from ._content_policy import ContentPolicy, without_content
from ._diagnose import diagnose_report, diagnose_sequence
from ._gil import pause, pause_often
from ._input import CaptureResult, ContentInput, GenerationRequest
from ._legacy import MigrationError, from_corevital
from ._model import (
    SCHEMA_VERSION,
    TIMELINE_SERIES,
    Aggregates,
    CaptureInfo,
    EncoderSummary,
    Flags,
    Intervention,
    LayerSeries,
    ModelInfo,
    PerfInfo,
    PromptTelemetry,
    Report,
    RequestInfo,
    RiskFactor,
    RiskInfo,
    SequenceReport,
    Summary,
    Thresholds,
    Timeline,
    Timings,
    Usage,
)
from ._summary import finish_summary
from ._validate import report_schema, validate_report

__all__ = [
    "SCHEMA_VERSION",
    "TIMELINE_SERIES",
    "Aggregates",
    "CaptureInfo",
    "CaptureResult",
    "ContentInput",
    "ContentPolicy",
    "EncoderSummary",
    "Intervention",
    "LayerSeries",
    "MigrationError",
    "PerfInfo",
    "PromptTelemetry",
    "Flags",
    "GenerationRequest",
    "ModelInfo",
    "Report",
    "RequestInfo",
    "RiskFactor",
    "RiskInfo",
    "SequenceReport",
    "Summary",
    "Thresholds",
    "Timeline",
    "Timings",
    "Usage",
    "build_report",
    "diagnose_report",
    "diagnose_sequence",
    "finish_summary",
    "from_corevital",
    "pause",
    "pause_often",
    "report_schema",
    "sequence_length",
    "trim_to_summary",
    "validate_report",
    "without_content",
]
