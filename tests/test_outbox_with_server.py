"""The outbox's rules over real processes: a real `sbk serve` with a small body limit, a real
XRootD SE, real `severus run` and `severus replay` processes (no stand-ins).

The payload prints long stdout lines, so every step and heartbeat event carries ~80 KB of
tail, and the server takes at most LIMIT bytes per request: one event fits, two do not.
The server is stopped mid-payload, so the backlog built during the outage is larger than
one post may be. Nothing may be dropped: the server ends up holding every journaled event
except the heartbeats coalesced away (each followed in the journal by a later one of the
same run), and the job's final report. tests/wrapper/test_report.py has the same rules
against a stdlib stand-in.
"""
import json
import subprocess
import sys

import pytest

from wrapper.report import JOURNAL_NAME, load_journal

from .test_end_to_end import prepare_job
from .test_wrapper_with_server import ROOT, finish, job, poll, record, server_world, start_wrapper

pytestmark = pytest.mark.timeout(240)

LIMIT = 120_000            # SBK_MAX_BODY_BYTES: one event with a full tail fits, two do not
LINE = 4000                # characters per stdout line (the events keep at most 4096)

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """test_wrapper_with_server's world, with the body limit."""
    with server_world(tmp_path_factory.mktemp("outbox"), SBK_MAX_BODY_BYTES=str(LIMIT)) as world:
        yield world


def chatty_job(live, name, event_time):
    """A job whose payload prints 5 long lines per event and takes 50 x `event_time` seconds."""
    version = f"V9.1.{next(live['versions'])}"
    return prepare_job(live, name, software_version=version,
                       env={"TOY_EVENT_TIME": str(event_time), "TOY_LINE_BYTES": str(LINE)})


def body_bytes(events):
    return len(json.dumps(events, separators=(",", ":")))


def assert_nothing_dropped(history, journal):
    """The server holds the journal's events, less heartbeats each followed by a heartbeat."""
    assert journal.rejected == []
    events = journal.events
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    held = {seq for seq, *_ in record(history)}
    missing = [e for e in events if e["seq"] not in held]
    after = {e["seq"]: nxt for e, nxt in zip(events, events[1:])}
    for e in missing:
        assert e["kind"] == "heartbeat" and after[e["seq"]]["kind"] == "heartbeat", e["seq"]
    kept = [e for e in events if e["seq"] in held]
    assert record(history) == [(e["seq"], e["kind"], e["status"], e["step"], e.get("code")) for e in kept]
    tails = {e["seq"]: e["tail"] for e in history if e["attempt"] == 1}
    assert [tails[e["seq"]] for e in kept] == [e.get("tail", []) for e in kept]
    return missing


def coalescible(events):
    """The heartbeats a sender coalesces away when all of `events` are in its backlog."""
    return [e for e, nxt in zip(events, events[1:]) if e["kind"] == nxt["kind"] == "heartbeat"]


def test_outage_with_long_tails_every_event_arrives_split_below_the_limit(live, tmp_path):
    sbk = live["sbk"]
    job_id, desc = chatty_job(live, "OB_outage", event_time=0.15)       # a ~7.5 s payload
    proc = start_wrapper(tmp_path, desc, live["site_config"])
    journal_path = tmp_path / "work" / JOURNAL_NAME
    try:
        poll(lambda: job(live, job_id)["step"] == "RUNNING-04", what="the payload step on the server")
        before = max(e["seq"] for e in job(live, job_id)["history"])
        sbk.stop()
        # Down until the payload is over and its outputs are being stored: the backlog holds
        # heartbeats and steps, each with a tail of long lines.
        poll(lambda: any(e["step"] == "RUNNING-05" for e in load_journal(journal_path).events),
             timeout=90, what="the stage-out step in the journal")
        sbk.start()
    finally:
        code, out, err = finish(proc, timeout=180)
    assert code == 0, err
    info = job(live, job_id)
    assert (info["status"], info["error_code"]) == ("done", 0)
    assert info["report"]["status"] == "done"
    journal = load_journal(journal_path)
    missing = assert_nothing_dropped(info["history"], journal)
    # The outage's heartbeats went as the last of each run, and the backlog did not fit in
    # one post: the server said 413 and the wrapper split it.
    outage = [e for e in journal.events if e["seq"] > before]
    assert sum(1 for e in outage if e["kind"] == "heartbeat") >= 3 and missing
    assert body_bytes([e for e in outage if e not in missing]) > LIMIT
    assert "as too large" in (tmp_path / "work" / "severus.log").read_text()
    assert journal.events[-1]["kind"] == "final" and record(info["history"])[-1][1:] == (
        "final", "done", "RUNNING-07", 0)


def test_replay_of_a_journal_made_with_the_server_down_delivers_under_the_limit(live, tmp_path):
    sbk = live["sbk"]
    job_id, desc = chatty_job(live, "OB_replay", event_time=0.05)       # a ~2.5 s payload
    # Registration waits 3 s for the server, not 120: the job ends while the server is down.
    site_config = tmp_path / "site.toml"
    site_config.write_text(live["site_config"].read_text() + "\n[wrapper]\nserver_wait_s = 3\n")
    proc = start_wrapper(tmp_path, desc, site_config, "--final-deadline", "2")
    try:
        poll(lambda: job(live, job_id)["step"] == "RUNNING-04", what="the payload step on the server")
        sbk.stop()
    finally:
        try:
            code, out, err = finish(proc, timeout=180)
        finally:
            sbk.start()
    journal_path = tmp_path / "work" / JOURNAL_NAME
    events = load_journal(journal_path).events
    final = events[-1]
    assert final["kind"] == "final" and code == final["code"] != 0, err
    assert "not delivered" in err
    held_before = {seq for seq, *_ in record(job(live, job_id)["history"])}
    assert final["seq"] not in held_before
    coalesced = {e["seq"] for e in coalescible(events)}
    # What replay sends (heartbeat runs coalesced) is far more than one post may carry.
    assert body_bytes([e for e in events if e["seq"] not in coalesced]) > 2 * LIMIT
    replay = subprocess.run([sys.executable, "-m", "wrapper", "replay", str(journal_path),
                             "--job-file", str(tmp_path / "job.json")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr
    info = job(live, job_id)
    assert (info["status"], info["error_code"]) == (final["status"], final["code"])
    assert info["report"]["failed_step"] == final["report"]["failed_step"]
    assert_nothing_dropped(info["history"], load_journal(journal_path))
    sent = len(events) - len(coalesced)
    known = len(held_before - coalesced)
    assert (f"{sent - known} new event(s), {known} already known, "
            f"{len(coalesced)} heartbeat(s) coalesced") in replay.stdout
    again = subprocess.run(replay.args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"0 new event(s), {sent} already known" in again.stdout
