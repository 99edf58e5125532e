"""Soak: many generations with the OTLP backend down for part of the run; memory stays flat, telemetry resumes.

A tiny Llama (``testing.tiny_causal_lm``) generates ``--generations`` times,
instrumented through ``configure(exporters="otlp")`` (the real SDK OTLP/HTTP
exporter) against a small OTLP/HTTP receiver in this process that decodes
and counts the spans and keeps nothing (so its memory stays constant and the
RSS is the application's). The receiver is stopped for
the middle part of the run (``--down``, fractions of the run; its port then
refuses connections) and started again on the same port. Every ``--every``
generations we sample the process RSS and the generate() latency.

It prints (and writes with ``--json``) RSS at the start, middle and end of the
run, the latency per phase, the spans the receiver got before the outage and
after it came back, and what CoreVital counted as dropped. It exits with 1
unless every output equals the uninstrumented one, spans arrive again after
the outage, and RSS at the end is within ``--rss-slack`` MiB of the start.

    python benchmarks/soak.py --generations 10000          # make bench-soak
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor, configure, testing  # noqa: E402

PROMPT = torch.tensor([[1, 17, 42, 99, 7]])


def rss_mib() -> float:
    """Resident set size of this process now, from /proc."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class CountingReceiver:
    """OTLP/HTTP on 127.0.0.1: counts the spans of /v1/traces, answers every signal like a collector, keeps nothing."""

    def __init__(self, port: int = 0) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/traces":
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    request = ExportTraceServiceRequest.FromString(body)
                    receiver.spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=10_000)
    parser.add_argument("--tokens", type=int, default=4, help="max_new_tokens (= min_new_tokens)")
    parser.add_argument("--down", type=float, nargs=2, default=(0.3, 0.7), help="outage, as fractions of the run")
    parser.add_argument("--every", type=int, default=100, help="generations between samples")
    parser.add_argument("--rss-slack", type=float, default=32.0, help="MiB the end may exceed the start by")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: no spinning on a shared machine)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = testing.tiny_causal_lm("llama", seed=0)
    mask = torch.ones_like(PROMPT)

    def generate() -> list[list[int]]:
        out = model.generate(
            PROMPT, attention_mask=mask, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False
        )
        return out.tolist()

    expected = generate()
    sink = CountingReceiver()
    port = sink.port
    os.environ.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_METRIC_EXPORT_INTERVAL="5000",
    )
    config = configure(exporters="otlp")
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument(**config.instrument_kwargs())

    n = args.generations
    down_at, up_at = int(n * args.down[0]), int(n * args.down[1])
    samples: list[dict[str, Any]] = []
    latency: dict[str, list[float]] = {"up (before)": [], "down": [], "up (after)": []}
    wrong = 0
    spans_before = spans_after_restart = 0
    started = time.monotonic()
    for i in range(n):
        if i == down_at:
            config.flush(timeout=10)
            spans_before = sink.spans
            sink.close()  # the backend goes away; the port now refuses connections
        if i == up_at:
            sink = CountingReceiver(port)
        phase = "up (before)" if i < down_at else "down" if i < up_at else "up (after)"
        t0 = time.perf_counter()
        wrong += generate() != expected
        latency[phase].append(time.perf_counter() - t0)
        if i % args.every == 0 or i == n - 1:
            samples.append({"generation": i, "rss_mib": round(rss_mib(), 1), "phase": phase})
            print(f"{i:6d} {phase:12s} rss {samples[-1]['rss_mib']:7.1f} MiB", file=sys.stderr, flush=True)
    instrumentor.uninstrument()
    config.flush(timeout=30)
    spans_after_restart = sink.spans
    config.shutdown(timeout=10)
    sink.close()
    elapsed = time.monotonic() - started

    rss = [s["rss_mib"] for s in samples]
    warm = samples[min(len(samples) - 1, max(1, len(samples) // 20))]  # after the first 5 %: imports and caches
    middle = samples[len(samples) // 2]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}, "
        f"Python {platform.python_version()}",
        "generations": n,
        "max_new_tokens": args.tokens,
        "torch_threads": args.threads,
        "backend_down": [down_at, up_at],
        "elapsed_s": round(elapsed, 1),
        "rss_mib": {
            "start": warm["rss_mib"],
            "start_at": warm["generation"],
            "middle": middle["rss_mib"],
            "middle_at": middle["generation"],
            "end": rss[-1],
            "max": max(rss),
            "min": min(rss),
        },
        "generate_ms_median": {k: round(statistics.median(v) * 1000, 2) for k, v in latency.items() if v},
        "generate_ms_max": {k: round(max(v) * 1000, 1) for k, v in latency.items() if v},
        "spans_received_before_outage": spans_before,
        "spans_received_after_restart": spans_after_restart,
        "generations_after_restart": n - up_at,
        "spans_dropped_by_reason": {
            reason: config.losses.dropped(reason=reason, signal="spans")
            for reason in ("queue_full", "export_failed", "shutdown")
        },
        "spans_accounted": spans_before + spans_after_restart + config.losses.dropped(signal="spans"),
        "failed_exports": config.losses.errors(),
        "wrong_outputs": wrong,
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    flat = rss[-1] - warm["rss_mib"] <= args.rss_slack
    return 0 if wrong == 0 and spans_after_restart > 0 and flat else 1


if __name__ == "__main__":
    sys.exit(main())
