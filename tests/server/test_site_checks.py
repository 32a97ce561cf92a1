"""Node checks kept per site: POST /sites/<name>/checks, its history, and `last_check` (SQLite and PostgreSQL)."""
import io
import json

import pytest

from server import db
from server import models as m
from server.api.sites import MAX_CHECK_BYTES
from wrapper import check

from .conftest import Api, new_token


def ok_body(node="wn01.infn-t1.test", site="INFN-T1"):
    """What `severus check --json` prints for a healthy node (built by the wrapper's own code)."""
    results = [check.CheckResult("python", check.OK, "3.11.2 (/usr/bin/python3)", 0.001),
               check.CheckResult("scratch", check.OK, "120.0 GB free in /scratch (site minimum 5 GB)", 0.002, 0,
                                 (check.Perf("scratch_free", 120000, "MB", 10000, 5000, 0),)),
               check.CheckResult("server", check.WARNING, "http://sbk answered in 0.01 s; clock offset +75.0 s",
                                 0.01, 0, (check.Perf("clock_offset", -75.0, "s", 60, 300),))]
    return dict(check.result_dict(results, site), node=node)


def failed_body(node="wn02.infn-t1.test"):
    """A real run of the checks on a node whose site configuration is missing."""
    results = check.run_checks(check.CheckOptions(site_config="/nonexistent/INFN-T1.toml"))
    return dict(check.result_dict(results, "INFN-T1"), node=node)


@pytest.fixture()
def site(api):
    assert api.post("/sites", json={"name": "INFN-T1"}).status_code == 201
    return "INFN-T1"


def test_a_posted_check_is_stored_and_shown_as_the_sites_last(api, site):
    body = ok_body()
    r = api.post(f"/sites/{site}/checks", json=body)
    assert r.status_code == 201, r.json
    kept = r.json
    assert kept["site"] == site and kept["node"] == "wn01.infn-t1.test" and kept["status"] == "WARNING"
    assert kept["reported_by"] == "dev" and kept["wrapper_version"] == body["wrapper_version"]
    assert [(c["name"], c["state"], c["reason"]) for c in kept["checks"]] == \
        [(c["name"], c["state"], c["reason"]) for c in body["checks"]]
    assert kept["checks"][1]["perf"] == {"scratch_free": 120000} and kept["checks"][2]["perf"]["clock_offset"] == -75
    assert kept["created_at"].endswith("Z")
    assert api.get(f"/sites/{site}").json["last_check"] == kept
    assert "last_check" not in api.get("/sites").json["sites"][0]   # the list stays one query
    with db.connection():
        assert m.SiteCheck.select().count() == 1


def test_the_last_check_wins_and_the_history_is_kept(api, site):
    first = api.post(f"/sites/{site}/checks", json=ok_body()).json
    second = api.post(f"/sites/{site}/checks", json=failed_body()).json
    assert second["status"] == "CRITICAL" and second["id"] > first["id"]
    states = {c["name"]: c["state"] for c in second["checks"]}
    assert states["site config"] == "CRITICAL" and states["access"] == "UNKNOWN"
    last = api.get(f"/sites/{site}").json["last_check"]
    assert last["id"] == second["id"] and last["node"] == "wn02.infn-t1.test"
    history = api.get(f"/sites/{site}/checks").json
    assert history["site"] == site and [c["id"] for c in history["history"]] == [second["id"], first["id"]]
    assert [c["id"] for c in api.get(f"/sites/{site}/checks?limit=1").json["history"]] == [second["id"]]
    # Another site's checks stay its own.
    assert api.post("/sites", json={"name": "INFN-TORINO"}).status_code == 201
    assert api.get("/sites/INFN-TORINO").json["last_check"] is None
    assert api.get("/sites/INFN-TORINO/checks").json["history"] == []


def test_unknown_site_is_404(api, site):
    r = api.post("/sites/NO-SUCH-SITE/checks", json=ok_body(site="NO-SUCH-SITE"))
    assert r.status_code == 404 and r.json["error"] == "not-found" and "NO-SUCH-SITE" in r.json["message"]
    assert api.get("/sites/NO-SUCH-SITE/checks").status_code == 404


def test_posting_needs_expert_submission_reading_needs_monitoring(client, api, site):
    """Site management is expert submission (PATCH /sites); a node check is the site admin's, like it."""
    viewer = Api(client, new_token("viewer", ["webui"]))
    shifter = Api(client, new_token("shift", ["Shift"]))
    for who in (viewer, shifter):
        r = who.post(f"/sites/{site}/checks", json=ok_body())
        assert r.status_code == 403 and "expert-submission" in r.json["message"]
    assert Api(client).post(f"/sites/{site}/checks", json=ok_body()).status_code == 401
    assert api.post(f"/sites/{site}/checks", json=ok_body()).status_code == 201
    assert viewer.get(f"/sites/{site}/checks").json["history"][0]["reported_by"] == "dev"
    with db.connection():
        assert m.SiteCheck.select().count() == 1


@pytest.mark.parametrize("change, field", [
    (lambda b: b.pop("node"), "'node'"),
    (lambda b: b.update(state="FINE"), "'state'"),
    (lambda b: b.update(checks=[]), "'checks'"),
    (lambda b: b.update(checks="all good"), "'checks'"),
    (lambda b: b.update(site="INFN-TORINO"), "'site'"),
    (lambda b: b.update(extra=1), "'extra'"),
    (lambda b: b["checks"][0].update(state="MEH"), "'checks[0].state'"),
    (lambda b: b["checks"][1].pop("name"), "'checks[1].name'"),
    (lambda b: b["checks"][1].update(seconds="slow"), "'checks[1].seconds'"),
    (lambda b: b["checks"][2].update(perf={"clock_offset": "far"}), "'checks[2].perf.clock_offset'"),
    (lambda b: b["checks"][2].update(colour="red"), "'checks[2].colour'"),
    (lambda b: b.update(checks=[b["checks"][0]] * 65), "'checks'"),
    (lambda b: b.update(node="x" * 256), "'node'"),
])
def test_bad_bodies_are_400_naming_the_field(api, site, change, field):
    body = ok_body()
    change(body)
    r = api.post(f"/sites/{site}/checks", json=body)
    assert r.status_code == 400 and r.json["error"] == "schema-error", r.json
    assert field in r.json["message"]
    assert api.post(f"/sites/{site}/checks", data=b"{not json", content_type="application/json").status_code == 400
    with db.connection():
        assert m.SiteCheck.select().count() == 0


def test_an_oversized_check_is_413(api, site):
    body = ok_body()
    body["checks"][0]["reason"] = "x" * MAX_CHECK_BYTES
    r = api.post(f"/sites/{site}/checks", json=body)
    assert r.status_code == 413 and r.json["error"] == "too-large" and str(MAX_CHECK_BYTES) in r.json["message"]
    # Without a Content-Length (chunked, from a server that terminates the stream) as well.
    r = api.post(f"/sites/{site}/checks", input_stream=io.BytesIO(json.dumps(body).encode()),
                 headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
                 environ_overrides={"wsgi.input_terminated": True})
    assert r.status_code == 413 and r.json["error"] == "too-large"
    assert api.get(f"/sites/{site}").json["last_check"] is None


def test_limit_out_of_range_is_400(api, site):
    for limit in ("0", "1001", "many"):
        r = api.get(f"/sites/{site}/checks?limit={limit}")
        assert r.status_code == 400 and "'limit'" in r.json["message"]
