"""Test bulks given by job parameters: the seed's "request will be created before submit"."""
import os
import signal
import subprocess
import sys
import threading

import pytest

from server import cli, db
from server import models as m
from server.client.library import BadInput
from server.client.submissions import parse_bulk
from tests.infra.postgres import free_port

from .conftest import new_token
from .test_concurrency import wait_for_health
from .test_migrations import ROOT as REPO

LFN_ROOT = "lfn:/grid/superbvo.org/production/FastSim"
# Matches no request of the `production` fixture (its request has Generator B0B0bar_SL).
NEW_PARAMS = {"Analysis": "HadRecoilCocktail", "Generator": "B0B0bar_Btag-HD_Cocktail", "Geometry": "DG_4",
              "Background": "PacProduction.tcl"}


def seed_body(production, dry_run=False, params=NEW_PARAMS):
    """The seed's two bulks: 10 normal jobs per site on the request, one test job given by parameters."""
    return {"production": "2010_July", "dry_run": dry_run, "bulks": [
        {"request": production["request"]["id"], "sites": ["INFN-T1", "INFN-TORINO"], "runs": 10,
         "events": 80000},
        {"test": True, "parameters": params, "sites": ["INFN-TORINO"], "runs": 1, "events": 1,
         "log_to_db": True}]}


def twin_requests(params):
    """The requests of 2010_July_test with these parameters."""
    with db.connection():
        return [r for r in m.Request.select().join(m.Production).where(m.Production.name == "2010_July_test")
                if r.parameters == params]


def created_activities(api):
    return [a for a in api.get("/activities", query_string={"limit": 100}).json["activities"]
            if a["type"] == "request-created" and "2010_July_test" in a["info"]]


def test_seed_example_creates_the_test_request_then_reuses_it(api, production):
    r = api.post("/submissions", json=seed_body(production))
    assert r.status_code == 201, r.json
    plan = r.json
    normal, test = plan["sets"]
    assert normal["request_state"] == "exists" and normal["request"] == production["request"]["id"]
    assert test["request_state"] == "created" and test["production"] == "2010_July_test"
    assert test["parameters"] == NEW_PARAMS and test["log_to_db"] is True
    assert test["output_lfn"] == f"{LFN_ROOT}/2010_July_test/output/HadRecoilCocktail/DG_4/B0B0bar_Btag-HD_Cocktail"
    assert plan["total_jobs"] == 21 and plan["total_events"] == 1600001 and len(plan["job_ids"]) == 21

    made = api.get(f"/requests/{test['request']}").json
    assert made["production"] == "2010_July_test" and made["parameters"] == NEW_PARAMS
    assert made["input_mode"] == "NONE" and made["input_paths"] == [] and made["events_per_job"] == 1
    assert made["output_sites"] == ["INFN-T1"] and made["min_runnum"] == 10000003   # the template's
    assert made["jobs"] == {"prepared": 1}
    job = api.get(f"/jobs/{plan['job_ids'][-1]}").json
    assert job["test"] is True and job["production"] == "2010_July_test" and job["request"] == made["id"]
    desc = api.get(f"/jobs/{job['id']}/description").json
    assert desc["output"]["lfn_dir"] == made["output_lfn"]
    acts = created_activities(api)
    assert len(acts) == 1 and f"Request {made['id']} created on 2010_July_test" in acts[0]["info"]

    again = api.post("/submissions", json=seed_body(production))
    assert again.status_code == 201, again.json
    assert again.json["sets"][1]["request_state"] == "exists" and again.json["sets"][1]["request"] == made["id"]
    assert len(twin_requests(NEW_PARAMS)) == 1 and len(created_activities(api)) == 1
    assert api.get(f"/requests/{made['id']}").json["jobs"] == {"prepared": 2}


def test_dry_run_says_what_would_be_created_and_writes_nothing(api, production):
    jobs_before = api.get("/jobs").json["total"]
    r = api.post("/submissions", json=seed_body(production, dry_run=True))
    assert r.status_code == 200, r.json
    normal, test = r.json["sets"]
    assert normal["request_state"] == "exists"
    assert test["request_state"] == "would be created" and test["request"] is None
    assert test["output_lfn"].startswith(f"{LFN_ROOT}/2010_July_test/output/")
    assert test["rows"][0]["first_runnum"] > normal["rows"][-1]["last_runnum"]
    assert r.json["job_ids"] == [] and api.get("/jobs").json["total"] == jobs_before
    assert twin_requests(NEW_PARAMS) == [] and created_activities(api) == []
    # The commit follows the same plan.
    done = api.post("/submissions", json=seed_body(production)).json
    assert [s["rows"] for s in done["sets"]] == [s["rows"] for s in r.json["sets"]]


def test_existing_test_twin_is_found_by_its_parameters(api, production):
    params = production["request"]["parameters"]
    r = api.post("/submissions", json=seed_body(production, params=params))
    assert r.status_code == 201, r.json
    test = r.json["sets"][1]
    assert test["request_state"] == "exists" and test["request"] == production["request"]["test_request"]
    assert created_activities(api) == []


def test_two_bulks_with_the_same_new_parameters_make_one_request(api, production):
    bulk = {"test": True, "parameters": NEW_PARAMS, "sites": ["INFN-T1"], "runs": 2, "events": 5,
            "output_sites": ["INFN-TORINO"], "input_mode": "DIR", "input_paths": [f"{LFN_ROOT}/Input"]}
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [bulk, bulk]})
    assert r.status_code == 201, r.json
    first, second = r.json["sets"]
    assert first["request"] == second["request"] and first["request_state"] == second["request_state"] == "created"
    assert second["rows"][0]["first_runnum"] == first["rows"][0]["last_runnum"] + 1
    made = api.get(f"/requests/{first['request']}").json
    assert made["output_sites"] == ["INFN-TORINO"] and made["input_mode"] == "DIR"
    assert made["input_paths"] == [f"{LFN_ROOT}/Input"]
    assert len(twin_requests(NEW_PARAMS)) == 1 and len(created_activities(api)) == 1


def test_bad_parameters_are_400_naming_the_field(api, production):
    def refused(params, **bulk):
        body = {"production": "2010_July", "bulks": [
            {"request": production["request"]["id"], "sites": ["INFN-T1"], "runs": 1, "events": 1},
            dict({"test": True, "parameters": params, "sites": ["INFN-T1"], "runs": 1, "events": 1}, **bulk)]}
        r = api.post("/submissions", json=body)
        assert r.status_code == 400, r.json
        return r.json["message"]

    assert "bulks[1].parameters.Analysis" in refused(dict(NEW_PARAMS, Analysis="Nope"))
    assert "bulks[1].parameters.Colour" in refused(dict(NEW_PARAMS, Colour="red"))
    assert "bulks[1].parameters.Geometry" in refused({k: v for k, v in NEW_PARAMS.items() if k != "Geometry"})
    assert "bulks[1].parameters.Generator" in refused(dict(NEW_PARAMS, Generator=""))
    assert "bulks[1].parameters.Generator" in refused(dict(NEW_PARAMS, Generator=7))
    assert "bulks[1].parameters" in refused(dict(NEW_PARAMS, Generator="has space"))   # not an LFN segment
    assert "bulks[1].request" in refused(NEW_PARAMS, request=production["request"]["id"])
    assert "bulks[1].input_mode" in refused(NEW_PARAMS, input_mode="TAPE")
    assert "input mode DIR" in refused(NEW_PARAMS, input_mode="DIR")
    assert twin_requests(dict(NEW_PARAMS, Generator="has space")) == []
    assert api.get("/jobs").json["total"] == 0


def test_parameters_on_a_non_test_bulk_are_400(api, production):
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [
        {"parameters": NEW_PARAMS, "sites": ["INFN-T1"], "runs": 1, "events": 1}]})
    assert r.status_code == 400 and "bulks[0].parameters" in r.json["message"]
    assert "manager" in r.json["message"]
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [
        {"request": production["request"]["id"], "output_sites": ["INFN-T1"], "sites": ["INFN-T1"], "runs": 1,
         "events": 1}]})
    assert r.status_code == 400 and "bulks[0].output_sites" in r.json["message"]
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [
        {"test": True, "sites": ["INFN-T1"], "runs": 1, "events": 1}]})
    assert r.status_code == 400 and "bulks[0].request" in r.json["message"]
    assert twin_requests(NEW_PARAMS) == []


def test_a_production_without_any_request_cannot_derive_a_test_request(api, production):
    r = api.post("/productions", json={"name": "2011_Empty", "session": "FastSim", "version": "V0.2.5"})
    assert r.status_code == 201, r.json
    r = api.post("/submissions", json={"production": "2011_Empty", "bulks": [
        {"test": True, "parameters": NEW_PARAMS, "sites": ["INFN-T1"], "runs": 1, "events": 1}]})
    assert r.status_code == 409 and r.json["error"] == "no-template-request"


def test_concurrent_submissions_and_a_manager_make_one_test_request(app, api, production):
    """Eight submissions and a POST /requests with the same new parameters at once: one test request, no 5xx."""
    token = new_token("shifter", ["Developer"])
    body = {"production": "2010_July", "bulks": [
        {"test": True, "parameters": NEW_PARAMS, "sites": ["INFN-T1"], "runs": 3, "events": 1}]}
    manager_body = {"production": "2010_July", "from": production["request"]["id"], "parameters": NEW_PARAMS}
    replies, start = [], threading.Barrier(9)

    def post(path, json):
        client = app.test_client()
        start.wait(timeout=30)
        r = client.post(f"/api/v1{path}", json=json, headers={"Authorization": f"Bearer {token}"})
        replies.append((path, r.status_code, r.get_json()))

    threads = [threading.Thread(target=post, args=("/submissions", body)) for _ in range(8)]
    threads.append(threading.Thread(target=post, args=("/requests", manager_body)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(replies) == 9 and all(code == 201 for _, code, _ in replies), replies
    made = twin_requests(NEW_PARAMS)
    assert len(made) == 1
    assert {r["sets"][0]["request"] for p, _, r in replies if p == "/submissions"} == {made[0].id}
    main = next(r for p, _, r in replies if p == "/requests")
    assert main["test_request"] == made[0].id
    states = [r["sets"][0]["request_state"] for p, _, r in replies if p == "/submissions"]
    assert states.count("created") <= 1
    with db.connection():
        assert m.Job.select().where(m.Job.request == made[0].id).count() == 24
        assert len({j.runnum for j in m.Job.select()}) == m.Job.select().count()


def test_client_parse_bulk_reads_params():
    spec = "test,params=Analysis:X+Generator:Y,sites=A+B,runs=1,events=2,input=DIR:lfn:/in,output-sites=C"
    assert parse_bulk(spec) == {
        "test": True, "log_to_db": False, "parameters": {"Analysis": "X", "Generator": "Y"}, "sites": ["A", "B"],
        "runs": 1, "events": 2, "input_mode": "DIR", "input_paths": ["lfn:/in"], "output_sites": ["C"]}
    for bad, words in (("params=Analysis,sites=A,runs=1,events=1", "NAME:VALUE"),
                       ("sites=A,runs=1,events=1", "no request \\(or params")):
        with pytest.raises(BadInput, match=words):
            parse_bulk(bad)


def test_sbk_submit_by_parameters_against_sbk_serve(api, production, db_url, tmp_path, monkeypatch, capsys):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "serve.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--db", db_url, "--port", str(port),
                                 "--workers", "1"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "SBK_REAP_INTERVAL_S": "3600", "SBK_BATCH_POLL_INTERVAL_S": "0"})
    try:
        wait_for_health(base, proc)
        monkeypatch.setenv("SBK_URL", base)
        monkeypatch.setenv("SBK_TOKEN", api.token)
        params = "+".join(f"{k}:{v}" for k, v in NEW_PARAMS.items())
        capsys.readouterr()
        code = cli.main(["submit", "--production", "2010_July", "--dry-run", "--request",
                         str(production["request"]["id"]), "--sites", "INFN-T1,INFN-TORINO", "--runs", "10",
                         "--events", "80000", "--bulk", f"test,params={params},sites=INFN-TORINO,runs=1,events=1,log"])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "✓ Production Request exists!" in out and "Production Request would be created" in out
        assert "(set 2, a new request on 2010_July_test)" in out
        assert "2010_July_test/output/HadRecoilCocktail/DG_4/B0B0bar_Btag-HD_Cocktail" in out
        assert twin_requests(NEW_PARAMS) == []
        code = cli.main(["submit", "--production", "2010_July", "--test", "--sites", "INFN-T1", "--runs", "1",
                         "--events", "1", *[f"--param={k}={v}" for k, v in NEW_PARAMS.items()]])
        out, err = capsys.readouterr()
        assert code == 0 and "Production Request created" in out, err
        assert len(twin_requests(NEW_PARAMS)) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_test_request_by_parameters_takes_known_output_sites_and_a_main_requests_directories(api, production):
    """The rules a manager's request obeys hold for one a test submission makes: known output sites;
    directories derived from a main request, the production-name segment renamed even when it is last."""
    bad = seed_body(production)
    bad["bulks"][1]["output_sites"] = ["NOWHERE-T9"]
    r = api.post("/submissions", json=bad)
    assert r.status_code == 400 and "NOWHERE-T9" in r.json["message"]
    assert twin_requests(NEW_PARAMS) == []
    # A main request whose directory ends with the production's name, made after a test request
    # whose directory was chosen by hand: the new test request follows the main request.
    params = dict(NEW_PARAMS, Geometry="DG_5")
    r = api.post("/requests", json={
        "production": "2010_July", "parameters": params, "events_per_job": 10, "input_mode": "NONE",
        "output_lfn": f"{LFN_ROOT}/out/2010_July", "test_output_lfn": f"{LFN_ROOT}/by-hand",
        "output_sites": ["INFN-T1"]})
    assert r.status_code == 201, r.json
    body = seed_body(production, params=dict(params, Background="Other.tcl"))
    r = api.post("/submissions", json=body)
    assert r.status_code == 201, r.json
    assert r.json["sets"][1]["output_lfn"] == f"{LFN_ROOT}/out/2010_July_test"
