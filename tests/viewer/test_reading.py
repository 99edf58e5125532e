"""The viewer's reading side (no Streamlit): files, OTLP decoding, runs, series, deep data, diagnosis, perf."""

from __future__ import annotations

import gzip
import json
import math
import tracemalloc
from pathlib import Path

import pytest

from opentelemetry_instrumentation_corevital.viewer import (
    compare,
    deep,
    diagnosis,
    messages,
    otlp,
    perf,
    runlist,
    series,
    sources,
)
from opentelemetry_instrumentation_corevital.viewer.index import build_index, load_run

from . import handmade as h


def by_model(index, model):
    (run,) = [r for r in index.runs if r.model == model]
    return run


def test_index_lists_every_run_newest_first_with_its_figures(good_dir):
    index = build_index([str(good_dir)])
    assert index.problems == []
    assert [r.model for r in index.runs] == [
        "hand-made/rotated-gzip",
        "hand-made/span-only",
        "hand-made/twin-1.1",
        "hand-made/plain-1.0",
        "hand-made/deep-1.1",
    ]
    assert index.counts == {
        "files": 4,
        "lines": 7,
        "spans": 5,
        "other_spans": 0,
        "reports": 3,
        "metric_lines": 1,
        "log_records": 3,
    }
    run = by_model(index, "hand-made/deep-1.1")
    assert (run.trace_id, run.span_id, run.started) == (h.DEEP_TRACE, h.DEEP_SPAN, float(h.T0))
    assert (run.risk_score, run.risk_level, run.flags) == (0.5, "medium", ["high_entropy"])
    assert (run.input_tokens, run.output_tokens, run.duration_s, run.ttft_s, run.tpot_s) == (6, 12, 2.0, 0.5, 0.125)
    assert (run.capture_mode, run.schema_version, run.service, run.operation) == (
        "full",
        "1.1.0",
        "handmade-svc",
        "chat",
    )
    assert run.label == "2026-01-02 03:04:08 · hand-made/deep-1.1 · risk 0.50 · b1b1b1b1"
    assert (run.span_ref.file, run.span_ref.line, run.span_ref.index) == (str(good_dir / "traces.jsonl"), 1, 0)
    assert (run.report_ref.file, run.report_ref.line, run.report_ref.index) == (str(good_dir / "logs.jsonl"), 1, 0)
    plain = by_model(index, "hand-made/plain-1.0")
    assert (plain.report_ref.line, plain.report_ref.index, plain.span_ref.line, plain.span_ref.index) == (1, 1, 2, 0)
    rotated = by_model(index, "hand-made/rotated-gzip")
    assert (rotated.service, rotated.capture_mode, rotated.ttft_s, rotated.report_ref) == (
        "rotated-svc",
        "off",
        0.25,
        None,
    )
    assert rotated.span_ref.file.endswith("traces-2026-01-01T00-00-00.000.jsonl.gz")


def test_a_report_without_its_span_is_a_run_of_its_own(tmp_path):
    report = h.plain_report()
    (tmp_path / "logs.jsonl").write_text(
        json.dumps(h.logs_line([h.report_record(report, h.PLAIN_TRACE, h.PLAIN_SPAN)])) + "\n"
    )
    (run,) = build_index([str(tmp_path / "logs.jsonl")]).runs
    # created_at 03:05:10 minus the 2.0 s duration
    assert (run.started, run.span_ref, run.risk_score, run.model) == (h.T0 + 60.0, None, 0.25, "hand-made/plain-1.0")
    detail = load_run(run)
    assert detail.span is None and detail.report == report


def test_every_problem_is_one_documented_message(good_dir, bad_dir):
    index = build_index([str(good_dir), str(bad_dir), str(bad_dir / "missing.jsonl")])
    assert index.problems == [messages.NOT_FOUND.format(path=str(bad_dir / "missing.jsonl")), *h.bad_problems(bad_dir)]
    future = by_model(index, "hand-made/from-the-future")
    # Its corevital.* attributes are not read (risk 0.5 on the span is ignored), its gen_ai.* ones are.
    assert (future.risk_score, future.output_tokens, future.report_ref, future.schema_version) == (
        None,
        5,
        None,
        "2.0.0",
    )
    detail = load_run(future)
    assert detail.report is None and detail.span == {
        "gen_ai.request.model": "hand-made/from-the-future",
        "gen_ai.usage.output_tokens": 5,
    }


def test_problems_are_capped_per_file(tmp_path):
    (tmp_path / "noise.jsonl").write_text("".join(f"junk {i}\n" for i in range(30)))
    problems = build_index([str(tmp_path)], max_problems_per_file=20).problems
    assert len(problems) == 21
    assert problems[-1] == messages.MORE_PROBLEMS.format(file=str(tmp_path / "noise.jsonl"), count=10)


def test_folders_without_files_compressed_and_broken_files(tmp_path):
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "notes.txt").write_text("not picked up by a folder scan")
    good = json.dumps(h.traces_line([h.span(h.GZ_TRACE, h.GZ_SPAN, h.T0, 1.0, {"corevital.capture.mode": "off"})]))
    data = gzip.compress((good + "\n" + good.replace(h.GZ_SPAN, "c" * 16) + "\n").encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) - 12])  # the gzip trailer and some data are missing
    (tmp_path / "packed.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 16)
    index = build_index([str(tmp_path / "empty-folder"), str(tmp_path)])
    assert index.files == [str(tmp_path / "cut.jsonl.gz"), str(tmp_path / "packed.jsonl.zst")]
    assert index.problems[0] == messages.NO_FILES.format(path=str(tmp_path / "empty-folder"))
    assert index.problems[1].startswith(
        messages.BROKEN_GZIP.split("{line}")[0].format(file=str(tmp_path / "cut.jsonl.gz"))
    )
    assert index.problems[2] == messages.ZSTD.format(file=str(tmp_path / "packed.jsonl.zst"))
    # The line before the break was read.
    assert [r.span_id for r in index.runs] == [h.GZ_SPAN]


def test_indexing_streams_a_large_file_line_by_line(tmp_path):
    """Memory while indexing stays far below the file size: lines are read one at a time and dropped."""
    report = h.plain_report()
    long_series = [0.5] * 4000
    report["sequences"][0]["timeline"] = {k: long_series for k in ("entropy", "surprisal", "margin", "topk_mass")}
    path = tmp_path / "logs.jsonl"
    with path.open("w") as handle:
        for i in range(160):
            report["trace_id"], report["span_id"] = f"{i:032x}", f"{i:016x}"
            report["created_at"] = f"2026-01-02T03:{i // 60:02d}:{i % 60:02d}Z"
            handle.write(json.dumps(h.logs_line([h.report_record(report, f"{i:032x}", f"{i:016x}")])) + "\n")
    size = path.stat().st_size
    assert size > 10_000_000
    tracemalloc.start()
    try:
        index = build_index([str(path)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(index.runs) == 160
    assert peak < size / 8, (peak, size)
    # ... and a run's report is read back from its offset.
    run = index.runs[-1]
    assert run.span_id == f"{0:016x}" and run.report_ref.line == 1
    assert load_run(index.runs[0]).report["span_id"] == f"{159:016x}"


def test_gzip_lines_are_read_back_from_their_offset(tmp_path):
    lines = [
        json.dumps(
            h.traces_line(
                [
                    h.span(
                        f"{i:032x}",
                        f"{i:016x}",
                        h.T0 + i,
                        1.0,
                        {"corevital.capture.mode": "off", "gen_ai.request.model": f"m{i}"},
                    )
                ]
            )
        )
        for i in range(5)
    ]
    with gzip.open(tmp_path / "t.jsonl.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    index = build_index([str(tmp_path / "t.jsonl.gz")])
    assert [load_run(r).span["gen_ai.request.model"] for r in index.runs] == ["m4", "m3", "m2", "m1", "m0"]
    assert [r.span_ref.offset for r in reversed(index.runs)] == [sum(len(x) + 1 for x in lines[:i]) for i in range(5)]


def test_otlp_values_decode_to_python():
    assert otlp.any_value({"intValue": "9007199254740993"}) == 9007199254740993
    assert math.isnan(otlp.any_value({"doubleValue": "NaN"}))
    assert otlp.any_value({"doubleValue": "-Infinity"}) == -math.inf
    assert otlp.any_value({"arrayValue": {}}) == []
    assert otlp.any_value({"kvlistValue": {"values": [{"key": "a", "value": {"boolValue": True}}]}}) == {"a": True}
    assert otlp.any_value({}) is None and otlp.any_value({"intValue": "x"}) is None
    assert otlp.finite(float("nan")) is None and otlp.finite(True) is None and otlp.finite(3) == 3.0


def test_series_from_a_report_keep_every_step_and_the_token_ids(good_dir):
    detail = load_run(by_model(build_index([str(good_dir)]), "hand-made/deep-1.1"))
    (seq,) = series.sequences(detail)
    assert (seq.source, seq.stride, seq.steps, seq.finish_reason) == ("report", 1, h.STEPS, "length")
    assert seq.values["entropy"] == h.ENTROPY and seq.values["margin"] == h.MARGIN
    assert seq.values["perplexity"][2] == 4.0 and seq.values["perplexity"][10] is None
    assert seq.token_ids == [101 + k for k in h.STEPS]
    assert seq.rows()[6] == {
        "step": 6,
        "token id": 107,
        "entropy": 4.5,
        "surprisal": 3.5,
        "margin": 0.125,
        "topk_mass": 0.75,
        "top1_prob": 0.3,
        "perplexity": 2**4.5,
    }


def test_series_from_a_thinned_batch_span(good_dir):
    detail = load_run(by_model(build_index([str(good_dir)]), "hand-made/span-only"))
    first, second = series.sequences(detail)
    assert (first.index, first.steps, first.stride, first.source) == (0, [0, 2, 4], 2, "span")
    assert first.values == {"entropy": [1.0, None, 3.0], "margin": [0.5, 0.25, 0.125]}
    assert (second.index, second.steps, second.finish_reason) == (1, [0, 2], "stop")
    assert second.values == {"entropy": [0.5, 0.25], "margin": [0.75, 0.875]}
    assert first.token_ids is None
    assert series.long_rows(second, ("margin",)) == [
        {"step": 0, "signal": "margin", "value": 0.75},
        {"step": 2, "signal": "margin", "value": 0.875},
    ]


def test_layer_matrices_and_prompt_analysis(good_dir):
    detail = load_run(by_model(build_index([str(good_dir)]), "hand-made/deep-1.1"))
    seq = detail.report["sequences"][0]
    data = deep.layer_data(seq)
    assert data.indices == h.LAYERS and data.steps == h.STEPS
    assert data.names() == ["hidden_norm", "attn_entropy", "attn_collapsed_fraction", "update_ratio"]
    cells = data.cells("attn_entropy")
    assert len(cells) == 96
    assert {"layer": 5, "step": 7, "value": 0.125} in cells and {"layer": 5, "step": 5, "value": 0.375} in cells
    means = {row["layer"]: row for row in data.layer_means()}
    assert means[0]["hidden_norm"] == 15.5  # mean of 10..21
    assert means[6]["attn_collapsed_fraction"] == 0.25  # 0.5 on 6 of 12 steps
    assert means[3]["update_ratio"] == 0.25  # the null at step 3 is skipped
    prompt = deep.prompt_data(seq, detail.report)
    assert prompt.perplexity == 5.5 and prompt.layers == h.LAYERS
    assert prompt.surprisal_rows()[0] == {"position": 1, "surprisal": 4.0}
    assert prompt.layer_rows()[1] == {
        "layer": 1,
        "hidden_norm": 20.0,
        "attn_sparsity": 0.5,
        "basin": 0.75,
        "basin_min": 0.375,
    }
    only = load_run(by_model(build_index([str(good_dir)]), "hand-made/span-only"))
    assert deep.span_layer_means(only.span, "corevital.layers.", "corevital.layers.indices") == [
        {"layer": 0, "hidden_norm": 10.0},
        {"layer": 1, "hidden_norm": 20.0},
    ]
    from_span = deep.span_prompt(only.span)
    assert (from_span.tokens, from_span.perplexity, from_span.layers) == (4, 2.5, [0, 1])
    assert from_span.surprisal_rows() == [{"position": 2, "surprisal": 2.0}, {"position": 3, "surprisal": 1.0}]
    assert from_span.layer_rows() == [{"layer": 0, "basin": 0.5}, {"layer": 1, "basin": 0.25}]
    plain = load_run(by_model(build_index([str(good_dir)]), "hand-made/plain-1.0"))
    assert deep.layer_data(plain.report["sequences"][0]) is None
    assert deep.prompt_data(plain.report["sequences"][0], plain.report) is None


def test_risk_flags_narrative_blamed_layers_and_fingerprint(good_dir):
    index = build_index([str(good_dir)])
    detail = load_run(by_model(index, "hand-made/deep-1.1"))
    risk = diagnosis.risk(detail)
    assert (risk.score, risk.level, risk.forced_by) == (0.5, "medium", None)
    assert [(f["name"], f["contribution"]) for f in risk.factors] == [
        ("entropy_mean", 0.3375),
        ("high_entropy_fraction", 0.175),
    ]
    assert diagnosis.flag_rows(detail) == [
        {"sequence": 0, "flag": "nan_or_inf", "fired": False, "detail": ""},
        {"sequence": 0, "flag": "repetition_loop", "fired": False, "detail": ""},
        {"sequence": 0, "flag": "mid_layer_anomaly", "fired": False, "detail": ""},
        {"sequence": 0, "flag": "attention_collapse", "fired": False, "detail": ""},
        {
            "sequence": 0,
            "flag": "high_entropy",
            "fired": True,
            "detail": "3 steps > 4 bits, longest run 3, first at step 6",
        },
    ]
    assert diagnosis.narrative(detail) == h.NARRATIVE
    assert diagnosis.blamed_layers(detail) == [{"layer": 5, "reason": "attention collapse"}, {"layer": 6}]
    assert diagnosis.blamed_layer_indices(detail) == h.BLAMED
    assert diagnosis.fingerprint(detail) == h.FINGERPRINT
    only = load_run(by_model(index, "hand-made/span-only"))
    risk = diagnosis.risk(only)
    assert (risk.score, risk.level, risk.factors) == (
        0.75,
        "high",
        [{"name": "repetition_share", "contribution": 0.625}, {"name": "entropy_mean", "contribution": 0.125}],
    )
    assert diagnosis.flag_rows(only) == [
        {"sequence": None, "flag": "repetition_loop", "fired": True, "detail": "from step 2"}
    ]
    assert (
        diagnosis.narrative(only) is None
        and diagnosis.blamed_layers(only) == []
        and diagnosis.fingerprint(only) is None
    )


@pytest.mark.parametrize(
    "value, expected",
    [("One. Two.", "One. Two."), (["One.", "Two."], "One. Two."), ({"text": "T"}, "T"), ("  ", None), (3, None)],
)
def test_narrative_shapes(value, expected):
    from opentelemetry_instrumentation_corevital.viewer.index import RunDetail, RunSummary

    detail = RunDetail(summary=RunSummary(key="k"), report={"summary": {"narrative": value}})
    assert diagnosis.narrative(detail) == expected


def test_performance_figures(good_dir):
    index = build_index([str(good_dir)])
    p = perf.perf(load_run(by_model(index, "hand-made/deep-1.1")))
    assert p.step_durations == [0.5] + [0.125] * 11
    assert (p.ttft_s, p.tpot_s, p.duration_s, p.tokens_per_s, p.prefill_s) == (0.5, 0.125, 2.0, 6.0, 0.5)
    assert p.overhead == {
        "perf.method": "strict",
        "perf.runs": 3,
        "perf.plain_s": 2.0,
        "perf.instrumented_s": 2.5,
        "perf.ratio": 1.25,
    }  # the span's corevital.perf.ratio repeats perf.ratio: shown once
    assert p.ratio == 1.25
    assert p.step_rows()[1] == {"step": 1, "duration (ms)": 125.0}
    only = perf.perf(load_run(by_model(index, "hand-made/span-only")))
    assert only.step_durations == [0.25, 0.125, 0.125] and only.step_stride == 2
    assert [r["step"] for r in only.step_rows()] == [0, 2, 4]
    assert only.overhead == {"corevital.perf.ratio": 1.5} and only.ratio == 1.5
    assert only.duration_s == 4.0 and only.tokens_per_s == 2.5


def test_compare_table_overlay_and_fingerprint_distance(good_dir):
    index = build_index([str(good_dir)])
    deep_, twin, plain = (
        load_run(by_model(index, m)) for m in ("hand-made/deep-1.1", "hand-made/twin-1.1", "hand-made/plain-1.0")
    )
    rows = {row["figure"]: row for row in compare.table([deep_, plain])}
    assert rows["risk score"] == {"figure": "risk score", deep_.summary.label: "0.500", plain.summary.label: "0.250"}
    assert rows["capture mode"][deep_.summary.label] == "full" and rows["flags"][plain.summary.label] == "high_entropy"
    assert rows["surprisal mean"][deep_.summary.label] == "1.875"
    assert rows["generation mode"][plain.summary.label] == "sample"
    overlay = compare.overlay([deep_, plain], "entropy")
    assert len(overlay) == 22  # 11 finite steps each
    assert overlay[6] == {"run": "b1b1b1b1 · hand-made/deep-1.1 · risk 0.50", "step": 6, "value": 4.5}
    matrix, missing = compare.fingerprint_distances([deep_, twin])
    assert missing == [] and matrix[0] == {
        "run": deep_.summary.label,
        deep_.summary.label: 0.0,
        twin.summary.label: 1.0,
    }
    matrix, missing = compare.fingerprint_distances([deep_, plain])
    assert matrix is None and missing == [plain.summary.label]
    assert diagnosis.fingerprint_distance([1.0], [1.0, 2.0]) is None


def test_run_list_filter_sort_and_rows(good_dir):
    runs = build_index([str(good_dir)]).runs
    models = lambda rs: [r.model.split("/")[1] for r in rs]  # noqa: E731
    assert models(runlist.filter_runs(runs, text="PLAIN")) == ["plain-1.0"]
    assert models(runlist.filter_runs(runs, text="rotated-svc")) == ["rotated-gzip"]
    assert models(runlist.filter_runs(runs, levels=["medium"])) == ["twin-1.1", "deep-1.1"]
    assert models(runlist.filter_runs(runs, flags=["repetition_loop"])) == ["span-only"]
    assert models(runlist.filter_runs(runs, min_risk=0.5)) == ["span-only", "twin-1.1", "deep-1.1"]
    assert models(runlist.sort_runs(runs, "highest risk first")) == [
        "span-only",
        "twin-1.1",
        "deep-1.1",
        "plain-1.0",
        "rotated-gzip",
    ]
    assert models(runlist.sort_runs(runs, "longest first"))[0] == "span-only"
    assert runlist.flag_names(runs) == ["high_entropy", "repetition_loop"]
    row = runlist.rows([by_model(build_index([str(good_dir)]), "hand-made/deep-1.1")])[0]
    assert row == {
        "time (UTC)": "2026-01-02 03:04:08",
        "output": "hand made output of twelve tokens",  # its report's output_text (content captured)
        "model": "hand-made/deep-1.1",
        "provider": None,  # the hand-made spans name none
        "risk": 0.5,
        "level": "medium",
        "flags": "high_entropy",
        "input tokens": 6,
        "output tokens": 12,
        "duration (s)": 2.0,
        "capture": "full",
        "service": "handmade-svc",
        "id": "b1b1b1b1",
    }


def test_folder_scan_picks_otlp_file_names():
    assert all(
        sources.is_candidate(n)
        for n in ("traces.jsonl", "logs.jsonl.1", "t.json.gz", "x.ndjson", "traces-2026-01-01T00-00-00.000.jsonl")
    )
    assert not any(sources.is_candidate(n) for n in ("notes.txt", ".hidden.jsonl", "model.gguf"))


def test_the_viewer_page_documents_every_message():
    page = (Path(__file__).resolve().parents[2] / "docs" / "viewer.md").read_text(encoding="utf-8")
    for name in (
        "NOT_FOUND",
        "OUTSIDE",
        "NO_FILES",
        "UNREADABLE",
        "ZSTD",
        "BROKEN_GZIP",
        "EMPTY_FILE",
        "NOT_JSON",
        "NOT_OTLP",
        "ODD_SHAPE",
        "BAD_REPORT",
        "UNKNOWN_REPORT_SCHEMA",
        "UNKNOWN_SPAN_SCHEMA",
        "MORE_PROBLEMS",
        "VIEW_FAILED",
        "NO_RUNS",
        "TRUNCATED",
        "TRUNCATED_RUN",
        "TRUNCATED_REPORT",
        "REPORT_UNREADABLE",
    ):
        text = (
            getattr(messages, name)
            .replace("{file}", "FILE")
            .replace("{path}", "PATH")
            .replace("{line}", "N")
            .replace("{detail}", "DETAIL")
            .replace("{version}", "VERSION")
            .replace("{span_id}", "SPAN")
            .replace("{count}", "N")
            .replace("{root}", "ROOT")
            .replace("{size}", "SIZE")
            .replace("{run}", "RUN")
            .replace("{report}", "REPORT")
            .replace("{model}", "MODEL")
            .replace("{stride}", "K")
        )
        assert text in page, name


def test_reading_side_imports_no_streamlit_and_the_app_ships_in_the_package():
    import subprocess
    import sys
    from importlib import resources

    code = (
        "import sys\nfrom opentelemetry_instrumentation_corevital.viewer import compare, deep, diagnosis, index, "
        "messages, otlp, perf, runlist, series, sources\n"
        "print(sorted(m for m in ('streamlit', 'pandas', 'altair', 'torch') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    assert resources.files("opentelemetry_instrumentation_corevital").joinpath("viewer/app.py").is_file()


def test_the_docs_screenshots_are_the_browser_scenarios_pictures():
    import re

    from .served import png_size

    root = Path(__file__).resolve().parents[2]
    shown = re.findall(r"\(img/(viewer-[a-z]+\.png)\)", (root / "docs" / "viewer.md").read_text(encoding="utf-8"))
    assert shown == [
        "viewer-runs.png",
        "viewer-run.png",
        "viewer-timeline.png",
        "viewer-layers.png",
        "viewer-compare.png",
    ]
    assert re.findall(r"\(docs/img/(viewer-[a-z]+\.png)\)", (root / "README.md").read_text(encoding="utf-8")) == [
        "viewer-run.png"
    ]
    for name in shown:  # written by `make screenshots` from drive.mjs's 1400 x 1600 viewport
        assert png_size(root / "docs" / "img" / name) == (1400, 1600), name


def odd_shapes(folder: Path) -> Path:
    """Valid JSON of the right kind with wrong types inside: what a buggy or hostile producer might write."""
    folder.mkdir(parents=True, exist_ok=True)
    weird_report = {
        "schema_version": "1.1.0",
        "report_id": "e" * 32,
        "trace_id": "e" * 32,
        "span_id": "f" * 16,
        "created_at": 7,
        "model": "not a section",
        "summary": {"risk_score": "high", "flags": "x", "narrative": {"text": 3}},
        "timings": {"step_end_s": ["a", None, 1.0], "duration_s": "slow"},
        "sequences": [
            "x",
            {"risk": [1], "timeline": {"entropy": "abc"}, "layers": {"hidden_norm": "x"}, "prompt": [], "flags": 3},
        ],
    }
    (folder / "odd.jsonl").write_text(
        "\n".join(
            json.dumps(d)
            for d in (
                {
                    "resourceSpans": [
                        1,
                        "x",
                        {"scopeSpans": 5},
                        {"resource": [], "scopeSpans": [{"spans": [{"attributes": 9}]}]},
                    ]
                },
                {
                    "resourceSpans": [
                        {
                            "scopeSpans": [
                                {
                                    "spans": [
                                        {
                                            "traceId": "e" * 32,
                                            "spanId": "f" * 16,
                                            "startTimeUnixNano": "soon",
                                            "attributes": [
                                                {"key": "corevital.capture.mode", "value": {"intValue": []}},
                                                {"key": "corevital.step.entropy", "value": {"arrayValue": 3}},
                                                {"key": 5},
                                            ],
                                        }
                                    ]
                                }
                            ]
                        }
                    ]
                },
                h.logs_line([h.report_record(weird_report, "e" * 32, "f" * 16)]),
            )
        )
        + "\n"
    )
    return folder


def test_odd_shapes_inside_valid_json_never_raise(tmp_path):
    index = build_index([str(odd_shapes(tmp_path))])
    (run,) = index.runs
    assert (run.span_id, run.report_ref.line, run.span_ref.line) == ("f" * 16, 3, 2)
    detail = load_run(run)
    for part in (
        series.sequences,
        diagnosis.narrative,
        diagnosis.blamed_layers,
        diagnosis.fingerprint,
        perf.perf,
        diagnosis.flag_rows,
    ):
        part(detail)  # each either copes or raises an ordinary exception the page turns into VIEW_FAILED


@pytest.mark.parametrize(
    "name, flags, expected",
    [
        (
            "mid_layer_anomaly",
            {
                "mid_layer_anomaly": True,
                "mid_layer_anomaly_layers": [3, 4],
                "mid_layer_anomaly_first_step": 7,
                "mid_layer_anomaly_ratio": 5.25,
            },
            "layers L3, L4, first at step 7, norm 5.2x off",
        ),
        ("mid_layer_anomaly", {"mid_layer_anomaly": False, "mid_layer_anomaly_ratio": 1.2}, ""),
        (
            "attention_collapse",
            {"attention_collapse": True, "attention_collapse_onset_step": 2, "attention_collapse_share": 0.375},
            "from step 2, 38% of heads collapsed",
        ),
    ],
)
def test_layer_flag_details(name, flags, expected):
    assert diagnosis._flag_detail(name, flags, {}) == expected
