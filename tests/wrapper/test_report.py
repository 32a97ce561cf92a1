"""Reporter: fsynced journal, in-order delivery through outages, replies that stop the job.

The events route is served by a small stdlib HTTP server that keeps the
server's promises (schema check, idempotency on (attempt, seq), 409 for a
superseded attempt, a `kill` command) and can be stopped and started again on
the same port. The integrator adds the same scenarios against the real sbk.
"""
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.errors import AttemptSuperseded, KilledByManager
from shared.events import parse_events
from shared.jobdesc import parse_job_description
from shared.states import Step
from wrapper.client import ServerClient
from wrapper.report import JOURNAL_NAME, Reporter, SenderConfig, read_journal, replay_journal
from tests.waiting import poll  # noqa: F401 (also used by test_cli, test_runner)

TOKEN = "job-token-1"


class EventServer:
    """The events, log and catalog routes of sbk, in memory; `stop()`/`start()` keep the port."""

    def __init__(self, job_id=42, current_attempt=1):
        self.job_id = job_id
        self.current_attempt = current_attempt
        self.events = {}          # (attempt, seq) -> event dict, stored once
        self.order = []           # keys in arrival order
        self.requests = 0
        self.batches = []         # sizes of accepted request bodies
        self.command = None
        self.logs = {}
        self.catalog = {}         # lfn -> {lfn, size, adler32, replicas: [{site, surl}]}
        self._httpd = None
        self.port = 0
        self.lock = threading.Lock()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code, body):
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _catalog(self, method, raw):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                with owner.lock:
                    if method == "POST":
                        r = json.loads(raw)
                        entry = owner.catalog.setdefault(r["lfn"], {
                            "lfn": r["lfn"], "size": r["size"], "adler32": r["adler32"],
                            "replicas": []})
                        replica = {"site": r["site"], "surl": r["surl"]}
                        if replica not in entry["replicas"]:
                            entry["replicas"].append(replica)
                        return self._reply(201, entry)
                    if method == "DELETE":
                        entry = owner.catalog.get(query.get("lfn"), {"replicas": []})
                        entry["replicas"] = [r for r in entry["replicas"]
                                             if r["site"] != query.get("site")]
                        return self._reply(200, {})
                    if url.path.endswith("/files"):
                        prefix = query["dir"].rstrip("/") + "/"
                        return self._reply(200, {"files": [e for lfn, e in sorted(owner.catalog.items())
                                                           if lfn.startswith(prefix)]})
                    if query.get("lfn") in owner.catalog:
                        return self._reply(200, owner.catalog[query["lfn"]])
                    return self._reply(404, {"error": "not-found", "message": "no such lfn"})

            def do_GET(self):
                return self._catalog("GET", b"")

            def do_DELETE(self):
                return self._catalog("DELETE", b"")

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._reply(401, {"error": "bad-token", "message": "unknown token"})
                if self.path.startswith("/api/v1/catalog/"):
                    return self._catalog("POST", raw)
                if self.path != f"/api/v1/jobs/{owner.job_id}/events":
                    return self._reply(403, {"error": "forbidden", "message": self.path})
                body = json.loads(raw)
                events = parse_events(body)   # raises on a schema error: the test fails loudly
                with owner.lock:
                    owner.requests += 1
                    if any(e.attempt != owner.current_attempt for e in events):
                        return self._reply(409, {"error": "attempt-superseded",
                                                 "message": "attempt 1 is not current"})
                    new = 0
                    for e, d in zip(events, body if isinstance(body, list) else [body]):
                        if e.key not in owner.events:
                            owner.events[e.key] = d
                            owner.order.append(e.key)
                            new += 1
                    owner.batches.append(len(events))
                    return self._reply(200, {"accepted": new, "duplicates": len(events) - new,
                                             "status": "running", "command": owner.command})

            def do_PUT(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.logs[self.path] = raw
                return self._reply(200, {"stored": len(raw)})

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    def seqs(self):
        with self.lock:
            return [seq for _, seq in self.order]

    def finals(self):
        with self.lock:
            return [e for e in self.events.values() if e.get("kind") == "final"]


@pytest.fixture()
def event_server():
    server = EventServer().start()
    yield server
    server.stop()


def make_desc(url, heartbeat_s=300.0, **over):
    """A valid job description; `over` replaces whole sections."""
    d = {
        "schema": 1,
        "job": {"id": 42, "runnum": 10000003, "attempt": 1, "session": "FastSim",
                "production": "2010_July", "request": 7, "events": 50},
        "server": {"url": url, "token": TOKEN, "heartbeat_s": heartbeat_s},
        "software": {"name": "PacProductionApp", "version": "V0.2.5", "revision": 311,
                     "lfn": "lfn:/grid/superbvo.org/sw/V0.2.5.tjz", "adler32": "1a2b3c4d",
                     "workdir": "FastSim/V0.2.5", "exe": "bin/PacProduction"},
        "payload": {"module": "generic"},
        "input": {"mode": "NONE"},
        "output": {"lfn_dir": "lfn:/grid/superbvo.org/out", "patterns": ["*.root"]},
        "log": {"to_db": True},
        "limits": {"max_wct_s": 60},
    }
    d.update(over)
    return d


def reporter_for(url, tmp_path, heartbeat_s=300.0, stops=None, **cfg):
    desc = parse_job_description(make_desc(url, heartbeat_s))
    config = SenderConfig(heartbeat_s=heartbeat_s, backoff_s=cfg.pop("backoff_s", 0.05),
                          backoff_max_s=cfg.pop("backoff_max_s", 0.2),
                          final_deadline_s=cfg.pop("final_deadline_s", 10.0))
    on_stop = stops.append if stops is not None else (lambda exc: None)
    return Reporter(desc, ServerClient(url, TOKEN, timeout=5), tmp_path, config=config,
                    on_stop=on_stop)


def journal_events(tmp_path):
    header, events = read_journal(tmp_path / JOURNAL_NAME)
    return header, events


def test_events_are_journaled_in_order_and_delivered_once(event_server, tmp_path):
    rep = reporter_for(event_server.url, tmp_path).start()
    for step in (Step.NODE_CHECKS, Step.SOFTWARE, Step.INPUTS):
        rep.step(step)
    rep.info("access: direct")
    rep.final(0, "E000 success", {"status": "done", "code": 0})
    assert rep.close(10) is True
    header, events = journal_events(tmp_path)
    assert header == {"journal": 1, "job": 42, "attempt": 1, "server": event_server.url}
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    parse_events(events)  # every journaled event passes the server's schema
    assert event_server.seqs() == [1, 2, 3, 4, 5]
    assert [e["step"] for e in events[:3]] == ["RUNNING-01", "RUNNING-02", "RUNNING-03"]
    assert event_server.finals()[0]["status"] == "done"


def test_event_is_fsynced_to_the_journal_before_it_is_sent(tmp_path):
    # Nobody listens on this port: the event can only be in the journal.
    rep = reporter_for("http://127.0.0.1:9", tmp_path).start()
    rep.step(Step.NODE_CHECKS)
    _, events = journal_events(tmp_path)
    assert [e["seq"] for e in events] == [1]
    assert rep.close(0.3) is False
    assert rep.backlog == 1


def test_server_down_for_part_of_the_job_every_event_arrives_once_in_order(event_server, tmp_path):
    rep = reporter_for(event_server.url, tmp_path).start()
    rep.step(Step.NODE_CHECKS)
    poll(lambda: event_server.seqs() == [1], what="first event")
    event_server.stop()
    for step in (Step.SOFTWARE, Step.INPUTS, Step.PAYLOAD):
        rep.step(step)
    poll(lambda: rep.backlog == 3, what="backlog of 3")
    event_server.start()                       # same port
    rep.step(Step.OUTPUTS)
    rep.final(0, "E000 success", {"status": "done", "code": 0})
    assert rep.close(10) is True
    assert event_server.seqs() == [1, 2, 3, 4, 5, 6]
    # The backlog went back in one request, not one per event.
    assert max(event_server.batches) >= 3
    assert event_server.finals()[0]["code"] == 0


def test_server_down_for_the_whole_job_then_replay_gives_the_same_record(tmp_path):
    server = EventServer().start()
    server.stop()                              # the port is known, nobody answers
    rep = reporter_for(server.url, tmp_path, final_deadline_s=0.5).start()
    for step in (Step.NODE_CHECKS, Step.SOFTWARE, Step.PAYLOAD):
        rep.step(step)
    rep.final(30, "E030 payload exited non-zero", {"status": "failed", "code": 30})
    assert rep.close() is False
    _, events = journal_events(tmp_path)
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    server.start()
    try:
        client = ServerClient(server.url, TOKEN)
        assert replay_journal(tmp_path / JOURNAL_NAME, client) == (4, 0)
        assert server.seqs() == [1, 2, 3, 4]
        assert server.finals()[0]["status"] == "failed"
        # A second replay changes nothing: the server is idempotent on (attempt, seq).
        assert replay_journal(tmp_path / JOURNAL_NAME, client) == (0, 4)
        assert [server.events[k] for k in server.order] == events
    finally:
        server.stop()


def test_heartbeats_carry_metrics_and_stdout_tail(event_server, tmp_path):
    rep = reporter_for(event_server.url, tmp_path, heartbeat_s=0.1)
    rep.probe = lambda: ({"wct_s": 1.5, "events": 7}, ["line 1", "line 2"])
    rep.start()
    rep.step(Step.PAYLOAD)
    poll(lambda: sum(1 for e in event_server.events.values() if e["kind"] == "heartbeat") >= 2,
         what="two heartbeats")
    rep.final(0, "E000 success", {"status": "done"})
    assert rep.close(10)
    beats = [e for e in event_server.events.values() if e["kind"] == "heartbeat"]
    assert beats[0]["metrics"] == {"wct_s": 1.5, "events": 7}
    assert beats[0]["tail"] == ["line 1", "line 2"]
    assert beats[0]["step"] == "RUNNING-04"
    assert event_server.seqs() == sorted(event_server.seqs())


def test_kill_command_in_a_reply_requests_a_stop(event_server, tmp_path):
    stops = []
    event_server.command = "kill"
    rep = reporter_for(event_server.url, tmp_path, stops=stops).start()
    rep.step(Step.PAYLOAD)
    poll(lambda: stops, what="stop request")
    assert isinstance(stops[0], KilledByManager) and stops[0].code == 62
    rep.step(Step.LOG)
    rep.final(62, "E062 killed", {"status": "sys-failed", "code": 62})
    assert rep.close(10)
    assert len(stops) == 1                     # one kill, however many replies carry it
    assert event_server.finals()[0]["code"] == 62


def test_superseded_attempt_stops_the_job_and_sending(event_server, tmp_path):
    stops = []
    event_server.current_attempt = 2
    rep = reporter_for(event_server.url, tmp_path, stops=stops).start()
    rep.step(Step.NODE_CHECKS)
    poll(lambda: stops, what="stop request")
    assert isinstance(stops[0], AttemptSuperseded) and stops[0].code == 61
    assert rep.superseded
    requests = event_server.requests
    rep.final(61, "E061", {"status": "sys-failed"})
    assert rep.close(2) is False
    assert event_server.requests == requests   # nothing more was sent
    assert event_server.events == {}


def test_a_restarted_reporter_continues_the_sequence(event_server, tmp_path):
    rep = reporter_for(event_server.url, tmp_path).start()
    rep.step(Step.NODE_CHECKS)
    assert rep.close(5)
    rep2 = reporter_for(event_server.url, tmp_path).start()
    rep2.step(Step.SOFTWARE)
    assert rep2.close(5)
    assert event_server.seqs() == [1, 2]
