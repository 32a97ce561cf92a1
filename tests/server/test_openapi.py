"""The served OpenAPI document is valid, lists every route of the app, and declares every field the
replies carry today (the document lets replies grow; this test says when one grew undeclared)."""
import re

from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from shared.events import TRANSFER_BYTES, TRANSFER_RATE, TRANSFER_TOTAL_BYTES

from .conftest import started_job, submit


def test_served_spec_is_valid_openapi_3(client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    assert r.json["openapi"].startswith("3.1")
    validate(r.json)


def test_spec_covers_every_api_route(app, client):
    spec = client.get("/api/v1/openapi.json").json
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule[len("/api/v1"):])
        served |= {(method, path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == documented


def test_no_reply_is_any_object(client):
    """Every JSON success reply names its fields (a Job included), none is a bare `object`."""
    spec = client.get("/api/v1/openapi.json").json
    untyped = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if path != "/openapi.json" and schema is not None and "$ref" not in schema and "items" not in schema:
                    untyped.append((method, path, status, schema))
    assert not untyped, untyped
    assert "transfer_progress" in spec["components"]["schemas"]["Job"]["properties"]


def closed(schema):
    """The document's schemas with every reply closed: a field the document does not declare is an error."""
    if isinstance(schema, dict):
        out = {k: closed(v) for k, v in schema.items()}
        if out.get("additionalProperties") is True and "properties" in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


REPLICA = {"lfn": "lfn:/grid/t/a.root", "site": "INFN-T1", "surl": "root://se//grid/t/a.root", "size": 3,
           "adler32": "0a0b0c0d"}


def test_every_field_a_reply_carries_is_declared(client, api, production):
    spec = client.get("/api/v1/openapi.json").json
    components = closed(spec["components"])
    job_id, job_token = started_job(api, production)
    as_job = api.as_(job_token)
    heartbeat = {"attempt": 1, "seq": 1, "time": 1.7e9, "status": "running", "kind": "heartbeat", "step": "RUNNING-02",
                 "metrics": {TRANSFER_BYTES: 100, TRANSFER_TOTAL_BYTES: 1000, TRANSFER_RATE: 1.5}}
    request_id = production["request"]["id"]
    calls = [
        ("post", "/jobs/{job_id}/events", f"/jobs/{job_id}/events", as_job, {"json": heartbeat}),
        ("get", "/jobs/{job_id}/attempt", f"/jobs/{job_id}/attempt", as_job, {}),
        ("get", "/jobs/{job_id}", f"/jobs/{job_id}", api, {}),
        ("get", "/jobs", "/jobs?per_page=5", api, {}),
        ("get", "/jobs/{job_id}/description", f"/jobs/{job_id}/description", api, {}),
        ("get", "/sessions", "/sessions", api, {}),
        ("get", "/sessions/{name}", "/sessions/FastSim", api, {}),
        ("get", "/productions", "/productions", api, {}),
        ("get", "/productions/{name}", f"/productions/{production['production']}", api, {}),
        ("get", "/requests", "/requests", api, {}),
        ("get", "/requests/{request_id}", f"/requests/{request_id}", api, {}),
        ("get", "/sites", "/sites", api, {}),
        ("get", "/sites/{name}", "/sites/INFN-T1", api, {}),
        ("post", "/submissions", "/submissions", api, {"json": {
            "production": production["production"], "dry_run": True,
            "bulks": [{"request": request_id, "sites": ["INFN-T1"], "runs": 1, "events": 100}]}}),
        ("post", "/sites/{name}/reset", "/sites/INFN-T1/reset", api, {}),
        ("get", "/me", "/me", api, {}),
        ("get", "/tokens", "/tokens", api, {}),
        ("get", "/users", "/users", api, {}),
        ("get", "/stats", "/stats", api, {}),
        ("get", "/activities", "/activities", api, {}),
        ("get", "/error-codes", "/error-codes", api, {}),
        ("get", "/health", "/health", api, {}),
        ("post", "/jobs/{job_id}/removals", f"/jobs/{job_id}/removals", as_job, {"json": {
            "site": "INFN-T1", "surl": "root://se//store/B0B0bar_SL/x.root.1", "reason": "rm failed"}}),
        ("get", "/jobs/{job_id}", f"/jobs/{job_id}", api, {}),
        ("post", "/catalog/replicas", "/catalog/replicas", api, {"json": [REPLICA]}),
        ("post", "/catalog/replicas", "/catalog/replicas", api, {"json": REPLICA}),
        ("get", "/catalog/replicas", f"/catalog/replicas?lfn={REPLICA['lfn']}", api, {}),
        ("get", "/catalog/files", "/catalog/files?dir=lfn:/grid/t", api, {}),
        ("delete", "/catalog/replicas", f"/catalog/replicas?lfn={REPLICA['lfn']}&site=INFN-T1", api, {}),
        ("post", "/sites/{name}/checks", "/sites/INFN-T1/checks", api, {"json": {
            "node": "wn1", "state": "OK", "checks": [{"name": "python", "state": "OK", "perf": {"s": 1}}]}}),
        ("get", "/sites/{name}/checks", "/sites/INFN-T1/checks", api, {}),
        ("get", "/sites/{name}", "/sites/INFN-T1", api, {}),
        ("post", "/tokens", "/tokens", api, {"json": {"label": "ci", "expires_in_days": 3}}),
        ("post", "/users", "/users", api, {"json": {"name": "shifter1", "groups": ["Shift"]}}),
        ("patch", "/users/{name}", "/users/shifter1", api, {"json": {"groups": ["Shift", "Developer"]}}),
        ("patch", "/me", "/me", api, {"json": {"auto_sub": True}}),
        ("post", "/sessions/{name}/steps", "/sessions/FastSim/steps", api,
         {"json": {"name": "sim", "module": "fastsim"}}),
        ("patch", "/productions/{name}", f"/productions/{production['production']}", api, {"json": {"note": "n"}}),
        ("post", "/jobs/resubmit", f"/jobs/resubmit?production={production['production']}", api,
         {"json": {"dry_run": True}}),
        ("post", "/jobs/{job_id}/kill", f"/jobs/{job_id}/kill", api, {}),
        ("get", "/jobs/{job_id}", f"/jobs/{job_id}", api, {}),
        ("get", "/jobs/{job_id}/attempt", f"/jobs/{job_id}/attempt", as_job, {}),
    ]
    submit(api, production, runs=1)
    undeclared = []
    answered = set()
    for method, template, path, caller, kw in calls:
        r = getattr(caller, method)(path, **kw)
        assert r.status_code < 300, (method, path, r.json)
        answered.add((method, template))
        response = spec["paths"][template][method]["responses"][str(r.status_code)]
        schema = {**closed(response["content"]["application/json"]["schema"]), "components": components}
        errors = [f"{method.upper()} {path} [{r.status_code}]: {e.message[:200]} at {list(e.absolute_path)}"
                  for e in OAS31Validator(schema).iter_errors(r.json)]
        undeclared += errors[:3]
        if template == "/jobs/{job_id}" and method == "get" and r.json["status"] == "running":
            assert r.json["transfer_progress"]["bytes"] == 100, r.json["transfer_progress"]
    assert not undeclared, "\n".join(undeclared)
    assert len(answered) >= 35


def test_a_refused_input_names_its_field_in_one_line(api, production):
    cases = [
        ("post", "/requests", {"json": {"production": production["production"], "events_per_job": "10"}},
         "field 'events_per_job' must be an integer"),
        ("post", "/requests", {"json": {"production": production["production"], "cores": 0}},
         "field 'cores' must be between 1 and 1024"),
        ("post", "/submissions", {"json": {"production": production["production"],
                                           "bulks": [{"sites": ["INFN-T1"], "events": -1}]}},
         "field 'bulks[0].events' must be between 0"),
        ("patch", f"/requests/{production['request']['id']}", {"json": {"steps": [{"template": "x", "params": {}}]}},
         "field 'steps[0].params' is not a known field"),
        ("post", "/sites", {"json": {"name": "X", "colour": "red"}}, "field 'colour' is not a known field"),
        ("get", "/requests?limit=0", {}, "query parameter 'limit' must be between 1 and 10000"),
        ("get", "/jobs?per_page=x", {}, "query parameter 'per_page' must be an integer"),
    ]
    for method, path, kw, words in cases:
        r = getattr(api, method)(path, **kw)
        assert r.status_code == 400 and r.json["error"] == "schema-error", (path, r.json)
        assert words in r.json["message"] and "\n" not in r.json["message"], (path, r.json["message"])
        assert r.json["request_id"]
