"""The diagnosis-aware run page (issue 16) on real SmolLM2 runs: a batch opens on its riskiest sequence, the picker
says each sequence's risk and flags, the flags table lists what fired, and a run stopped by ``stop_on`` says so."""

from __future__ import annotations

import pytest

from opentelemetry_instrumentation_corevital import names as n
from opentelemetry_instrumentation_corevital.viewer import messages

from .conftest import real_reports
from .test_app import DEEP_LABEL, charts, metrics, open_run, start, texts
from .test_links import linked

pytestmark = pytest.mark.slow  # the batch_dir fixture generates with SmolLM2


def _key(report: dict) -> str:
    return f"{report['trace_id']}:{report['span_id']}"


def _fired(seq: dict) -> list[str]:
    return [name for name in n.FLAG_NAMES if seq["flags"].get(name) is True]


def _fired_table(at):
    """The flags table on the page (the one not folded away), of flags that fired."""
    folded = {id(d.proto) for e in at.expander for d in e.dataframe}
    (table,) = [
        d.value
        for d in at.dataframe
        if list(d.value.columns) == ["sequence", "flag", "detail"] and id(d.proto) not in folded
    ]
    return table


def test_a_batch_opens_on_its_riskiest_sequence_labelled_by_risk_and_flags(monkeypatch, batch_dir):
    batch, _ = real_reports(batch_dir)
    riskiest = batch["summary"]["riskiest_sequence"]
    seqs = {s["index"]: s for s in batch["sequences"]}
    assert riskiest != 0 and _fired(seqs[riskiest]) == ["repetition_loop"]  # the fixture's loop, not sequence 0
    at = linked(monkeypatch, batch_dir, run=batch["trace_id"])
    for key in ("timeline_seq", "layers_seq"):
        box = at.selectbox(key=f"{key}:{_key(batch)}")
        assert box.value == riskiest, key
        assert box.options == [
            f"sequence {i} · risk {s['risk']['score']:.2f} · {', '.join(_fired(s)) or 'no flags'}"
            for i, s in seqs.items()
        ]
    # The header's token count is the batch's, said as one; the timeline and the text are the riskiest sequence's.
    assert metrics(at)["Output tokens"] == f"{batch['usage']['output_tokens']} in 4 sequences"
    entropy = charts(at)["entropy (bits)"][0]
    assert list(entropy["entropy"]) == pytest.approx(seqs[riskiest]["timeline"]["entropy"])
    assert seqs[riskiest]["output_text"] in [c.value for c in at.code]
    at.selectbox(key=f"timeline_seq:{_key(batch)}").set_value(0).run()
    assert list(charts(at)["entropy (bits)"][0]["entropy"]) == pytest.approx(seqs[0]["timeline"]["entropy"])


def test_flags_table_lists_the_fired_ones_and_folds_the_rest(monkeypatch, batch_dir, good_dir):
    batch, _ = real_reports(batch_dir)
    at = linked(monkeypatch, batch_dir, run=batch["trace_id"])
    fired = _fired_table(at)
    expected = [(s["index"], f) for s in batch["sequences"] for f in _fired(s)]
    assert list(zip(fired["sequence"], fired["flag"])) == expected and len(expected) == 2
    (folded,) = at.expander
    assert folded.label == f"{4 * len(n.FLAG_NAMES) - 2} flags not fired"
    (quiet,) = [d.value for d in folded.dataframe]
    assert len(quiet) == 4 * len(n.FLAG_NAMES) - 2 and not set(zip(quiet["sequence"], quiet["flag"])) & set(expected)
    # A hand-made run: one sequence, high_entropy fired.
    at = open_run(start(monkeypatch, good_dir), DEEP_LABEL)
    fired = _fired_table(at)
    assert fired.to_dict("records") == [
        {"sequence": 0, "flag": "high_entropy", "detail": "3 steps > 4 bits, longest run 3, first at step 6"}
    ]


def test_a_run_stopped_by_stop_on_shows_its_finish_reason_and_the_intervention(monkeypatch, batch_dir):
    batch, stopped = real_reports(batch_dir)
    (seq,) = stopped["sequences"]
    assert seq["finish_reason"] == "intervention" and seq["intervention"]["condition"] == "repetition_loop"
    at = linked(monkeypatch, batch_dir, run=stopped["trace_id"])
    said = messages.INTERVENED.format(sequence=0, step=seq["intervention"]["step"], condition="repetition_loop")
    assert said in texts(at.warning)
    assert "Finish reason: intervention" in texts(at.caption)
    # Its narrative says the loop stop ended it, instead of advising to stop it (and counting tokens to save).
    (story,) = [t for t in texts(at.info) if t.startswith("Risk ")]
    assert story == stopped["summary"]["narrative"]
    loop = seq["flags"]["repetition_onset_step"]
    step = seq["intervention"]["step"]
    assert story.endswith(
        f"stop_on stopped the loop at step {step}, {step - loop} steps after its onset; to avoid it "
        "altogether, penalise repetition (repetition_penalty of 1.1-1.3 or no_repeat_ngram_size=4)."
    )
    assert "would have saved" not in story and "stop the loop" not in story
    at = linked(monkeypatch, batch_dir, run=batch["trace_id"])  # a batch that ran to max_new_tokens
    assert "Finish reason: length" in texts(at.caption)
    assert not [w for w in texts(at.warning) if w.startswith("Stopped by stop_on")]


def test_the_answer_uncertainty_is_shown_apart_from_the_risk(monkeypatch, real_dir):
    summary_run, full_run = real_reports(real_dir)
    score = full_run["summary"]["uncertainty"]
    assert summary_run["summary"]["uncertainty"] is None and 0 < score < 1
    expected = messages.UNCERTAINTY.format(score=score)
    at = linked(monkeypatch, real_dir, run=full_run["trace_id"])
    assert expected in texts(at.caption)
    assert metrics(at)["Risk score"] == f"{full_run['summary']['risk_score']:.3f}"
    at = linked(monkeypatch, real_dir, run=summary_run["trace_id"])
    assert not [c for c in texts(at.caption) if c.startswith("Answer uncertainty")]
