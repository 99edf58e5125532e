"""What stays in the process between generations: captured reduce graphs (kept, bounded, dropped on uninstrument),
and the attention wrapper (the same function object each time it is installed, so a compiled forward's guards,
which name the function, find the graph compiled for it instead of recompiling)."""

from __future__ import annotations

import pytest

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
from opentelemetry_instrumentation_corevital.capture import _graph_pool, _intercept


@pytest.fixture
def pool():
    _graph_pool.clear()
    yield _graph_pool
    _graph_pool.clear()


def test_a_kept_graph_serves_one_generation_at_a_time(pool):
    graph = object()
    pool.give("shape a", graph)
    assert pool.take("shape b") is None
    assert pool.take("shape a") is graph
    assert pool.take("shape a") is None  # taken: a concurrent generation of the same shape captures its own
    assert pool.kept() == 0


def test_the_pool_keeps_at_most_its_limit_dropping_the_least_recently_given(pool):
    graphs = [object() for _ in range(pool.LIMIT + 2)]
    for i, graph in enumerate(graphs):
        pool.give(f"shape {i}", graph)
    assert pool.kept() == pool.LIMIT
    assert pool.take("shape 0") is None and pool.take("shape 1") is None
    assert pool.take(f"shape {pool.LIMIT + 1}") is graphs[-1]


def test_uninstrument_drops_the_kept_graphs(pool):
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument()
    try:
        pool.give("shape", object())
        assert pool.kept() == 1
    finally:
        instrumentor.uninstrument()
    assert pool.kept() == 0


def test_instrumenting_again_installs_the_same_attention_wrapper():
    instrumentor = CoreVitalInstrumentor()
    registry = _intercept._registry()
    original = registry["sdpa"]
    instrumentor.instrument()
    first = registry["sdpa"]
    instrumentor.uninstrument()
    assert registry["sdpa"] is original
    instrumentor.instrument()
    try:
        assert registry["sdpa"] is first is not original
    finally:
        instrumentor.uninstrument()
