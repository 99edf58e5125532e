"""No extra host synchronisation per step: our reads are a constant handful per generation.

Every tensor-to-host read (``item``, ``cpu``, ``tolist``, ``numpy``, ``__bool__``,
``__int__``, ``__float__``) during ``generate`` is counted, with and without the
instrumentation, for a short and a long generation. What we add must not grow
with the number of steps.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from opentelemetry_instrumentation_corevital.testing import TelemetryCapture

READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__")
PROMPT = torch.tensor([[1, 17, 42, 99, 7, 23, 5, 64]])


@contextlib.contextmanager
def count_host_reads():
    counts = {"n": 0}
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def make(name):
        original = originals[name]

        def counted(self, *args, **kwargs):
            counts["n"] += 1
            return original(self, *args, **kwargs)

        return counted

    for name in READS:
        setattr(torch.Tensor, name, make(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def reads(model, steps, **kwargs):
    kwargs.setdefault("do_sample", False)
    with count_host_reads() as counts:
        model.generate(
            PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=steps, min_new_tokens=steps, **kwargs
        )
    return counts["n"]


@pytest.mark.parametrize("capture", ["off", "summary"])
def test_added_host_reads_do_not_grow_with_steps(tiny_llama, capture):
    plain_short, plain_long = reads(tiny_llama, 4), reads(tiny_llama, 40)
    with TelemetryCapture(capture=capture):
        ours_short, ours_long = reads(tiny_llama, 4), reads(tiny_llama, 40)
    added_short, added_long = ours_short - plain_short, ours_long - plain_long
    assert plain_long > plain_short  # the counter really sees generate's own per-step check
    assert added_short == added_long
    # the sequences, one copy of the statistics (then per-part views on the host), the prompt ids and the mask
    assert 0 < added_short <= 8


def test_sampling_batch_adds_the_same_constant(tiny_llama):
    kwargs = {"do_sample": True, "num_return_sequences": 2}
    plain_short, plain_long = reads(tiny_llama, 4, **kwargs), reads(tiny_llama, 32, **kwargs)
    with TelemetryCapture():
        ours_short, ours_long = reads(tiny_llama, 4, **kwargs), reads(tiny_llama, 32, **kwargs)
    assert ours_short - plain_short == ours_long - plain_long
