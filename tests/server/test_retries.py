"""server/retries.py: the retry policy, when an ended attempt earns an automatic retry, the claim, the site.

Jobs are marked as handed to the local backend without a process (their final events come from the
test, as a wrapper's would); the retries themselves are submitted to the local backend running
test_batch's stand-in wrapper. tests/test_retries_with_server.py runs it all on real parts.
"""
import dataclasses
import threading
import time

import pytest

from server import batch, db, jobs, retries
from server import models as m
from shared.errors import CODES

from .conftest import event
from .test_batch import api, app, production, settings_of, submit  # noqa: F401  (fixtures)

BASE_URL = "http://sbk.test:8080"


def handed(app, api, production, runs=1, site="INFN-T1"):
    """Prepared jobs at `site` marked as taken by the local backend (no process runs): [(id, token)]."""
    r = submit(api, production, runs=runs, sites=(site,))
    assert r.status_code == 201, r.json
    out = []
    for job_id in r.json["job_ids"]:
        token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
        with app.app_context(), db.connection():
            jobs.mark_submitted(job_id, gjid=f"local:test:{job_id}", backend="local")
        out.append((job_id, token))
    return out


def end(api, job_id, token, code, attempt=1, seq=1):
    """The wrapper's final event of `attempt` with `code` (the status the error table gives it)."""
    status = CODES[code].status
    r = api.as_(token).post(f"/jobs/{job_id}/events", json=event(seq, status=status, code=code, attempt=attempt))
    assert r.status_code == 200, r.json
    return api.get(f"/jobs/{job_id}").json


def stored(app, job_id):
    with app.app_context(), db.connection():
        return m.Job.get_by_id(job_id)


def run_due(app, now):
    with app.app_context(), db.connection():
        return retries.run_due(settings_of(app), BASE_URL, now=now)


def test_back_off_doubles_per_attempt_and_stops_at_six_hours():
    assert [retries.backoff(600, n) for n in (1, 2, 3, 4)] == [600, 1200, 2400, 4800]
    assert retries.backoff(1, 1) == 1 and retries.backoff(0, 5) == 0
    assert retries.backoff(600, 10) == retries.MAX_BACKOFF_S == 6 * 3600


def test_the_policy_has_defaults_is_validated_in_one_line_and_changes_after_open(api, production):
    request = production["request"]
    assert (request["max_attempts"], request["retry_backoff_s"]) == (3, 600)
    body = {"production": production["production"], "output_lfn": "lfn:/grid/superbvo.org/production/FastSim/2010_July/output/Generics",
            "parameters": {"Analysis": "Generics", "Generator": "g", "Geometry": "DG_4", "Background": "b"}}
    for bad in ({"max_attempts": 0}, {"max_attempts": 21}, {"max_attempts": "3"}, {"max_attempts": 2.5},
                {"retry_backoff_s": -1}, {"retry_backoff_s": 1e9}, {"retry_backoff_s": "soon"}):
        r = api.post("/requests", json=dict(body, **bad))
        assert r.status_code == 400, (bad, r.json)
        assert r.json["error"] and next(iter(bad)) in r.json["message"] and "\n" not in r.json["message"]
    r = api.post("/requests", json=dict(body, max_attempts=1, retry_backoff_s=1.5))
    assert r.status_code == 201, r.json
    assert (r.json["max_attempts"], r.json["retry_backoff_s"]) == (1, 1.5)
    # The request is valid (no longer open): its policy still changes, its job settings do not.
    r = api.patch(f"/requests/{request['id']}", json={"max_attempts": 5, "retry_backoff_s": 60})
    assert r.status_code == 200 and (r.json["max_attempts"], r.json["retry_backoff_s"]) == (5, 60)
    assert api.patch(f"/requests/{request['id']}", json={"cores": 2}).status_code == 409
    assert api.get(f"/requests/{request['id']}").json["max_attempts"] == 5


# retryable, blamed on neither the payload nor a manager: retried; the rest never
RETRIED = (2, 5, 15, 22, 40, 41, 43, 45, 50, 60, 99)
NOT_RETRIED = (0, 1, 6, 10, 11, 13, 14, 20, 21, 30, 31, 32, 33, 34, 42, 44, 61, 62)


def test_which_codes_schedule_a_retry_and_when(app, api, production):
    assert {c for c in CODES if CODES[c].retryable and CODES[c].blame not in ("payload", "manager")} \
        >= set(RETRIED) and not set(RETRIED) & set(NOT_RETRIED)
    ended = {}
    pairs = handed(app, api, production, runs=len(RETRIED) + len(NOT_RETRIED))
    for (job_id, token), code in zip(pairs, RETRIED + NOT_RETRIED):
        before = time.time()
        job = end(api, job_id, token, code)
        ended[code] = (job, before, time.time())
    for code in RETRIED:
        job, before, after = ended[code]
        assert job["status"] == CODES[code].status and job["retry_at"], (code, job)
        due = stored(app, job["id"]).retry_at
        assert before + 600 - 1 <= due <= after + 600 + 1, code   # the request's back-off after attempt 1
        assert job["max_attempts"] == 3 and job["retries"] == 0
    for code in NOT_RETRIED:
        job = ended[code][0]
        assert job["retry_at"] is None and stored(app, job["id"]).retry_at is None, code
    # the job monitor shows when: the summaries carry it
    listed = {j["id"]: j for j in api.get("/jobs", query_string={"per_page": 100}).json["jobs"]}
    assert listed[ended[40][0]["id"]]["retry_at"] == ended[40][0]["retry_at"]
    assert listed[ended[30][0]["id"]]["retry_at"] is None


def test_no_retry_for_a_job_run_by_hand_or_without_attempts_left(app, api, production):
    job_id = submit(api, production, runs=1).json["job_ids"][0]   # never handed to a backend
    token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
    assert end(api, job_id, token, 40)["retry_at"] is None
    assert api.patch(f"/requests/{production['request']['id']}", json={"max_attempts": 1}).status_code == 200
    [(job_id, token)] = handed(app, api, production)
    assert end(api, job_id, token, 40)["retry_at"] is None


def test_the_reaper_and_the_batch_poller_schedule_retries_too(app, api, production):
    (silent, token), (vanished, _) = handed(app, api, production, runs=2)
    assert api.as_(token).post(f"/jobs/{silent}/events", json=event(1)).status_code == 200
    with app.app_context(), db.connection():
        assert jobs.reap(3, now=time.time() + 10 ** 6) == [silent]
        assert jobs.end_batch_job(vanished, 1, f"local:test:{vanished}", 99, "the batch job vanished")
    for job_id, code in ((silent, 100), (vanished, 99)):
        job = api.get(f"/jobs/{job_id}").json
        assert job["error_code"] == code and job["retry_at"], job


def test_a_kill_or_a_resubmit_cancels_the_schedule_and_a_killed_attempt_is_never_retried(app, api, production):
    (killed, t1), (resubmitted, t2), (commanded, t3) = handed(app, api, production, runs=3)
    end(api, killed, t1, 40)
    end(api, resubmitted, t2, 40)
    r = api.post(f"/jobs/{killed}/kill")
    assert r.status_code == 200 and r.json["retry_cancelled"] is True and r.json["command"] is None
    job = api.get(f"/jobs/{killed}").json
    assert (job["status"], job["retry_at"]) == ("sys-failed", None)
    assert api.post(f"/jobs/{killed}/kill").status_code == 409   # nothing left to cancel: final, as before
    r = api.post(f"/jobs/{resubmitted}/resubmit")
    assert r.status_code == 200 and r.json["attempt"] == 2
    job = api.get(f"/jobs/{resubmitted}").json
    assert (job["status"], job["retry_at"], job["retries"]) == ("prepared", None, 0)
    assert [a["automatic"] for a in job["attempts"]] == [False, False]
    # A manager's kill of a running attempt: its wrapper may end 060 (the batch system's TERM came
    # first), a code retried otherwise; not here.
    assert api.post(f"/jobs/{commanded}/kill").json["command"] == "kill"
    assert end(api, commanded, t3, 60)["retry_at"] is None


def test_a_due_retry_is_a_new_attempt_through_the_same_backend_at_another_site_when_the_storage_failed(
        app, api, production):
    (moved, t1), (stays, t2) = handed(app, api, production, runs=2)
    end(api, moved, t1, 40)    # storage
    end(api, stays, t2, 43)    # server: the site is not to blame
    assert run_due(app, time.time())["retried"] == []   # not due yet
    reply = run_due(app, time.time() + 601)
    assert sorted(r["id"] for r in reply["retried"]) == [moved, stays] and reply["errors"] == []
    job = api.get(f"/jobs/{moved}").json
    assert (job["status"], job["attempt"], job["site"], job["backend"]) == ("submitted", 2, "INFN-TORINO", "local")
    assert job["retry_at"] is None and job["retries"] == 1
    assert [a["automatic"] for a in job["attempts"]] == [False, True]
    assert "automatic retry 2 of 3 after E040 at INFN-T1, moved to INFN-TORINO" in job["message"]
    assert [(e["attempt"], e["code"]) for e in job["history"]] == [(1, 40)]   # attempt 1's history stays
    assert api.get(f"/jobs/{stays}").json["site"] == "INFN-T1"
    # the monitor's "retried" filter, and the search text follows the site
    retried = api.get("/jobs", query_string={"retried": "true"}).json
    assert sorted(j["id"] for j in retried["jobs"]) == [moved, stays] and retried["total"] == 2
    assert api.get("/jobs", query_string={"retried": "false"}).json["total"] == 0
    bad = api.get("/jobs", query_string={"retried": "maybe"})
    assert bad.status_code == 400 and "retried" in bad.json["message"]
    assert [j["id"] for j in api.get("/jobs", query_string={"q": "infn-torino"}).json["jobs"]] == [moved]
    retried = [a for a in api.get("/activities", query_string={"limit": 20}).json["activities"]
               if a["type"] == "job-retried"]
    assert sorted(a["ref"]["job"] for a in retried) == [moved, stays] and all(a["user"] is None for a in retried)


def test_back_off_doubles_and_the_last_allowed_attempt_is_not_retried(app, api, production):
    [(job_id, token)] = handed(app, api, production)
    end(api, job_id, token, 22)   # input transfer failed: the storage's
    sites = ["INFN-T1"]
    for attempt in (2, 3):
        [started] = run_due(app, time.time() + 10 ** 5)["retried"]
        assert started["attempt"] == attempt
        token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]   # the submitted attempt's
        before = time.time()
        job = end(api, job_id, token, 22, attempt=attempt)
        sites.append(job["site"])
        if attempt == 2:
            assert before + 1200 - 1 <= stored(app, job_id).retry_at <= time.time() + 1200 + 1   # doubled
    assert (job["attempt"], job["retry_at"], job["retries"]) == (3, None, 2)   # 3 of 3: no more
    assert run_due(app, time.time() + 10 ** 6)["retried"] == []
    assert sites == ["INFN-T1", "INFN-TORINO", "INFN-T1"]   # each retry away from the site that failed
    assert [e["attempt"] for e in job["history"]] == [1, 2, 3]


def test_a_site_not_allowed_for_the_production_is_not_a_retry_target(app, api, production):
    r = api.patch("/sites/INFN-TORINO", json={"productions": {production["production"]: {"allowed": False}}})
    assert r.status_code == 200, r.json
    [(job_id, token)] = handed(app, api, production)
    end(api, job_id, token, 40)
    assert [r["site"] for r in run_due(app, time.time() + 601)["retried"]] == ["INFN-T1"]


def test_two_concurrent_claimers_retry_a_job_once(app, api, production):
    pairs = handed(app, api, production, runs=4)
    for job_id, token in pairs:
        end(api, job_id, token, 40)
    now = time.time() + 601
    for job_id, _ in pairs:
        barrier, results = threading.Barrier(2), []

        def claimer():
            with app.app_context(), db.connection():
                barrier.wait()
                results.append(retries.claim(job_id, 1, now))

        threads = [threading.Thread(target=claimer) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == 2 and sum(r is not None for r in results) == 1, results
        job = api.get(f"/jobs/{job_id}").json
        assert (job["status"], job["attempt"], job["retries"]) == ("prepared", 2, 1)
        assert [a["number"] for a in job["attempts"]] == [1, 2]
    # a claim of an attempt that is no longer current, or not yet due, takes nothing
    with app.app_context(), db.connection():
        assert retries.claim(pairs[0][0], 1, now) is None


def test_the_one_shot_commands_retry_other_backends_and_say_what_they_could_not(app, api, production):
    """`sbk poll` / `sbk reap` (retries.one_shot): the local backend's retries are left to the serving
    processes; without SBK_PUBLIC_URL nothing starts; a backend that cannot take the new attempt
    leaves it prepared, saying why."""
    (local_job, t1), (slurm_job, t2) = handed(app, api, production, runs=2)
    with app.app_context(), db.connection():
        m.Job.update(backend="slurm").where(m.Job.id == slurm_job).execute()
    end(api, local_job, t1, 40)
    end(api, slurm_job, t2, 40)
    with app.app_context(), db.connection():
        m.Job.update(retry_at=time.time() - 1).where(m.Job.id.in_([local_job, slurm_job])).execute()
    settings = settings_of(app)
    line = retries.one_shot(dataclasses.replace(settings, public_url=""))
    assert line == "retried 0 job(s); 1 due, left waiting: set SBK_PUBLIC_URL, the URL their descriptions name"
    line = retries.one_shot(dataclasses.replace(settings, backend_slurm_conf="/nonexistent/slurm.conf"))
    assert line.startswith(f"retried 1 job(s): {slurm_job}") and f"left prepared: {slurm_job}" in line, line
    job = api.get(f"/jobs/{slurm_job}").json
    assert (job["status"], job["attempt"], job["retries"]) == ("prepared", 2, 1)
    assert job["message"].startswith("automatic retry not submitted to slurm: "), job["message"]
    assert api.get(f"/jobs/{local_job}").json["attempt"] == 1   # its serving process's poller retries it


def test_a_wrapper_that_ended_before_its_hand_off_was_recorded_is_judged_at_the_hand_off(app, api, production):
    """A fast failure: the final event arrives while the job has no backend yet (no retry: nobody to run
    it); the backend's hand-off, recorded after, schedules it."""
    job_id = submit(api, production, runs=1).json["job_ids"][0]
    token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
    assert end(api, job_id, token, 40)["retry_at"] is None
    with app.app_context(), db.connection():
        batch._record({job_id: f"local:test:{job_id}"}, {job_id: 1}, "local")
    job = api.get(f"/jobs/{job_id}").json
    assert (job["status"], job["backend"]) == ("sys-failed", "local") and job["retry_at"], job


def test_a_retry_claimed_by_a_process_killed_before_it_submitted_is_submitted_once_its_lease_ends(
        app, api, production):
    """The claim commits the new prepared attempt before the backend call: a server killed in between
    left the job prepared for good, nobody to submit it. The claim is a lease: once it ends, a poller
    submits the attempt (once: the lease is claimed as the retry was), and no new attempt is made."""
    [(job_id, token)] = handed(app, api, production)
    end(api, job_id, token, 40)
    now = time.time() + 601
    with app.app_context(), db.connection():
        assert retries.claim(job_id, 1, now)["attempt"] == 2     # ... and the process dies here
    assert api.get(f"/jobs/{job_id}").json["status"] == "prepared"
    assert run_due(app, now + 1)["retried"] == []                  # the lease holds: not submitted twice
    assert api.get(f"/jobs/{job_id}").json["status"] == "prepared"
    reply = run_due(app, now + retries.SUBMIT_LEASE_S + 1)
    assert [(r["id"], r["attempt"]) for r in reply["retried"]] == [(job_id, 2)] and reply["errors"] == []
    job = api.get(f"/jobs/{job_id}").json
    assert (job["status"], job["attempt"], job["retries"], job["retry_at"]) == ("submitted", 2, 1, None)
    assert run_due(app, now + 2 * retries.SUBMIT_LEASE_S + 2)["retried"] == []


def test_a_killed_job_holding_a_submission_lease_is_never_submitted_nor_retried(app, api, production):
    """A manager kills the new attempt while its claim's lease holds (the claiming process died): the
    kill ends it (062), the lease goes with it, and no pass submits or retries it afterwards."""
    [(job_id, token)] = handed(app, api, production)
    end(api, job_id, token, 40)
    now = time.time() + 601
    with app.app_context(), db.connection():
        retries.claim(job_id, 1, now)
    assert api.post(f"/jobs/{job_id}/kill").status_code == 200
    job = api.get(f"/jobs/{job_id}").json
    assert (job["status"], job["error_code"], job["retry_at"]) == (CODES[62].status, 62, None)
    assert run_due(app, now + 10 * retries.SUBMIT_LEASE_S)["retried"] == []
    assert api.get(f"/jobs/{job_id}").json["attempt"] == 2


def test_a_lapsed_lease_is_taken_over_by_one_pass_only(app, api, production):
    """Two pollers find the same lapsed lease: the conditional UPDATE gives it to one."""
    [(job_id, token)] = handed(app, api, production)
    end(api, job_id, token, 40)
    now = time.time() + 601
    later = now + retries.SUBMIT_LEASE_S + 1
    with app.app_context(), db.connection():
        retries.claim(job_id, 1, now)
        assert [j for j, _, _ in retries.lapsed_leases(later)] == [job_id]
        assert retries.claim_lease(job_id, 2, later)["id"] == job_id
        assert retries.claim_lease(job_id, 2, later) is None          # the second pass: the lease is held again
        assert retries.lapsed_leases(later) == []
