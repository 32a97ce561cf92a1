"""The spine: health, error codes, preparing jobs, descriptions, events."""
from shared.errors import CODES
from shared.jobdesc import parse_job_description

from .conftest import event, started_job, submit


def test_health_answers_ok(client):
    r = client.get("/api/v1/health")
    assert r.status_code == 200 and r.json == {"status": "ok"}


def test_error_codes_are_the_shared_table(client):
    r = client.get("/api/v1/error-codes")
    assert [e["code"] for e in r.json] == list(CODES)
    assert r.json[0] == CODES[0].to_dict()


def test_submission_allocates_contiguous_runnums_above_the_minimum(api, production):
    plan = submit(api, production, runs=3, sites=("INFN-T1", "INFN-TORINO"))
    rows = plan["sets"][0]["rows"]
    assert [(r["site"], r["first_runnum"], r["last_runnum"]) for r in rows] == [
        ("INFN-T1", 10000003, 10000005), ("INFN-TORINO", 10000006, 10000008)]
    again = submit(api, production, runs=2)
    assert again["sets"][0]["rows"][0]["first_runnum"] == 10000009
    jobs = api.get("/jobs", query_string={"sort": "runnum", "per_page": 100}).json
    assert [j["runnum"] for j in jobs["jobs"]] == list(range(10000003, 10000011))
    assert jobs["total"] == 8


def test_dry_run_writes_nothing(api, production):
    plan = submit(api, production, runs=4, dry_run=True)
    assert plan["dry_run"] is True and plan["total_jobs"] == 4 and plan["total_events"] == 400
    assert plan["job_ids"] == []
    assert api.get("/jobs").json["total"] == 0


def test_reading_a_description_never_mints_or_voids_a_token(api, production):
    job_id = submit(api, production, runs=1)["job_ids"][0]
    shipped = api.post(f"/jobs/{job_id}/token").json   # a hand-off: the copy that goes to the node
    desc = parse_job_description(shipped)
    assert desc.server.url == "http://sbk.test:8080"
    assert desc.job.id == job_id and desc.job.runnum == 10000003 and desc.payload.module == "fastsim"
    for _ in range(3):   # a shifter looks at the job, several times
        read = api.get(f"/jobs/{job_id}/description").json
        assert read["server"]["token"] == "redacted" and parse_job_description(read).job.id == job_id
    r = api.as_(shipped["server"]["token"]).post(f"/jobs/{job_id}/events", json=event(1))
    assert r.status_code == 200 and r.json["status"] == "running"


def test_an_explicit_rotation_voids_the_old_token_and_is_recorded(api, production):
    job_id = submit(api, production, runs=1)["job_ids"][0]
    first = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
    second = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
    assert first != second
    assert api.as_(first).post(f"/jobs/{job_id}/events", json=event(1)).status_code == 401
    assert api.as_(second).post(f"/jobs/{job_id}/events", json=event(1)).status_code == 200
    rotations = [a for a in api.get("/activities").json["activities"] if a["type"] == "token-rotated"]
    assert len(rotations) == 2 and f"job {job_id}" in rotations[0]["info"]
    # A started attempt reports with its token: rotating it would cut the job off.
    r = api.post(f"/jobs/{job_id}/token")
    assert r.status_code == 409 and r.json["error"] == "job-started"
    assert api.as_(second).post(f"/jobs/{job_id}/events", json=event(2)).status_code == 200


def test_events_move_the_job_and_record_the_final_report(api, production):
    job_id, token = started_job(api, production)
    wrapper = api.as_(token)
    r = wrapper.post(f"/jobs/{job_id}/events", json=[event(1, step="RUNNING-01"), event(2, step="RUNNING-02")])
    assert r.json == {"accepted": 2, "duplicates": 0, "status": "running", "command": None}
    job = api.get(f"/jobs/{job_id}").json
    assert job["step"] == "RUNNING-02" and job["started_at"] and job["last_heartbeat"]
    r = wrapper.post(f"/jobs/{job_id}/events", json=event(3, "failed", code=30, step="RUNNING-04",
                                                          report={"exit_code": 3}, metrics={"wct_s": 12.5}))
    assert r.json["status"] == "failed"
    job = api.get(f"/jobs/{job_id}").json
    assert (job["status"], job["error_code"], job["wct"]) == ("failed", 30, 12.5)
    assert job["report"] == {"exit_code": 3}
    assert [h["seq"] for h in job["history"]] == [1, 2, 3]
    assert job["error"]["status"] == "failed"


def test_replayed_event_changes_nothing(api, production):
    job_id, token = started_job(api, production)
    wrapper = api.as_(token)
    wrapper.post(f"/jobs/{job_id}/events", json=[event(1, step="RUNNING-01"), event(2, step="RUNNING-03")])
    before = api.get(f"/jobs/{job_id}").json
    r = wrapper.post(f"/jobs/{job_id}/events", json=event(1, step="RUNNING-01", message="replayed"))
    assert r.json["accepted"] == 0 and r.json["duplicates"] == 1
    after = api.get(f"/jobs/{job_id}").json
    assert after["step"] == "RUNNING-03" and len(after["history"]) == 2
    assert after["history"][0]["message"] == before["history"][0]["message"]


def test_late_running_after_done_changes_nothing(api, production):
    job_id, token = started_job(api, production)
    wrapper = api.as_(token)
    wrapper.post(f"/jobs/{job_id}/events", json=event(5, "done", code=0, step="RUNNING-07"))
    r = wrapper.post(f"/jobs/{job_id}/events", json=event(6, step="RUNNING-04"))
    assert r.json["status"] == "done" and r.json["accepted"] == 1
    job = api.get(f"/jobs/{job_id}").json
    assert (job["status"], job["step"], job["error_code"]) == ("done", "RUNNING-07", 0)


def test_wrong_tokens_are_refused(api, production):
    job_a, token_a = started_job(api, production)
    job_b, _ = started_job(api, production)
    assert api.as_("sbkj_nonsense").post(f"/jobs/{job_a}/events", json=event(1)).status_code == 401
    assert api.as_(None).post(f"/jobs/{job_a}/events", json=event(1)).status_code == 401
    r = api.as_(token_a).post(f"/jobs/{job_b}/events", json=event(1))
    assert r.status_code == 403 and r.json["error"] == "forbidden"
    assert api.post(f"/jobs/{job_a}/events", json=event(1)).status_code == 403   # a user token
    assert api.as_(token_a).get("/jobs").status_code == 403                      # a job token
    # a bad token is told so before a bad body; nothing refused was stored
    assert api.as_("sbkj_nonsense").post(f"/jobs/{job_a}/events", json={"seq": "x"}).status_code == 401
    assert [api.get(f"/jobs/{j}").json["history"] for j in (job_a, job_b)] == [[], []]


def test_bad_event_bodies_are_400_with_one_message(api, production):
    job_id, token = started_job(api, production)
    wrapper = api.as_(token)
    r = wrapper.post(f"/jobs/{job_id}/events", data="{not json", content_type="application/json")
    assert r.status_code == 400 and r.json["error"] == "invalid-json"
    r = wrapper.post(f"/jobs/{job_id}/events", json={"attempt": 1, "seq": "x", "time": 1, "status": "running"})
    assert r.status_code == 400 and "seq" in r.json["message"]
    r = wrapper.post(f"/jobs/{job_id}/events", json=event(1, attempt=2))
    assert r.status_code == 403
