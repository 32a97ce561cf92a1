"""A shifter's site reset (submissions.reset_site): the failed threshold counts failures after max(now - 24 h,
the reset); the jobs are untouched; the API route, the activity and `sbk site reset`."""
import datetime
import threading

import pytest
from werkzeug.serving import make_server

from server import cli, db, submissions
from server import models as m

from .conftest import event, new_token, submit


def fail(api, job_id, status="failed", code=30):
    wrapper = api.as_(api.post(f"/jobs/{job_id}/token").json["server"]["token"])
    wrapper.post(f"/jobs/{job_id}/events", json=event(1))
    assert wrapper.post(f"/jobs/{job_id}/events", json=event(2, status, code=code)).status_code == 200


def dry_refusals(api, production):
    return submit(api, production, runs=1, dry_run=True)["refusals"]


def test_the_failed_threshold_counts_from_the_reset_and_the_jobs_stay(api, production):
    ids = submit(api, production, runs=3)["job_ids"]
    fail(api, ids[0])
    fail(api, ids[1], "sys-failed", code=99)
    assert api.patch("/sites/INFN-T1", json={"threshold_failed": 2}).status_code == 200
    assert dry_refusals(api, production) == [
        "site INFN-T1: 2 failed jobs in 24 h reach its failed threshold 2"]
    r = api.post("/sites/INFN-T1/reset")
    assert r.status_code == 200 and r.json["failed_before"] == 2, r.json
    assert dry_refusals(api, production) == []
    assert [api.get(f"/jobs/{j}").json["status"] for j in ids] == ["failed", "sys-failed", "prepared"]
    fail(api, ids[2])
    assert api.patch("/sites/INFN-T1", json={"threshold_failed": 1}).status_code == 200
    assert dry_refusals(api, production) == [
        "site INFN-T1: 1 failed jobs since its reset reach its failed threshold 1"]
    with db.connection():
        by_site = {s["site"]: s for s in submissions.site_failures()}
    assert by_site["INFN-T1"]["failed"] == 1 and by_site["INFN-T1"]["over"]
    assert by_site["INFN-TORINO"] == dict(by_site["INFN-TORINO"], failed=0, over=False, failed_reset_at=None)


def test_a_reset_older_than_the_window_changes_nothing_and_old_failures_do_not_count(api, production):
    ids = submit(api, production, runs=2)["job_ids"]
    fail(api, ids[0])
    fail(api, ids[1])
    assert api.patch("/sites/INFN-T1", json={"threshold_failed": 1}).status_code == 200
    day_ago = m.utcnow() - datetime.timedelta(hours=25)
    with db.connection():
        m.Site.update(failed_reset_at=day_ago).where(m.Site.name == "INFN-T1").execute()
    assert dry_refusals(api, production) == ["site INFN-T1: 2 failed jobs in 24 h reach its failed threshold 1"]
    with db.connection():
        m.Job.update(finished_at=day_ago).where(m.Job.id == ids[0]).execute()
        assert submissions.site_failures()[0]["failed"] == 1
    assert dry_refusals(api, production) == ["site INFN-T1: 1 failed jobs in 24 h reach its failed threshold 1"]


def test_reset_is_recorded_and_needs_a_submitter(api, production):
    assert api.as_(new_token("watcher", ["webui"])).post("/sites/INFN-T1/reset").status_code == 403
    assert api.as_(new_token("manager", ["FastProdMgr"])).post("/sites/INFN-T1/reset").status_code == 403
    assert api.as_(new_token("shifter", ["Shift"])).post("/sites/INFN-T1/reset").status_code == 200
    assert api.post("/sites/NOWHERE/reset").status_code == 404
    kinds = [(a["type"], a["user"], a["ref"]) for a in api.get("/activities").json["activities"]]
    assert ("site-reset", "shifter", {"site": "INFN-T1", "failed": 0}) in kinds


@pytest.fixture()
def live_url(app):
    """The app served over HTTP on a free port (the `sbk` client speaks HTTP)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def test_sbk_site_reset(api, production, live_url, monkeypatch, capsys):
    monkeypatch.setenv("SBK_URL", live_url)
    monkeypatch.setenv("SBK_TOKEN", api.token)
    ids = submit(api, production, runs=1)["job_ids"]
    fail(api, ids[0])
    capsys.readouterr()
    assert cli.main(["site", "reset", "INFN-T1"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == ("site INFN-T1 reset: its 1 failed job(s) of the last 24 h no longer count against its "
                           "failed threshold (none)")
    assert cli.main(["site", "reset", "NOWHERE"]) == 1
    assert "site 'NOWHERE'" in capsys.readouterr().err
