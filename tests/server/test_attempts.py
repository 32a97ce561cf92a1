"""Attempts on the server: the fence, registration by a newer attempt, removal requests and
their cleanup on a real XRootD SE (checked with xrdfs, not with our own code)."""
import subprocess
import time

from server import db, removals
from shared.outputs import UPLOAD_SUFFIX, physical_name

from .conftest import event, started_job

OUT_DIR = "lfn:/grid/superbvo.org/production/FastSim/2010_July/output/HadRecoilCocktail/DG_4/B0B0bar_SL"


def surl(se, name, attempt, suffix=""):
    """Where attempt `attempt` writes output `name` on the SE (the wrapper's rule)."""
    return f"{se.root_url}/production/FastSim/2010_July/output/HadRecoilCocktail/DG_4/B0B0bar_SL/" \
           f"{physical_name(name, attempt)}{suffix}"


def replica(url, name="run_1.root", size=10, adler32="0000abcd"):
    return {"lfn": f"{OUT_DIR}/{name}", "site": "INFN-T1", "surl": url, "size": size, "adler32": adler32}


def put_file(se, url, data=b"x" * 10):
    """Write a file on the SE through the SE (xrdcp), as a wrapper would: it owns it."""
    out = subprocess.run(["xrdcp", "-f", "-s", "--path", "-", url], input=data, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr


def on_se(se, url):
    """True when xrdfs (the SE's own client) finds the file."""
    path = url.split(f"127.0.0.1:{se.root_port}/", 1)[1]
    out = subprocess.run(["xrdfs", f"root://127.0.0.1:{se.root_port}", "stat", path],
                         capture_output=True, text=True, timeout=60)
    return out.returncode == 0


def fail_attempt(api, job_id, token, seq=2):
    assert api.as_(token).post(f"/jobs/{job_id}/events", json=event(seq, "sys-failed", code=50)).status_code == 200


def test_the_fence_answers_only_the_current_attempt_of_a_running_job(api, production):
    job_id, token = started_job(api, production)
    wrapper = api.as_(token)
    wrapper.post(f"/jobs/{job_id}/events", json=event(1))
    r = wrapper.get(f"/jobs/{job_id}/attempt")
    assert r.status_code == 200 and (r.json["attempt"], r.json["status"], r.json["command"]) == (1, "running", None)
    fail_attempt(api, job_id, token)
    r = wrapper.get(f"/jobs/{job_id}/attempt")
    assert r.status_code == 409 and r.json["error"] == "attempt-ended"
    api.post(f"/jobs/{job_id}/resubmit")
    r = wrapper.get(f"/jobs/{job_id}/attempt")
    assert r.status_code == 409 and r.json["error"] == "attempt-superseded"
    assert api.get(f"/jobs/{job_id}/attempt").status_code == 403   # a user token is not a job's


def test_a_newer_attempt_replaces_the_older_replica_and_the_old_file_is_removed(api, production, xrootd_se):
    job_id, token1 = started_job(api, production)
    old, new = surl(xrootd_se, "run_1.root", 1), surl(xrootd_se, "run_1.root", 2)
    put_file(xrootd_se, old)
    api.as_(token1).post(f"/jobs/{job_id}/events", json=event(1))
    assert api.as_(token1).post("/catalog/replicas", json=[replica(old)]).status_code == 201
    fail_attempt(api, job_id, token1)   # e.g. its log upload failed after registration (050)
    # The superseded attempt registers nothing more, even the same replica.
    assert api.post(f"/jobs/{job_id}/resubmit").json["attempt"] == 2
    r = api.as_(token1).post("/catalog/replicas", json=[replica(old)])
    assert r.status_code == 409 and r.json["error"] == "attempt-superseded"
    token2 = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
    api.as_(token2).post(f"/jobs/{job_id}/events", json=event(1, attempt=2))
    put_file(xrootd_se, new, b"y" * 12)
    r = api.as_(token2).post("/catalog/replicas", json=[replica(new, size=12, adler32="0000beef")])
    assert r.status_code == 201
    got = api.get("/catalog/replicas", query_string={"lfn": f"{OUT_DIR}/run_1.root"}).json
    assert (got["size"], got["adler32"], [x["surl"] for x in got["replicas"]]) == (12, "0000beef", [new])
    job = api.get(f"/jobs/{job_id}").json
    assert [(o["surl"], o["attempt"]) for o in job["outputs"]] == [(new, 2)]
    assert [(x["surl"], x["state"], x["attempt"]) for x in job["removals"]] == [(old, "pending", 1)]
    # The server deletes the older attempt's file, and only it.
    with db.connection():
        counts = removals.cleanup_once(timeout_s=30)
    assert counts["done"] == 1
    assert not on_se(xrootd_se, old) and on_se(xrootd_se, new)
    assert api.get(f"/jobs/{job_id}").json["removals"][0]["state"] == "done"


def test_a_wrapper_may_ask_to_remove_only_its_own_unregistered_files(api, production, xrootd_se):
    job_id, token = started_job(api, production)
    wrapper = api.as_(token)
    wrapper.post(f"/jobs/{job_id}/events", json=event(1))
    mine = surl(xrootd_se, "run_2.root", 1, UPLOAD_SUFFIX)
    registered = surl(xrootd_se, "run_3.root", 1)
    wrapper.post("/catalog/replicas", json=replica(registered, name="run_3.root"))
    put_file(xrootd_se, mine)
    put_file(xrootd_se, registered)
    for foreign in (f"{xrootd_se.root_url}/production/FastSim/software.tjz",          # not an output's name
                    surl(xrootd_se, "run_2.root", 7),                                   # a later attempt
                    f"{xrootd_se.root_url}/elsewhere/run_2.root.1",                     # not its directory
                    surl(xrootd_se, "run_2.root", 1).replace("/B0B0bar_SL/", "/B0B0bar_SL/../x/")):
        r = wrapper.post(f"/jobs/{job_id}/removals", json=[{"site": "INFN-T1", "surl": foreign}])
        assert r.status_code == 403, foreign
    r = wrapper.post(f"/jobs/{job_id}/removals", json=[{"site": "INFN-T1", "surl": mine, "reason": "SE died"},
                                                       {"site": "INFN-T1", "surl": registered}])
    assert r.json == {"filed": 1, "asked": 2}   # a registered file is never asked for
    assert wrapper.post(f"/jobs/{job_id}/removals", json=[{"site": "INFN-T1", "surl": mine}]).json["filed"] == 0
    with db.connection():
        assert removals.cleanup_once(timeout_s=30)["done"] == 1
    assert not on_se(xrootd_se, mine) and on_se(xrootd_se, registered)


def test_cleanup_retries_a_dead_se_later_and_never_deletes_a_registered_file(api, production, fresh_se):
    job_id, token = started_job(api, production)
    wrapper = api.as_(token)
    wrapper.post(f"/jobs/{job_id}/events", json=event(1))
    lost = surl(fresh_se, "run_4.root", 1)
    put_file(fresh_se, lost)
    wrapper.post(f"/jobs/{job_id}/removals", json=[{"site": "INFN-T1", "surl": lost}])
    fresh_se.stop()
    with db.connection():
        assert removals.cleanup_once(timeout_s=10)["failed"] == 1
        assert removals.cleanup_once(timeout_s=10) == {"done": 0, "kept": 0, "failed": 0}   # not due yet
    pending = api.get(f"/jobs/{job_id}").json["removals"][0]
    assert pending["state"] == "pending" and pending["tries"] == 1 and pending["last_error"]
    fresh_se.start()
    # Registered meanwhile (a wrapper's registration whose reply was lost): kept, not deleted.
    wrapper.post("/catalog/replicas", json=replica(lost, name="run_4.root"))
    with db.connection():
        assert removals.cleanup_once(timeout_s=10, now=time.time() + 3600)["kept"] == 1
    assert on_se(fresh_se, lost)
    assert api.get(f"/jobs/{job_id}").json["removals"][0]["state"] == "kept"


def test_a_node_path_waits_for_a_person(api, production):
    job_id, token = started_job(api, production)
    path = f"/storage/superbvo.org/production/FastSim/2010_July/output/HadRecoilCocktail/DG_4/B0B0bar_SL/" \
           f"{physical_name('run_5.root', 1)}"
    api.as_(token).post(f"/jobs/{job_id}/removals", json=[{"site": "INFN-T1", "surl": path}])
    with db.connection():
        assert removals.cleanup_once() == {"done": 0, "kept": 0, "failed": 0}
    assert api.get(f"/jobs/{job_id}").json["removals"][0]["state"] == "manual"


def test_removals_of_a_final_report_are_filed(api, production, xrootd_se):
    job_id, token = started_job(api, production)
    mine = surl(xrootd_se, "run_6.root", 1)
    report = {"status": "sys-failed", "code": 40, "removals": [{"site": "INFN-T1", "surl": mine},
                                                               {"site": "INFN-T1", "surl": "root://x//etc/passwd"}]}
    r = api.as_(token).post(f"/jobs/{job_id}/events", json=event(1, "sys-failed", code=40, report=report))
    assert r.status_code == 200 and r.json["status"] == "sys-failed"   # never refused for its removals
    assert [x["surl"] for x in api.get(f"/jobs/{job_id}").json["removals"]] == []   # the bad one spoils the list
    job_id, token = started_job(api, production)
    report["removals"] = report["removals"][:1]
    api.as_(token).post(f"/jobs/{job_id}/events", json=event(1, "sys-failed", code=40, report=report))
    assert [x["surl"] for x in api.get(f"/jobs/{job_id}").json["removals"]] == [mine]
