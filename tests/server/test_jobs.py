"""Kill, resubmit, the job monitor query, logs."""
import datetime

from server import db, jobs
from server import models as m

from .conftest import event, started_job, submit


def test_superseded_attempt_gets_409_and_the_new_one_reports(api, production):
    job_id, old_token = started_job(api, production)
    api.as_(old_token).post(f"/jobs/{job_id}/events", json=event(1, "sys-failed", code=60))
    r = api.post(f"/jobs/{job_id}/resubmit")
    assert r.status_code == 200 and r.json["attempt"] == 2 and r.json["status"] == "prepared"
    r = api.as_(old_token).post(f"/jobs/{job_id}/events", json=event(2))
    assert r.status_code == 409 and r.json["error"] == "attempt-superseded"
    desc = api.post(f"/jobs/{job_id}/token").json
    assert desc["job"]["attempt"] == 2
    r = api.as_(desc["server"]["token"]).post(f"/jobs/{job_id}/events", json=event(1, attempt=2, step="RUNNING-01"))
    assert r.status_code == 200 and r.json["status"] == "running"
    job = api.get(f"/jobs/{job_id}").json
    assert job["error_code"] is None and [h["attempt"] for h in job["history"]] == [1, 2]


def test_kill_is_repeated_in_every_reply_until_an_event_acknowledges_it(api, production):
    job_id, token = started_job(api, production)
    wrapper = api.as_(token)
    wrapper.post(f"/jobs/{job_id}/events", json=event(1, step="RUNNING-04"))
    assert api.post(f"/jobs/{job_id}/kill").json["command"] == "kill"
    # The reply carrying the command may be lost: the next ones carry it again.
    assert wrapper.post(f"/jobs/{job_id}/events", json=event(2)).json["command"] == "kill"
    assert wrapper.post(f"/jobs/{job_id}/events", json=event(3)).json["command"] == "kill"
    assert wrapper.post(f"/jobs/{job_id}/events", json=event(2)).json["command"] == "kill"   # a replay too
    assert wrapper.get(f"/jobs/{job_id}/attempt").json["command"] == "kill"                 # and the fence
    acked = wrapper.post(f"/jobs/{job_id}/events", json=event(4, kind="info", ack="kill"))
    assert acked.json["command"] is None
    assert wrapper.post(f"/jobs/{job_id}/events", json=event(5)).json["command"] is None
    final = wrapper.post(f"/jobs/{job_id}/events", json=event(6, "sys-failed", code=62))
    assert final.json["status"] == "sys-failed"
    r = api.post(f"/jobs/{job_id}/kill")
    assert r.status_code == 409 and "kill is allowed only from prepared, submitted, running" in r.json["message"]


def test_a_kill_ends_with_the_attempt_it_was_meant_for(api, production):
    job_id, token = started_job(api, production)
    api.as_(token).post(f"/jobs/{job_id}/events", json=event(1))
    api.post(f"/jobs/{job_id}/kill")
    api.as_(token).post(f"/jobs/{job_id}/events", json=event(2, "sys-failed", code=62))
    assert api.post(f"/jobs/{job_id}/resubmit").json["attempt"] == 2
    new_token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
    r = api.as_(new_token).post(f"/jobs/{job_id}/events", json=event(1, attempt=2))
    assert r.json["command"] is None


def test_killing_a_prepared_job_ends_it_at_once(api, production):
    job_id = submit(api, production, runs=1)["job_ids"][0]
    r = api.post(f"/jobs/{job_id}/kill")
    assert r.json["status"] == "sys-failed"
    job = api.get(f"/jobs/{job_id}").json
    assert job["error_code"] == 62 and job["history"][-1]["kind"] == "final"


def test_mark_submitted_then_older_than_filter(app, api, production):
    ids = submit(api, production, runs=3)["job_ids"]
    with app.app_context(), db.connection():
        jobs.mark_submitted(ids[0], gjid="slurm-17", backend="slurm")
        jobs.mark_submitted(ids[1], gjid="slurm-18", backend="slurm")
        m.Job.update(submitted_at=m.utcnow() - datetime.timedelta(hours=30)).where(m.Job.id == ids[0]).execute()
    r = api.get("/jobs", query_string={"older_than_hours": 24})
    assert [j["id"] for j in r.json["jobs"]] == [ids[0]]
    assert api.get("/jobs", query_string={"q": "slurm-18"}).json["jobs"][0]["id"] == ids[1]
    assert api.get("/jobs", query_string={"status": "submitted,prepared"}).json["total"] == 3


def test_job_monitor_filters_sort_and_pages(api, production):
    submit(api, production, runs=4, sites=("INFN-T1", "INFN-TORINO"))
    get = lambda **q: api.get("/jobs", query_string=q).json
    assert get(site="INFN-TORINO")["total"] == 4
    assert get(site="INFN-TORINO,INFN-T1", status="prepared")["total"] == 8
    assert get(site="NOWHERE")["total"] == 0
    assert get(runnum_from=10000004, runnum_to=10000006)["total"] == 3
    assert get(user="dev", production="2010_July")["total"] == 8
    assert get(request=str(production["request"]["id"]))["total"] == 8
    page = get(sort="-runnum", page=2, per_page=3)
    assert [j["runnum"] for j in page["jobs"]] == [10000007, 10000006, 10000005]
    assert (page["total"], page["page"], page["per_page"]) == (8, 2, 3)
    last = get(last=2)
    assert last["total"] == 2 and {j["runnum"] for j in last["jobs"]} == {10000009, 10000010}
    assert get(q="torino")["total"] == 4 and get(q="10000003")["total"] == 1
    assert get(q="100%_\\")["total"] == 0
    assert get(error_code=30)["total"] == 0
    today = datetime.date.today().isoformat()
    assert get(prepared_from=today)["total"] == 8 and get(prepared_to="2000-01-01")["total"] == 0
    assert get(status="running")["total"] == 0
    assert get()["jobs"][0]["parameters"]["Geometry"] == "DG_4"


def test_job_monitor_refuses_bad_query_values_with_400(api, production):
    for query in ({"page": "x"}, {"per_page": 100000}, {"status": "bogus"}, {"sort": "nope"},
                  {"prepared_from": "yesterday"}, {"runnum_from": "-1"}, {"older_than_hours": "abc"},
                  {"request": "a,b"}, {"error_code": "1e3"}):
        r = api.get("/jobs", query_string=query)
        assert r.status_code == 400, (query, r.json)
        assert set(r.json) == {"error", "message", "request_id"}


def test_log_upload_and_download(app, api, production):
    job_id, token = started_job(api, production)
    r = api.as_(token).put(f"/jobs/{job_id}/log?attempt=1", data=b"\x1f\x8bfake-tarball",
                           content_type="application/gzip")
    assert r.status_code == 200 and r.json == {"stored": 14}
    r = api.get(f"/jobs/{job_id}/log")
    assert r.status_code == 200 and r.data == b"\x1f\x8bfake-tarball"
    assert api.get(f"/jobs/{job_id}").json["log"] == f"/api/v1/jobs/{job_id}/log?attempt=1"
    assert api.as_(token).put(f"/jobs/{job_id}/log?attempt=2", data=b"x").status_code == 403


def test_log_over_the_limit_is_413(api, production, app):
    job_id, token = started_job(api, production)
    limit = app.extensions["sbk.settings"].max_log_bytes
    r = api.as_(token).put(f"/jobs/{job_id}/log", data=b"x" * (limit + 1), content_type="application/gzip")
    assert r.status_code == 413 and r.json["error"] == "too-large"


def _summary_from_models(job, parameters):
    """A job as the job monitor listed it when built from joined peewee models (the reference)."""
    return {
        "id": job.id, "runnum": job.runnum, "events": job.events,
        "status": job.status, "step": job.step, "message": job.message,
        "error_code": job.error_code, "site": job.site.name if job.site_id else None,
        "user": job.user.name if job.user_id else None,
        "production": job.production.name, "request": job.request_id,
        "session": job.session.name, "parameters": parameters,
        "test": job.test, "log_to_db": job.log_to_db, "gjid": job.gjid, "backend": job.backend,
        "attempt": job.attempt, "wct": job.wct,
        "prepared_at": m.iso(job.prepared_at), "submitted_at": m.iso(job.submitted_at),
        "started_at": m.iso(job.started_at), "finished_at": m.iso(job.finished_at),
        "last_heartbeat": m.iso(job.heartbeat_at),
        "retry_at": m.iso(job.retry_at), "retries": job.retries,
    }


def test_job_monitor_rows_read_as_tuples_equal_the_models(app, api, production):
    """The page is read as plain tuples: every value, type and key order as the models give them."""
    ids = submit(api, production, runs=3, sites=("INFN-T1", "INFN-TORINO"), test=True)["job_ids"]
    job_id, token = started_job(api, production)
    api.as_(token).post(f"/jobs/{job_id}/events", json=[event(1, step="RUNNING-04"), event(2, "failed", code=30)])
    with app.app_context(), db.connection():
        m.Job.update(user=None, wct=12.5, message="x " * 40).where(m.Job.id == ids[0]).execute()
        m.Job.update(prepared_at=datetime.datetime(2024, 2, 29, 23, 59, 59, 999999)).where(m.Job.id == ids[1]).execute()
        m.Job.update(prepared_at=datetime.datetime(2024, 3, 1)).where(m.Job.id == ids[2]).execute()
        expected = {j.id: _summary_from_models(j, j.request.parameters) for j in m.Job.select()}
    for sort in ("runnum", "-prepared_at", "site"):
        listed = api.get("/jobs", query_string={"sort": sort, "per_page": 100}).json["jobs"]
        assert len(listed) == len(expected) == 7
        for job in listed:
            assert list(job.items()) == list(expected[job["id"]].items())
            assert all(type(job[k]) is type(expected[job["id"]][k]) for k in job)
    details = api.get(f"/jobs/{job_id}").json
    assert {k: details[k] for k in expected[job_id]} == expected[job_id]
