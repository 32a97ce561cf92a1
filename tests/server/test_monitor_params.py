"""The job monitor's job-parameter filters (param.<Name>) in GET /jobs and POST /jobs/resubmit,
resolved over the requests into an indexed `request IN (...)` on the jobs (server/monitor.py)."""
import logging
import re

import pytest

from server import db, monitor
from server import models as m

from .conftest import event, submit

GENERICS = {"Analysis": "Generics", "Generator": "BpBm_generic", "Geometry": "DG_4",
            "Background": "MixSuperbBkg_NoPair.tcl"}


def second_request(api, production):
    """A valid request of the same production with other parameter values (Analysis Generics)."""
    r = api.post("/requests", json={
        "production": production["production"], "min_runnum": 20000000, "events_per_job": 80000,
        "parameters": GENERICS, "input_mode": "NONE", "input_paths": [],
        "output_lfn": f"lfn:/grid/superbvo.org/production/FastSim/{production['production']}/output/Generics",
        "output_sites": ["INFN-T1"], "max_wct_s": 3600})
    assert r.status_code == 201, r.json
    assert api.patch(f"/requests/{r.json['id']}", json={"status": "valid"}).status_code == 200
    return r.json


@pytest.fixture()
def two_requests(api, production):
    other = second_request(api, production)
    hadronic = submit(api, production, runs=3)["job_ids"]
    generics = submit(api, {"production": production["production"], "request": other}, runs=2)["job_ids"]
    return {"hadronic": hadronic, "generics": generics, "other": other}


def ids(api, query):
    r = api.get(f"/jobs?per_page=100&{query}")
    assert r.status_code == 200, r.json
    return sorted(j["id"] for j in r.json["jobs"]), r.json["total"]


def test_parameter_filters_select_the_jobs_of_the_matching_requests(api, two_requests):
    hadronic, generics = two_requests["hadronic"], two_requests["generics"]
    assert ids(api, "param.Analysis=Generics") == (sorted(generics), 2)
    assert ids(api, "param.Analysis=HadRecoilCocktail") == (sorted(hadronic), 3)
    # several values of one parameter: any of them; an empty value is no choice
    assert ids(api, "param.Analysis=Generics&param.Analysis=HadRecoilCocktail&param.Generator=") == \
        (sorted(hadronic + generics), 5)
    # several parameters: all of them
    assert ids(api, "param.Geometry=DG_4&param.Generator=BpBm_generic") == (sorted(generics), 2)
    assert ids(api, "param.Analysis=Generics&param.Generator=B0B0bar_SL") == ([], 0)
    assert ids(api, "param.Generator=never-used") == ([], 0)
    # with the other filters, and in the job summaries
    r = api.get("/jobs?param.Analysis=Generics&sort=-runnum").json
    assert [j["parameters"]["Analysis"] for j in r["jobs"]] == ["Generics", "Generics"]
    assert ids(api, f"param.Analysis=Generics&request={two_requests['other']['id']}") == (sorted(generics), 2)


def test_an_unknown_parameter_or_an_overlong_value_is_a_400(api, two_requests):
    r = api.get("/jobs?param.Colour=red")
    assert r.status_code == 400 and "Colour" in r.json["message"] and "\n" not in r.json["message"]
    r = api.get("/jobs?param.Analysis=" + "x" * 300)
    assert r.status_code == 400 and "longer than" in r.json["message"]


def test_the_parameter_filter_is_an_indexed_request_condition(api, two_requests, db_url):
    """The jobs are found by their request (its index: `request IN (...)`, or one part per request), not by reading parameters."""
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(str(record.msg))
    logger = logging.getLogger("peewee")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        api.get("/jobs?param.Analysis=Generics")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    pages = [q for q in seen if 'FROM "job"' in q and "ORDER BY" in q and "LIMIT" in q]
    assert pages and all(re.search(r"\"request_id\" (IN \(|= )", q) for q in pages), pages
    assert not any(f in q for q in seen for f in ("json_extract", "->>", "json_each(\"t"))


def test_resubmit_takes_the_parameter_filters(api, two_requests):
    hadronic, generics = two_requests["hadronic"], two_requests["generics"]
    for job_id in (hadronic[0], generics[0]):
        token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
        api.as_(token).post(f"/jobs/{job_id}/events", json=event(1, "failed", code=30))
    r = api.post("/jobs/resubmit?param.Analysis=Generics", json={"dry_run": True})
    assert r.status_code == 200 and r.json["jobs"] == [generics[0]]
    r = api.post("/jobs/resubmit?param.Analysis=Generics")
    assert r.status_code == 200 and [j["id"] for j in r.json["resubmitted"]] == [generics[0]]
    assert api.get(f"/jobs/{hadronic[0]}").json["status"] == "failed"
    assert api.post("/jobs/resubmit?param.Nope=1").status_code == 400


def test_parameter_choices_are_the_allowed_values_or_those_in_use(api, two_requests):
    with db.connection():
        choices = dict(monitor.parameter_choices())
    assert choices["Analysis"] == ["HadRecoilCocktail", "Generics"]           # the session's allowed values
    assert choices["Generator"] == ["B0B0bar_SL", "BpBm_generic"]              # any value: those in use
    assert list(choices) == ["Analysis", "Generator", "Geometry", "Background"]
    with db.connection():
        matched = monitor.parameter_requests({"Analysis": ["Generics"]})
        # the request and its test twin (same parameters), no other
        twin = m.Request.get_by_id(two_requests["other"]["id"]).test_request_id
        assert sorted(matched) == sorted(i for i in (two_requests["other"]["id"], twin) if i)
