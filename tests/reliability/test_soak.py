"""The life-cycle soak (issue 12): production's daily weather, all at once, on real processes.

Jobs with slow payloads and several output files run through `sbk serve`'s local backend
(`severus run` processes) against a real XRootD SE. For a while, at random moments: managers
resubmit failed jobs and kill running ones, the batch system TERMs wrappers, `sbk serve` is
SIGKILLed and started again, the SE is stopped and started. Then, once the weather is over
and every job has ended, the invariants:

- every job is final (or running its newest attempt);
- the catalog equals the SE for every replica (size by xrdfs, adler32 by xrdadler32: the SE's
  own tools, not our code);
- no file below the outputs is on the SE without being registered or on a removal list (after
  one `sbk cleanup` pass);
- every event the server acknowledged is stored once, as the wrapper journaled it;
- no payload or wrapper process is left on the machine.

The random seed is printed (and in every failure message); SEVERUS_SOAK_SEED=N replays a run.
`make test` runs a short weather on SQLite and PostgreSQL; `make reliability` a long one.
"""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from server import demo as d
from server.xrootd_se import start_se
from wrapper.report import load_journal

from .conftest import ROOT, make_world, poll

pytestmark = pytest.mark.timeout(1500)

FINAL = ("done", "failed", "sys-failed", "timeout")
RESUBMITTABLE = ("failed", "sys-failed", "timeout")
SHORT = {"jobs": 8, "weather_s": 25.0}
FULL = {"jobs": 30, "weather_s": 120.0}
OUTPUTS = 3                   # output files per job besides <runnum>.root
GRACE_S = 10                  # the site's stop_grace_s
TOY = {"TOY_EVENT_TIME": "0.1", "TOY_OUTPUTS": str(OUTPUTS), "TOY_OUTPUT_BYTES": "150000"}   # a 5 s payload


class Weather:
    """The random faults, each a method; what happened is kept in `log` for the failure message."""

    def __init__(self, world, rng, sandboxes):
        self.world, self.rng, self.sandboxes = world, rng, sandboxes
        self.log = []
        self.last_server_kill = 0.0
        self.counts = {}

    def note(self, what, action=None):
        """Log `what`; count it as one `action` (a fault that happened) when given."""
        self.log.append(f"{time.strftime('%H:%M:%S')} {what}")
        if action:
            self.counts[action] = self.counts.get(action, 0) + 1

    def jobs(self, statuses):
        try:
            page = self.world.api.call("GET", "/jobs", params={"status": ",".join(statuses), "per_page": 1000})
        except Exception:   # the server is down right now: this fault waits for another moment
            return []
        return [j["id"] for j in page["jobs"]]

    def resubmit(self):
        ids = self.jobs(RESUBMITTABLE)
        if ids:
            job_id = self.rng.choice(ids)
            try:
                self.world.api.call("POST", f"/jobs/{job_id}/resubmit", json={"backend": "local"})
                self.note(f"resubmit {job_id}", "resubmit")
            except Exception as exc:
                self.note(f"resubmit-refused {job_id}: {str(exc)[:80]}")

    def kill(self):
        ids = self.jobs(("submitted", "running"))
        if ids:
            job_id = self.rng.choice(ids)
            try:
                self.world.api.call("POST", f"/jobs/{job_id}/kill")
                self.note(f"kill {job_id}", "kill")
            except Exception as exc:
                self.note(f"kill-refused {job_id}: {str(exc)[:80]}")

    def term(self):
        procs = wrappers(self.sandboxes)
        if procs:
            proc = self.rng.choice(procs)
            try:
                proc.send_signal(signal.SIGTERM)
                self.note(f"term wrapper {proc.pid}", "TERM")
            except psutil.Error:
                pass

    def server(self):
        if time.monotonic() - self.last_server_kill < 8:
            return
        self.last_server_kill = time.monotonic()
        self.world.server.kill(signal.SIGKILL)
        self.note("server SIGKILLed", "server SIGKILL")
        self.world.server.start()
        self.note("server started")

    def se(self):
        self.world.se.stop()
        self.note("se stopped", "SE stop")
        time.sleep(self.rng.uniform(0.5, 2.5))   # how long it stays down: part of the weather
        self.world.se.start()
        self.note("se started")

    def blow(self, seconds):
        actions = [(self.resubmit, 30), (self.kill, 12), (self.term, 25), (self.server, 15), (self.se, 10)]
        funcs, weights = zip(*actions)
        began = time.monotonic()
        end = began + seconds
        while time.monotonic() < end:
            time.sleep(self.rng.uniform(0.3, 1.5))   # the time between two faults: part of the weather
            if not self.last_server_kill and time.monotonic() > began + seconds / 2:
                self.server()   # every weather has at least one server crash
                continue
            self.rng.choices(funcs, weights)[0]()

    def retry_failed(self):
        """After the weather, a shift resubmits what failed for a reason a retry may cure."""
        codes = {c["code"]: c["retryable"] for c in self.world.api.call("GET", "/error-codes")}
        jobs = self.world.api.call("GET", "/jobs", params={"status": ",".join(RESUBMITTABLE), "per_page": 1000})
        for j in jobs["jobs"]:
            if codes.get(j["error_code"]):
                self.world.api.call("POST", f"/jobs/{j['id']}/resubmit", json={"backend": "local"})
                self.note(f"retry {j['id']}", "retry after")


def wrappers(sandboxes):
    """The live `severus run` processes of this soak (the local backend runs them in its sandboxes)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE or not info["cmdline"]:
            continue
        if "wrapper" in info["cmdline"] and "run" in info["cmdline"] and str(info["cwd"] or "").startswith(
                str(sandboxes)):
            found.append(proc)
    return found


def left_processes(base):
    """Wrappers and payloads of this soak still alive (their command line or directory is below `base`)."""
    left = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue
        where = " ".join(info["cmdline"] or []) + " " + str(info["cwd"] or "")
        if str(base) in where and ("wrapper" in where or "PacProduction" in where):
            left.append(f"{proc.pid} {' '.join(info['cmdline'] or [])[:120]}")
    return left


def settle(world, seed, deadline_s=240):
    """Wait until every job is final, doing what a shift would: a job left prepared (its hand-off
    died with the server) is killed and resubmitted."""
    api = world.api
    deadline = time.monotonic() + deadline_s
    while True:
        jobs = api.call("GET", "/jobs", params={"per_page": 1000})["jobs"]
        waiting = [j for j in jobs if j["status"] not in FINAL]
        if not waiting:
            return jobs
        for j in waiting:
            if j["status"] == "prepared":
                api.call("POST", f"/jobs/{j['id']}/kill")
                api.call("POST", f"/jobs/{j['id']}/resubmit", json={"backend": "local"})
        if time.monotonic() > deadline:
            raise AssertionError(f"seed {seed}: not final after the weather: "
                                 + ", ".join(f"{j['id']} {j['status']} {j['step']}" for j in waiting))
        time.sleep(1.0)   # polling interval; the deadline bounds the wait


def xrd(se, *args):
    return subprocess.run(["xrdfs", f"root://127.0.0.1:{se.root_port}", *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, XRD_CONNECTIONRETRY="1"))


def check_catalog_equals_se(world, production, seed):
    """(files on the SE below the outputs, registered SURLs); every replica's size and adler32 checked."""
    se = world.se
    files = world.api.call("GET", "/catalog/files", params={"dir": world.output_lfn(production)})["files"]
    registered = set()
    for f in files:
        for r in f["replicas"]:
            registered.add(r["surl"])
            path = "/" + r["surl"].split(f":{se.root_port}/", 1)[1].lstrip("/")
            stat = xrd(se, "stat", path)
            assert stat.returncode == 0, f"seed {seed}: {f['lfn']}: its replica {r['surl']} is not on the SE"
            assert f"Size:   {f['size']}" in stat.stdout, f"seed {seed}: {f['lfn']} size: {stat.stdout}"
            out = subprocess.run(["xrdadler32", r["surl"]], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0 and out.stdout.split()[0] == f["adler32"], \
                f"seed {seed}: {f['lfn']}: catalog adler32 {f['adler32']}, the SE's file {out.stdout.strip()}"
    on_se = set()
    root = se.export / f"production/FastSim/{production}/output"
    for dirpath, _, names in os.walk(root):
        for name in names:
            on_se.add(str(Path(dirpath) / name))
    return on_se, registered


def check_events(world, sandboxes, seed):
    """Every event the server holds was journaled by a wrapper, once; every step, info and final event
    up to the last one the server holds of an attempt is there (heartbeats may be coalesced away)."""
    from server import db
    from server import models as m
    journals = list(Path(sandboxes).glob("*/work-*/severus-journal.jsonl"))
    assert journals, f"seed {seed}: no journal found"
    db.bind(world.server.db_url)
    checked = 0
    with db.connection():
        for path in journals:
            header, events, rejected = load_journal(path)
            assert not rejected, f"seed {seed}: {path}: events rejected by the server: {rejected}"
            stored = {e.seq: e for e in m.Event.select().where(
                (m.Event.job == header["job"]) & (m.Event.attempt == header["attempt"]) & (m.Event.seq > 0))}
            journaled = {e["seq"]: e for e in events}
            assert set(stored) <= set(journaled), f"seed {seed}: {path}: stored events no wrapper journaled"
            last = max(stored, default=0)
            for seq, e in journaled.items():
                if seq <= last and e["kind"] != "heartbeat":
                    assert seq in stored, f"seed {seed}: {path}: {e['kind']} seq {seq} acknowledged, not stored"
                    s = stored[seq]
                    assert (s.kind, s.status, s.code) == (e["kind"], e["status"], e.get("code")), (seed, path, seq)
                    checked += 1
        dups = (m.Event.select(m.Event.job, m.Event.attempt, m.Event.seq).group_by(m.Event.job, m.Event.attempt,
                                                                                   m.Event.seq)
                .having(m.fn.COUNT(m.Event.id) > 1).count())
        assert dups == 0, f"seed {seed}: {dups} events stored twice"
    return checked, len(journals)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_life_cycle_soak(database, tmp_path, request, full, figures):
    size = FULL if full else SHORT
    seed = int(os.environ.get("SEVERUS_SOAK_SEED") or random.SystemRandom().randrange(10 ** 6))
    print(f"\nsoak seed {seed} ({database}); replay with SEVERUS_SOAK_SEED={seed}", file=sys.stderr)
    rng = random.Random(seed)
    db_url = request.getfixturevalue("pg").new_database() if database == "postgresql" else None
    se = start_se(tmp_path / "se", name="se-soak")
    base = tmp_path / "srv"
    base.mkdir()
    sandboxes = tmp_path / "sandboxes"
    env = {"SBK_HEARTBEAT_S": "1", "SBK_HEARTBEAT_MULTIPLE": "15", "SBK_REAP_INTERVAL_S": "2",
           "SBK_BACKEND_SITE_CONFIGS": str(base), "SBK_BACKEND_SANDBOX_DIR": str(sandboxes),
           "SBK_BACKEND_LOCAL_MAX_PARALLEL": str(size["jobs"] + 10), "SBK_BATCH_POLL_INTERVAL_S": "3",
           "SBK_BATCH_GRACE_S": "20", "SBK_CLEANUP_INTERVAL_S": "5"}
    site = (f"[transfer]\nretries = 1\nbackoff_s = 0.5\nprobe_timeout_s = 3\ntimeout_base_s = 20\n"
            f"[wrapper]\nstop_grace_s = {GRACE_S}\nserver_wait_s = 30\n")
    world = make_world(base, se, env, db_url=db_url, site_extra=site)
    weather = Weather(world, rng, sandboxes)
    production = "SOAK"
    try:
        api = world.api
        api.call("POST", "/sessions/FastSim/software", json={
            "name": "PacProductionApp", "version": "V9.soak", "revision": 311, "lfn": d.SOFTWARE_LFN,
            "adler32": world.release.adler32, "workdir": world.release.workdir, "exe": world.release.exe,
            "env": TOY})
        api.call("POST", "/productions", json={"name": production, "session": "FastSim", "version": "V9.soak",
                                               "revision": 311})
        req = api.call("POST", "/requests", json={
            "production": production, "min_runnum": 40000000, "events_per_job": 50, "parameters": d.PARAMETERS,
            "input_mode": "NONE", "output_lfn": world.output_lfn(production), "output_sites": [d.SITE],
            "max_wct_s": 600})
        api.call("PATCH", f"/requests/{req['id']}", json={"status": "valid"})
        api.call("POST", "/submissions", json={"production": production, "backend": "local", "bulks": [
            {"request": req["id"], "sites": [d.SITE], "runs": size["jobs"], "events": 50, "log_to_db": True}]})
        began = time.monotonic()
        weather.blow(size["weather_s"])
        if not world.se.alive():
            world.se.start()
        settle(world, seed)
        weather.retry_failed()   # calm weather: retries now may end done, over what earlier attempts left
        jobs = settle(world, seed)
        took = time.monotonic() - began
        context = f"seed {seed}; weather: " + "; ".join(weather.log[-40:])
        # No process of the soak is left: wrappers and payloads all ended.
        poll(lambda: not left_processes(tmp_path), 60, f"the soak's processes to end ({context})")
        # One removal pass (the SE is up): what stays unregistered must still be asked for.
        out = subprocess.run([sys.executable, "-m", "server.cli", "cleanup"], cwd=ROOT, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "SBK_DB": world.server.db_url})
        assert out.returncode == 0, out.stderr
        on_se, registered = check_catalog_equals_se(world, production, seed)
        pending = set()
        for j in jobs:
            for r in world.job(j["id"])["removals"]:
                if r["state"] in ("pending", "manual"):
                    pending.add(r["surl"])
        named = {s.split(f":{se.root_port}/", 1)[1].lstrip("/") for s in registered | pending}
        orphans = sorted(f for f in on_se if f.lstrip("/") not in named)
        assert not orphans, f"on the SE, neither registered nor on a removal list: {orphans[:10]} ({context})"
        checked, journals = check_events(world, sandboxes, seed)
        statuses = {}
        for j in jobs:
            statuses[j["status"]] = statuses.get(j["status"], 0) + 1
        attempts = sum(j["attempt"] for j in jobs)
    finally:
        world.server.stop()
        se.stop()
    figures(f"life-cycle soak, {database}",
            f"{size['jobs']} jobs, {size['weather_s']:.0f} s: " + ", ".join(f"{k} x{v}" for k, v in
                                                                         sorted(weather.counts.items())),
            "all final; catalog = SE (xrdadler32); no orphan file; events once; no process left",
            f"seed {seed}; {attempts} attempts, {statuses}; {len(registered)} replicas; {checked} events in "
            f"{journals} journals; {took:.0f} s")
