"""The versioned report of one generation, its builder and its JSON Schema."""

from ._build import BuildInput, build_report, sequence_length
from ._model import (
    SCHEMA_VERSION,
    Aggregates,
    CaptureInfo,
    Flags,
    ModelInfo,
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
from ._validate import report_schema, validate_report

__all__ = [
    "SCHEMA_VERSION",
    "Aggregates",
    "BuildInput",
    "CaptureInfo",
    "Flags",
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
    "report_schema",
    "sequence_length",
    "validate_report",
]
