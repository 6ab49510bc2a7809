"""The server's metrics, in the Prometheus text format (prometheus_client: its histograms and its
exposition, thread-safe, rather than our own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: the endpoints' labels; any other path counts as "other" (labels stay few whatever clients ask)
ENDPOINTS = ("/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/info", "/v1/classify",
             "/v1/class-sets", "/v1/class-sets/{set_id}", "/v1/explain", "/page")


class Metrics:
    """One registry per application (tests start several in one process)."""

    def __init__(self) -> None:
        disable_created_metrics()   # no *_created sample beside each counter: the text stays readable
        r = self.registry = CollectorRegistry()
        self.requests = Counter("awt_serve_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("awt_serve_errors", "HTTP requests answered with a status of 400 or more (499: the "
                              "client went away first), by endpoint and status", ["endpoint", "status"], registry=r)
        self.latency = Histogram("awt_serve_request_seconds", "Time from a request's start to its answer",
                                 ["endpoint"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.batch_size = Histogram("awt_serve_batch_size", "Images per batch on the model's thread", registry=r,
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128))
        self.batch_seconds = Histogram("awt_serve_batch_seconds", "Time the model's thread spends on a batch",
                                       registry=r, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.queue_depth = Gauge("awt_serve_queue_depth", "Images waiting for the model's thread", registry=r)
        self.images = Counter("awt_serve_images", "Images answered, by outcome (classified, explained, unreadable, failed)",
                              ["outcome"], registry=r)
        self.refused = Counter("awt_serve_queue_full", "Requests refused because the queue was full", registry=r)
        self.disconnects = Counter("awt_serve_disconnects", "Requests whose client went away before the answer",
                                   registry=r)
        self.class_sets = Gauge("awt_serve_class_sets", "Class sets registered (with the one started with)",
                                registry=r)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        endpoint = endpoint if endpoint in ENDPOINTS else "other"
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
