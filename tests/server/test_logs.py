"""Server logs: a request id on every reply (error bodies too), one line per request with its route,
status and time, and SBK_LOG_FORMAT=json making every line of a real `sbk serve` one JSON object."""
import io
import json
import logging
import re
import subprocess
import sys

import pytest
import requests

from server import create_app, db, logs
from tests.infra.postgres import free_port
from tests.test_gunicorn_metrics import ROOT, serving, server_env
from wrapper.client import ServerClient, ServerRefused

from .conftest import API, event, started_job

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture()
def lines():
    """What the server logs while the test runs, as JSON objects: our formatter and request filter
    on a handler of the test's own (pytest's own handlers hold the root logger)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RequestFields())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def access(entries):
    return [e for e in entries if e["logger"] == "sbk.access"]


def test_a_sane_request_id_is_kept_and_any_other_replaced(client):
    for sent in ("req-42", "3f2a9c1e-2b7d-4e55-9b0a-1c2d3e4f5a6b", "lb:host/17+x=@_."):
        r = client.get(f"{API}/health", headers={"X-Request-ID": sent})
        assert r.status_code == 200 and r.headers["X-Request-ID"] == sent
    seen = set()
    for sent in (None, "", "has space", "x" * 129, "semi;colon", "ünïcode", "<script>"):
        r = client.get(f"{API}/health", headers={} if sent is None else {"X-Request-ID": sent})
        rid = r.headers["X-Request-ID"]
        assert GENERATED.fullmatch(rid) and rid not in seen, (sent, rid)
        seen.add(rid)


def test_error_replies_carry_the_request_id(api, app):
    limit = app.extensions["sbk.settings"].max_body_bytes
    replies = [
        api.get("/jobs/999999", headers={"X-Request-ID": "mine-1"}),                     # 404 of a view
        api.get("/no-such-route"),                                                      # 404 of routing
        api.call("DELETE", "/jobs"),                                                    # 405
        api.post("/productions", data=b"{", content_type="application/json"),          # 400
        api.post("/sessions", data=b"{" + b" " * limit + b"}", content_type="application/json"),  # 413, a hook's
        api.as_("sbku_nobody").get("/me"),                                              # 401
    ]
    for r in replies:
        assert r.status_code >= 400 and set(r.json) == {"error", "message", "request_id"}, r.json
        assert r.json["request_id"] == r.headers["X-Request-ID"]
    assert replies[0].json["request_id"] == "mine-1"


def test_one_line_per_request_with_its_route_status_and_time(lines, api, production):
    job_id, token = started_job(api, production)
    api.as_(token).post(f"/jobs/{job_id}/events", json=[event(1)], headers={"X-Request-ID": "wrapper-7"})
    api.get(f"/jobs/{job_id}", headers={"X-Request-ID": "mgr-1"})
    api.get("/jobs/999999", headers={"X-Request-ID": "mgr-2"})
    api.get("/nowhere", headers={"X-Request-ID": "mgr-3"})
    by_id = {e["request_id"]: e for e in access(lines())}
    assert {k: by_id["wrapper-7"][k] for k in ("method", "route", "status")} == {
        "method": "POST", "route": f"{API}/jobs/<id:job_id>/events", "status": 200}
    assert {k: by_id["mgr-1"][k] for k in ("method", "route", "status")} == {
        "method": "GET", "route": f"{API}/jobs/<id:job_id>", "status": 200}
    assert (by_id["mgr-2"]["route"], by_id["mgr-2"]["status"]) == (f"{API}/jobs/<id:job_id>", 404)
    assert (by_id["mgr-3"]["route"], by_id["mgr-3"]["status"]) == (None, 404)   # no rule matched
    for entry in by_id.values():
        assert isinstance(entry["duration_ms"], float) and 0 <= entry["duration_ms"] < 60_000
        assert entry["level"] == "INFO" and entry["time"].endswith("Z")
        assert entry["message"].startswith(f"{entry['method']} {entry['route'] or '-'} {entry['status']} ")
    # every request has its own line, the production's setup (7 requests) and the job's (2) too
    ids = [e["request_id"] for e in access(lines())]
    assert len(ids) == len(set(ids)) >= 7 + 2 + 4


def test_a_line_logged_inside_a_request_carries_its_id(app, client, lines):
    def boom():
        raise RuntimeError("a bug")
    app.add_url_rule("/boom", "boom", boom)
    r = client.get("/boom", headers={"X-Request-ID": "bug-1"})
    assert r.status_code == 500 and r.json == {"error": "internal-error", "request_id": "bug-1",
                                               "message": "the server failed; the details are in its log"}
    failure = [e for e in lines() if e["logger"] == "sbk" and e["level"] == "ERROR"]
    assert failure and failure[0]["request_id"] == "bug-1" and "RuntimeError: a bug" in failure[0]["exception"]
    assert [e["status"] for e in access(lines()) if e["request_id"] == "bug-1"] == [500]


def test_the_text_format_puts_the_request_id_after_the_logger():
    record = logging.LogRecord("sbk.access", logging.INFO, __file__, 1, "GET %s 200 1.5 ms", ("/x",), None)
    record.request_id = "abc"
    assert re.fullmatch(r"\S+ \S+ INFO sbk\.access \[abc\] GET /x 200 1\.5 ms", logs.TextFormatter().format(record))
    plain = logging.LogRecord("sbk", logging.WARNING, __file__, 1, "no request", (), None)
    assert logs.TextFormatter().format(plain).endswith(" WARNING sbk no request")


def test_a_bad_log_format_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="SBK_LOG_FORMAT must be one of text, json, not 'xml'"):
        create_app({"DB": f"sqlite:///{tmp_path}/refused.db", "LOG_FORMAT": "XML"})
    db.database.close()
    done = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--port", str(free_port())], cwd=ROOT,
                          env=server_env(tmp_path, SBK_LOG_FORMAT="xml"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr == "sbk: SBK_LOG_FORMAT must be one of text, json, not 'xml'\n"


def test_sbk_serve_logs_json_lines_and_the_clients_read_errors_with_the_id(tmp_path):
    """A real `sbk serve` (gunicorn, two workers) with SBK_LOG_FORMAT=json: every line on its stderr,
    gunicorn's own included, is one JSON object; the wrapper's client and `sbk` read its error replies."""
    env = server_env(tmp_path, SBK_LOG_FORMAT="json")
    token = subprocess.run([sys.executable, "-m", "server.cli", "user", "add", "dev", "--groups", "Developer"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    port = free_port()
    argv = [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--workers", "2"]
    with serving(argv, env, port, tmp_path) as served:
        r = requests.get(f"{served.base}{API}/jobs/424242", headers={"Authorization": f"Bearer {token}",
                                                                     "X-Request-ID": "ops-1"}, timeout=30)
        assert r.status_code == 404 and r.json()["request_id"] == "ops-1" == r.headers["X-Request-ID"]
        with pytest.raises(ServerRefused) as refused:
            ServerClient(served.base, token).get("/jobs/424242")   # the wrapper's client
        assert (refused.value.status, refused.value.error) == (404, "not-found")
        done = subprocess.run([sys.executable, "-m", "server.cli", "job", "424242"], cwd=ROOT, timeout=60,
                              env={**env, "SBK_URL": served.base, "SBK_TOKEN": token}, capture_output=True, text=True)
        # `sbk`'s exit code for a refusal (README), its one line
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and "404 not-found" in done.stderr, done.stderr
    entries = [json.loads(line) for line in served.stderr().splitlines()]   # each line parses, or this fails
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(e["logger"] == "gunicorn.error" and "Booting worker" in e["message"] for e in entries)
    mine = [e for e in entries if e.get("request_id") == "ops-1"]
    assert [(e["logger"], e["method"], e["route"], e["status"]) for e in mine] == [
        ("sbk.access", "GET", f"{API}/jobs/<id:job_id>", 404)]
    asked = [e["status"] for e in entries if e["logger"] == "sbk.access" and e["route"] == f"{API}/jobs/<id:job_id>"]
    assert len(asked) >= 3 and set(asked) == {404}   # requests', the wrapper's client's and sbk's
