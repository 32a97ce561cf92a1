"""server/batch.py through the API: submission with a backend, bunches, the batch poller, kill, resubmit.

The local backend runs a stand-in wrapper here (a unit test of the bookkeeping
logic); tests/test_slurm_production.py runs the real wrapper on real Slurm.
"""
import json
import sys
import time
from pathlib import Path

import pytest

from server import batch, create_app, db
from server.settings import settings as current_settings

from .conftest import Api, event, make_production, new_token

# Stand-in for `severus run`: sleeps and exits as the job's runnum says (no report to the server).
FAKE_WRAPPER = '''
import json, sys, time
desc = json.load(open(sys.argv[2]))
runnum = desc["job"]["runnum"]
time.sleep(30 if runnum % 10 == 9 else 0)
sys.exit({8: 3, 7: 77}.get(runnum % 10, 0))
'''


@pytest.fixture()
def app(db_url, tmp_path):
    wrapper = tmp_path / "fake_severus.py"
    wrapper.write_text(FAKE_WRAPPER)
    configs = tmp_path / "site_configs"
    configs.mkdir()
    (configs / "INFN-TORINO.toml").write_text('name = "INFN-TORINO"\n')
    app = create_app({"DB": db_url, "PUBLIC_URL": "http://sbk.test:8080", "HEARTBEAT_S": 60,
                      "BACKEND_WRAPPER": str(wrapper), "BACKEND_PYTHON": sys.executable,
                      "BACKEND_SANDBOX_DIR": str(tmp_path / "sandboxes"),
                      "BACKEND_SITE_CONFIGS": str(configs), "BACKEND_LOCAL_MAX_PARALLEL": 4,
                      "BATCH_GRACE_S": 0})
    app.testing = True
    yield app
    close_all = getattr(db.database.obj, "close_all", None)
    if close_all:
        close_all()
    else:
        db.database.close()


@pytest.fixture()
def api(app):
    return Api(app.test_client(), new_token("dev", ["Developer"]))


@pytest.fixture()
def production(api):
    made = make_production(api)
    assert api.patch("/sites/INFN-T1", json={"bunch_size": 2}).status_code == 200
    return made


def settings_of(app):
    with app.app_context():
        return current_settings()


def submit(api, production, runs, sites=("INFN-T1",), **extra):
    return api.post("/submissions", json=dict({
        "production": production["production"],
        "bulks": [{"request": production["request"]["id"], "sites": list(sites), "runs": runs, "events": 10}]},
        **extra))


def poll_until(app, job_ids, api, done, timeout=20.0):
    """Run poller passes until `done(jobs)`; fail with the jobs after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        batch.poll_once(settings_of(app), {"local"})
        jobs = {j: api.get(f"/jobs/{j}").json for j in job_ids}
        if done(jobs):
            return jobs
        if time.monotonic() > deadline:
            pytest.fail(f"not reached in {timeout}s: {[(j['id'], j['status'], j['message']) for j in jobs.values()]}")
        time.sleep(0.1)


def sandbox_description(app, job_id, attempt):
    """The description a backend wrote into a sandbox for this job attempt."""
    for path in Path(settings_of(app).backend_sandbox_dir).glob("*/job-*.json"):
        desc = json.loads(path.read_text())
        if desc["job"]["id"] == job_id and desc["job"]["attempt"] == attempt:
            return desc
    pytest.fail(f"no sandbox description of job {job_id} attempt {attempt}")


def test_submission_cuts_bunches_of_the_site_size_and_marks_jobs_submitted(app, api, production):
    r = submit(api, production, runs=5, backend="local")
    assert r.status_code == 201, r.json
    plan = r.json
    assert plan["backend"] == "local" and plan["errors"] == []
    assert [len(b["jobs"]) for b in plan["bunches"]] == [2, 2, 1]
    assert sorted(int(j) for j in plan["submitted"]) == plan["job_ids"]
    assert plan["sets"][0]["rows"][0]["bunches"] == 3   # the plan said so too
    jobs = api.get("/jobs", query_string={"production": "2010_July"}).json["jobs"]
    assert {j["status"] for j in jobs} <= {"submitted", "running", "sys-failed"}
    assert all(j["backend"] == "local" and j["gjid"] == plan["submitted"][str(j["id"])] for j in jobs)
    # The token in the sandbox is the attempt's current one: the wrapper could report with it.
    desc = sandbox_description(app, jobs[0]["id"], 1)
    assert desc["server"]["url"] == "http://sbk.test:8080"
    reply = api.as_(desc["server"]["token"]).post(f"/jobs/{jobs[0]['id']}/events", json=event(1))
    assert reply.status_code == 200, reply.json


def test_unknown_backend_is_refused_before_anything_is_written(api, production):
    r = submit(api, production, runs=2, backend="pbs")
    assert r.status_code == 400 and r.json["error"] == "bad-request" and "local" in r.json["message"]
    assert api.get("/jobs").json["total"] == 0
    dry = submit(api, production, runs=2, backend="local", dry_run=True)
    assert dry.status_code == 200 and dry.json["job_ids"] == [] and "submitted" not in dry.json
    assert api.get("/jobs").json["total"] == 0


def test_a_site_without_a_site_config_leaves_its_jobs_prepared(api, production, tmp_path):
    api.post("/sites", json={"name": "NOWHERE-T2", "bunch_size": 5})
    r = submit(api, production, runs=2, sites=("INFN-TORINO", "NOWHERE-T2"), backend="local")
    assert r.status_code == 201, r.json
    [error] = r.json["errors"]
    assert error["site"] == "NOWHERE-T2" and "NOWHERE-T2.toml" in error["error"] and len(error["jobs"]) == 2
    assert len(r.json["submitted"]) == 2
    statuses = {j["site"]: j["status"] for j in api.get("/jobs").json["jobs"] if j["site"] == "NOWHERE-T2"}
    assert statuses == {"NOWHERE-T2": "prepared"}


def test_poller_fails_jobs_whose_batch_job_ended_without_a_report(app, api, production):
    # runnums 10000003..10000008: ...8 exits 3 (a wrapper code), ...7 exits 77 (none), the others 0; none reports.
    plan = submit(api, production, runs=6, backend="local").json
    jobs = poll_until(app, plan["job_ids"], api, lambda js: all(j["status"] == "sys-failed" for j in js.values()))
    by_runnum = {j["runnum"]: j for j in jobs.values()}
    assert by_runnum[10000008]["error_code"] == 3   # the wrapper's exit code is its error code
    assert "exited (3) without a final report" in by_runnum[10000008]["message"]
    assert by_runnum[10000007]["error_code"] == 99 and "exited (77)" in by_runnum[10000007]["message"]
    assert "wrapper exited with 3" in by_runnum[10000008]["message"]   # the backend's reason
    assert by_runnum[10000003]["error_code"] == 99 and "exited (0)" in by_runnum[10000003]["message"]
    history = api.get(f"/jobs/{plan['job_ids'][0]}").json["history"]
    assert history[-1]["kind"] == "final" and history[-1]["code"] == 99


def test_kill_cancels_the_batch_job_and_the_poller_ends_it_062(app, api, production):
    # runnum 10000009 sleeps 30 s: allocate 6 first so the killed one is ...9.
    submit(api, production, runs=6)
    job_id = submit(api, production, runs=1, backend="local").json["job_ids"][0]
    r = api.post(f"/jobs/{job_id}/kill")
    assert r.status_code == 200, r.json
    assert r.json["command"] == "kill" and r.json["cancelled"].startswith("local:")
    jobs = poll_until(app, [job_id], api, lambda js: js[job_id]["status"] == "sys-failed")
    assert jobs[job_id]["error_code"] == 62 and "cancelled on request" in jobs[job_id]["message"]


def test_resubmit_by_filter_makes_new_attempts_and_submits_them(app, api, production):
    plan = submit(api, production, runs=2).json
    first, second = plan["job_ids"]
    tokens = {}
    for job_id in plan["job_ids"]:
        tokens[job_id] = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
        api.as_(tokens[job_id]).post(f"/jobs/{job_id}/events",
                                     json=event(1, status="failed", kind="final", code=30))
    assert api.post("/jobs/resubmit", json={"backend": "local"}).status_code == 400   # no filter
    dry = api.post("/jobs/resubmit?production=2010_July&status=failed", json={"dry_run": True})
    assert dry.status_code == 200 and dry.json["jobs"] == [first, second]
    assert api.get(f"/jobs/{first}").json["attempt"] == 1   # a dry run changes nothing
    r = api.post("/jobs/resubmit?production=2010_July&runnum_from=10000003&runnum_to=10000003",
                 json={"backend": "local"})
    assert r.status_code == 200, r.json
    assert [x["id"] for x in r.json["resubmitted"]] == [first] and r.json["total"] == 1
    assert list(r.json["submitted"]) == [str(first)]
    job = api.get(f"/jobs/{first}").json
    assert job["attempt"] == 2 and job["backend"] == "local" and job["gjid"] == r.json["submitted"][str(first)]
    old = api.as_(tokens[first]).post(f"/jobs/{first}/events", json=event(2))
    assert old.status_code == 409 and old.json["error"] == "attempt-superseded"
    new_token_ = sandbox_description(app, first, 2)["server"]["token"]
    assert new_token_ != tokens[first]
    assert api.as_(new_token_).post(f"/jobs/{first}/events", json=event(1, attempt=2)).status_code == 200
    # One job by id, with a backend; a prepared job is refused with 409.
    r = api.post(f"/jobs/{second}/resubmit", json={"backend": "local"})
    assert r.status_code == 200 and r.json["attempt"] == 2 and str(second) in r.json["submitted"]
    fresh = submit(api, production, runs=1).json["job_ids"][0]
    r = api.post(f"/jobs/{fresh}/resubmit", json={"backend": "local"})
    assert r.status_code == 409 and r.json["error"] == "not-resubmittable"
    assert api.post(f"/jobs/{second}/resubmit", json={"backend": "pbs"}).status_code == 400
