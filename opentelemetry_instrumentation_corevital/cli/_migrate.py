"""``corevital migrate IN OUT``: bring reports of the original CoreVital into this package's formats.

IN is a report file (``.json``: one report, a list of reports, or an object
whose entries are reports; ``.jsonl``: one report per line) or a folder of
such files. OUT is a folder that receives:

* ``reports.jsonl`` — one converted report per line (schema 1.x, validated when ``jsonschema`` is installed);
* ``traces.jsonl`` — one span per report in the OpenTelemetry file-exporter format (OTLP JSON lines), with the
  same ``gen_ai.*`` and ``corevital.*`` attributes a live generation gets, timed at the original run;
* ``logs.jsonl`` — one ``corevital.generation.report`` log record per report (the report as its body), joined
  to its span.

All input is converted and checked before anything is written; the files are written under temporary names
and renamed at the end, so a bad input never leaves a partial file. An existing file is not replaced without
``--force``. Metrics are not written: they aggregate over time windows, and replaying history into them would
date it to today.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._errors import CoreVitalError, OutputError
from ..report import MigrationError, Report, from_corevital

OUTPUTS = ("reports.jsonl", "traces.jsonl", "logs.jsonl")


def add_parser(subparsers: Any) -> None:
    """Register ``corevital migrate``."""
    p = subparsers.add_parser(
        "migrate",
        help="convert original CoreVital reports (schema 0.3.x, 0.4.0) into reports and OTLP JSON lines",
        description="Convert reports written by the original CoreVital (schema 0.3.x and 0.4.0) into this "
        "package's report format and into OTLP JSON lines (spans and report log records), diagnosed with this "
        "package's flags and risk score; the original's own verdicts are kept under 'origin'.",
    )
    p.add_argument("input", metavar="IN", help="a report file (.json or .jsonl) or a folder of them")
    p.add_argument("output", metavar="OUT", help="folder for reports.jsonl, traces.jsonl and logs.jsonl")
    p.add_argument(
        "--no-content", action="store_true", help="drop prompt and output text and token ids from the converted reports"
    )
    p.add_argument("--profile", default=None, help="model profile to diagnose with (default: from the model)")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.set_defaults(handler=run)


def _inputs(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
        if not files:
            raise MigrationError(f"{path}: no .json or .jsonl files in this folder")
        return files
    if not path.exists():
        raise MigrationError(f"{path}: no such file or folder")
    return [path]


def _documents(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, parsed source report) for every report in one file; ``where`` prefixes error messages."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationError(f"{path}: cannot read: {exc}") from None
    if not text.strip():
        raise MigrationError(f"{path}: empty file")
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield f"{path}:{number}", _parse(line, f"{path}:{number}")
        return
    data = _parse(text, str(path))
    if isinstance(data, list):
        for i, item in enumerate(data):
            yield f"{path}: [{i}]", item
    elif (
        isinstance(data, dict)
        and "schema_version" not in data
        and any(isinstance(v, dict) and "schema_version" in v for v in data.values())
    ):
        # A document holding reports under names (the annotated sample): every non-comment entry is one.
        for key, value in data.items():
            if not key.startswith("_"):
                yield f"{path}: {key}", value
    else:
        yield str(path), data


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MigrationError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise MigrationError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise MigrationError(f"{where}: not readable JSON ({str(exc).split(';')[0]})") from None


def convert(paths: list[Path], content: bool, profile: str | None) -> list[tuple[str, Report]]:
    """(where, report) for every report of every input; the first bad one raises naming its file and field."""
    from ..report import validate_report

    try:
        import jsonschema  # noqa: F401 - optional: the cli extra does not install it
    except ImportError:
        validate = False
    else:
        validate = True
    reports = []
    for path in paths:
        for where, data in _documents(path):
            try:
                report = from_corevital(data, content=content, profile=profile)
            except MigrationError as exc:
                raise MigrationError(f"{where}: {exc}") from None
            except Exception as exc:  # a value no check of ours foresaw: still one line naming the file
                raise MigrationError(f"{where}: cannot be converted ({type(exc).__name__}: {exc})") from None
            if validate:
                try:
                    validate_report(json.loads(report.to_json()))
                except CoreVitalError as exc:
                    raise MigrationError(f"{where}: the converted report is invalid: {exc}") from None
            reports.append((where, report))
    return reports


def _span_id(report_id: str) -> int:
    """A stable, non-zero span id per report, so converting twice gives identical files."""
    return int(hashlib.sha256(report_id.encode()).hexdigest()[:16], 16) or 1


class _Failures(logging.Handler):
    """The warnings and errors OpenTelemetry's SDK and exporters log instead of raising (a value they cannot encode,
    a failed write), kept
    rather than printed: a report they would drop fails the migration, naming its file."""

    LOGGERS = ("opentelemetry", "opentelemetry_instrumentation_corevital")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []
        self._propagate: dict[str, bool] = {}

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.seen.append(f"{record.getMessage()}: {type(exc).__name__}: {exc}" if exc else record.getMessage())

    def __enter__(self) -> _Failures:
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self._propagate[name], logger.propagate = logger.propagate, False
            logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            logger.removeHandler(self)
            logger.propagate = self._propagate[name]


def write_otlp(reports: list[tuple[str, Report]], traces: Path, logs: Path) -> None:
    """One span and one report log record per report, timed at the original run, into OTLP JSON lines files;
    a report the exporters cannot write raises ``OutputError`` naming its source and why."""
    import datetime as _dt

    from opentelemetry import trace
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    from ..emit import corevital_attributes, emit_report, genai_attributes, report_detail, span_name
    from ..exporters.otlp_json import OTLPJsonLogExporter, OTLPJsonSpanExporter
    from ..instrument import SCHEMA_URL, SCOPE
    from ..version import __version__

    class _Ids(IdGenerator):
        """Trace id = the original run's (its UUID), span id derived from the report id."""

        trace_id = span_id = 1

        def generate_trace_id(self) -> int:
            return self.trace_id

        def generate_span_id(self) -> int:
            return self.span_id

    ids = _Ids()
    resource = Resource.create({"service.name": "corevital-migrate"})
    tracer_provider = TracerProvider(resource=resource, id_generator=ids)
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPJsonSpanExporter(path=traces)))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPJsonLogExporter(path=logs)))
    tracer = tracer_provider.get_tracer(SCOPE, __version__, schema_url=SCHEMA_URL)
    logger = logger_provider.get_logger(SCOPE, __version__, schema_url=SCHEMA_URL)
    with _Failures() as failures:
        try:
            for done, (where, report) in enumerate(reports):
                assert report.origin is not None and report.trace_id is not None  # from_corevital sets both
                ids.trace_id, ids.span_id = int(report.trace_id, 16), _span_id(report.report_id)
                report.span_id = f"{ids.span_id:016x}"
                end = _dt.datetime.fromisoformat(report.created_at.replace("Z", "+00:00"))
                end_ns = int(end.timestamp() * 1e9)
                start_ns = end_ns - int(report.timings.duration_s * 1e9)
                span = tracer.start_span(
                    span_name(report.request.operation, report.model.name),
                    kind=trace.SpanKind.INTERNAL,
                    start_time=start_ns,
                )
                span.set_attributes(corevital_attributes(report, 512, report_detail(report)))
                span.set_attribute(
                    "corevital.migrated_from", f"{report.origin.producer} {report.origin.schema_version}"
                )
                span.set_attributes(genai_attributes(report, content_on_span=False))
                emit_report(logger, report, trace.set_span_in_context(span), timestamp=end_ns)
                span.end(end_time=end_ns)
                if failures.seen:
                    raise OutputError(
                        f"OUT {traces.parent}: wrote {done} of {len(reports)} reports: {where} could not be written "
                        f"({failures.seen[0][:300]}); nothing kept"
                    )
        finally:
            tracer_provider.shutdown()
            logger_provider.shutdown()


def run(args: argparse.Namespace) -> int:
    """Convert the input reports and write them, with their OTLP JSON lines, to OUT; the exit code."""
    source, out = Path(args.input), Path(args.output)
    converted = convert(_inputs(source), content=not args.no_content, profile=args.profile)
    reports = [report for _, report in converted]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"OUT {out}: cannot create the folder: {exc.strerror or exc}") from None
    finals = [out / name for name in OUTPUTS]
    existing = [str(p) for p in finals if p.exists()]
    if existing and not args.force:
        raise OutputError(f"{', '.join(existing)} already exist; use --force to replace them")
    temps = [out / f".{name}.{os.getpid()}.tmp" for name in OUTPUTS]
    try:
        write_otlp(converted, temps[1], temps[2])  # sets each report's span id before the reports are written
        temps[0].write_text("".join(r.to_json() + "\n" for r in reports), encoding="utf-8")
        for temp in temps:
            lines = len(temp.read_text(encoding="utf-8").splitlines()) if temp.exists() else 0
            if lines != len(reports):  # the exporters log and drop on a failed write instead of raising
                raise OutputError(f"OUT {out}: wrote {lines} of {len(reports)} records to {temp.name}; nothing kept")
        for temp, final in zip(temps, finals):
            temp.replace(final)
    except OSError as exc:
        raise OutputError(f"OUT {out}: cannot write: {exc.strerror or exc}") from None
    finally:
        for temp in temps:
            with contextlib.suppress(OSError):  # not ours to remove (a folder in its place): left as found
                temp.unlink(missing_ok=True)
    versions: dict[str, int] = {}
    for report in reports:
        assert report.origin is not None  # from_corevital sets it
        versions[report.origin.schema_version] = versions.get(report.origin.schema_version, 0) + 1
    counts = ", ".join(f"{v}: {n}" for v, n in sorted(versions.items()))
    print(f"migrated {len(reports)} report{'s' if len(reports) != 1 else ''} ({counts})")
    for final in finals:
        print(f"  {final}")
    return 0
