"""Reporter: fsynced journal, in-order delivery through outages, replies that stop the job.

The events route is served by a small stdlib HTTP server that keeps the
server's promises (schema check with a 400 reply, idempotency on (attempt, seq),
409 for a superseded attempt, a body limit with 413, a `kill` command repeated
until an event acknowledges it) and can be stopped and started again on the
same port. tests/test_outbox_with_server.py and tests/test_wrapper_with_server.py
run the same scenarios against the real sbk.
"""
import json
import socket
import struct
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.errors import AttemptSuperseded, KilledByManager
from shared.events import MAX_BATCH_BYTES, parse_events
from shared.schema import SchemaError
from shared.jobdesc import parse_job_description
from shared.states import Step
from wrapper.client import ServerClient
from wrapper.report import (JOURNAL_NAME, Reporter, SenderConfig, load_journal, read_journal,
                            replay_journal)
from tests.waiting import poll  # noqa: F401 (also used by test_cli, test_runner)

TOKEN = "job-token-1"


class EventServer:
    """The events, log, fence and catalog routes of sbk, in memory; `stop()`/`start()` keep the port."""

    def __init__(self, job_id=42, current_attempt=1):
        self.job_id = job_id
        self.current_attempt = current_attempt
        self.events = {}          # (attempt, seq) -> event dict, stored once
        self.order = []           # keys in arrival order
        self.requests = 0
        self.batches = []         # sizes of accepted request bodies
        self.command = None
        self.ack_clears = True    # the command is repeated in replies until an event acks it
        self.acks = []            # (seq, ack) of the events that acknowledged a command
        self.max_body = None      # bytes; a larger events body is refused with 413
        self.cut_above = None     # bytes; a larger body is not read: the connection is reset
        self.bodies = []          # (HTTP status, body bytes) of every events post
        self.refusals = []        # (status, seqs) of the refused events posts
        self.poison = None        # an event with this message is refused as malformed (400)
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
                        body = json.loads(raw)
                        entries = []
                        for r in body if isinstance(body, list) else [body]:
                            entry = owner.catalog.setdefault(r["lfn"], {
                                "lfn": r["lfn"], "size": r["size"], "adler32": r["adler32"],
                                "replicas": []})
                            replica = {"site": r["site"], "surl": r["surl"]}
                            if replica not in entry["replicas"]:
                                entry["replicas"].append(replica)
                            entries.append(entry)
                        reply = {"files": entries, "created": len(entries)} if isinstance(body, list) else entries[0]
                        return self._reply(201, reply)
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
                if self.path == f"/api/v1/jobs/{owner.job_id}/attempt":   # the fence
                    with owner.lock:
                        return self._reply(200, {"job": owner.job_id, "attempt": owner.current_attempt,
                                                 "status": "running", "command": owner.command, "last_seq": 0})
                return self._catalog("GET", b"")

            def do_DELETE(self):
                return self._catalog("DELETE", b"")

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                if owner.cut_above is not None and length > owner.cut_above:
                    # Like a server that refuses a body by closing before reading it: a reset.
                    with owner.lock:
                        owner.bodies.append((None, length))
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                raw = self.rfile.read(length)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._reply(401, {"error": "bad-token", "message": "unknown token"})
                if self.path.startswith("/api/v1/catalog/"):
                    return self._catalog("POST", raw)
                if self.path != f"/api/v1/jobs/{owner.job_id}/events":
                    return self._reply(403, {"error": "forbidden", "message": self.path})
                body = json.loads(raw)
                seqs = [e.get("seq") for e in (body if isinstance(body, list) else [body])]

                def refuse(code, error, message):
                    with owner.lock:
                        owner.bodies.append((code, len(raw)))
                        owner.refusals.append((code, seqs))
                    return self._reply(code, {"error": error, "message": message})

                if owner.max_body is not None and len(raw) > owner.max_body:
                    return refuse(413, "too-large", f"the request body is larger than {owner.max_body} bytes")
                try:
                    events = parse_events(body)
                except SchemaError as exc:
                    return refuse(400, "schema-error", str(exc))
                if owner.poison is not None and any(e.message == owner.poison for e in events):
                    return refuse(400, "schema-error", f"'message' {owner.poison!r} is not allowed")
                with owner.lock:
                    owner.requests += 1
                    if any(e.attempt != owner.current_attempt for e in events):
                        return self._reply(409, {"error": "attempt-superseded",
                                                 "message": "attempt 1 is not current"})
                    owner.bodies.append((200, len(raw)))
                    new = 0
                    for e, d in zip(events, body if isinstance(body, list) else [body]):
                        if e.key not in owner.events:
                            owner.events[e.key] = d
                            owner.order.append(e.key)
                            new += 1
                        if e.ack:
                            owner.acks.append((e.seq, e.ack))
                            if owner.ack_clears and e.ack == owner.command:
                                owner.command = None
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
        result = replay_journal(tmp_path / JOURNAL_NAME, client)
        assert (result.accepted, result.duplicates, result.rejected) == (4, 0, [])
        assert result.delivered is True
        assert server.seqs() == [1, 2, 3, 4]
        assert server.finals()[0]["status"] == "failed"
        # A second replay changes nothing: the server is idempotent on (attempt, seq).
        again = replay_journal(tmp_path / JOURNAL_NAME, client)
        assert (again.accepted, again.duplicates, again.delivered) == (0, 4, True)
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
    # The wrapper says it heard the command: the server stops repeating it.
    poll(lambda: event_server.acks, what="the kill acknowledged")
    assert event_server.command is None
    rep.step(Step.LOG)
    rep.final(62, "E062 killed", {"status": "sys-failed", "code": 62})
    assert rep.close(10)
    assert len(stops) == 1
    assert event_server.finals()[0]["code"] == 62
    acks = [e for e in journal_events(tmp_path)[1] if e.get("ack")]
    assert [(e["kind"], e["ack"]) for e in acks] == [("info", "kill")]
    assert event_server.acks == [(acks[0]["seq"], "kill")]


def test_a_kill_repeated_in_every_reply_is_acted_on_and_acknowledged_once(event_server, tmp_path):
    stops = []
    event_server.command, event_server.ack_clears = "kill", False   # repeated whatever we say
    rep = reporter_for(event_server.url, tmp_path, stops=stops).start()
    for _ in range(5):
        rep.step(Step.PAYLOAD)
        poll(lambda: rep.backlog == 0, what="the step delivered")
    rep.final(62, "E062 killed", {"status": "sys-failed", "code": 62})
    assert rep.close(10) is True
    assert len(stops) == 1
    acks = [e for e in journal_events(tmp_path)[1] if e.get("ack")]
    assert len(acks) == 1 and event_server.acks == [(acks[0]["seq"], "kill")]


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


def test_a_restarted_reporter_after_a_torn_line_loses_no_new_event(event_server, tmp_path):
    rep = reporter_for(event_server.url, tmp_path).start()
    rep.step(Step.NODE_CHECKS)
    assert rep.close(5)
    with open(tmp_path / JOURNAL_NAME, "a") as fh:
        fh.write('{"attempt":1,"seq":2,"ti')          # a power cut mid-write
    rep2 = reporter_for(event_server.url, tmp_path).start()
    rep2.step(Step.SOFTWARE)
    rep2.final(0, "E000 success", {"status": "done", "code": 0})
    assert rep2.close(5)
    assert [e["seq"] for e in journal_events(tmp_path)[1]] == [1, 2, 3]
    assert event_server.seqs() == [1, 2, 3]


def test_a_restarted_reporter_continues_the_sequence(event_server, tmp_path):
    rep = reporter_for(event_server.url, tmp_path).start()
    rep.step(Step.NODE_CHECKS)
    assert rep.close(5)
    rep2 = reporter_for(event_server.url, tmp_path).start()
    rep2.step(Step.SOFTWARE)
    assert rep2.close(5)
    assert event_server.seqs() == [1, 2]


# ---------------------------------------------------------------------- the outbox's rules

def long_tail(lines=10, width=1000):
    return [f"{n:04d} " + "x" * (width - 5) for n in range(lines)]


def dark_server():
    """A stand-in whose port is known and where nobody answers yet."""
    server = EventServer().start()
    server.stop()
    return server


def delivered_bodies(server):
    return [size for status, size in server.bodies if status == 200]


def test_413_splits_the_backlog_and_every_event_arrives_below_the_limit(tmp_path):
    server = dark_server()
    server.max_body = 30_000
    rep = reporter_for(server.url, tmp_path)
    rep.probe = lambda: ({"wct_s": 1.0}, long_tail(10, 500))       # ~5 KB per step event
    rep.start()
    for n in range(8):                                             # ~48 KB of backlog
        rep.step(Step.PAYLOAD, f"step {n}")
    rep.final(0, "E000 success", {"status": "done", "code": 0})
    poll(lambda: rep.backlog == 9, what="the backlog")
    server.start()
    try:
        assert rep.close(10) is True
        assert server.seqs() == list(range(1, 10))
        assert 413 in [code for code, _ in server.refusals]
        assert max(delivered_bodies(server)) <= 30_000
        assert max(server.batches) >= 2                            # split, not one by one
        assert load_journal(tmp_path / JOURNAL_NAME).rejected == []
    finally:
        server.stop()


def test_one_event_larger_than_the_limit_is_rejected_and_marked_the_rest_go_on(tmp_path):
    server = dark_server()
    server.max_body = 30_000
    rep = reporter_for(server.url, tmp_path).start()
    rep.step(Step.INPUTS)
    rep.probe = lambda: ({}, long_tail(40, 1000))                   # ~40 KB alone
    rep.step(Step.PAYLOAD)
    rep.probe = lambda: ({}, [])
    rep.step(Step.OUTPUTS)
    rep.final(0, "E000 success", {"status": "done", "code": 0})
    server.start()
    try:
        assert rep.close(10) is True
        assert server.seqs() == [1, 3, 4]
        (mark,) = load_journal(tmp_path / JOURNAL_NAME).rejected
        assert (mark["rejected"], mark["status"], mark["error"]) == (2, 413, "too-large")
    finally:
        server.stop()


def test_a_malformed_event_in_a_backlog_is_rejected_and_marked_the_others_arrive(tmp_path):
    server = dark_server()
    server.poison = "refused by the server"
    rep = reporter_for(server.url, tmp_path).start()
    for n in range(12):
        rep.info("refused by the server" if n == 6 else f"fact {n}")
    rep.final(0, "E000 success", {"status": "done", "code": 0})
    server.start()
    try:
        assert rep.close(10) is True
        assert server.seqs() == [s for s in range(1, 14) if s != 7]
        journal = load_journal(tmp_path / JOURNAL_NAME)
        (mark,) = journal.rejected
        assert (mark["rejected"], mark["status"], mark["error"]) == (7, 400, "schema-error")
        assert "refused by the server" in mark["message"] and mark["time"] > 0
        # The journal still holds the event itself; the mark is not an event.
        assert [e["seq"] for e in journal.events] == list(range(1, 14))
        assert [e["seq"] for e in read_journal(tmp_path / JOURNAL_NAME)[1]] == list(range(1, 14))
    finally:
        server.stop()


def test_a_refused_final_is_not_delivered(event_server, tmp_path):
    rep = reporter_for(event_server.url, tmp_path).start()
    rep.step(Step.LOG)
    # Larger than the schema's 256 KiB for a report: the server refuses this final.
    rep.final(0, "E000 success", {"status": "done", "code": 0, "blob": "x" * 300_000})
    assert rep.close(10) is False
    assert event_server.seqs() == [1] and event_server.finals() == []
    (mark,) = load_journal(tmp_path / JOURNAL_NAME).rejected
    assert (mark["rejected"], mark["status"]) == (2, 400)


def test_heartbeats_of_an_outage_are_coalesced_the_journal_keeps_them(tmp_path):
    server = dark_server()
    rep = reporter_for(server.url, tmp_path).start()
    rep.step(Step.PAYLOAD)                      # 1
    for _ in range(5):
        rep.heartbeat()                         # 2-6
    rep.info("fallback SE used")                # 7
    rep.heartbeat()                             # 8
    rep.step(Step.OUTPUTS)                      # 9
    for _ in range(3):
        rep.heartbeat()                         # 10-12
    rep.final(0, "E000 success", {"status": "done", "code": 0})   # 13
    server.start()
    try:
        assert rep.close(10) is True
        assert server.seqs() == [1, 6, 7, 8, 9, 12, 13]
        assert [e["seq"] for e in journal_events(tmp_path)[1]] == list(range(1, 14))
    finally:
        server.stop()


def test_a_post_never_carries_more_than_max_batch_bytes(event_server, tmp_path):
    event_server.stop()
    rep = reporter_for(event_server.url, tmp_path)
    rep.probe = lambda: ({}, long_tail(20, 4000))                  # ~80 KB per event
    rep.start()
    for n in range(30):                                            # ~2.4 MB of backlog
        rep.step(Step.PAYLOAD, f"step {n}")
    rep.final(0, "E000 success", {"status": "done", "code": 0})
    event_server.start()
    assert rep.close(20) is True
    assert event_server.seqs() == list(range(1, 32))
    assert max(delivered_bodies(event_server)) <= MAX_BATCH_BYTES
    assert len(event_server.batches) <= 4                          # still batched: ~1 MiB each
    assert event_server.refusals == []


def test_a_server_that_resets_big_bodies_gets_smaller_ones(event_server, tmp_path):
    event_server.stop()
    event_server.cut_above = 100_000
    rep = reporter_for(event_server.url, tmp_path)
    rep.probe = lambda: ({}, long_tail(10, 4000))                  # ~40 KB per event
    rep.start()
    for n in range(10):
        rep.step(Step.PAYLOAD, f"step {n}")
    rep.final(0, "E000 success", {"status": "done", "code": 0})
    event_server.start()
    assert rep.close(20) is True
    assert event_server.seqs() == list(range(1, 12))
    assert max(delivered_bodies(event_server)) <= 100_000


def test_nul_characters_and_non_finite_metrics_do_not_make_an_event_malformed(event_server, tmp_path):
    rep = reporter_for(event_server.url, tmp_path)
    rep.probe = lambda: ({"wct_s": 2.0, "rate": float("inf"), "eff": float("nan")},
                         ["binary \x00 garbage"])
    rep.start()
    rep.step(Step.PAYLOAD, "a message with a \x00 in it")
    rep.final(0, "E000 success", {"status": "done", "code": 0})
    assert rep.close(10) is True
    assert event_server.seqs() == [1, 2] and event_server.refusals == []
    step = event_server.events[(1, 1)]
    assert step["metrics"] == {"wct_s": 2.0}
    assert "\x00" not in step["tail"][0] and "\x00" not in step["message"]


def test_replay_follows_the_same_rules_and_resends_what_was_rejected(tmp_path):
    server = dark_server()
    rep = reporter_for(server.url, tmp_path, final_deadline_s=0.3).start()
    rep.step(Step.PAYLOAD)                                         # 1
    rep.probe = lambda: ({}, long_tail(10, 1000))
    for _ in range(4):
        rep.heartbeat()                                            # 2-5
    rep.info("refused by the server")                              # 6
    for n in range(4):
        rep.step(Step.PAYLOAD, f"step {n}")                        # 7-10
    rep.final(30, "E030 payload exited non-zero", {"status": "failed", "code": 30})   # 11
    assert rep.close() is False
    journal = tmp_path / JOURNAL_NAME
    server.poison, server.max_body = "refused by the server", 30_000
    server.start()
    try:
        client = ServerClient(server.url, TOKEN)
        result = replay_journal(journal, client)
        assert server.seqs() == [1, 5, 7, 8, 9, 10, 11]
        assert (result.accepted, result.duplicates, result.coalesced) == (7, 0, 3)
        assert [r["rejected"] for r in result.rejected] == [6] and result.delivered is True
        assert 413 in [code for code, _ in server.refusals]
        assert max(delivered_bodies(server)) <= 30_000
        assert [m["rejected"] for m in load_journal(journal).rejected] == [6]
        # Replayed again, a rejected event is sent again (a fixed server may take it); the
        # journal does not get the same mark twice.
        server.poison = None
        again = replay_journal(journal, client)
        assert (again.accepted, again.duplicates, again.rejected) == (1, 7, [])
        assert server.seqs() == [1, 5, 7, 8, 9, 10, 11, 6]
        assert [m["rejected"] for m in load_journal(journal).rejected] == [6]
    finally:
        server.stop()


def test_replay_of_a_journal_whose_final_is_refused_says_so(tmp_path):
    server = dark_server()
    rep = reporter_for(server.url, tmp_path, final_deadline_s=0.3).start()
    rep.step(Step.LOG)
    rep.final(0, "E000 success", {"status": "done", "code": 0, "blob": "x" * 300_000})
    assert rep.close() is False
    server.start()
    try:
        result = replay_journal(tmp_path / JOURNAL_NAME, ServerClient(server.url, TOKEN))
        assert result.accepted == 1 and result.delivered is False
        assert [r["rejected"] for r in result.rejected] == [2]
    finally:
        server.stop()
