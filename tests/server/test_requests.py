"""Requests: duplicates, the status machine, imports, test twins; productions; submissions' rules."""
import threading

from .conftest import Api, make_production, submit


def new_request(api, production, **changes):
    body = {"production": production["production"], "from": production["request"]["id"]}
    body.update(changes)
    return api.post("/requests", json=body)


def test_duplicate_parameters_are_refused_with_409(api, production):
    r = new_request(api, production)
    assert r.status_code == 409 and r.json["error"] == "duplicate-request"


def test_concurrent_creation_of_the_same_request_is_one_201_and_409s(app, api, production):
    """Managers racing to create the same request: one wins, the others get 409, never a 500."""
    params = dict(production["request"]["parameters"], Geometry="DG_race")
    barrier, codes = threading.Barrier(8), []

    def create():
        client = Api(app.test_client(), api.token)   # a client (and connection) per thread
        barrier.wait()
        codes.append(new_request(client, production, parameters=params).status_code)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(codes) == [201] + [409] * 7


def test_from_imports_settings_then_changes_them(api, production):
    params = dict(production["request"]["parameters"], Generator="B0B0bar_generic")
    r = new_request(api, production, parameters=params, events_per_job=500)
    assert r.status_code == 201
    assert r.json["events_per_job"] == 500 and r.json["min_runnum"] == 10000003
    assert r.json["output_sites"] == ["INFN-T1"] and r.json["status"] == "open"
    twin = api.get(f"/requests/{r.json['test_request']}").json
    assert twin["production"] == "2010_July_test" and twin["parameters"] == params
    assert "/2010_July_test/" in twin["output_lfn"]


def test_request_status_moves_only_forward_one_step(api, production):
    params = dict(production["request"]["parameters"], Generator="other")
    rid = new_request(api, production, parameters=params).json["id"]
    assert api.patch(f"/requests/{rid}", json={"status": "running"}).status_code == 409
    assert api.patch(f"/requests/{rid}", json={"status": "valid"}).status_code == 200
    assert api.patch(f"/requests/{rid}", json={"status": "open"}).status_code == 409
    assert api.patch(f"/requests/{rid}", json={"events_per_job": 3}).status_code == 409
    assert api.patch(f"/requests/{rid}", json={"note": "ok"}).json["note"] == "ok"
    assert api.patch(f"/requests/{rid}", json={"status": "bogus"}).status_code == 400


def test_parameters_must_match_the_session_definitions(api, production):
    base = production["request"]["parameters"]
    assert new_request(api, production, parameters=dict(base, Analysis="Nope")).status_code == 400
    assert new_request(api, production, parameters=dict(base, Colour="red")).status_code == 400
    missing = {k: v for k, v in base.items() if k != "Geometry"}
    assert new_request(api, production, parameters=missing).status_code == 400


def test_production_creates_its_test_twin_and_can_close(api, production):
    prods = {p["name"]: p for p in api.get("/productions").json["productions"]}
    assert prods["2010_July"]["twin"] == "2010_July_test" and prods["2010_July_test"]["test"] is True
    assert api.post("/productions", json={"name": "2010_July", "session": "FastSim",
                                          "version": "V0.2.5"}).status_code == 409
    assert api.patch("/productions/2010_July", json={"status": "closed"}).json["status"] == "closed"
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [
        {"request": production["request"]["id"], "sites": ["INFN-T1"], "runs": 1, "events": 1}]})
    assert r.status_code == 409 and r.json["error"] == "production-closed"


def test_test_bulk_goes_to_the_twin(api, production):
    plan = submit(api, production, runs=1, test=True)
    assert plan["sets"][0]["production"] == "2010_July_test"
    job = api.get(f"/jobs/{plan['job_ids'][0]}").json
    assert job["test"] is True and job["production"] == "2010_July_test"
    desc = api.get(f"/jobs/{job['id']}/description").json
    assert "/2010_July_test/" in desc["output"]["lfn_dir"] and desc["job"]["test"] is True


def test_open_requests_take_only_test_jobs(api, production):
    params = dict(production["request"]["parameters"], Generator="fresh")
    rid = new_request(api, production, parameters=params).json["id"]
    body = {"production": "2010_July", "bulks": [{"request": rid, "sites": ["INFN-T1"], "runs": 1, "events": 1}]}
    assert api.post("/submissions", json=body).status_code == 409
    body["bulks"][0]["test"] = True
    assert api.post("/submissions", json=body).status_code == 201


def test_site_thresholds_and_switches_are_respected(api, production):
    api.patch("/sites/INFN-T1", json={"threshold_prepared": 3})
    submit(api, production, runs=2)
    body = {"production": "2010_July", "bulks": [
        {"request": production["request"]["id"], "sites": ["INFN-T1"], "runs": 2, "events": 1}]}
    r = api.post("/submissions", json=body)
    assert r.status_code == 409 and r.json["error"] == "site-threshold"
    assert api.post("/submissions", json=dict(body, dry_run=True)).json["refusals"]
    assert api.post("/submissions", json=dict(body, override_thresholds=True)).status_code == 201
    api.patch("/sites/INFN-TORINO", json={"productions": {"2010_July": {"allowed": False}}})
    body["bulks"][0]["sites"] = ["INFN-TORINO"]
    assert api.post("/submissions", json=body).json["error"] == "site-not-allowed"
    api.patch("/sites/INFN-TORINO", json={"productions": {"2010_July": {"allowed": True}},
                                          "sessions": {"FastSim": {"enabled": False}}})
    assert api.post("/submissions", json=body).json["error"] == "site-disabled"
    site = api.get("/sites/INFN-TORINO").json
    assert site["sessions"] == [{"session": "FastSim", "enabled": False, "supported": True, "last_activity": None}]


def test_a_second_production_keeps_runnums_unique(api, production):
    other = make_production(api, name="2011_September")
    submit(api, production, runs=2)
    plan = submit(api, other, runs=2)
    assert plan["sets"][0]["rows"][0]["first_runnum"] == 10000005


def test_stats_are_fresh_after_every_submission(api, production):
    submit(api, production, runs=1)
    assert api.get("/stats").json["sessions"][0]["jobs"] == 1
    submit(api, production, runs=2)
    assert api.get("/stats").json["sessions"][0]["jobs"] == 3     # the counters move with the jobs


def test_stats_and_activities(api, production):
    ids = submit(api, production, runs=2)["job_ids"]
    stats = api.get("/stats").json
    # prepared jobs generated no events yet (only done ones did: test_site_rules)
    assert stats["sessions"] == [{"session": "FastSim", "user": "dev", "jobs": 2, "events": 0, "wct": 0.0}]
    assert stats["sites"] == [{"site": "INFN-T1", "jobs": {"prepared": 2}}]
    kinds = [a["type"] for a in api.get("/activities", query_string={"user": "dev", "limit": 5}).json["activities"]]
    assert kinds == ["job-submission", "request-created", "production-created"]
    assert len(ids) == 2
