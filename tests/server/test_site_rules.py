"""Issue 13's server rules: the running threshold, `supported`, a site's last activity, "events
generated", a bulk's events per job against its request's, and runnums above each request's minimum."""
import datetime
import re
import threading

from server import counts, db, jobs, migrations, submissions
from server import models as m

from .conftest import event, make_production, submit
from .test_requests import new_request
from .test_submissions_params import NEW_PARAMS

LONG_AGO = datetime.datetime(2020, 1, 1)


def body(production, sites=("INFN-T1",), runs=1, events=100, test=False, **extra):
    return dict({"production": production["production"], "bulks": [
        {"request": production["request"]["id"], "test": test, "sites": list(sites), "runs": runs,
         "events": events}]}, **extra)


def sign_in(client, token):
    """The web's sign-in form, as a person fills it."""
    page = client.get("/signin").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return client.post("/signin", data={"csrf": csrf, "token": token, "next": "/"})


def start(api, job_id):
    """The job's attempt handed out and running; return the wrapper's Api."""
    token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
    wrapper = api.as_(token)
    assert wrapper.post(f"/jobs/{job_id}/events", json=event(1)).json["status"] == "running"
    return wrapper


def finish(api, job_id, status="done", code=0):
    wrapper = start(api, job_id)
    r = wrapper.post(f"/jobs/{job_id}/events", json=event(2, status, code=code))
    assert r.status_code == 200 and r.json["status"] == status, r.json


# ---------------------------------------------------------------------- the running threshold

def test_the_running_threshold_counts_submitted_and_running_jobs_and_the_new_ones(api, production):
    ids = submit(api, production, runs=4)["job_ids"]
    api.patch("/sites/INFN-T1", json={"threshold_running": 3})
    start(api, ids[0])
    with db.connection():
        jobs.mark_submitted(ids[1], gjid="local:1", backend="local")
    finish(api, ids[2])           # ended: no longer on the site
    # 1 running + 1 submitted + 1 new = 3: at the threshold, not over it (the prepared job does not count)
    assert api.post("/submissions", json=body(production)).status_code == 201
    r = api.post("/submissions", json=body(production, runs=2))
    assert r.status_code == 409 and r.json["error"] == "site-threshold", r.json
    assert "site INFN-T1: 2 submitted or running + 2 new jobs exceed its running threshold 3" in r.json["message"]
    plan = api.post("/submissions", json=body(production, runs=2, dry_run=True)).json
    assert plan["refusals"] == ["site INFN-T1: 2 submitted or running + 2 new jobs exceed its running threshold 3"]
    assert api.post("/submissions", json=body(production, runs=2, override_thresholds=True)).status_code == 201


def test_the_running_threshold_adds_up_the_bulks_of_one_submission(api, production):
    api.patch("/sites/INFN-TORINO", json={"threshold_running": 5})
    two = {"request": production["request"]["id"], "sites": ["INFN-TORINO"], "runs": 3, "events": 1}
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [two, two]})
    assert r.status_code == 409 and "0 submitted or running + 6 new jobs exceed its running threshold 5" \
        in r.json["message"]
    assert api.get("/jobs").json["total"] == 0


# ---------------------------------------------------------------------- supported

def test_an_unsupported_site_takes_test_bulks_only(api, production):
    api.patch("/sites/INFN-TORINO", json={"sessions": {"FastSim": {"supported": False}}})
    for dry_run in (False, True):
        r = api.post("/submissions", json=body(production, sites=("INFN-T1", "INFN-TORINO"), dry_run=dry_run))
        assert r.status_code == 409 and r.json["error"] == "site-unsupported", r.json
        assert "site INFN-TORINO does not support session FastSim" in r.json["message"]
        assert "test" in r.json["message"]
    assert api.get("/jobs").json["total"] == 0
    # checking the site is what test jobs are for: by request and by parameters
    assert api.post("/submissions", json=body(production, sites=("INFN-TORINO",), test=True)).status_code == 201
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [
        {"test": True, "parameters": NEW_PARAMS, "sites": ["INFN-TORINO"], "runs": 1, "events": 1}]})
    assert r.status_code == 201, r.json
    # supported again: main bulks go
    api.patch("/sites/INFN-TORINO", json={"sessions": {"FastSim": {"supported": True}}})
    assert api.post("/submissions", json=body(production, sites=("INFN-TORINO",))).status_code == 201


def test_a_disabled_site_takes_no_bulk_at_all(api, production):
    api.patch("/sites/INFN-TORINO", json={"sessions": {"FastSim": {"enabled": False, "supported": True}}})
    r = api.post("/submissions", json=body(production, sites=("INFN-TORINO",), test=True))
    assert r.status_code == 409 and r.json["error"] == "site-disabled"


def test_support_is_per_session(api, production):
    api.post("/sessions", json={"name": "FullSim", "payload_module": "fullsim"})
    api.patch("/sites/INFN-TORINO", json={"sessions": {"FullSim": {"supported": False}}})
    assert api.post("/submissions", json=body(production, sites=("INFN-TORINO",))).status_code == 201


# ---------------------------------------------------------------------- last activity

def site_times(api, name):
    site = api.get(f"/sites/{name}").json
    return site["last_activity"], {x["session"]: x.get("last_activity") for x in site["sessions"]}


def backdate(site="INFN-T1"):
    with db.connection():
        site_id = m.Site.get(m.Site.name == site).id
        m.Site.update(last_activity=LONG_AGO).where(m.Site.id == site_id).execute()
        m.SiteSession.update(last_activity=LONG_AGO).where(m.SiteSession.site == site_id).execute()


def recent(iso):
    when = datetime.datetime.fromisoformat(iso.rstrip("Z"))
    return abs((m.utcnow() - when).total_seconds()) < 60


def test_a_submission_is_activity_of_the_site_and_its_session(api, production):
    assert site_times(api, "INFN-T1") == (None, {})
    submit(api, production, runs=1)
    site = api.get("/sites/INFN-T1").json
    assert site["last_activity"] == site["last_submission"] and recent(site["last_activity"])
    assert site["sessions"] == [{"session": "FastSim", "enabled": True, "supported": True,
                                 "last_activity": site["last_activity"]}]
    assert site_times(api, "INFN-TORINO") == (None, {})
    # a dry run is no activity
    backdate()
    submit(api, production, runs=1, dry_run=True)
    assert site_times(api, "INFN-T1") == (m.iso(LONG_AGO), {"FastSim": m.iso(LONG_AGO)})


def test_a_final_report_is_activity_running_reports_and_server_ends_are_not(api, production):
    done, failed, killed = submit(api, production, runs=3)["job_ids"]
    backdate()
    wrapper = start(api, done)                       # the hot path: no write to the site
    assert site_times(api, "INFN-T1") == (m.iso(LONG_AGO), {"FastSim": m.iso(LONG_AGO)})
    assert api.post(f"/jobs/{killed}/kill").json["status"] == "sys-failed"   # the server's own end (062)
    assert site_times(api, "INFN-T1") == (m.iso(LONG_AGO), {"FastSim": m.iso(LONG_AGO)})
    assert wrapper.post(f"/jobs/{done}/events", json=event(2, "done", code=0)).json["status"] == "done"
    last, per_session = site_times(api, "INFN-T1")
    assert recent(last) and per_session == {"FastSim": last}
    backdate()
    finish(api, failed, "failed", code=30)           # a failure is news from the site too
    last, per_session = site_times(api, "INFN-T1")
    assert recent(last) and per_session == {"FastSim": last}


def test_final_reports_within_the_grain_write_the_site_once(api, production):
    ids = submit(api, production, runs=2)["job_ids"]
    with db.connection():
        just_now = m.utcnow() - datetime.timedelta(seconds=1)
        m.Site.update(last_activity=just_now).execute()
        m.SiteSession.update(last_activity=just_now).execute()
    finish(api, ids[0])
    assert site_times(api, "INFN-T1") == (m.iso(just_now), {"FastSim": m.iso(just_now)})


def test_a_job_of_a_session_without_its_site_row_still_moves_the_site(api, production):
    """Jobs prepared before the site's session row existed (an upgraded database)."""
    (job_id,) = submit(api, production, runs=1)["job_ids"]
    backdate()
    with db.connection():
        m.SiteSession.delete().execute()
    finish(api, job_id)
    last, per_session = site_times(api, "INFN-T1")
    assert recent(last) and per_session == {}


def test_the_sites_list_shows_each_sites_last_activity(api, production):
    submit(api, production, runs=1)
    listed = {x["name"]: x for x in api.get("/sites").json["sites"]}
    assert recent(listed["INFN-T1"]["last_activity"]) and listed["INFN-TORINO"]["last_activity"] is None


def test_migration_8_adds_the_session_column_and_starts_both_from_what_was_recorded(api, production):
    """A database of before migration 8: no SiteSession.last_activity, no Site.last_activity written."""
    submit(api, production, runs=2)
    api.patch("/sites/INFN-TORINO", json={"sessions": {"FastSim": {"enabled": False}}})
    table = m.SiteSession._meta.table_name
    with db.connection():
        newest = max(job.prepared_at for job in m.Job.select())
        m.SiteSession.delete().where(m.SiteSession.site == m.Site.get(m.Site.name == "INFN-T1").id).execute()
        m.Site.update(last_activity=None).execute()
        m.database.execute_sql(f"ALTER TABLE {table} DROP COLUMN last_activity")
        m.SchemaVersion.delete().where(m.SchemaVersion.version == 8).execute()
    assert migrations.upgrade() == [8]
    t1, torino = api.get("/sites/INFN-T1").json, api.get("/sites/INFN-TORINO").json
    assert t1["last_activity"] == t1["last_submission"] is not None
    assert t1["sessions"] == [{"session": "FastSim", "enabled": True, "supported": True,
                               "last_activity": m.iso(newest)}]
    assert torino["last_activity"] is None
    assert torino["sessions"] == [{"session": "FastSim", "enabled": False, "supported": True, "last_activity": None}]
    assert migrations.upgrade() == []


# ---------------------------------------------------------------------- events generated

def test_events_generated_are_the_done_jobs_events(api, production, client):
    ids = submit(api, production, runs=4)["job_ids"]    # 100 events each
    finish(api, ids[0])
    finish(api, ids[1], "failed", code=30)
    start(api, ids[2])
    stats = api.get("/stats").json["sessions"]
    assert stats == [{"session": "FastSim", "user": "dev", "jobs": 4, "events": 100, "wct": stats[0]["wct"]}]
    with db.connection():
        assert counts.session_stats("dev")[0]["events"] == 100
    assert sign_in(client, api.token).status_code == 302
    home = client.get("/").get_data(as_text=True).split('id="session-stats"')[1].split("</table>")[0]
    assert '<td>FastSim</td><td class="num">4</td><td class="num">100</td>' in home


def test_no_done_job_is_zero_events(api, production):
    submit(api, production, runs=2)
    assert api.get("/stats").json["sessions"][0]["events"] == 0


# ---------------------------------------------------------------------- events per job

def test_a_bulk_may_not_exceed_its_requests_events_per_job(api, production):
    ok = {"request": production["request"]["id"], "sites": ["INFN-T1"], "runs": 1, "events": 80000}
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [ok, dict(ok, events=999999)]})
    assert r.status_code == 400 and r.json["error"] == "bad-request", r.json
    assert "'bulks[1].events'" in r.json["message"] and "999999" in r.json["message"]
    assert f"request {production['request']['id']}" in r.json["message"] and "80000" in r.json["message"]
    assert api.post("/submissions", json={"production": "2010_July", "bulks": [ok], "dry_run": True}).status_code \
        == 200
    assert api.post("/submissions", json={"production": "2010_July", "bulks": [dict(ok, events=7)]}).status_code \
        == 201   # fewer: the last jobs of a request often complete its required events
    assert api.get("/jobs").json["total"] == 1


def test_a_test_bulk_may_have_any_events_per_job(api, production):
    r = api.post("/submissions", json=body(production, events=999999, test=True))
    assert r.status_code == 201, r.json
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [
        {"test": True, "parameters": NEW_PARAMS, "sites": ["INFN-T1"], "runs": 1, "events": 999999}]})
    assert r.status_code == 201, r.json


def test_a_request_without_events_per_job_sets_no_limit(api, production):
    params = dict(production["request"]["parameters"], Generator="B0B0bar_generic")
    rid = new_request(api, production, parameters=params, events_per_job=0).json["id"]
    assert api.patch(f"/requests/{rid}", json={"status": "valid"}).status_code == 200
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [
        {"request": rid, "sites": ["INFN-T1"], "runs": 1, "events": 999999}]})
    assert r.status_code == 201, r.json


# ---------------------------------------------------------------------- runnums

def second_request(api, production, min_runnum, generator):
    params = dict(production["request"]["parameters"], Generator=generator)
    r = new_request(api, production, parameters=params, min_runnum=min_runnum)
    assert r.status_code == 201, r.json
    assert api.patch(f"/requests/{r.json['id']}", json={"status": "valid"}).status_code == 200
    return {"production": production["production"], "request": r.json}


def runnums(plan):
    return [(r["first_runnum"], r["last_runnum"]) for st in plan["sets"] for r in st["rows"]]


def test_each_request_allocates_above_its_own_minimum(api, production):
    high = second_request(api, production, 20000000, "B0B0bar_high")
    assert runnums(submit(api, high, runs=3)) == [(20000000, 20000002)]
    # the first request's minimum holds though higher runnums are used: it is not a floor shared by all
    assert runnums(submit(api, production, runs=3)) == [(10000003, 10000005)]
    assert runnums(submit(api, high, runs=2)) == [(20000003, 20000004)]
    assert runnums(submit(api, production, runs=2, sites=("INFN-T1", "INFN-TORINO"))) == \
        [(10000006, 10000007), (10000008, 10000009)]


def test_a_block_that_would_overlap_used_runnums_moves_past_them(api, production):
    high = second_request(api, production, 20000000, "B0B0bar_high")
    submit(api, high, runs=5)                                          # 20000000-04
    inside = second_request(api, production, 20000002, "B0B0bar_inside")
    assert runnums(submit(api, inside, runs=2)) == [(20000005, 20000006)]
    assert runnums(submit(api, high, runs=1)) == [(20000007, 20000007)]   # continues after its own, past inside's
    # a request continues after its own highest runnum, never below it
    assert runnums(submit(api, inside, runs=1)) == [(20000008, 20000008)]


def test_one_submission_plans_blocks_that_do_not_overlap(api, production):
    same_min = second_request(api, production, 10000003, "B0B0bar_same")
    bulk = {"sites": ["INFN-T1", "INFN-TORINO"], "runs": 2, "events": 1}
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [
        dict(bulk, request=production["request"]["id"]), dict(bulk, request=same_min["request"]["id"]),
        dict(bulk, request=production["request"]["id"])]})
    assert r.status_code == 201, r.json
    assert runnums(r.json) == [(10000003, 10000004), (10000005, 10000006), (10000007, 10000008),
                               (10000009, 10000010), (10000011, 10000012), (10000013, 10000014)]


def test_runnums_are_unique_across_productions_and_sessions(api, production):
    other = make_production(api, name="2011_September")              # its request's minimum is 10000003 too
    submit(api, production, runs=2)
    assert runnums(submit(api, other, runs=2)) == [(10000005, 10000006)]
    assert runnums(submit(api, production, runs=1)) == [(10000007, 10000007)]


def test_a_crowded_band_falls_back_above_every_used_runnum(api, production, monkeypatch):
    monkeypatch.setattr(submissions, "MAX_HOPS", 1)
    submit(api, production, runs=2)                                     # 10000003-04
    other = second_request(api, production, 10000003, "B0B0bar_other")
    submit(api, other, runs=2)                                          # 10000005-06 (one hop)
    third = second_request(api, production, 10000003, "B0B0bar_third")
    assert runnums(submit(api, third, runs=2)) == [(10000007, 10000008)]


def test_concurrent_submissions_to_two_requests_keep_each_in_its_band(app, api, production):
    high = second_request(api, production, 20000000, "B0B0bar_high")
    replies, barrier = [], threading.Barrier(8)

    def post(target):
        client = app.test_client()
        barrier.wait(timeout=30)
        r = client.post("/api/v1/submissions", json=body(target, sites=("INFN-T1", "INFN-TORINO"), runs=3),
                        headers={"Authorization": f"Bearer {api.token}"})
        replies.append(r.status_code)

    threads = [threading.Thread(target=post, args=(production if n % 2 else high,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert replies == [201] * 8
    with db.connection():
        def used(req):
            return sorted(r for (r,) in m.Job.select(m.Job.runnum).where(m.Job.request == req["id"]).tuples())
        assert used(production["request"]) == list(range(10000003, 10000003 + 24))
        assert used(high["request"]) == list(range(20000000, 20000000 + 24))

