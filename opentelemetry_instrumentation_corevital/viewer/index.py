"""One streaming pass over the files: the list of runs, and every problem met.

A run is one generation: its span (``corevital.*`` attributes) and its report
log record, joined by trace and span id; either alone is enough. The pass
keeps a small :class:`RunSummary` per run and a :class:`Ref` (file and byte
offset) to the span and the report, never the lines themselves, so memory
grows with the number of runs, not with the size of the files. The run page
reads the two lines back with :func:`load_run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import names as n
from . import damage, messages, otlp, text
from .sources import UnreadableFile, discover, iter_lines, read_line_at

#: The report major version this viewer reads (minor versions only add fields).
READABLE_MAJOR = 1


@dataclass(frozen=True)
class Ref:
    """Where an item lives: the file, the byte offset of its line, and its position among that line's items."""

    file: str
    offset: int
    line: int
    index: int  # -1: the line is a bare report document, not an OTLP request


@dataclass
class RunSummary:
    """What the run list shows of one generation; ``None`` where the files do not say."""

    key: str
    trace_id: str | None = None
    span_id: str | None = None
    report_id: str | None = None
    started: float | None = None  # unix seconds
    model: str | None = None
    operation: str | None = None
    provider: str | None = None  # gen_ai.provider.name: huggingface, vllm, openai (only spans carry it)
    service: str | None = None
    risk_score: float | None = None
    risk_level: str | None = None
    uncertainty: float | None = None  # the answer uncertainty (capture "full")
    flags: list[str] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    duration_s: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    capture_mode: str | None = None
    schema_version: str | None = None
    error: str | None = None
    prompt: str | None = None  # content capture only, for search
    output: str | None = None  # content capture only: every sequence's, for search and the preview
    span_ref: Ref | None = None
    report_ref: Ref | None = None
    problems: list[str] = field(default_factory=list)  # lines of this run that could not be read

    @property
    def time_text(self) -> str:
        """The start time as UTC text for lists and labels."""
        moment = otlp.utc(self.started)
        return "unknown time" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")

    @property
    def short_id(self) -> str:
        """Eight characters that tell runs apart in labels."""
        return (self.span_id or self.report_id or self.key)[:8]

    @property
    def label(self) -> str:
        """Unique, human-readable name used in selectors: time, model, risk, short id."""
        risk = f"risk {self.risk_score:.2f}" if self.risk_score is not None else "risk –"
        return f"{self.time_text} · {self.model or 'unknown model'} · {risk} · {self.short_id}"


@dataclass
class Index:
    """Every run found in the files, with what could not be read and how much was."""

    runs: list[RunSummary]
    problems: list[str]
    files: list[str]
    counts: dict[str, int]

    def by_key(self, key: str) -> RunSummary | None:
        """The run with this key, or None."""
        return next((r for r in self.runs if r.key == key), None)


def schema_major(version: Any) -> int | None:
    """The major number of a schema version, or None when it is not one."""
    head = str(version).split(".")[0]
    return int(head) if head.isdigit() else None


def _run_key(trace_id: Any, span_id: Any, report_id: Any) -> str:
    if trace_id and span_id:
        return f"{trace_id}:{span_id}"
    return f"report:{report_id}"


def from_span(resource: dict[str, Any], span: dict[str, Any], attrs: dict[str, Any], readable: bool) -> dict[str, Any]:
    """RunSummary fields that a generation span gives."""
    start, end = otlp.nanos(span.get("startTimeUnixNano")), otlp.nanos(span.get("endTimeUnixNano"))
    status = otlp.typed(span, "status", dict, {})
    out: dict[str, Any] = {
        "trace_id": span.get("traceId") or None,
        "span_id": span.get("spanId") or None,
        "started": start / 1e9 if start and otlp.utc(start / 1e9) else None,
        "model": attrs.get(n.REQUEST_MODEL),
        "operation": attrs.get(n.OPERATION_NAME),
        "provider": attrs.get(n.PROVIDER_NAME),
        "service": resource.get("service.name"),
        "input_tokens": attrs.get(n.USAGE_INPUT_TOKENS),
        "output_tokens": attrs.get(n.USAGE_OUTPUT_TOKENS),
        "duration_s": (end - start) / 1e9 if start and end and end >= start else None,
        "schema_version": attrs.get(n.SCHEMA_VERSION),
        "error": attrs.get(n.ERROR_TYPE) or (status.get("message") or "error" if status.get("code") == 2 else None),
        **text.searchable(None, attrs),
    }
    if readable:
        out.update(
            risk_score=otlp.finite(attrs.get(n.RISK_SCORE)),
            risk_level=attrs.get(n.RISK_LEVEL),
            uncertainty=otlp.finite(attrs.get(n.UNCERTAINTY_SCORE)),
            flags=[f for f in attrs.get(n.FLAGS) or [] if isinstance(f, str)],
            ttft_s=otlp.finite(attrs.get(n.TIME_TO_FIRST_TOKEN)),
            tpot_s=otlp.finite(attrs.get(n.TIME_PER_OUTPUT_TOKEN)),
            capture_mode=attrs.get(n.CAPTURE_MODE),
        )
    return out


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def from_report(report: dict[str, Any]) -> dict[str, Any]:
    """RunSummary fields that a report gives (``started`` is derived: created_at minus duration)."""
    duration = otlp.finite(_get(report, "timings", "duration_s"))
    started = None
    created = report.get("created_at")
    if isinstance(created, str):
        try:
            stamp = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
            started = stamp - (duration or 0.0) if otlp.utc(stamp - (duration or 0.0)) else None
        except (ValueError, OverflowError):
            started = None
    flags = _get(report, "summary", "flags")
    return {
        "trace_id": report.get("trace_id"),
        "span_id": report.get("span_id"),
        "report_id": report.get("report_id"),
        "started": started,
        "model": _get(report, "model", "name"),
        "operation": _get(report, "request", "operation"),
        "risk_score": otlp.finite(_get(report, "summary", "risk_score")),
        "risk_level": _get(report, "summary", "risk_level"),
        "uncertainty": otlp.finite(_get(report, "summary", "uncertainty")),
        "flags": [f for f in flags if isinstance(f, str)] if isinstance(flags, list) else [],
        "input_tokens": _get(report, "usage", "input_tokens"),
        "output_tokens": _get(report, "usage", "output_tokens"),
        "duration_s": duration,
        "ttft_s": otlp.finite(_get(report, "timings", "time_to_first_token_s")),
        "tpot_s": otlp.finite(_get(report, "timings", "time_per_output_token_s")),
        "capture_mode": _get(report, "capture", "mode"),
        "schema_version": report.get("schema_version"),
        **text.searchable(report, None),
    }


#: RunSummary fields by the type a file must give them in; a value of another type is unknown (None), so that
#: labels, sorting and the table never meet a number where they expect text or the reverse.
_TEXT = (
    *("trace_id", "span_id", "report_id", "model", "operation", "provider", "service"),
    *("risk_level", "capture_mode", "schema_version", "error", "prompt", "output"),
)
_COUNTS = ("input_tokens", "output_tokens")
_NUMBERS = ("started", "risk_score", "uncertainty", "duration_s", "ttft_s", "tpot_s")


def _typed(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with each value of the wrong type for its RunSummary field made None."""
    out = dict(fields)
    for name, value in fields.items():
        if name in _TEXT:
            out[name] = value if isinstance(value, str) and value else None
        elif name in _COUNTS:
            out[name] = value if isinstance(value, int) and not isinstance(value, bool) else None
        elif name in _NUMBERS:
            out[name] = otlp.finite(value)
    return out


def _merge(run: RunSummary, fields: dict[str, Any], prefer: bool) -> RunSummary:
    """Fill ``run`` with ``fields`` (typed): only its gaps, or (``prefer``) everything the fields know."""
    updates = {}
    for name, value in _typed(fields).items():
        if value is None or value == []:
            continue
        current = getattr(run, name)
        if prefer or current is None or current == []:
            updates[name] = value
    return replace(run, **updates)


def is_report(document: Any) -> bool:
    """Whether a JSON document is a bare CoreVital report."""
    return isinstance(document, dict) and "schema_version" in document and "report_id" in document


class _Collector:
    """Accumulates runs and problems over all files; caps problems per file."""

    def __init__(self, max_problems_per_file: int) -> None:
        self.runs: dict[str, RunSummary] = {}
        self.problems: list[str] = []
        kinds = ("files", "lines", "spans", "other_spans", "reports", "metric_lines", "log_records")
        self.counts = dict.fromkeys(kinds, 0)
        self._cap = max_problems_per_file
        self.tied: dict[str, list[str]] = {}  # run key -> problems of lines that held that run's data
        self._file_problems = 0
        self._hidden = 0

    def start_file(self) -> None:
        self._file_problems = 0
        self._hidden = 0

    def problem(self, text: str) -> None:
        self._file_problems += 1
        if self._file_problems <= self._cap:
            self.problems.append(text)
        else:
            self._hidden += 1

    def end_file(self, path: str) -> None:
        if self._hidden:
            self.problems.append(messages.MORE_PROBLEMS.format(file=path, count=self._hidden))

    def add(self, key: str, fields: dict[str, Any], ref_name: str, ref: Ref, prefer: bool) -> None:
        run = self.runs.get(key) or RunSummary(key=key)
        run = _merge(run, fields, prefer)
        refs: dict[str, Any] = {ref_name: ref}
        self.runs[key] = replace(run, **refs)


def build_index(paths: list[str], max_problems_per_file: int = 20, roots: tuple[Path, ...] | None = None) -> Index:
    """Read every file under ``paths`` once, line by line, and list the runs they hold (only under ``roots``)."""
    files, found_problems = discover(paths, roots)
    c = _Collector(max_problems_per_file)
    c.problems.extend(found_problems)
    for path in files:
        c.start_file()
        c.counts["files"] += 1
        seen_line = False
        try:
            for line in iter_lines(path):
                seen_line = True
                c.counts["lines"] += 1
                _index_line(c, path, line.number, line.offset, line.data)
        except UnreadableFile as exc:
            c.problem(str(exc))
            seen_line = True
        if not seen_line:
            c.problem(messages.EMPTY_FILE.format(file=path))
        c.end_file(path)
    runs = sorted(c.runs.values(), key=lambda r: (r.started is None, -(r.started or 0.0), r.key))
    runs = [replace(r, problems=c.tied[r.key]) if r.key in c.tied else r for r in runs]
    return Index(runs=runs, problems=c.problems, files=files, counts=c.counts)


def _index_line(c: _Collector, path: str, number: int, offset: int, data: bytes) -> None:
    try:
        document = otlp.loads(data)
    except ValueError as exc:
        text, key = damage.truncated(path, number, data) if damage.cut_short(exc, data) else (None, None)
        c.problem(text or messages.NOT_JSON.format(file=path, line=number, detail=_short(exc)))
        if text and key:
            c.tied.setdefault(key, []).append(text)
        return
    try:
        _index_document(c, path, number, offset, document)
    except (TypeError, AttributeError, ValueError, KeyError, IndexError, RecursionError) as exc:
        # JSON of an unexpected shape somewhere inside: this line is skipped, the rest is read.
        c.problem(messages.ODD_SHAPE.format(file=path, line=number, detail=_short(exc)))


def _index_document(c: _Collector, path: str, number: int, offset: int, document: Any) -> None:
    what = otlp.kind(document)
    if what == otlp.METRICS:
        c.counts["metric_lines"] += 1
    elif what == otlp.SPANS:
        for i, (resource, span) in enumerate(otlp.spans(document)):
            _index_span(c, path, number, offset, i, resource, span)
    elif what == otlp.LOGS:
        for i, (_resource, record) in enumerate(otlp.log_records(document)):
            c.counts["log_records"] += 1
            if is_report_record(record):
                _index_report_record(c, path, number, offset, i, record)
    elif is_report(document):
        _index_report(c, path, number, Ref(path, offset, number, -1), document, None, None)
    else:
        c.problem(messages.NOT_OTLP.format(file=path, line=number))


def _index_span(c: _Collector, path: str, number: int, offset: int, i: int, resource: dict, span: dict) -> None:
    attrs = otlp.attributes(span.get("attributes"))
    if not any(k.startswith(n.CV) for k in attrs):
        c.counts["other_spans"] += 1
        return
    c.counts["spans"] += 1
    version = attrs.get(n.SCHEMA_VERSION)
    readable = version is None or schema_major(version) == READABLE_MAJOR
    if not readable:
        c.problem(
            messages.UNKNOWN_SPAN_SCHEMA.format(file=path, line=number, span_id=span.get("spanId"), version=version)
        )
    fields = from_span(resource, span, attrs, readable)
    key = _run_key(fields["trace_id"], fields["span_id"], None)
    c.add(key, fields, "span_ref", Ref(path, offset, number, i), prefer=False)
    # The span's start is the generation's start; a report only gives an estimate.
    if fields["started"] is not None:
        c.runs[key] = replace(c.runs[key], started=fields["started"])


def is_report_record(record: dict[str, Any]) -> bool:
    """Whether an OTLP log record is a CoreVital report event (field or older attribute)."""
    if record.get("eventName") == n.EVENT_REPORT:
        return True
    # Older SDKs put the event name in an attribute instead of the field.
    return any(
        kv.get("key") == "event.name" and otlp.any_value(kv.get("value")) == n.EVENT_REPORT
        for kv in record.get("attributes") or []
        if isinstance(kv, dict)
    )


def _index_report_record(c: _Collector, path: str, number: int, offset: int, i: int, record: dict) -> None:
    body = otlp.any_value(record.get("body"))
    if isinstance(body, str):
        try:
            report = otlp.loads(body)
        except ValueError as exc:
            c.problem(messages.BAD_REPORT.format(file=path, line=number, detail=f"not JSON: {_short(exc)}"))
            return
    else:
        report = body
    if not is_report(report):
        c.problem(messages.BAD_REPORT.format(file=path, line=number, detail="no schema_version and report_id"))
        return
    _index_report(c, path, number, Ref(path, offset, number, i), report, record.get("traceId"), record.get("spanId"))


def _index_report(c: _Collector, path: str, number: int, ref: Ref, report: dict, trace_id: Any, span_id: Any) -> None:
    version = report.get("schema_version")
    fields_ = from_report(report) if schema_major(version) == READABLE_MAJOR else None
    trace_id = trace_id or report.get("trace_id")
    span_id = span_id or report.get("span_id")
    key = _run_key(trace_id, span_id, report.get("report_id"))
    if fields_ is None:
        # Not read any further: the run is listed only if its span is in the files too.
        c.problem(messages.UNKNOWN_REPORT_SCHEMA.format(file=path, line=number, version=version))
        return
    c.counts["reports"] += 1
    started_from_span = c.runs[key].started if key in c.runs and c.runs[key].span_ref else None
    c.add(key, {**fields_, "trace_id": trace_id, "span_id": span_id}, "report_ref", ref, prefer=True)
    if started_from_span is not None:
        c.runs[key] = replace(c.runs[key], started=started_from_span)


def _short(exc: Exception, limit: int = 80) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- reading one run back ---------------------------------------------------------------------------------------


@dataclass
class RunDetail:
    """Everything the files hold about one run: span attributes and the report, as plain data."""

    summary: RunSummary
    span_name: str | None = None
    span: dict[str, Any] | None = None  # decoded attributes (all of them)
    resource: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def load_run(summary: RunSummary) -> RunDetail:
    """Read the run's span and report lines back from their files."""
    detail = RunDetail(summary=summary, problems=list(summary.problems))
    if summary.span_ref is not None:
        document = _read_document(summary.span_ref, detail)
        if document is not None:
            for i, (resource, span) in enumerate(otlp.spans(document)):
                if i == summary.span_ref.index:
                    detail.span_name = span.get("name")
                    detail.resource = resource
                    attrs = otlp.attributes(span.get("attributes"))
                    version = attrs.get(n.SCHEMA_VERSION)
                    if version is not None and schema_major(version) != READABLE_MAJOR:
                        attrs = {k: v for k, v in attrs.items() if not k.startswith(n.CV)}
                    detail.span = attrs
    if summary.report_ref is not None:  # only ever set for readable reports
        document = _read_document(summary.report_ref, detail)
        if document is not None and summary.report_ref.index < 0:
            detail.report = document
        elif document is not None:
            for i, (_resource, record) in enumerate(otlp.log_records(document)):
                if i == summary.report_ref.index:
                    body = otlp.any_value(record.get("body"))
                    detail.report = _body(body, summary.report_ref, detail)
    return detail


def _body(body: Any, ref: Ref, detail: RunDetail) -> Any:
    """A report record's body as the report (a JSON string decoded), or None with a problem."""
    if not isinstance(body, str):
        return body
    try:
        return otlp.loads(body)
    except ValueError as exc:
        detail.problems.append(messages.BAD_REPORT.format(file=ref.file, line=ref.line, detail=_short(exc)))
        return None


def _read_document(ref: Ref, detail: RunDetail) -> Any:
    try:
        return otlp.loads(read_line_at(ref.file, ref.offset))
    except (UnreadableFile, OSError, ValueError) as exc:
        detail.problems.append(
            messages.UNREADABLE.format(file=ref.file, detail=f"line {ref.line} changed: {_short(exc)}")
        )
        return None
