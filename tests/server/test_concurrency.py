"""50 wrappers reporting at once to a real `sbk serve` (gunicorn, 2 workers)."""
import os
import signal
import subprocess
import sys
import threading
import time

import requests

from server import db
from server import models as m
from tests.infra.postgres import free_port

from .conftest import event, submit
from .test_migrations import ROOT

CLIENTS = 50
EVENTS_PER_CLIENT = 20


def wait_for_health(url, proc, deadline_s=30):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sbk serve exited with {proc.returncode}")
        try:
            if requests.get(url + "/api/v1/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)   # polling interval, not synchronisation: the deadline bounds it
    raise AssertionError("sbk serve did not answer /health in time")


def report(base, job_id, token, failures):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    for seq in range(1, EVENTS_PER_CLIENT + 1):
        body = event(seq, step="RUNNING-04") if seq < EVENTS_PER_CLIENT else event(seq, "done", code=0)
        r = session.post(f"{base}/api/v1/jobs/{job_id}/events", json=body, timeout=60)
        if r.status_code != 200 or r.json()["accepted"] != 1:
            failures.append((job_id, seq, r.status_code, r.text[:200]))


def test_fifty_concurrent_wrappers_lose_nothing(app, api, production, db_url, tmp_path):
    ids = submit(api, production, runs=CLIENTS)["job_ids"]
    tokens = {i: api.post(f"/jobs/{i}/token").json["server"]["token"] for i in ids}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--db", db_url, "--port", str(port),
                                 "--workers", "2"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "SBK_REAP_INTERVAL_S": "3600"})
    try:
        wait_for_health(base, proc)
        failures = []
        threads = [threading.Thread(target=report, args=(base, i, tokens[i], failures)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not failures, failures[:5]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    output = log_path.read_text()
    assert "database is locked" not in output and "Traceback" not in output, output[-2000:]
    with db.connection():
        assert m.Event.select().count() == CLIENTS * EVENTS_PER_CLIENT
        assert {j.status for j in m.Job.select()} == {"done"}
