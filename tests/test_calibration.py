"""Calibration: features, baseline, recalibrated factors, probability map, and `corevital calibrate` end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from opentelemetry_instrumentation_corevital import ConfigurationError, CoreVitalMonitor
from opentelemetry_instrumentation_corevital.signals import calibration as cal
from opentelemetry_instrumentation_corevital.signals.profiles import load_profile
from opentelemetry_instrumentation_corevital.testing import tiny_causal_lm, tiny_tokenizer

HEALTHY = [
    {"entropy_mean": 1.0 + 0.1 * i, "margin_mean": 0.5 + 0.01 * i, "surprisal_mean": 2.0 + 0.05 * i} for i in range(21)
]


class TestPureFunctions:
    def test_baseline_quantiles_and_std_by_hand(self):
        stats = cal.baseline([{"x": v} for v in (1.0, 2.0, 3.0, 4.0, 5.0)])["x"]
        # mean 3, population std sqrt(2); p10 at rank 0.4 -> 1.4, p50 3, p90 at rank 3.6 -> 4.6
        assert (stats.mean, stats.std, stats.p10, stats.p50, stats.p90, stats.runs) == (
            3.0,
            math.sqrt(2.0),
            pytest.approx(1.4),
            3.0,
            pytest.approx(4.6),
            5,
        )

    def test_divergence_is_the_mean_absolute_z(self):
        reference = {"a": cal.FeatureStats(1.0, 0.5, 0, 0, 0, 9), "b": cal.FeatureStats(0.0, 2.0, 0, 0, 0, 9)}
        found = cal.divergence({"a": 3.0, "b": -1.0, "c": 7.0}, reference)
        assert found.z == {"a": 4.0, "b": -0.5}
        assert found.score == 2.25 and found.outliers == ("a",)
        assert cal.divergence({"c": 1.0}, reference) is None

    def test_factors_move_to_the_healthy_runs(self):
        factors = cal.recalibrated_factors(cal.baseline(HEALTHY))
        # entropy values 1.0 .. 3.0: p50 2.0, p90 2.8 -> midpoint 2.8, scale 0.8 / ln 9
        assert factors["entropy_mean"]["midpoint"] == pytest.approx(2.8)
        assert factors["entropy_mean"]["scale"] == pytest.approx(0.8 / math.log(9))
        # the margin is risky when low: midpoint p10 = 0.52, scale (p50 - p10) / ln 9 = 0.08 / ln 9
        assert factors["margin_mean"]["midpoint"] == pytest.approx(0.52)
        assert factors["margin_mean"]["scale"] == pytest.approx(0.08 / math.log(9))
        assert cal.recalibrated_factors(cal.baseline(HEALTHY[:19])) == {}  # too few runs to move anything

    def test_profile_without_labels_has_no_probability(self):
        profile, notes = cal.calibration_profile(HEALTHY, [None] * 21, name="p", extends="llama", source="s")
        assert "probability" not in profile and notes == []
        assert set(profile["risk"]) == {"entropy_mean", "surprisal_mean", "margin_mean"}
        few, notes = cal.calibration_profile(HEALTHY[:5], [0, 0, 1, 1, None], name="p", extends="llama", source="s")
        assert few["risk"] == {} and "probability" not in few
        assert notes == [
            "risk factors not recalibrated: 3 healthy runs, 20 needed",
            "no probability map: 2 healthy and 2 bad labelled runs, 10 of each needed",
        ]

    def test_cross_validation_scores_held_out_runs(self):
        # One feature that separates the labels: held-out runs are ranked almost perfectly (the two folds' maps
        # differ a little, so pooled predictions may swap a pair at the boundary).
        rows = [{"entropy_mean": float(i)} for i in range(24)]
        labels = [0] * 12 + [1] * 12
        quality = cal.cross_validated(rows, labels)
        assert quality.auroc > 0.99 and quality.runs == 24 and 0.0 <= quality.ece < 0.5
        # The same feature against labels it says nothing about: no better than chance.
        shuffled = cal.cross_validated(rows, [i % 2 for i in range(24)])
        assert shuffled.auroc < 0.6

    def test_narrative_of_a_calibrated_risk(self):
        from opentelemetry_instrumentation_corevital.signals.narrative import NarrativeFacts, narrative

        facts = NarrativeFacts(
            steps=12,
            risk=0.8123,
            level="high",
            calibrated=True,
            uncalibrated=0.2,
            divergent=("attn_entropy_late", "margin_mean", "entropy_mean", "update_ratio"),
        )
        assert narrative(facts).split(". ")[0] == (
            "Risk 0.81 (high) over 12 tokens: the calibrated profile's probability that this run is bad "
            "(uncalibrated score 0.20); outside its healthy baseline: attn_entropy_late, margin_mean, entropy_mean"
        )

    @pytest.mark.parametrize(
        "extra, message",
        [
            ({"baseline": {"entropy_mean": {"mean": 1.0}}}, "baseline 'entropy_mean' needs numbers mean, std"),
            ({"baseline": {"x": {"mean": 1, "std": -1, "p10": 0, "p50": 0, "p90": 0, "runs": 3}}}, "std >= 0"),
            (
                {"probability": {"features": ["a"], "weights": [1.0], "bias": 0.0, "means": [0.0], "scales": [0.0]}},
                "scales must be > 0",
            ),
            (
                {"probability": {"features": ["a", "b"], "weights": [1.0], "bias": 0, "means": [0], "scales": [1]}},
                "the same length",
            ),
        ],
    )
    def test_bad_calibration_sections_are_named(self, tmp_path, extra, message):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({"format": 1, "name": "bad", "extends": "llama", **extra}))
        with pytest.raises(ConfigurationError, match=message):
            load_profile(str(path))


def corevital(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "opentelemetry_instrumentation_corevital.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_causal_lm("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_calibrate_writes_a_profile_that_loads_and_applies(tiny_model_dir, tmp_path):
    words = ["the cat sat", "a dog ran", "the sun is warm", "birds can fly", "water is wet", "fire is hot"]
    lines = []
    for i in range(24):  # 12 healthy and 12 bad scored continuations, plus generated unlabelled runs
        prompt = f"{words[i % 6]} and {words[(i + 1) % 6]}"
        lines.append(json.dumps({"prompt": prompt, "continuation": words[(i * 5) % 6], "label": i % 2}))
    lines += [f"{w} or {w}" for w in words]
    prompts = tmp_path / "runs.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "mine.json"
    result = corevital(
        "calibrate",
        "--model",
        str(tiny_model_dir),
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--max-new-tokens",
        "6",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"wrote {out} (profile 'mine', extends 'llama')"
    written = json.loads(out.read_text())
    assert written["extends"] == "llama" and written["probability"]["runs"] == 24
    assert written["baseline"]["entropy_mean"]["runs"] == 18  # 12 healthy-labelled + 6 unlabelled
    assert set(written["risk"]) == set()  # 18 healthy runs are too few to move the factors
    assert "note: risk factors not recalibrated: 18 healthy runs, 20 needed" in result.stdout

    profile = load_profile(str(out))
    monitor = CoreVitalMonitor(capture="full", profile=str(out))
    import torch

    prompt = torch.tensor([[1, 5, 9, 14, 3]])
    monitor.generate(
        tiny_causal_lm("llama"), prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=6
    )
    seq = monitor.report.sequences[0]
    features = cal.sequence_features(seq)
    assert seq.risk.calibrated and seq.risk.score == pytest.approx(profile.probability.probability(features))
    assert seq.risk.divergence == pytest.approx(cal.divergence(features, profile.baseline).score)
    assert monitor.get_risk_score() == seq.risk.score
    assert seq.diagnosis.narrative.startswith(
        f"Risk {seq.risk.score:.2f} ({seq.risk.level}) over 6 tokens: the calibrated profile's probability that "
        f"this run is bad (uncalibrated score {seq.risk.uncalibrated_score:.2f})"
    )

    # The same file without the map: the risk is the noisy-OR the calibrated report kept as uncalibrated_score.
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({k: v for k, v in written.items() if k != "probability"}))
    again = CoreVitalMonitor(capture="full", profile=str(plain))
    again.generate(
        tiny_causal_lm("llama"), prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=6
    )
    risk = again.report.sequences[0].risk
    assert not risk.calibrated and risk.score == pytest.approx(seq.risk.uncalibrated_score)

    refused = corevital("calibrate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out))
    assert refused.returncode == 1 and f"--out {out} exists; use --force to replace it" in refused.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "hi", "label": 2}\n', "runs.jsonl:1: 'label' must be 0 (healthy) or 1 (bad), got 2"),
        ('hello\n{"prompt": "", "label": 0}\n', "runs.jsonl:2: 'prompt' must be a non-empty string"),
        ('{"prompt": "hi", "answer": "x"}\n', "runs.jsonl:1: unknown key 'answer'; use prompt, continuation and label"),
        ('{"prompt": "hi"\n', "runs.jsonl:1: not valid JSON"),
        ("\n\n", "no runs in this file"),
    ],
)
def test_bad_prompts_files_are_named(tmp_path, content, message):
    prompts = tmp_path / "runs.jsonl"
    prompts.write_text(content)
    result = corevital("calibrate", "--prompts", str(prompts), "--out", str(tmp_path / "p.json"))
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "p.json").exists()
