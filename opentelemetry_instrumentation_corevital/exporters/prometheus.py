"""A Prometheus scrape endpoint for CoreVital's metrics, through the OpenTelemetry Prometheus exporter.

The OTel exporter translates names exactly as the Collector's ``prometheus``
exporter does (dots to underscores, unit suffixes such as ``_seconds``,
``_total`` on counters), so dashboards work the same whether Prometheus
scrapes the application or a Collector. Each endpoint has a registry of its
own: it serves CoreVital's metrics and nothing that other code put into
``prometheus_client``'s global registry, and two endpoints never collide.

Names, labels and units are listed in docs/backends.md#prometheus; every label
is bounded (model, operation, provider, token type, flag, layer group or index and
the OTel scope), never a step, token or trace id.

A counter or histogram series is served at 0 in the first scrape that
contains it: ``rate()`` and ``increase()`` only count what changed between
two samples, so a series first seen already at 1 (``corevital run`` after its
one generation) would read 0 forever.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .. import names as n
from .._errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

#: OpenTelemetry name -> Prometheus metric family name, as the OTel exporter (and the Collector) translate them.
#: Histograms expose ``<family>_bucket``, ``_sum`` and ``_count``; counters already end in ``_total``.
PROMETHEUS_NAMES = {
    n.METRIC_OPERATION_DURATION: "gen_ai_client_operation_duration_seconds",
    n.METRIC_TOKEN_USAGE: "gen_ai_client_token_usage",
    n.METRIC_TIME_TO_FIRST_TOKEN: "gen_ai_server_time_to_first_token_seconds",
    n.METRIC_TIME_PER_OUTPUT_TOKEN: "gen_ai_server_time_per_output_token_seconds",
    n.METRIC_RISK_SCORE: "corevital_risk_score",
    n.METRIC_UNCERTAINTY_SCORE: "corevital_uncertainty_score",
    n.METRIC_HEALTH_FLAGS: "corevital_health_flags_total",
    n.METRIC_TOKEN_ENTROPY: "corevital_token_entropy_bit",
    **{n.METRIC_LAYER_PREFIX + name: "corevital_layer_" + name for name in n.LAYER_METRICS},
}
#: Every label a CoreVital series can carry (besides ``job``/``instance`` added by the scraper and ``le`` on buckets).
PROMETHEUS_LABELS = frozenset(
    {
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_token_type",
        "error_type",
        "corevital_flag",
        "corevital_layer_index",
        "corevital_layer_group",
        "otel_scope_name",
        "otel_scope_version",
        "otel_scope_schema_url",
    }
)


#: Metric types whose series only grow from 0, so a missing first 0 loses the first increase.
CUMULATIVE_TYPES = frozenset({"counter", "histogram"})


class ZeroFirstCollector:
    """Serves each new counter or histogram series at 0 once, so a scraper sees it start from 0."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source
        self._seen: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        """Nothing: registering must not collect (that would use up the first 0)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The source's metrics; the series not served before with every value 0 and no exemplar."""
        with self._lock:
            for family in self._source.collect():
                if family.type not in CUMULATIVE_TYPES:
                    yield family
                    continue
                new = set()
                for i, sample in enumerate(family.samples):
                    # Prometheus's identity of a series: an empty label is no label (the OTel exporter gives
                    # every point of a family the union of label names, "" where a point lacks one).
                    key = (family.name, frozenset((k, v) for k, v in sample.labels.items() if v and k != "le"))
                    if key not in self._seen:
                        new.add(key)
                        family.samples[i] = sample._replace(value=0.0, exemplar=None)
                self._seen |= new
                yield family


class PrometheusEndpoint:
    """``http://host:port/metrics`` serving the metrics of ``reader``.

    Give ``reader`` to an SDK ``MeterProvider`` of yours, or pass
    ``own_provider=True`` for a ``MeterProvider`` of its own (``meter_provider``).
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 9464, resource: Resource | None = None, own_provider: bool = True
    ) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import CollectorRegistry, start_http_server

        source = CollectorRegistry()
        self.reader = PrometheusMetricReader(registry=source)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ZeroFirstCollector(source))
        self.meter_provider = None
        if own_provider:
            self.meter_provider = MeterProvider(metric_readers=[self.reader], resource=resource, shutdown_on_exit=False)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            if self.meter_provider is not None:
                self.meter_provider.shutdown()
            reason = (
                "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be opened ({exc.strerror or exc})"
            )
            raise ConfigurationError(
                f"prometheus_port={port} on {host} {reason}; choose another port with prometheus_port= "
                "or OTEL_EXPORTER_PROMETHEUS_PORT (0 picks a free one)"
            ) from exc
        self.host = host
        self.port = int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The scrape URL (IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def shutdown(self) -> None:
        """Stop our meter provider (if we own one) and the HTTP server."""
        try:
            if self.meter_provider is not None:
                self.meter_provider.shutdown()
        finally:
            self._server.shutdown()
            self._server.server_close()
