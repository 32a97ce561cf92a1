"""Privileges on every route; tokens stored hashed."""
import pytest

from server import db
from server import models as m

from .conftest import Api, new_token, started_job

WRITES = [("POST", "/sessions"), ("POST", "/sessions/FastSim/software"), ("POST", "/sessions/FastSim/parameters"),
          ("POST", "/productions"), ("PATCH", "/productions/2010_July"), ("POST", "/requests"),
          ("PATCH", "/requests/1"), ("POST", "/sites"), ("PATCH", "/sites/INFN-T1"), ("POST", "/submissions"),
          ("POST", "/jobs/1/kill"), ("POST", "/jobs/1/resubmit"), ("GET", "/jobs/1/description"),
          ("POST", "/catalog/replicas"), ("DELETE", "/catalog/replicas?lfn=lfn:/a&site=X")]
READS = ["/jobs", "/jobs/1", "/sessions", "/productions", "/requests", "/sites", "/stats", "/activities",
         "/catalog/files?dir=lfn:/a", "/me"]


def test_monitoring_reads_but_never_writes(client, api, production):
    started_job(api, production)   # job 1 exists
    viewer = Api(client, new_token("viewer", ["webui"]))
    for path in READS:
        assert viewer.get(path).status_code == 200, path
    for method, path in WRITES:
        r = viewer.call(method, path, json={})
        assert r.status_code == 403 and r.json["error"] == "forbidden", (method, path)


def test_each_group_gets_the_seed_privileges(client, api, production):
    shifter = Api(client, new_token("shift", ["Shift"]))
    manager = Api(client, new_token("mgr", ["FastProdMgr"]))
    assert shifter.post("/productions", json={}).status_code == 403
    assert manager.post("/productions", json={}).status_code == 400   # allowed in, then a bad body
    assert manager.post("/submissions", json={}).status_code == 403
    body = {"production": "2010_July", "bulks": [
        {"request": production["request"]["id"], "sites": ["INFN-T1"], "runs": 1, "events": 1}]}
    assert shifter.post("/submissions", json=body).status_code == 201
    assert shifter.post("/submissions", json=dict(body, override_thresholds=True)).status_code == 403


@pytest.mark.parametrize("header", ["", "Bearer", "Basic abc", "Bearer sbku_unknown", "Bearer x"])
def test_missing_or_unknown_tokens_get_401_or_403(client, header, production):
    r = client.get("/api/v1/jobs", headers={"Authorization": header} if header else {})
    assert r.status_code in (401, 403) and set(r.json) == {"error", "message", "request_id"}


def test_tokens_are_stored_only_as_hashes(app, api, production):
    job_id, token = started_job(api, production)
    with db.connection():
        hashes = [a.token_hash for a in m.Attempt.select()] + [t.token_hash for t in m.ApiToken.select()]
    assert api.token not in hashes and token not in hashes
    assert all(len(h) == 64 for h in hashes if h)
