"""Prometheus metrics: jobs by status (read from the database at scrape time),
events received, requests answered and their latency.

Under gunicorn each worker counts its own; with PROMETHEUS_MULTIPROC_DIR set (in the environment
before the server starts: prometheus-client reads it on import) every process writes its counts to
files there and /metrics adds up all of them, those of workers that died included
(prometheus-client's multiprocess mode). The directory belongs to one server: `sbk serve` and
contrib/gunicorn.conf.py empty it before the first worker starts (`prepare_multiprocess_dir`), and
gunicorn tells prometheus-client of each worker that exits (`worker_exited`, the child_exit hook).
"""
import glob
import os
import time

from flask import Blueprint, Response, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               generate_latest, multiprocess)
from prometheus_client.core import GaugeMetricFamily

from . import models as m

bp = Blueprint("metrics", __name__)


def multiprocess_dir():
    """PROMETHEUS_MULTIPROC_DIR, or None: each process counts for itself."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


if multiprocess_dir():   # the counters below open their files there as they are made
    os.makedirs(multiprocess_dir(), exist_ok=True)

EVENTS_RECEIVED = Counter("sbk_events_received_total", "Job events accepted (duplicates excluded)")
REQUESTS = Counter("sbk_requests_total", "HTTP requests answered", ["method", "endpoint", "status"])
REQUEST_LATENCY = Histogram("sbk_request_seconds", "HTTP request latency", ["method", "endpoint"])


class JobsByStatus:
    """A collector that counts jobs per status when scraped."""

    def collect(self):
        family = GaugeMetricFamily("sbk_jobs", "Jobs by status", labels=["status"])
        rows = m.Job.select(m.Job.status, m.fn.COUNT(m.Job.id)).group_by(m.Job.status).tuples()
        for status, count in rows:
            family.add_metric([status], count)
        yield family


def _registry():
    registry = CollectorRegistry()
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY
        registry = REGISTRY
    return registry


@bp.get("/metrics")
def scrape():
    registry = CollectorRegistry()
    registry.register(JobsByStatus())
    output = generate_latest(registry) + generate_latest(_registry())
    return Response(output, mimetype=CONTENT_TYPE_LATEST)


def start_timer():
    g.request_started = time.perf_counter()


def observe(response):
    endpoint = request.endpoint or "unknown"
    REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
    started = g.pop("request_started", None)
    if started is not None:
        REQUEST_LATENCY.labels(request.method, endpoint).observe(time.perf_counter() - started)
    return response


def prepare_multiprocess_dir():
    """Empty PROMETHEUS_MULTIPROC_DIR of an earlier run's counts (before any worker starts); its path or None."""
    path = multiprocess_dir()
    if path:   # made when this module was imported
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    return path


def worker_exited(server, worker):
    """gunicorn's child_exit hook: a worker ended; its counts stay in the sums, its live gauges go."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(worker.pid)
