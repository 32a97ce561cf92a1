"""The server moves jobs exactly as the life-cycle table says (shared/lifecycle.py), for every
status and every trigger: manager actions through the API, wrapper reports with the job's
token, and the server's own decisions (reaper, batch poller, a backend's hand-off)."""
import time

import pytest

from server import db, jobs, retries
from server import models as m
from shared import lifecycle
from shared.lifecycle import Trigger
from shared.states import Status

from .conftest import event, submit

FINAL_CODES = {"done": 0, "failed": 30, "sys-failed": 60, "timeout": 32}


def job_in(api, production, status):
    """A fresh job brought to `status` the way production does; (job id, its token)."""
    job_id = submit(api, production, runs=1)["job_ids"][0]
    if status == "prepared":
        return job_id, None
    token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
    with db.connection():
        jobs.mark_submitted(job_id, gjid=f"g{job_id}", backend="slurm")
    if status == "submitted":
        return job_id, token
    assert api.as_(token).post(f"/jobs/{job_id}/events", json=event(1)).json["status"] == "running"
    if status in FINAL_CODES:
        r = api.as_(token).post(f"/jobs/{job_id}/events", json=event(2, status, code=FINAL_CODES[status]))
        assert r.json["status"] == status
    return job_id, token


def apply(api, job_id, token, trigger):
    """Pull `trigger` on the job; True when the server took it."""
    if trigger == Trigger.KILL:
        r = api.post(f"/jobs/{job_id}/kill")
        # a final job's kill may cancel its scheduled automatic retry (server/retries.py): no move
        return r.status_code == 200 and not r.json.get("retry_cancelled")
    if trigger == Trigger.RESUBMIT:
        return api.post(f"/jobs/{job_id}/resubmit").status_code == 200
    if trigger in (Trigger.REPORT, Trigger.FINISH):
        if token is None:   # a prepared job has no token yet: give it one, as a hand-off would
            token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
        # failed: unlike every final status a job may already be in, bar one (see the test)
        e = event(50) if trigger == Trigger.REPORT else event(50, "failed", code=30)
        r = api.as_(token).post(f"/jobs/{job_id}/events", json=e)
        assert r.status_code == 200 and r.json["accepted"] == 1   # a report is stored even when it moves nothing
        return r.json["status"] == ("running" if trigger == Trigger.REPORT else "failed")
    with db.connection():
        if trigger == Trigger.SUBMIT:
            try:
                jobs.mark_submitted(job_id, gjid="again", backend="slurm")
            except Exception as exc:   # ApiError 409
                assert exc.status_code == 409
                return False
            return True
        if trigger == Trigger.REAP:
            return job_id in jobs.reap(1.0, now=time.time() + 10 ** 6)
        if trigger == Trigger.BATCH_END:
            return jobs.end_batch_job(job_id, 1, f"g{job_id}", 60, "batch job ended")
        if trigger == Trigger.BATCH_START:
            return jobs.start_batch_job(job_id, 1, f"g{job_id}")
        if trigger == Trigger.RETRY:   # the server's own resubmit: the claim of a due retry (server/retries.py)
            m.Job.update(retry_at=0).where(m.Job.id == job_id).execute()
            return retries.claim(job_id, 1, time.time()) is not None
    raise AssertionError(trigger)


@pytest.mark.parametrize("trigger", list(Trigger))
def test_every_status_and_trigger_moves_as_the_table_says(api, production, trigger):
    for status in Status:
        job_id, token = job_in(api, production, status.value)
        took = apply(api, job_id, token, trigger)
        after = api.get(f"/jobs/{job_id}").json["status"]
        if trigger in (Trigger.REPORT, Trigger.FINISH) and status.final:
            # a late or replayed report is stored, and changes nothing
            assert after == status.value and took == (status.value == "failed" and trigger == Trigger.FINISH)
            continue
        assert took == lifecycle.may(status, trigger), (status, trigger)
        expected = lifecycle.move(status, trigger, "failed" if trigger == Trigger.FINISH else None) if took \
            else status.value
        assert after == expected, (status, trigger, after)


def test_a_refused_resubmit_says_why_and_changes_nothing(api, production):
    job_id, token = job_in(api, production, "done")
    before = api.get(f"/jobs/{job_id}").json
    r = api.post(f"/jobs/{job_id}/resubmit")
    assert r.status_code == 409 and r.json["error"] == "not-resubmittable"
    assert "only from failed, sys-failed, timeout, and the job is done" in r.json["message"]
    after = api.get(f"/jobs/{job_id}").json
    assert (after["status"], after["attempt"], after["wct"], after["report"]) == \
        (before["status"], before["attempt"], before["wct"], before["report"])
    job_id, token = job_in(api, production, "running")
    r = api.post(f"/jobs/{job_id}/resubmit")
    assert r.status_code == 409 and "the job is running" in r.json["message"]
    assert api.as_(token).post(f"/jobs/{job_id}/events", json=event(9)).status_code == 200
