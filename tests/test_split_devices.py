"""A model split over devices (``device_map``): each device reduces its own layers in a lane, merged at the transfer.

This machine has one device, so the lanes are forced here through ``_lanes.lane_key`` (the one place a layer's
lane is decided): the same code runs as on a model split over two GPUs, on the CPU. The report of a split run must
equal the one-lane report of the same generation. The real split (2 GPUs, GPU + CPU) runs in
``benchmarks/gpu_check.py`` on the device machines (BENCHMARKS.md).
"""

from __future__ import annotations

import math

import pytest
import torch

from opentelemetry_instrumentation_corevital import validate_report
from opentelemetry_instrumentation_corevital.capture import _lanes, _rows
from opentelemetry_instrumentation_corevital.capture._lanes import Lane, LaneRows, lanes_of, merge_lanes
from opentelemetry_instrumentation_corevital.capture._reduce import StepLayout
from opentelemetry_instrumentation_corevital.testing import TelemetryCapture, tiny_causal_lm

PROMPT = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64], [0, 0, 0, 1, 9, 8, 7, 6]])
MASK = torch.tensor([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1]])
LAYER_FIELDS = ("hidden_norm", "hidden_std", "hidden_cos_prev", "update_ratio", "attn_entropy", "attn_sink_mass")


def layout(layers: int, hidden: str = "norm") -> StepLayout:
    return StepLayout(signals=False, k=5, beams=False, layers=layers, hidden=hidden, attention=False, moe=False)


# -- the pure parts, by hand -----------------------------------------------------------------------------------------
def test_lanes_follow_the_device_of_each_layer_output_in_layer_order():
    cpu, meta = torch.zeros(1), torch.zeros(1, device="meta")
    assert lanes_of([cpu, cpu, meta, meta]) == [
        Lane(torch.device("cpu"), (0, 1)),
        Lane(torch.device("meta"), (2, 3)),
    ]
    assert lanes_of([cpu, meta, cpu]) == [Lane(torch.device("cpu"), (0, 2)), Lane(torch.device("meta"), (1,))]
    assert lanes_of([meta]) == [Lane(torch.device("meta"), (0,))]


def test_merge_puts_each_lane_s_layers_back_in_layer_order():
    # two layer steps, one row; lane A holds layers 0 and 2, lane B layer 1 (hidden norms)
    a = LaneRows(
        Lane(torch.device("cpu"), (0, 2)), layout(2), [torch.tensor([[10.0, 12.0]]), torch.tensor([[20.0, 22.0]])]
    )
    b = LaneRows(Lane(torch.device("cpu"), (1,)), layout(1), [torch.tensor([[11.0]]), torch.tensor([[21.0]])])
    merged = merge_lanes([a, b], 2, torch.device("cpu"))
    assert merged["hidden"].tolist() == [[[10.0, 11.0, 12.0]], [[20.0, 21.0, 22.0]]]
    # only the first layer steps asked for
    assert merge_lanes([a, b], 1, torch.device("cpu"))["hidden"].tolist() == [[[10.0, 11.0, 12.0]]]


def test_merge_keeps_the_per_layer_columns_of_full_hidden_statistics():
    a = LaneRows(Lane(torch.device("cpu"), (0,)), layout(1, "full"), [torch.arange(8.0)[None]])
    b = LaneRows(Lane(torch.device("cpu"), (1,)), layout(1, "full"), [torch.arange(8.0, 16.0)[None]])
    merged = merge_lanes([a, b], 1, torch.device("cpu"))
    assert merged["hidden"].shape == (1, 1, 2, 8)
    assert merged["hidden"][0, 0].tolist() == [list(range(8)), list(range(8, 16))]


# -- whole generations: split lanes against one lane -----------------------------------------------------------------
@pytest.fixture
def merges(monkeypatch):
    """Count the transfers that merged lanes (a split run that silently took the one-lane path would show 0)."""
    calls = []
    real = _rows.merge_lanes

    def counting(*args, **kwargs):
        calls.append(len(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(_rows, "merge_lanes", counting)
    return calls


def run(model, split, monkeypatch, mode="full", **kwargs):
    """One generation with layers put in lanes by ``split(slot)`` (None: the device alone decides)."""
    if split is not None:
        monkeypatch.setattr(_lanes, "lane_key", lambda slot, tensor: (tensor.device, split(slot)))
    else:
        monkeypatch.setattr(_lanes, "lane_key", lambda slot, tensor: tensor.device)
    kwargs.setdefault("max_new_tokens", 8)
    kwargs.setdefault("do_sample", False)
    options = {k: kwargs.pop(k) for k in ("layers", "step_stride", "stop_on") if k in kwargs}
    with TelemetryCapture(capture=mode, **options) as tc:
        out = model.generate(PROMPT, attention_mask=MASK, **kwargs)
    (report,) = tc.reports
    validate_report(report.to_dict())
    return out, report


def assert_same_report(one, split):
    assert split.capture.error is None and split.capture.unavailable == one.capture.unavailable
    assert split.capture.signals == one.capture.signals
    for a, b in zip(one.sequences, split.sequences, strict=True):
        assert a.layers is not None and b.layers is not None
        assert b.layers.indices == a.layers.indices
        assert b.layers.steps == a.layers.steps
        for name in ("entropy", "surprisal", "margin", "topk_mass"):
            assert getattr(b.timeline, name) == pytest.approx(getattr(a.timeline, name), abs=1e-6, nan_ok=True)
        for name in LAYER_FIELDS:
            left, right = getattr(a.layers, name), getattr(b.layers, name)
            if left is None:
                assert right is None
                continue
            for x, y in zip(left, right, strict=True):
                assert [math.nan if v is None else v for v in y] == pytest.approx(
                    [math.nan if v is None else v for v in x], abs=1e-5, nan_ok=True
                )
        assert b.flags == a.flags and b.finish_reason == a.finish_reason
    assert split.summary.risk_score == pytest.approx(one.summary.risk_score, abs=1e-6)
    assert split.summary.flags == one.summary.flags


CASES = {
    "llama full, two lanes": dict(arch="llama", mode="full", split=lambda s: s >= 2),
    "llama summary, two lanes": dict(arch="llama", mode="summary", split=lambda s: s >= 2),
    "llama full, interleaved lanes": dict(arch="llama", mode="full", split=lambda s: s % 2),
    "llama full, every layer its lane": dict(arch="llama", mode="full", split=lambda s: s),
    "llama full, layer subset": dict(arch="llama", mode="full", split=lambda s: s >= 1, layers="0,2,3"),
    "llama full, stride 2": dict(arch="llama", mode="full", split=lambda s: s >= 2, step_stride=2),
    "llama eager attention": dict(arch="llama", mode="full", split=lambda s: s >= 2, impl="eager"),
    "llama beams": dict(arch="llama", mode="full", split=lambda s: s >= 2, num_beams=3),
    "mixtral experts": dict(arch="mixtral", mode="full", split=lambda s: s >= 2),
    "gpt2": dict(arch="gpt2", mode="full", split=lambda s: s >= 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_split_generation_reports_what_one_lane_reports(case, monkeypatch, merges):
    spec = dict(CASES[case])
    arch, mode, split = spec.pop("arch"), spec.pop("mode"), spec.pop("split")
    model = tiny_causal_lm(arch, num_hidden_layers=4)
    model.set_attn_implementation(spec.pop("impl", "sdpa"))
    with torch.no_grad():
        generate_kwargs = {k: v for k, v in spec.items() if k not in ("layers", "step_stride")}
        plain = model.generate(PROMPT, attention_mask=MASK, max_new_tokens=8, do_sample=False, **generate_kwargs)
        out_one, one = run(model, None, monkeypatch, mode, **dict(spec))
        assert merges == []
        out_split, split_report = run(model, split, monkeypatch, mode, **dict(spec))
    assert merges and min(merges) >= 2  # the lanes really were merged at the transfer
    assert torch.equal(out_one, plain) and torch.equal(out_split, plain)
    assert_same_report(one, split_report)


def test_a_stop_decided_on_the_device_holds_in_a_split_model(monkeypatch, merges):
    model = tiny_causal_lm("llama", num_hidden_layers=4)
    with torch.no_grad():
        _, one = run(model, None, monkeypatch, "full", stop_on=("high_entropy",), max_new_tokens=12)
        _, split = run(model, lambda s: s >= 2, monkeypatch, "full", stop_on=("high_entropy",), max_new_tokens=12)
    assert merges
    assert split.capture.error is None
    assert [s.finish_reason for s in split.sequences] == [s.finish_reason for s in one.sequences]
    assert_same_report(one, split)
