"""Bad input is a 4xx with {"error", "message", "request_id"}, never a 500 or a traceback."""
import pytest

from .conftest import started_job


@pytest.mark.parametrize("body", [b"", b"{", b"[1,2", b"\xff\xfe", b"null", b"42", b'"text"'])
def test_malformed_json_is_400(api, production, body):
    r = api.post("/productions", data=body, content_type="application/json")
    assert r.status_code == 400 and set(r.json) == {"error", "message", "request_id"}


@pytest.mark.parametrize("body", [{"name": 5, "session": "FastSim", "version": "V0.2.5"},
                                  {"name": "x" * 500, "session": "FastSim", "version": "V0.2.5"},
                                  {"name": "ok", "session": "FastSim", "version": "V0.2.5", "revision": "311"},
                                  {"name": "ok", "session": "Nope", "version": "V0.2.5"},
                                  {"name": "ok_test", "session": "FastSim", "version": "V0.2.5"},
                                  {"name": "ok", "session": "FastSim", "version": "V9"}])
def test_wrong_types_and_unknown_references_are_4xx(api, production, body):
    r = api.post("/productions", json=body)
    assert 400 <= r.status_code < 500 and r.json["message"]


def test_body_over_the_limit_is_413_json(api, production, app):
    limit = app.extensions["sbk.settings"].max_body_bytes
    r = api.post("/sessions", data=b"{" + b" " * limit + b"}", content_type="application/json")
    assert r.status_code == 413 and r.json["error"] == "too-large"


def test_unknown_route_and_method_are_json(api):
    assert api.get("/nothing-here").json["error"] == "not-found"
    r = api.call("DELETE", "/jobs")
    assert r.status_code == 405 and set(r.json) == {"error", "message", "request_id"}


def test_huge_integers_in_paths_and_queries_are_4xx(api, production):
    started_job(api, production)
    assert api.get("/jobs/99999999999999999999").status_code == 404
    assert api.get("/jobs", query_string={"runnum_from": "9" * 40}).status_code == 400
    assert api.get("/requests/0").status_code == 404


def test_submission_body_errors_name_the_field(api, production):
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [{"request": 1, "sites": ["X"],
                                                                             "runs": 0, "events": 1}]})
    assert r.status_code == 400 and "bulks[0].runs" in r.json["message"]
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [
        {"request": production["request"]["id"], "sites": ["NOWHERE"], "runs": 1, "events": 1}]})
    assert r.status_code == 404 and "NOWHERE" in r.json["message"]
