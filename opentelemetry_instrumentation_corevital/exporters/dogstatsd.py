"""CoreVital metrics as DogStatsD datagrams, for apps that already ship metrics through a Datadog Agent.

The names are the OpenTelemetry ones (``corevital.risk.score``,
``gen_ai.client.operation.duration`` ...), so one Datadog dashboard works
whether the data came over OTLP or DogStatsD. Histograms become DogStatsD
distributions (``|d``, percentiles computed by Datadog), the flag counter a
count (``|c``). Tags are the same bounded attributes the OTel metrics carry
(model, operation, provider, token type, flag); never a step, token or trace
id. Each report becomes a handful of lines: one per generation-level figure,
and the per-token entropy distribution as ONE multi-value line
(``corevital.token.entropy:v1:v2:...|d``, DogStatsD protocol 1.1, Agent 6.25 /
7.25 or later), split only where it would not fit one datagram. They travel
as a few datagrams over UDP: sending never blocks, and an Agent that is down
only loses them.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator

from .. import names
from ..emit import metric_attributes
from ..report import Report

#: Datadog's limit for one UDP datagram on the default Agent configuration.
MAX_DATAGRAM = 8192


def _tag(key: str, value: object) -> str:
    text = str(value).replace(",", "_").replace("|", "_").replace("#", "_").replace("\n", " ")
    return f"{key}:{text}"


def _value(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _line(name: str, value: float, kind: str, tags: dict[str, object]) -> str:
    return f"{name}:{_value(value)}|{kind}|#" + ",".join(_tag(k, v) for k, v in tags.items())


def _multi_lines(name: str, values: list[float], tags: dict[str, object], limit: int) -> Iterator[str]:
    """Distribution lines carrying many values each (``name:v1:v2|d|#tags``), every line at most ``limit`` bytes."""
    suffix = "|d|#" + ",".join(_tag(k, v) for k, v in tags.items())
    room = limit - len(name.encode()) - len(suffix.encode())
    chunk: list[str] = []
    size = 0
    for text in map(_value, values):
        if chunk and size + 1 + len(text) > room:
            yield f"{name}:{':'.join(chunk)}{suffix}"
            chunk, size = [], 0
        chunk.append(text)
        size += 1 + len(text)
    if chunk:
        yield f"{name}:{':'.join(chunk)}{suffix}"


def report_lines(report: Report, limit: int = MAX_DATAGRAM) -> Iterator[str]:
    """The DogStatsD lines of one report, in a fixed order; the token entropy in lines of at most ``limit`` bytes."""
    base: dict[str, object] = dict(metric_attributes(report.request.operation, report.model.name))
    yield _line(names.METRIC_OPERATION_DURATION, float(report.timings.duration_s), "d", base)
    yield _line(names.METRIC_TOKEN_USAGE, int(report.usage.input_tokens), "d", {**base, names.TOKEN_TYPE: "input"})
    yield _line(names.METRIC_TOKEN_USAGE, int(report.usage.output_tokens), "d", {**base, names.TOKEN_TYPE: "output"})
    for metric, value in (
        (names.METRIC_TIME_TO_FIRST_TOKEN, report.timings.time_to_first_token_s),
        (names.METRIC_TIME_PER_OUTPUT_TOKEN, report.timings.time_per_output_token_s),
        (names.METRIC_RISK_SCORE, report.summary.risk_score),
    ):
        if value is not None and math.isfinite(value):
            yield _line(metric, float(value), "d", base)
    for flag in report.summary.flags:
        yield _line(names.METRIC_HEALTH_FLAGS, 1, "c", {**base, names.FLAG_ATTRIBUTE: flag})
    entropy = [float(v) for s in report.sequences for v in s.timeline.entropy if v is not None and math.isfinite(v)]
    yield from _multi_lines(names.METRIC_TOKEN_ENTROPY, entropy, base, limit)


def pack(lines: Iterator[str], limit: int = MAX_DATAGRAM) -> Iterator[bytes]:
    """Newline-joined datagrams no longer than ``limit`` bytes."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        data = line.encode("utf-8")
        if batch and size + 1 + len(data) > limit:
            yield b"\n".join(batch)
            batch, size = [], 0
        batch.append(data)
        size += len(data) + (1 if size else 0)
    if batch:
        yield b"\n".join(batch)


class DogStatsDReportExporter:
    """Sends each report's metrics to a DogStatsD server (a Datadog Agent) over UDP."""

    name = "dogstatsd"

    def __init__(self, host: str = "127.0.0.1", port: int = 8125) -> None:
        self.address = (host, port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def export(self, report: Report) -> None:
        """Send the report's figures as DogStatsD datagrams (UDP: never blocks on the agent)."""
        for datagram in pack(report_lines(report)):
            self._socket.sendto(datagram, self.address)

    def shutdown(self) -> None:
        """Close the UDP socket."""
        self._socket.close()
