"""Load on loopback: 200 simulated wrappers and 20 managers against `sbk serve` (gunicorn, 2 workers).

The load generator runs in a few forked processes (threads with a `requests`
session each) on the same 2 cores as the server, so the figures are a floor.
"""
import multiprocessing
import statistics
import threading
import time
from types import SimpleNamespace

import pytest
import requests

from server import demo as d
from server import models as m

from .conftest import Server, read_db

pytestmark = pytest.mark.timeout(900)

WRAPPERS = 200
MANAGERS = 20
PROCESSES = 4


def one_wrapper(base, job_id, token, until):
    """Heartbeats and step events in seq order until `until`, then the final event."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    url = f"{base}/api/v1/jobs/{job_id}/events"
    latencies, errors, acked, seq = [], [], 0, 0
    while True:
        seq += 1
        final = time.time() >= until
        body = {"attempt": 1, "seq": seq, "time": time.time(), "status": "done" if final else "running",
                "kind": "final" if final else ("step" if seq % 5 == 1 else "heartbeat"),
                "step": f"RUNNING-0{1 + seq % 7}", "metrics": {"rss_mb": 100.0 + seq}}
        if final:
            body["code"] = 0
        began = time.perf_counter()
        try:
            r = http.post(url, json=body, timeout=60)
            latencies.append(time.perf_counter() - began)
            if r.status_code != 200 or r.json().get("accepted") != 1:
                errors.append(f"{job_id}/{seq}: {r.status_code} {r.text[:100]}")
            else:
                acked += 1
        except requests.RequestException as exc:
            errors.append(f"{job_id}/{seq}: {exc}")
        if final:
            return latencies, errors, acked


def one_manager(base, token, until):
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    latencies, errors, page = [], [], 0
    while time.time() < until:
        page = page % 4 + 1
        began = time.perf_counter()
        try:
            r = http.get(f"{base}/api/v1/jobs", params={"page": page, "per_page": 50}, timeout=60)
            latencies.append(time.perf_counter() - began)
            if r.status_code != 200:
                errors.append(f"page {page}: {r.status_code} {r.text[:100]}")
        except requests.RequestException as exc:
            errors.append(f"page {page}: {exc}")
    return latencies, errors, 0


def run_threads(work):
    """In a forked process: one thread per (function, args); their (latencies, errors, acked) summed."""
    results = []
    threads = [threading.Thread(target=lambda f=f, a=a: results.append(f(*a))) for f, a in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ([x for r in results for x in r[0]], [x for r in results for x in r[1]],
            sum(r[2] for r in results), len(results))


def percentile(values, q):
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_200_wrappers_and_20_managers_lose_nothing(backend, request, tmp_path, full, figures):
    db_url = (request.getfixturevalue("pg").new_database() if backend == "postgresql"
              else f"sqlite:///{tmp_path / 'sbk.db'}")
    duration = 60 if full else 10
    server = Server(tmp_path, db_url, env={"SBK_REAP_INTERVAL_S": "3600"}).start()
    try:
        api = server.api()
        release = SimpleNamespace(adler32="1a2b3c4d", workdir="FastSim/V0.2.5", exe="bin/PacProduction")
        req = d.define_production(api, release, WRAPPERS, 10)
        plan = api.call("POST", "/submissions", json={
            "production": d.PRODUCTION, "bulks": [{"request": req["id"], "sites": [d.SITE],
                                                   "runs": WRAPPERS, "events": 10}]})
        ids = plan["job_ids"]
        tokens = {i: api.call("POST", f"/jobs/{i}/token")["server"]["token"] for i in ids}
        manager = server.add_user("rel-shift", "Shift")
        until = time.time() + duration
        work = [(one_wrapper, (server.url, i, tokens[i], until)) for i in ids]
        chunks = [work[k::PROCESSES] for k in range(PROCESSES)]
        chunks.append([(one_manager, (server.url, manager, until))] * MANAGERS)
        began = time.monotonic()
        with multiprocessing.get_context("fork").Pool(len(chunks)) as pool:
            results = pool.map(run_threads, chunks, chunksize=1)
        elapsed = time.monotonic() - began
    finally:
        server.stop()
    ev_lat = [x for r in results[:-1] for x in r[0]]
    errors = [x for r in results for x in r[1]]
    acked = sum(r[2] for r in results[:-1])
    mon_lat = results[-1][0]
    assert not errors, errors[:5]
    assert sum(r[3] for r in results) == WRAPPERS + MANAGERS
    with read_db(db_url):
        stored = m.Event.select().where(m.Event.job.in_(ids), m.Event.seq > 0).count()
        statuses = {j.status for j in m.Job.select().where(m.Job.id.in_(ids))}
    assert stored == acked, (stored, acked)
    assert statuses == {"done"}
    logs = server.logs()
    assert "Traceback" not in logs and "database is locked" not in logs, logs[-2000:]
    figures(f"load, {backend}", f"{WRAPPERS} wrappers x {duration} s + {MANAGERS} managers paging",
            "0 errors; events in DB = acknowledged; all done",
            f"{acked / elapsed:.0f} events/s, p50 {1000 * percentile(ev_lat, 50):.0f} ms, "
            f"p99 {1000 * percentile(ev_lat, 99):.0f} ms; monitor p95 {1000 * percentile(mon_lat, 95):.0f} ms "
            f"({len(mon_lat)} pages)")

