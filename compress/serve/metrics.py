"""Prometheus metrics of `compress serve` (prometheus-client), exposed as text on GET /metrics.

Each app has its own registry (several apps in one process, as in tests, do not clash). With several
uvicorn workers the command sets PROMETHEUS_MULTIPROC_DIR and /metrics aggregates every worker's
values (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("compress_serve_requests", "HTTP requests by endpoint and outcome "
                                "(ok, client_error: 4xx, unavailable: 503, error: other 5xx)",
                                ["endpoint", "outcome", "status"], registry=r)
        self.latency = Histogram("compress_serve_request_seconds", "Request latency (body read to response)",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_items = Histogram("compress_serve_batch_items", "Histories or events per micro-batch "
                                     "(one batch function call)", ["kind"], buckets=SIZE_BUCKETS, registry=r)
        self.batch_requests = Histogram("compress_serve_batch_requests", "Requests gathered into one micro-batch",
                                        ["kind"], buckets=SIZE_BUCKETS, registry=r)
        self.items = Counter("compress_serve_items", "Histories (recommend) and events served", ["kind"], registry=r)
        self.state = Counter("compress_serve_state", "Per-event KV cache outcome: hit (cached slot), miss "
                             "(prefilled from the window: new or rebuilt), full (a full pass over a full window: "
                             "exact overflow policy), duplicate (event id applied before)", ["result"], registry=r)
        self.event_seconds = Counter("compress_serve_event_seconds", "Wall seconds of /events batches by phase: "
                                     "load and commit (state store round trips), model (onnxruntime and the KV "
                                     "cache's gather and write-back)", ["phase"], registry=r)
        self.evictions = Counter("compress_serve_state_evictions", "Users evicted from this replica's KV cache",
                                 registry=r)
        self.conflicts = Counter("compress_serve_state_conflicts", "Lost compare-and-set races on a user's state "
                                 "(another replica applied an event first): retried", registry=r)
        self.truncated = Counter("compress_serve_truncated_histories", "Histories longer than max_len, truncated",
                                 registry=r)
        self.unknown = Counter("compress_serve_unknown_items", "Unknown item ids dropped from histories", registry=r)

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
