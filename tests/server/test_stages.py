"""Follow-up stages (issue 15; seeds 002 and 004): a request's merge starts by itself when its condition
holds, once, over the request's registered outputs. Through the API, on both databases; the real one
(a merge job run by the wrapper, submitted through the local backend) is tests/test_stages_with_server.py."""
import threading

from server import stages

from .conftest import event, make_production, submit
from .test_step_templates import define

MERGE = {"name": "merge", "module": "merge", "parameters": {"how": "tar"}}
OUT = "lfn:/grid/superbvo.org/production/FastSim/2010_Stage/output/stage"


def stage_request(api, followup, required_events=0):
    define(api, MERGE)
    make_production(api, name="2010_Stage")
    r = api.post("/requests", json={
        "production": "2010_Stage", "parameters": {"Analysis": "Generics", "Generator": "G", "Geometry": "DG_4",
                                                   "Background": "B"},
        "output_lfn": OUT, "output_sites": ["INFN-T1"], "events_per_job": 100, "required_events": required_events,
        "followup": followup})
    assert r.status_code == 201, r.json
    assert api.patch(f"/requests/{r.json['id']}", json={"status": "valid"}).status_code == 200
    return r.json


def run_job(api, job_id, code=0, outputs=("root",)):
    """The job as a wrapper runs it: its outputs registered with its token, then its final event."""
    token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
    wrapper = api.as_(token)
    runnum = api.get(f"/jobs/{job_id}").json["runnum"]
    files = [{"lfn": f"{OUT}/{runnum}.{ext}", "site": "INFN-T1", "surl": f"root://se//store/{runnum}.{ext}",
              "size": 10, "adler32": "0000abcd"} for ext in outputs]
    files.append({"lfn": f"{OUT}/log/{runnum}.1.log.tgz", "site": "INFN-T1", "surl": f"root://se//log/{runnum}",
                  "size": 5, "adler32": "0000abcd"})
    if code == 0:
        assert wrapper.post("/catalog/replicas", json=files).status_code == 201
    status = "done" if code == 0 else "failed"
    r = wrapper.post(f"/jobs/{job_id}/events", json=[event(1), event(2, status=status, code=code)])
    assert r.status_code == 200, r.json


def stage_jobs(api, request_id):
    return [j for j in api.get("/jobs", query_string={"request": request_id, "per_page": 100}).json["jobs"]
            if api.get(f"/jobs/{j['id']}/description").json["payload"].get("steps", [{}])[0].get("module") == "merge"]


def test_the_setting_is_checked_and_shown(api, production):
    define(api, MERGE)
    base = {"production": "2010_July", "parameters": {"Analysis": "Generics", "Generator": "X", "Geometry": "DG_4",
                                                      "Background": "B"},
            "output_lfn": "lfn:/grid/superbvo.org/production/FastSim/2010_July/output/x", "output_sites": ["INFN-T1"]}
    for bad, word in [({"template": "nosuch"}, "nosuch"), ({"template": "merge", "condition": "some"}, "condition"),
                      ({"template": "merge", "condition": "fraction"}, "fraction"),
                      ({"template": "merge", "fraction": 2}, "fraction"), ({"template": "merge", "when": 1}, "when"),
                      ("merge", "object")]:
        r = api.post("/requests", json=dict(base, followup=bad))
        assert r.status_code == 400 and word in r.json["message"] and "\n" not in r.json["message"], (bad, r.json)
    r = api.post("/requests", json=dict(base, followup={"template": "merge"}))
    assert r.status_code == 201, r.json
    assert r.json["followup"] == {"template": "merge", "condition": "all", "fraction": 1.0, "files_per_job": 0,
                                  "patterns": ["*.merged.*"]}
    assert r.json["stage"]["state"] == "waiting" and r.json["stage"]["waiting_for"] == "no jobs yet"
    # the template a stage names is in use
    assert api.delete("/sessions/FastSim/steps/merge").json["error"] == "step-in-use"


def test_the_merge_is_prepared_once_when_the_last_job_is_done_over_the_outputs(api, production):
    req = stage_request(api, {"template": "merge", "files_per_job": 2})
    prod = {"production": "2010_Stage", "request": req}
    ids = submit(api, prod, runs=3)["job_ids"]
    run_job(api, ids[0])
    run_job(api, ids[1], outputs=("root", "hist"))            # a file the request's patterns leave out
    shown = api.get(f"/requests/{req['id']}").json["stage"]
    assert (shown["state"], shown["waiting_for"]) == ("waiting", "1 of 3 jobs not finished")
    assert not stage_jobs(api, req["id"])
    run_job(api, ids[2])                                      # the last one: the stage starts
    merges = stage_jobs(api, req["id"])
    assert len(merges) == 2 and all(j["status"] == "prepared" for j in merges)      # 3 outputs, 2 a job
    descs = [api.get(f"/jobs/{j['id']}/description").json for j in sorted(merges, key=lambda j: j["id"])]
    runnums = sorted(api.get(f"/jobs/{i}").json["runnum"] for i in ids)
    assert [d["input"] for d in descs] == [
        {"mode": "LIST", "paths": [f"{OUT}/{runnums[0]}.root", f"{OUT}/{runnums[1]}.root"]},
        {"mode": "LIST", "paths": [f"{OUT}/{runnums[2]}.root"]}]
    assert descs[0]["output"]["lfn_dir"] == f"{OUT}/merge" and descs[0]["output"]["patterns"] == ["*.merged.*"]
    assert descs[0]["payload"]["steps"][0]["parameters"]["how"] == "tar"
    # once: another evaluation (a poll, a duplicate final event) makes nothing more
    assert stages.after_job_end(req["id"]) == []
    assert api.get(f"/requests/{req['id']}").json["stage"]["state"] == "started"


def test_all_waits_for_a_failed_job_and_fraction_does_not(api, production):
    req = stage_request(api, {"template": "merge", "condition": "fraction", "fraction": 0.5})
    ids = submit(api, {"production": "2010_Stage", "request": req}, runs=2)["job_ids"]
    run_job(api, ids[0], code=30)
    assert not stage_jobs(api, req["id"])
    run_job(api, ids[1])
    assert len(stage_jobs(api, req["id"])) == 1                  # half done, the rest final
    other = api.post("/requests", json={
        "production": "2010_Stage", "parameters": {"Analysis": "Generics", "Generator": "H", "Geometry": "DG_4",
                                                   "Background": "B"},
        "output_lfn": f"{OUT}h", "output_sites": ["INFN-T1"], "followup": {"template": "merge"}}).json
    api.patch(f"/requests/{other['id']}", json={"status": "valid"})
    ids = submit(api, {"production": "2010_Stage", "request": other}, runs=2)["job_ids"]
    run_job(api, ids[0], code=30)
    run_job(api, ids[1])
    shown = api.get(f"/requests/{other['id']}").json["stage"]
    assert (shown["state"], shown["waiting_for"]) == ("waiting", "1 of 2 jobs not done")


def test_required_events_hold_the_stage_until_submitted_and_done(api, production):
    req = stage_request(api, {"template": "merge"}, required_events=300)
    ids = submit(api, {"production": "2010_Stage", "request": req}, runs=2)["job_ids"]
    for job_id in ids:
        run_job(api, job_id)
    shown = api.get(f"/requests/{req['id']}").json["stage"]
    assert shown["state"] == "waiting" and "of the 300 required events" in shown["waiting_for"]
    run_job(api, submit(api, {"production": "2010_Stage", "request": req}, runs=1)["job_ids"][0])
    assert len(stage_jobs(api, req["id"])) == 1


def test_two_ends_at_once_make_one_stage(api, production):
    """Two evaluations racing (two server processes seeing the last two jobs end): one stage."""
    req = stage_request(api, {"template": "merge"})
    ids = submit(api, {"production": "2010_Stage", "request": req}, runs=2)["job_ids"]
    for job_id in ids:
        run_job(api, job_id)
    # the hook already made it; remove it and let two threads race to make it again
    made = stage_jobs(api, req["id"])
    assert len(made) == 1
    from server import models as m
    m.Attempt.delete().where(m.Attempt.job.in_([j["id"] for j in made])).execute()
    m.Job.delete().where(m.Job.id.in_([j["id"] for j in made])).execute()
    results, barrier = [], threading.Barrier(2)

    def race():
        from server import db
        with db.connection():
            barrier.wait()
            results.append(stages.after_job_end(req["id"]))
    threads = [threading.Thread(target=race) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(len(r) for r in results) == [0, 1], results
    assert len(stage_jobs(api, req["id"])) == 1


def test_a_cron_poll_leaves_a_local_requests_stage_to_the_serving_processes(api, production):
    """`sbk poll` from cron submits no stage job whose request ran on the local backend: its processes
    would belong to the short-lived command (the serving process's poller submits them)."""
    from server import models as m
    req = stage_request(api, {"template": "merge"})
    ids = submit(api, {"production": "2010_Stage", "request": req}, runs=1)["job_ids"]
    run_job(api, ids[0])
    m.Job.update(backend="local").where(m.Job.id.in_(ids)).execute()
    (merge,) = stage_jobs(api, req["id"])
    assert stages.submit_due(None, "http://sbk.example.org", backends=["slurm", "arc"]) == []
    assert m.Job.get_by_id(merge["id"]).backend is None            # not claimed: still the poller's


def test_the_poll_looks_only_at_requests_whose_stage_has_no_jobs(api, production, monkeypatch):
    """run_due evaluates a request's stage until its jobs exist, then no more (each poll would
    otherwise read every request that ever had a follow-up stage)."""
    req = stage_request(api, {"template": "merge"})
    ids = submit(api, {"production": "2010_Stage", "request": req}, runs=1)["job_ids"]
    looked = []
    monkeypatch.setattr(stages, "after_job_end", lambda request_id: looked.append(request_id) or [])
    stages.run_due(None, "")
    assert req["id"] in looked                         # waiting for its job: looked at (its test twin too)
    monkeypatch.undo()
    run_job(api, ids[0])                               # its stage is made
    monkeypatch.setattr(stages, "after_job_end", lambda request_id: looked.append(request_id) or [])
    looked.clear()
    stages.run_due(None, "")
    assert req["id"] not in looked and req["test_request"] in looked


def test_a_stage_job_claimed_by_a_process_killed_before_its_hand_off_is_submitted_once_the_lease_ends(
        api, production, monkeypatch):
    """The claim (backend set) commits before the backend call: a server killed in between left the stage
    job claimed and prepared for good (submit_due takes only unclaimed ones). The claim is a lease
    (retry_at): once it lapses, the retries' pass submits the job, once."""
    import time
    from server import batch, retries
    from server import models as m

    class Killed(BaseException):
        """The process dies inside the hand-off."""

    req = stage_request(api, {"template": "merge"})
    ids = submit(api, {"production": "2010_Stage", "request": req}, runs=1)["job_ids"]
    run_job(api, ids[0])
    m.Job.update(backend="slurm").where(m.Job.id.in_(ids)).execute()
    (merge,) = stage_jobs(api, req["id"])
    handed = []

    def dies(job_ids, name, base_url, settings):
        raise Killed()
    monkeypatch.setattr(batch, "submit_jobs", dies)
    try:
        stages.submit_due(None, "http://sbk.example.org", backends=["slurm"])
    except Killed:
        pass
    job = m.Job.get_by_id(merge["id"])
    assert (job.status, job.backend) == ("prepared", "slurm") and job.retry_at > time.time()

    def hands_off(job_ids, name, base_url, settings):
        handed.append((list(job_ids), name))
        return {"backend": name, "submitted": {}, "bunches": [], "errors": []}
    monkeypatch.setattr(batch, "submit_jobs", hands_off)
    assert retries.run_due(None, "http://sbk.example.org", now=time.time())["retried"] == []   # the lease holds
    later = time.time() + retries.SUBMIT_LEASE_S + 1
    assert [r["id"] for r in retries.run_due(None, "http://sbk.example.org", now=later)["retried"]] == [merge["id"]]
    assert handed == [([merge["id"]], "slurm")]
    assert retries.run_due(None, "http://sbk.example.org", now=later)["retried"] == []         # once
