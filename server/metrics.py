"""Prometheus metrics: jobs by status (read from the database at scrape time),
events received and request latency (per process).

Under gunicorn each worker counts its own events and latencies; set
PROMETHEUS_MULTIPROC_DIR to an empty directory before `sbk serve` to have
/metrics add them up across workers (prometheus-client's multiprocess mode).
"""
import os
import time

from flask import Blueprint, Response, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               generate_latest, multiprocess)
from prometheus_client.core import GaugeMetricFamily

from . import models as m

bp = Blueprint("metrics", __name__)

EVENTS_RECEIVED = Counter("sbk_events_received_total", "Job events accepted (duplicates excluded)")
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
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
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
    started = g.pop("request_started", None)
    if started is not None:
        REQUEST_LATENCY.labels(request.method, request.endpoint or "unknown").observe(
            time.perf_counter() - started)
    return response
