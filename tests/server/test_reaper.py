"""Liveness: silent running jobs become timeout 100; others are left alone."""
import time

from server import db, reaper
from server import models as m

from .conftest import event, started_job


def test_silent_running_job_times_out_with_code_100(app, api, production):
    silent, token_a = started_job(api, production)
    alive, token_b = started_job(api, production)
    waiting, _ = started_job(api, production)
    api.as_(token_a).post(f"/jobs/{silent}/events", json=event(1, step="RUNNING-04"))
    api.as_(token_b).post(f"/jobs/{alive}/events", json=event(1, step="RUNNING-04"))
    with db.connection():
        # heartbeat_s is 60 in the app fixture; 3 x 60 s and a bit of silence:
        m.Job.update(heartbeat_at=time.time() - 181).where(m.Job.id == silent).execute()
    assert reaper.reap_once(3.0) == [silent]
    job = api.get(f"/jobs/{silent}").json
    assert (job["status"], job["error_code"]) == ("timeout", 100)
    assert job["history"][-1]["code"] == 100
    assert api.get(f"/jobs/{alive}").json["status"] == "running"
    assert api.get(f"/jobs/{waiting}").json["status"] == "prepared"
    late = api.as_(token_a).post(f"/jobs/{silent}/events", json=event(2, step="RUNNING-05"))
    assert late.json["status"] == "timeout"
    assert reaper.reap_once(3.0) == []
