"""Every problem message the viewer shows, in one place, as documented in docs/viewer.md.

Bad input never stops the viewer: each problem becomes one of these lines on
the page, and whatever else could be read is still shown. Tests check that
the table of docs/viewer.md lists each of them.
"""

from __future__ import annotations

from .._config import Options, specs
from .._content_switch import CAPTURE_CONTENT_ENV, GENAI_LATEST, STABILITY_OPT_IN_ENV

#: The ``corevital run`` flag of content capture, as the option table declares it.
CONTENT_FLAG = next(spec.flag for key, _, spec in specs(Options) if key == "capture_content")

NOT_FOUND = "{path}: no such file or folder."
OUTSIDE = "{path}: outside the folder this viewer was started on ({root}); not read."
NO_FILES = "{path}: this folder holds no OTLP JSON files (names containing .jsonl, .json or .ndjson)."
UNREADABLE = "{file}: cannot be read ({detail})."
ZSTD = "{file}: zstd-compressed; decompress it first (zstd -d)."
BROKEN_GZIP = "{file}: compressed data breaks at line {line} ({detail}); the lines before it were read."
EMPTY_FILE = "{file}: empty file, nothing to show."
NOT_JSON = "{file} line {line}: not valid JSON ({detail})."
TRUNCATED = (
    "{file} line {line}: truncated line: its JSON stops unfinished after {size} bytes (a file still being written, "
    "or cut short){run}."
)
TRUNCATED_RUN = "; it held the report of run {run}, which is shown from its span"
TRUNCATED_REPORT = "; it held report {report} ({model}), whose trace and span ids were cut off"
NOT_OTLP = "{file} line {line}: not an OTLP export request (no resourceSpans, resourceMetrics or resourceLogs)."
ODD_SHAPE = "{file} line {line}: an OTLP export request of an unexpected shape, skipped ({detail})."
BAD_REPORT = "{file} line {line}: the corevital.generation.report body is not a report ({detail})."
UNKNOWN_REPORT_SCHEMA = (
    "{file} line {line}: report schema_version {version} is not readable by this viewer (it reads 1.x); "
    "the run is shown from its span only."
)
UNKNOWN_SPAN_SCHEMA = (
    "{file} line {line}: span {span_id} declares corevital.schema_version {version}, which this viewer "
    "does not read (it reads 1.x); only its gen_ai.* attributes are shown."
)
VIEW_FAILED = "This part of the page could not be drawn from this run's data ({detail}); the rest is shown."
MORE_PROBLEMS = "{file}: {count} more problems not shown."
NO_RUNS = (
    "No CoreVital generations in these files. The viewer lists spans that carry corevital.* attributes and "
    "corevital.generation.report log records (corevital run writes both)."
)

#: Shown where a view needs data that only ``capture="full"`` records.
FULL_LAYERS = (
    'Per-layer data was not captured for this run (capture mode "{mode}"). capture="full" adds, per decoder '
    "layer and step: hidden-state norm, mean, std and max, attention entropy, max weight, sink and prompt mass "
    "and the collapsed-head fraction, shown here as layer × step heatmaps."
)
FULL_PROMPT = (
    'Prompt analysis was not captured for this run (capture mode "{mode}"). capture="full" adds the prefill '
    "pass: per-token surprisal of the prompt, prompt perplexity, and per-layer hidden-state norm, attention "
    "sparsity and basin scores."
)
UNCERTAINTY = (
    "Answer uncertainty {score:.2f}: a separate, label-free score of how likely the answer itself is wrong (RAUQ; "
    "it ranks one model's answers, its level is not a probability, and it is not part of the risk)."
)
FULL_LAYERS_PARTIAL = 'This run (capture mode "{mode}") has {have} per layer; capture="full" adds {missing}.'
SPAN_LAYERS = (
    "From the span: the mean over steps of each layer (the report with the layer × step matrices was not found)."
)
NO_REPORT = (
    "Only the span of this run was found, no corevital.generation.report log record: per-step series are "
    "those on the span (every {stride}. step), and per-sequence flags and risk factor details are missing. {logs}"
)
#: Where NO_REPORT says the report should have been, after the span's own file (``traces...`` -> ``logs...``).
LOGS_NOT_READ = "Its logs file {file} is not among the files read: add it in the sidebar."
LOGS_MISSING = "There is no logs file {file} beside its span's file (corevital run writes one)."
LOGS_WITHOUT = (
    "Its logs file {file} was read and holds no report of this run: it is written when report_log=True "
    "(corevital run sets it)."
)
LOGS_ELSEWHERE = (
    "The files read hold no report of this run: it is written when report_log=True (corevital run sets it)."
)
NO_SIGNALS = (
    'No logit signals: this run was captured with capture mode "{mode}". capture="summary" or "full" adds them.'
)
REPORT_UNREADABLE = (
    "The corevital.generation.report log record of this run could not be read (see above): per-step series are "
    "those on the span (every {stride}. step), and per-sequence flags and risk factor details are missing."
)
SPAN_TOKENS = "Generated tokens are in the report log record only, and this run has only its span."
#: How to capture text next time: the CLI flag, and the keyword and variable of an instrumented app.
GET_TEXT = (
    f"To capture text next time: corevital run {CONTENT_FLAG}; in an instrumented app, capture_content=True or "
    f"{CAPTURE_CONTENT_ENV}=true (SPAN_AND_EVENT with {STABILITY_OPT_IN_ENV}={GENAI_LATEST})."
)
NO_TEXT = "No prompt or output text: content capture was off for this run (it is off by default). " + GET_TEXT
NO_TOKENS = "Generated tokens are not shown: content capture was off. " + GET_TEXT
NO_FINGERPRINT = (
    "Fingerprint distance needs a fingerprint in every compared run (a report's sequences[].diagnosis.fingerprint "
    "or a span's corevital.fingerprint); missing in: {runs}. Reports of schema 1.2 and later carry one for every run "
    "with logit signals."
)
NO_COMPARE_TEXT = "No prompt or output text: content capture was off. " + GET_TEXT
UNKNOWN_LINK = (
    "The link names run {run}, which is not in these files: no trace, span or report id is or starts with it. "
    "Add the files that hold it in the sidebar."
)

#: A sequence that ``stop_on`` ended early: the run is not a normal one.
INTERVENED = (
    "Stopped by stop_on: sequence {sequence} ended at step {step} on {condition} (finish reason "
    '"intervention"); its figures cover the steps it ran.'
)
#: The step table's entropy colours follow the threshold the run was diagnosed with (its profile's, or the user's).
ENTROPY_COLOURS = (
    "Entropy cells: red above {bits} bits (the high_entropy_bits threshold this run was diagnosed with), yellow from "
    "{half} bits, green below."
)
