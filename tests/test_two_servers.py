"""Two `sbk serve` instances (gunicorn, 2 workers each) on one PostgreSQL database, as behind a
load balancer (issue 17): they share the wrappers' reports without losing or duplicating an event,
and their housekeeping does not double-act: two reapers and four batch pollers (one per worker)
sweeping the same silent jobs time each out once, and each job's automatic retry is claimed once;
on the real Slurm, a batch job whose start and end both servers' pollers see moves its job once each.

A double act would not show as a second row (a server event's seq is unique per attempt, and the
claims' conditional UPDATEs would hide it), so the servers' own log lines are counted too: every
job named by exactly one "timed out" line and one "retried" line over both servers' logs.
"""
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from server import create_app, db
from server import models as m
from server.jobs import BATCH_STARTED, SERVER_SEQ
from tests.infra.postgres import free_port
from tests.server.conftest import Api, event, make_production, new_token, postgres_cluster  # noqa: F401
from tests.infra.slurm import slurm_cluster  # noqa: F401 (session fixture)
from tests.server.test_concurrency import wait_for_health
from tests.waiting import poll

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent
JOBS = 20   # a server logs at most 20 ids a pass: every job fits in one line
EVENTS = 12


class TwoServers:
    """Two `sbk serve --workers 2` on one database, their output in files; stopped by the test."""

    def __init__(self, url, tmp_path, **settings):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SBK_")}
        env.update(SBK_DB=url, SBK_DATA_DIR=str(tmp_path / "sbk-data"), SBK_CLEANUP_INTERVAL_S="0",
                   SBK_LOG_FORMAT="text", **settings)
        self.bases, self.procs, self.logs = [], [], []
        for k in range(2):
            port = free_port()
            log = tmp_path / f"serve-{k}.log"
            with open(log, "w") as out:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--workers", "2"],
                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            self.bases.append(f"http://127.0.0.1:{port}")
            self.logs.append(log)
        for base, proc in zip(self.bases, self.procs):
            wait_for_health(base, proc, deadline_s=90)

    def output(self):
        return "".join(log.read_text() for log in self.logs)

    def stop(self):
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture()
def world(postgres_cluster, tmp_path):  # noqa: F811
    """A fresh PostgreSQL database with a production and JOBS prepared jobs, each with its job token."""
    url = postgres_cluster.new_database()
    app = create_app({"DB": url, "PUBLIC_URL": "http://sbk.test:8080", "HEARTBEAT_S": 60})
    app.testing = True
    with app.app_context(), db.connection():
        token = new_token("boss", ["Developer"])
    api = Api(app.test_client(), token)
    production = make_production(api)
    r = api.post("/submissions", json={"production": production["production"], "bulks": [
        {"request": production["request"]["id"], "sites": ["INFN-T1"], "runs": JOBS, "events": 100}]})
    assert r.status_code == 201, r.json
    ids = r.json["job_ids"]
    tokens = {i: api.post(f"/jobs/{i}/token").json["server"]["token"] for i in ids}
    yield {"url": url, "ids": ids, "tokens": tokens, "request": production["request"]["id"]}
    db.database.obj.close_all()


TIMED_OUT = r"timed out \d+ silent job\(s\): \[([\d, ]+)\]"
RETRIED = r"retried \d+ job\(s\) automatically: \[([\d, ]+)\]"


def logged_ids(output, pattern):
    """The job ids of every log line matching `pattern` (its list of ids as group 1), over both servers."""
    return sorted(int(j) for ids in re.findall(pattern, output) for j in ids.split(","))


def all_in(ids, status):
    """{id: Job} once every job of `ids` has `status`, else None."""
    with db.connection():
        jobs = {j.id: j for j in m.Job.select().where(m.Job.id.in_(ids))}
    return jobs if all(j.status == status for j in jobs.values()) else None


def post(base, job_id, token, body):
    return requests.post(f"{base}/api/v1/jobs/{job_id}/events", json=body, timeout=60,
                         headers={"Authorization": f"Bearer {token}"})


def test_two_servers_share_the_reports_without_a_lost_or_duplicated_event(world, tmp_path):
    servers = TwoServers(world["url"], tmp_path, SBK_REAP_INTERVAL_S="3600", SBK_BATCH_POLL_INTERVAL_S="0")
    failures, served = [], {0: 0, 1: 0}

    def wrapper(k, job_id):
        # each report goes to the other server than the one before: a round-robin load balancer
        for seq in range(1, EVENTS + 1):
            which = (k + seq) % 2
            body = event(seq, step="RUNNING-04") if seq < EVENTS else event(seq, "done", code=0)
            r = post(servers.bases[which], job_id, world["tokens"][job_id], body)
            if r.status_code != 200 or r.json()["accepted"] != 1:
                failures.append((job_id, seq, r.status_code, r.text[:200]))
            served[which] += 1

    try:
        threads = [threading.Thread(target=wrapper, args=(k, j)) for k, j in enumerate(world["ids"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        # the same events again, to the other server each: acknowledged as duplicates, stored once
        again = post(servers.bases[1], world["ids"][0], world["tokens"][world["ids"][0]], event(3))
        assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text
    finally:
        servers.stop()
    assert not failures, failures[:5]
    assert served[0] == served[1] == JOBS * EVENTS // 2
    assert "Traceback" not in servers.output(), servers.output()[-3000:]
    with db.connection():
        seqs = {}
        for job_id, seq in m.Event.select(m.Event.job, m.Event.seq).tuples():
            seqs.setdefault(job_id, []).append(seq)
        assert {j: sorted(s) for j, s in seqs.items()} == {j: list(range(1, EVENTS + 1)) for j in world["ids"]}
        assert {j.status for j in m.Job.select()} == {"done"}


def test_two_reapers_and_four_pollers_time_out_and_retry_each_silent_job_once(world, tmp_path):
    ids, tokens = world["ids"], world["tokens"]
    with db.connection(), db.write_transaction():
        # retried at once, through a backend this machine cannot build (the new attempt stays prepared,
        # its message saying so): what is counted is the claim, not the submission
        m.Request.update(retry_backoff_s=0).where(m.Request.id == world["request"]).execute()
        m.Job.update(backend="htcondor", heartbeat_s=0.2).where(m.Job.id.in_(ids)).execute()
    # both servers sweep every 0.1 s, each worker polls every 0.1 s: the sweeps overlap all the time
    servers = TwoServers(world["url"], tmp_path, SBK_REAP_INTERVAL_S="0.1", SBK_BATCH_POLL_INTERVAL_S="0.1",
                         SBK_HEARTBEAT_MULTIPLE="3", SBK_PUBLIC_URL="http://sbk.test:8080")
    try:
        for base in servers.bases * 4:   # a request to each worker starts its batch poller
            requests.get(f"{base}/api/v1/health", timeout=30)
        # every job reports once (running), alternately to each server, and falls silent
        for k, job_id in enumerate(ids):
            r = post(servers.bases[k % 2], job_id, tokens[job_id], event(1, step="RUNNING-04"))
            assert r.status_code == 200, r.text

        def settled():
            with db.connection():
                return m.Job.select().where(m.Job.id.in_(ids) & (m.Job.attempt == 2)
                                            & (m.Job.status == "prepared")).count() == JOBS
        poll(settled, timeout=120, what="every silent job timed out and retried")
        # a pass logs what it did after its transactions: wait for the lines of the last ones
        poll(lambda: all(set(logged_ids(servers.output(), said)) >= set(ids) for said in (TIMED_OUT, RETRIED)),
             timeout=60, what="the time-outs and retries logged")
    finally:
        servers.stop()
    output = servers.output()
    assert "Traceback" not in output, output[-3000:]
    with db.connection():
        finals = list(m.Event.select(m.Event.job, m.Event.attempt, m.Event.code).where(
            m.Event.seq == SERVER_SEQ).tuples())
        assert sorted(finals) == sorted((j, 1, 100) for j in ids)
        attempts = list(m.Attempt.select(m.Attempt.job, m.Attempt.number, m.Attempt.automatic).tuples())
        assert sorted(attempts) == sorted([(j, 1, False) for j in ids] + [(j, 2, True) for j in ids])
        assert {j.retries for j in m.Job.select().where(m.Job.id.in_(ids))} == {1}
        retried = [a.ref["job"] for a in m.Activity.select().where(m.Activity.kind == "job-retried")]
        assert sorted(retried) == sorted(ids)
    # what each server says it did, over both: every job timed out once and retried once
    assert logged_ids(output, TIMED_OUT) == sorted(ids), output[-3000:]
    assert logged_ids(output, RETRIED) == sorted(ids), output[-3000:]


# A batch job that says where it runs and waits for the test's release file, then exits 1 without
# any report: the pollers alone see it start (batch-start) and end (sys-failed, no final report).
HELD_TASK = """#!/bin/sh
touch {gates}/on-node-$SLURM_ARRAY_TASK_ID
while [ ! -e {gates}/release ]; do sleep 0.1; done
exit 1
"""


def test_two_servers_pollers_move_a_slurm_job_once_at_its_start_and_once_at_its_end(world, tmp_path,
                                                                                     slurm_cluster):  # noqa: F811
    gates = tmp_path / "gates"
    gates.mkdir()
    script = tmp_path / "held.sh"
    script.write_text(HELD_TASK.format(gates=gates))
    tasks = slurm_cluster.cpus
    sbatch = slurm_cluster.run("sbatch", "--parsable", f"--array=0-{tasks - 1}", f"--chdir={tmp_path}",
                               f"--output={tmp_path}/task-%a.out", str(script))
    assert sbatch.returncode == 0, sbatch.stderr
    array = sbatch.stdout.strip().split(";")[0]
    ids = world["ids"][:tasks]
    try:
        with db.connection(), db.write_transaction():
            for k, job_id in enumerate(ids):   # handed to Slurm as a backend's submit_jobs records it
                m.Job.update(status="submitted", backend="slurm", gjid=f"{array}_{k}", submitted_at=m.utcnow()).where(
                    m.Job.id == job_id).execute()
        servers = TwoServers(world["url"], tmp_path, SBK_REAP_INTERVAL_S="3600", SBK_BATCH_POLL_INTERVAL_S="0.3",
                             SBK_BATCH_GRACE_S="0.5", SBK_BACKEND_SLURM_CONF=str(slurm_cluster.conf),
                             SBK_PUBLIC_URL="http://sbk.test:8080")
        try:
            for base in servers.bases * 4:   # a request to each worker starts its batch poller
                requests.get(f"{base}/api/v1/health", timeout=30)
            started = poll(lambda: all_in(ids, "running"), timeout=90, what="every batch job seen started")
            assert {j.message for j in started.values()} == {BATCH_STARTED}
            assert all((gates / f"on-node-{k}").exists() for k in range(tasks))
            (gates / "release").touch()
            ended = poll(lambda: all_in(ids, "sys-failed"), timeout=90, what="every batch job seen ended")
        finally:
            servers.stop()
    finally:
        (gates / "release").touch()
    output = servers.output()
    assert "Traceback" not in output, output[-3000:]
    assert {(j.attempt, j.error_code) for j in ended.values()} == {(1, 1)}, [j.message for j in ended.values()]
    with db.connection():
        finals = list(m.Event.select(m.Event.job, m.Event.status).where(m.Event.job.in_(ids)).tuples())
    assert sorted(finals) == sorted((j, "sys-failed") for j in ids)
    assert logged_ids(output, r"started in the batch system before their wrapper reported: \[([\d, ]+)\]") \
        == sorted(ids), output[-3000:]
    assert logged_ids(output, r"ended in the batch system without a final report: \[([\d, ]+)\]") \
        == sorted(ids), output[-3000:]
