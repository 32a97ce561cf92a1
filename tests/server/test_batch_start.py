"""A job becomes running when its batch job starts (batch-start, the batch poller's), before its
wrapper's first report; queue time and run time are shown apart.

The backend here is a stub answering what a batch system would (a unit test of the poller's
bookkeeping); tests/test_batch_start_slurm.py runs it on the real Slurm with the real wrapper.
"""
import argparse
import dataclasses
import datetime
import io
import re
import threading
import time

import pytest

from server import batch, db, jobs, reaper
from server import models as m
from server.backends.base import COMPLETED, PENDING, RUNNING, UNKNOWN, Backend, BatchState
from server.client.jobs import cmd_job, duration
from server.client.output import Output
from server.settings import settings as current_settings
from shared import lifecycle
from shared.lifecycle import Trigger
from shared.states import Status
from tests.client.inprocess import in_process
from tests.web.conftest import sign_in

from .conftest import event, new_token, started_job

T0 = datetime.datetime(2026, 11, 30, 10, 0, 0)


class StubBatch(Backend):
    """A batch system that says what the test sets in `states`; `during` runs inside each status call,
    between the poller's read of the jobs and its decisions (where a wrapper's report may land)."""

    def __init__(self):
        self.states, self.during, self.asked = {}, None, []

    def submit(self, bunch):
        raise AssertionError("nothing is submitted here")

    def status(self, gjids):
        gjids = list(gjids)
        self.asked += gjids
        if self.during is not None:
            during, self.during = self.during, None
            during()
        return {g: self.states.get(g, BatchState(UNKNOWN, "stub: no such job")) for g in gjids}

    def cancel(self, gjids):
        pass


@pytest.fixture()
def stubs(monkeypatch):
    """The stub batch system behind the `slurm` and the `arc` backend names."""
    made = {"slurm": StubBatch(), "arc": StubBatch()}
    monkeypatch.setattr(batch, "get_backend", lambda name, settings: made[name])
    return made


@pytest.fixture()
def poll(app):
    """One poller pass over the stubbed backends (batch grace 0: an ended batch job counts at once)."""
    with app.app_context():
        settings = dataclasses.replace(current_settings(), batch_grace_s=0.0)
    return lambda: batch.poll_once(settings, {"slurm", "arc"})


def submitted_job(api, production, backend="slurm"):
    """A job handed to `backend` (its token minted as at a hand-off): (job id, token, gjid)."""
    job_id, token = started_job(api, production)
    gjid = f"{900 + job_id}_0"
    with db.connection():
        jobs.mark_submitted(job_id, gjid=gjid, backend=backend)
    return job_id, token, gjid


def when(text):
    """An API time ('...Z', to the second) as Unix seconds."""
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def test_the_poller_makes_a_submitted_job_running_when_its_batch_job_starts(api, production, stubs, poll):
    job_id, token, gjid = submitted_job(api, production)
    waiting, _, waiting_gjid = submitted_job(api, production)
    stubs["slurm"].states = {gjid: BatchState(RUNNING, "Slurm RUNNING"),
                             waiting_gjid: BatchState(PENDING, "Slurm PENDING: Priority")}
    before = time.time()
    assert poll() == []
    job = api.get(f"/jobs/{job_id}").json
    assert (job["status"], job["step"], job["history"]) == ("running", None, [])   # no wrapper event yet
    assert job["message"] == jobs.BATCH_STARTED
    assert before - 1 <= when(job["started_at"]) <= time.time()
    assert job["last_heartbeat"] == job["started_at"]   # the reaper counts from the batch start
    assert job["queue_s"] >= 0 and job["run_s"] >= 0
    assert api.get(f"/jobs/{waiting}").json["status"] == "submitted"   # pending is not started

    # The wrapper's first report is a plain report now (running -> running) on the hot path; the
    # start stays the batch start, which came first.
    r = api.as_(token).post(f"/jobs/{job_id}/events", json=event(1, step="RUNNING-01", time=time.time() + 5))
    assert r.status_code == 200 and r.json["status"] == "running"
    reported = api.get(f"/jobs/{job_id}").json
    assert (reported["step"], reported["started_at"]) == ("RUNNING-01", job["started_at"])
    assert [e["seq"] for e in reported["history"]] == [1]
    r = api.as_(token).post(f"/jobs/{job_id}/events", json=event(2, "done", code=0))
    assert r.json["status"] == "done"
    # The next pass leaves a finished job alone, even if its batch job still shows running.
    assert poll() == [] and api.get(f"/jobs/{job_id}").json["status"] == "done"


def test_a_job_whose_wrapper_reported_first_keeps_its_wrappers_start(api, production, stubs, poll):
    job_id, token, gjid = submitted_job(api, production)
    assert api.as_(token).post(f"/jobs/{job_id}/events", json=event(1, step="RUNNING-01")).status_code == 200
    started = api.get(f"/jobs/{job_id}").json["started_at"]
    assert when(started) == event(1)["time"]   # the time of the wrapper's first event
    stubs["slurm"].states = {gjid: BatchState(RUNNING)}
    poll()
    job = api.get(f"/jobs/{job_id}").json
    assert (job["status"], job["started_at"], job["step"]) == ("running", started, "RUNNING-01")


def in_another_thread(call):
    """Run `call` in its own thread and connection, as a request on another server worker would."""
    worker = threading.Thread(target=call)
    worker.start()
    worker.join(30)
    assert not worker.is_alive()


def test_a_wrapper_final_report_racing_the_poller_is_not_overwritten(api, production, stubs, poll):
    """The poller read the job as submitted; the wrapper's final event lands while it asks the batch
    system; its conditional UPDATE then matches nothing: the job stays done, not running again."""
    job_id, token, gjid = submitted_job(api, production)
    replies = []
    stubs["slurm"].states = {gjid: BatchState(RUNNING)}
    stubs["slurm"].during = lambda: in_another_thread(lambda: replies.append(api.as_(token).post(
        f"/jobs/{job_id}/events", json=[event(1, step="RUNNING-01"), event(2, "done", code=0)])))
    poll()
    assert gjid in stubs["slurm"].asked and replies[0].status_code == 200 and replies[0].json["status"] == "done"
    job = api.get(f"/jobs/{job_id}").json
    assert (job["status"], job["error_code"]) == ("done", 0) and job["message"] != jobs.BATCH_STARTED
    assert when(job["started_at"]) == event(1)["time"] and [e["seq"] for e in job["history"]] == [1, 2]
    # The same race with a running report: the wrapper's start stands, the poller changes nothing.
    other, other_token, other_gjid = submitted_job(api, production)
    stubs["slurm"].states = {other_gjid: BatchState(RUNNING)}
    stubs["slurm"].during = lambda: in_another_thread(lambda: api.as_(other_token).post(
        f"/jobs/{other}/events", json=event(1, step="RUNNING-02")))
    poll()
    job = api.get(f"/jobs/{other}").json
    assert (job["status"], job["step"], when(job["started_at"])) == ("running", "RUNNING-02", event(1)["time"])


def test_batch_start_is_refused_from_every_status_but_submitted(api, production):
    for status in Status:
        if status == Status.SUBMITTED:
            assert lifecycle.move(status, Trigger.BATCH_START) == "running"
        else:
            with pytest.raises(lifecycle.IllegalTransition, match="batch-start is allowed only from submitted"):
                lifecycle.move(status, Trigger.BATCH_START)
    prepared, _ = started_job(api, production)
    running, token, running_gjid = submitted_job(api, production)
    api.as_(token).post(f"/jobs/{running}/events", json=event(1, step="RUNNING-04"))
    failed, failed_token, failed_gjid = submitted_job(api, production)
    api.as_(failed_token).post(f"/jobs/{failed}/events", json=event(1, "failed", code=30))
    fresh, _, fresh_gjid = submitted_job(api, production)
    before = {j: api.get(f"/jobs/{j}").json for j in (prepared, running, failed, fresh)}
    with db.connection():
        assert not jobs.start_batch_job(prepared, 1, None)
        assert not jobs.start_batch_job(running, 1, running_gjid)
        assert not jobs.start_batch_job(failed, 1, failed_gjid)
        assert not jobs.start_batch_job(fresh, 2, fresh_gjid)          # not its attempt
        assert not jobs.start_batch_job(fresh, 1, "elsewhere_0")       # not its batch job
    for job_id, job in before.items():
        after = api.get(f"/jobs/{job_id}").json
        assert {k: after[k] for k in ("status", "started_at", "last_heartbeat", "message")} == \
            {k: job[k] for k in ("status", "started_at", "last_heartbeat", "message")}
    # A resubmitted job's old batch job starting late does not start the new attempt.
    assert api.post(f"/jobs/{failed}/resubmit").status_code == 200
    with db.connection():
        jobs.mark_submitted(failed, gjid="new_0", backend="slurm")
        assert not jobs.start_batch_job(failed, 1, failed_gjid)
        assert jobs.start_batch_job(failed, 2, "new_0")
    assert api.get(f"/jobs/{failed}").json["status"] == "running"


def test_an_arc_job_in_the_ces_batch_system_is_not_called_running(api, production, stubs, poll):
    """ARC's `running` is A-REX's INLRMS, which covers waiting in the CE's own queue."""
    job_id, _, gjid = submitted_job(api, production, backend="arc")
    stubs["arc"].states = {gjid: BatchState(RUNNING, "ARC INLRMS")}
    poll()
    assert gjid in stubs["arc"].asked and api.get(f"/jobs/{job_id}").json["status"] == "submitted"


def test_the_reaper_gives_a_just_started_job_its_heartbeat_interval_from_the_batch_start(api, production):
    """heartbeat_s is 60 in the app fixture and the multiple 3: no report for 180 s after the batch
    start is a timeout, not before; a job the poller did not start is not reaped at all."""
    job_id, token, gjid = submitted_job(api, production)
    other, _, _ = submitted_job(api, production)
    start = time.time() - 100
    with db.connection():
        assert jobs.start_batch_job(job_id, 1, gjid, now=start)
        assert jobs.reap(3.0, now=start + 179) == []
        assert reaper.reap_once(3.0) == []   # now: 100 s after the batch start
    assert api.get(f"/jobs/{job_id}").json["status"] == "running"
    # The wrapper's first report moves the clock on, as every report does.
    assert api.as_(token).post(f"/jobs/{job_id}/events", json=event(1, step="RUNNING-01")).status_code == 200
    with db.connection():
        assert jobs.reap(3.0, now=start + 181) == []
    # Never reported at all: reaped once 180 s passed, saying so.
    silent, _, silent_gjid = submitted_job(api, production)
    with db.connection():
        assert jobs.start_batch_job(silent, 1, silent_gjid, now=start)
        assert jobs.reap(3.0, now=start + 181) == [silent]
    job = api.get(f"/jobs/{silent}").json
    assert (job["status"], job["error_code"]) == ("timeout", 100)
    assert "never reported after the batch job started" in job["message"]
    assert api.get(f"/jobs/{other}").json["status"] == "submitted"


def test_a_started_batch_job_that_ends_without_a_report_is_sys_failed(api, production, stubs, poll):
    job_id, _, gjid = submitted_job(api, production)
    stubs["slurm"].states = {gjid: BatchState(RUNNING)}
    poll()
    assert api.get(f"/jobs/{job_id}").json["status"] == "running"
    stubs["slurm"].states = {gjid: BatchState(COMPLETED, "Slurm COMPLETED", exit_code=0)}
    assert poll() == [job_id]
    job = api.get(f"/jobs/{job_id}").json
    assert (job["status"], job["error_code"]) == ("sys-failed", 99)
    assert job["queue_s"] >= 0 and job["run_s"] >= 0


def span(submitted=None, started=None, finished=None, now=T0 + datetime.timedelta(hours=1)):
    s = lambda seconds: None if seconds is None else T0 + datetime.timedelta(seconds=seconds)  # noqa: E731
    return jobs.job_times(m.Job(submitted_at=s(submitted), started_at=s(started), finished_at=s(finished)), now=now)


def test_queue_time_and_run_time_are_defined_for_every_stage_of_an_attempt():
    assert span() == {"queue_s": None, "run_s": None}                          # prepared
    assert span(submitted=0) == {"queue_s": 3600.0, "run_s": None}             # queued, up to now
    assert span(submitted=0, started=90.5) == {"queue_s": 90.5, "run_s": 3509.5}   # running, up to now
    assert span(submitted=0, started=90, finished=390) == {"queue_s": 90.0, "run_s": 300.0}
    assert span(submitted=0, finished=50) == {"queue_s": 50.0, "run_s": None}  # ended before it started
    # a fast wrapper reported before the backend's submitted mark: no negative queue time
    assert span(submitted=5, started=2, finished=12) == {"queue_s": 0.0, "run_s": 10.0}


def test_sbk_job_and_the_job_page_show_queue_time_and_run_time(app, api, client, production):
    job_id, token, gjid = submitted_job(api, production)
    with db.connection():
        m.Job.update(submitted_at=T0).where(m.Job.id == job_id).execute()
        jobs.start_batch_job(job_id, 1, gjid, now=(T0 + datetime.timedelta(seconds=75)).replace(
            tzinfo=datetime.timezone.utc).timestamp())
    api.as_(token).post(f"/jobs/{job_id}/events", json=[event(1), event(2, "done", code=0)])
    with db.connection():
        m.Job.update(finished_at=T0 + datetime.timedelta(seconds=75 + 3723)).where(m.Job.id == job_id).execute()
    job = api.get(f"/jobs/{job_id}").json
    assert (job["queue_s"], job["run_s"]) == (75.0, 3723.0)

    stream = io.StringIO()
    cmd_job(in_process(api), Output(stream=stream),
            argparse.Namespace(id=job_id, log=False, outputs=False))
    text = stream.getvalue()
    assert re.search(r"^queue time: +75\.0 s \(1m 15s\)$", text, re.M), text
    assert re.search(r"^run time: +3723\.0 s \(1h 2m 3s\)$", text, re.M), text
    assert duration(None) is None and duration(0.2) == "0.2 s (0s)"

    assert sign_in(client, new_token("watcher", ["webui"])).status_code == 302
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert '<td id="queue-time">75.00</td>' in page and '<td id="run-time">3723.00</td>' in page
