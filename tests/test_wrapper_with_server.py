"""The reporter's promises over a real `sbk serve`, a real XRootD SE and real `severus run` processes.

tests/wrapper/test_report.py proves the same with a stdlib stand-in; here the
server process is stopped and started again on its port and database, a
manager kills a running job, and a resubmission supersedes a running attempt.
The server writes heartbeat_s = 0.5 into the descriptions (SBK_HEARTBEAT_S),
so replies, and the commands in them, come within a second.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from server import demo as d
from tests import waiting
from server.toy_release import build_toy_release
from server.xrootd_se import free_port
from wrapper.report import JOURNAL_NAME, read_journal

from .test_end_to_end import prepare_job

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent
HEARTBEAT_S = 0.5


def poll(predicate, timeout=30.0, what="condition"):
    """The shared poll with this module's longer default (server restarts)."""
    return waiting.poll(predicate, timeout, what, interval=0.05)


class Sbk:
    """`sbk serve` as a process that can be stopped and started again on the same port and DB."""

    def __init__(self, base):
        self.base = base
        self.env = dict(os.environ, SBK_DB=f"sqlite:///{base / 'sbk.db'}",
                        SBK_HEARTBEAT_S=str(HEARTBEAT_S),
                        # The outages below are seconds long: the reaper must not call them timeouts.
                        SBK_HEARTBEAT_MULTIPLE="1000")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.starts = 0
        self.token = ""

    def start(self):
        self.starts += 1
        log = open(self.base / f"sbk-serve.{self.starts}.log", "w")
        self.proc = subprocess.Popen(
            d.sbk_command() + ["serve", "--port", str(self.port), "--workers", "2", "--public-url", self.url],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        log.close()

        def healthy():
            assert self.proc.poll() is None, (self.base / f"sbk-serve.{self.starts}.log").read_text()
            try:
                return requests.get(f"{self.url}/api/v1/health", timeout=1).ok
            except requests.RequestException:
                return False
        poll(healthy, what="sbk serve to answer")

    def stop(self):
        if self.proc is not None:
            d.stop_process_group(self.proc)
        self.proc = None

    def kill(self):
        """SIGKILL the whole server (gunicorn master and workers) at once: no goodbyes."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def server_world(base, **env):
    """A real server (restartable, `env` added to its settings), a real SE with the toy release on
    it, the FastSim session with a defined production; as a dict for the tests."""
    demo = d.Demo(base=base)
    sbk = Sbk(base)
    sbk.env.update(env)
    try:
        site_config = d.start_storage(demo, d.Progress())
        out = subprocess.run(d.sbk_command() + ["user", "add", "mgr", "--groups", "Developer"],
                             env=sbk.env, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        sbk.token = out.stdout.strip().splitlines()[-1]
        sbk.start()
        api = d.Api(sbk.url, sbk.token)
        release = build_toy_release(base)
        d.upload_release(release, demo.se_door, api)
        d.define_production(api, release, jobs=1, events=50)
        yield {"demo": demo, "sbk": sbk, "api": api, "release": release, "site_config": site_config,
               "export": demo.se.export, "versions": iter(range(1, 100))}
    finally:
        sbk.stop()
        demo.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A real server (restartable), a real SE with the toy release, a defined production."""
    with server_world(tmp_path_factory.mktemp("wsrv")) as world:
        yield world


def slow_job(live, name, event_time):
    """A job whose toy payload takes 50 x `event_time` seconds; (job id, description)."""
    version = f"V9.0.{next(live['versions'])}"
    return prepare_job(live, name, software_version=version, env={"TOY_EVENT_TIME": str(event_time)})


def start_wrapper(tmp_path, description, site_config, *extra):
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(description))
    return subprocess.Popen(
        [sys.executable, "-m", "wrapper", "run", str(job_file), "--site-config", str(site_config),
         "--workdir", str(tmp_path / "work"), "--sample-s", "0.2", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=90):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def job(live, job_id):
    return live["api"].call("GET", f"/jobs/{job_id}")


def in_payload(live, job_id):
    return lambda: job(live, job_id)["step"] == "RUNNING-04"


def wrapper_events(tmp_path):
    return read_journal(tmp_path / "work" / JOURNAL_NAME)[1]


def record(history, attempt=1):
    """The wrapper's events as the server keeps them (its own seq-0 events left out)."""
    return [(e["seq"], e["kind"], e["status"], e["step"], e["code"]) for e in history
            if e["attempt"] == attempt and e["seq"] > 0]


def journal_record(events):
    return [(e["seq"], e["kind"], e["status"], e["step"], e.get("code")) for e in events]


def coalescible(events):
    """Seqs of the heartbeats a sender may coalesce away: each followed by another heartbeat."""
    return {e["seq"] for e, nxt in zip(events, events[1:]) if e["kind"] == nxt["kind"] == "heartbeat"}


def test_server_down_mid_payload_every_event_arrives_once_in_order(live, tmp_path):
    sbk = live["sbk"]
    job_id, desc = slow_job(live, "WS_outage", event_time=0.1)   # a 5 s payload
    proc = start_wrapper(tmp_path, desc, live["site_config"])
    try:
        poll(in_payload(live, job_id), what="the payload step on the server")
        before = max(e["seq"] for e in job(live, job_id)["history"])
        sbk.stop()
        # The wrapper keeps journaling (heartbeats every 0.5 s) while nobody answers.
        poll(lambda: wrapper_events(tmp_path)[-1]["seq"] >= before + 3, what="events kept during the outage")
        kept = [e["seq"] for e in wrapper_events(tmp_path) if e["seq"] > before]
        sbk.start()
    finally:
        code, out, err = finish(proc)
    assert code == 0, err
    info = job(live, job_id)
    assert (info["status"], info["error_code"]) == ("done", 0)
    events = wrapper_events(tmp_path)
    got = record(info["history"])
    # Exactly once: the server holds each journaled event but the outage's coalesced
    # heartbeats (each followed by a later one), and nothing else.
    held = {s for s, *_ in got}
    assert got == journal_record([e for e in events if e["seq"] in held])
    assert set(range(1, len(events) + 1)) - held <= coalescible(events)
    # The heartbeats of the outage were not replayed one by one: at most the last one went.
    assert len(set(kept) & held) <= 1
    # In order: the server received them in seq order.
    received = {e["seq"]: e["received_at"] for e in info["history"] if e["attempt"] == 1 and e["seq"] > 0}
    assert [received[s] for s, *_ in got] == sorted(received[s] for s, *_ in got)
    assert got[-1][1:] == ("final", "done", "RUNNING-07", 0)


def test_server_down_for_the_whole_job_then_replay_gives_the_same_record(live, tmp_path):
    sbk = live["sbk"]
    job_id, desc = slow_job(live, "WS_dark", event_time=0)
    sbk.stop()
    try:
        proc = start_wrapper(tmp_path, desc, live["site_config"], "--final-deadline", "2")
        code, out, err = finish(proc)
    finally:
        sbk.start()
    events = wrapper_events(tmp_path)
    final = events[-1]
    # Without the catalog the software cannot be found: a job failure the server must learn of.
    assert final["kind"] == "final" and code == final["code"] != 0
    assert "not delivered" in err
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert job(live, job_id)["history"] == []   # the server heard nothing
    replay = subprocess.run([sys.executable, "-m", "wrapper", "replay", str(tmp_path / "work" / JOURNAL_NAME),
                             "--job-file", str(tmp_path / "job.json")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert replay.returncode == 0, replay.stderr
    coalesced = coalescible(events)
    sent = [e for e in events if e["seq"] not in coalesced]
    assert (f"{len(sent)} new event(s), 0 already known, {len(coalesced)} heartbeat(s) coalesced"
            if coalesced else f"{len(sent)} new event(s), 0 already known") in replay.stdout
    info = job(live, job_id)
    assert record(info["history"]) == journal_record(sent)
    assert (info["status"], info["error_code"]) == (final["status"], final["code"])
    assert info["report"]["failed_step"] == final["report"]["failed_step"] == "RUNNING-02"
    again = subprocess.run(replay.args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert f"0 new event(s), {len(sent)} already known" in again.stdout


def test_kill_command_from_the_real_server_is_062_with_the_log(live, tmp_path):
    job_id, desc = slow_job(live, "WS_kill", event_time=1)   # 50 s unless killed
    proc = start_wrapper(tmp_path, desc, live["site_config"])
    try:
        poll(in_payload(live, job_id), what="the payload step on the server")
        started = time.monotonic()
        reply = live["api"].call("POST", f"/jobs/{job_id}/kill")
        assert reply["command"] == "kill"
    finally:
        code, out, err = finish(proc)
    assert code == 62, err
    # Stopped by the command in a heartbeat's reply, long before the 50 s payload would end.
    assert time.monotonic() - started < 40
    info = job(live, job_id)
    assert (info["status"], info["error_code"]) == ("sys-failed", 62)
    assert info["report"]["failed_step"] == "RUNNING-04"
    assert info["report"]["log"]["lfn"].endswith(".1.log.tgz") and info["logs"]
    log_rel = info["report"]["log"]["lfn"][len(f"lfn:{d.LFN_PREFIX}/"):]
    assert (live["export"] / log_rel).is_file()
    assert not [o for o in info["outputs"] if o["lfn"].endswith(".root")]
