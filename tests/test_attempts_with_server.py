"""Attempts you can trust, over real processes: a real `sbk serve` (restarted when a test says
so), a real XRootD SE (behind a loopback proxy when a test needs a slow or dying door),
`severus run` started by hand or by the server's local backend, `sbk` commands.

Each test is a finding of issue 12 as production meets it: resubmits, a description read while
the job is queued, a partitioned attempt that comes back, a retry after registered outputs,
the batch system's TERM mid-transfer, a lost reply carrying a kill, an SE dying between two
uploads. What is on the SE is checked with the SE's own tools (xrdfs, xrdadler32).
"""
import http.client
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from server import demo as d
from server.xrootd_se import start_se
from tests.proxies import TcpProxy
from tests.test_wrapper_with_server import HEARTBEAT_S, finish, poll, server_world

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 10      # the sites' stop_grace_s here: a stop must be over well within it


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """test_wrapper_with_server's world, with the server's local backend and no cleaner thread
    (the tests run `sbk cleanup` when they want a removal pass)."""
    base = tmp_path_factory.mktemp("attempts")
    with server_world(base, SBK_BACKEND_SITE_CONFIGS=str(base / "site_configs"),
                      SBK_BACKEND_SANDBOX_DIR=str(base / "sandboxes"), SBK_CLEANUP_INTERVAL_S="0") as w:
        yield World(base, w["demo"], w["sbk"], w["api"], w["site_config"], w["release"])


class World:
    def __init__(self, base, demo, sbk, api, site_config, release):
        self.base, self.demo, self.sbk, self.api, self.site_config = base, demo, sbk, api, site_config
        self.se, self.release = demo.se, release

    def sbk_run(self, *args, **env):
        """An `sbk` command against this server's database or URL; (exit code, stdout + stderr)."""
        out = subprocess.run(d.sbk_command() + list(args), cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env=dict(self.sbk.env, SBK_URL=self.sbk.url, SBK_TOKEN=self.sbk.token, **env))
        return out.returncode, out.stdout + out.stderr

    def request(self, production, env=None, outputs=(), events=50, input_mode="NONE", input_paths=()):
        """A production of its own with one valid request whose release runs the toy with `env`."""
        version = f"V9.1.{abs(hash(production)) % 100000}"
        self.api.call("POST", "/sessions/FastSim/software", json={
            "name": "PacProductionApp", "version": version, "revision": 311, "lfn": d.SOFTWARE_LFN,
            "adler32": self.api.call("GET", "/catalog/replicas", params={"lfn": d.SOFTWARE_LFN})["adler32"],
            "workdir": "FastSim/V0.2.5", "exe": "bin/PacProduction", "env": dict(env or {})})
        self.api.call("POST", "/productions", json={"name": production, "session": "FastSim",
                                                    "version": version, "revision": 311})
        request = self.api.call("POST", "/requests", json={
            "production": production, "min_runnum": 30000000 + abs(hash(production)) % 1000000,
            "events_per_job": events, "parameters": d.PARAMETERS, "input_mode": input_mode,
            "input_paths": list(input_paths), "output_lfn": self.output_lfn(production),
            "output_sites": list(outputs) or [d.SITE], "max_wct_s": 600})
        self.api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})
        return request["id"]

    @staticmethod
    def output_lfn(production):
        return f"lfn:{d.LFN_PREFIX}/production/FastSim/{production}/output"

    def export_dir(self, production, se=None):
        return (se or self.se).export / f"production/FastSim/{production}/output"

    def submit(self, request_id, production, backend=None, events=50, runs=1):
        """Prepare `runs` jobs (handed to `backend` in one call when given); the first id, or all."""
        body = {"production": production, "bulks": [{"request": request_id, "sites": [d.SITE], "runs": runs,
                                                      "events": events, "log_to_db": True}]}
        if backend:
            body["backend"] = backend
        ids = self.api.call("POST", "/submissions", json=body)["job_ids"]
        return ids[0] if runs == 1 else ids

    def job(self, job_id):
        return self.api.call("GET", f"/jobs/{job_id}")

    def catalog(self, production):
        return self.api.call("GET", "/catalog/files", params={"dir": self.output_lfn(production)})["files"]


def start_wrapper(tmp_path, description, site_config, name="work", env=None):
    job_file = tmp_path / f"{name}.json"
    job_file.write_text(json.dumps(description))
    return subprocess.Popen(
        [sys.executable, "-m", "wrapper", "run", str(job_file), "--site-config", str(site_config),
         "--workdir", str(tmp_path / name), "--sample-s", "0.2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, **(env or {})))


def terminate(wrapper):
    """SIGTERM, as a batch system does, and wait for the end: (exit code, stderr, seconds it took)."""
    stopped = time.monotonic()
    wrapper.send_signal(signal.SIGTERM)
    code, _, err = finish(wrapper, timeout=120)
    return code, err, time.monotonic() - stopped


def assert_stopped_in_time(world, job_id, code, err, took, step, expected=60):
    """The wrapper's own final report says `expected` at `step`, and it exited within the grace."""
    assert code == expected, err
    assert took < STOP_GRACE_S + 3, took
    job = world.job(job_id)
    assert (job["status"], job["error_code"], job["report"]["failed_step"]) == ("sys-failed", expected, step)
    return job


def xrd(se, *args):
    out = subprocess.run(["xrdfs", f"root://127.0.0.1:{se.root_port}", *args], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, XRD_CONNECTIONRETRY="1"))
    return out.returncode, out.stdout


def se_files(se, directory):
    """{path below the export: size} of every file under `directory` of the SE's export (its own disk)."""
    found = {}
    for dirpath, _, names in os.walk(directory):
        for name in names:
            path = Path(dirpath) / name
            try:
                found[str(path.relative_to(se.export))] = path.stat().st_size
            except FileNotFoundError:   # renamed or removed since the listing (an upload finishing): not there
                continue
    return found


def adler32_on_se(surl):
    """The SE's file as xrdadler32 (XRootD's own client, not our code) reads it."""
    out = subprocess.run(["xrdadler32", surl], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]


def assert_catalog_equals_se(world, production, se=None, removals=()):
    """Every replica's size and adler32 in the catalog are the file's on the SE (xrdfs, xrdadler32),
    and every file below the output directory is a replica or on a removal list."""
    se = se or world.se
    files = se_files(se, world.export_dir(production, se))
    named = set()
    for f in world.catalog(production):
        for r in f["replicas"]:
            rel = r["surl"].split(str(se.export) + "/", 1)[1]
            named.add(rel)
            code, out = xrd(se, "stat", f"{se.export}/{rel}")
            assert code == 0, f"{f['lfn']}: its replica {r['surl']} is not on the SE"
            assert f"Size:   {f['size']}" in out, (f, out)
            assert adler32_on_se(f"root://127.0.0.1:{se.root_port}/{se.export}/{rel}") == f["adler32"], f
    unregistered = set(files) - named - {s.split(str(se.export) + "/", 1)[1] for s in removals}
    assert not unregistered, f"on the SE, neither registered nor on a removal list: {sorted(unregistered)}"
    return files


def test_a_description_read_while_queued_breaks_nothing_and_a_done_job_stays_done(world, tmp_path):
    """Findings 1 and 2: the server's local backend ships the job; shifters read its description
    while it is submitted and running; it ends done; then `sbk resubmit` and kill are refused."""
    production = "AT_read"
    request = world.request(production, env={"TOY_EVENT_TIME": "0.04"})
    job_id = world.submit(request, production, backend="local")
    seen = set()
    while world.job(job_id)["status"] not in ("done", "failed", "sys-failed", "timeout"):
        desc = world.api.call("GET", f"/jobs/{job_id}/description")
        assert desc["server"]["token"] == "redacted"
        seen.add(world.job(job_id)["status"])
    job = world.job(job_id)
    assert (job["status"], job["error_code"]) == ("done", 0), job["message"]
    assert seen & {"submitted", "running"}   # it was read while shipped
    code, out = world.sbk_run("resubmit", str(job_id))
    assert code == 1 and "only from failed, sys-failed, timeout, and the job is done" in out
    r = world.api.http.post(f"{world.api.base}/jobs/{job_id}/kill", timeout=30)
    assert r.status_code == 409
    after = world.job(job_id)
    assert {k: after[k] for k in ("status", "attempt", "wct", "report", "outputs", "finished_at")} == \
        {k: job[k] for k in ("status", "attempt", "wct", "report", "outputs", "finished_at")}
    assert_catalog_equals_se(world, production)


def test_an_attempt_that_comes_back_after_its_job_was_retried_writes_nothing(world, tmp_path):
    """Finding 3: attempt 1 is frozen mid-payload (a partitioned node), timed out and retried;
    attempt 2 ends done; attempt 1 thaws, finishes its payload, and is fenced off: no write, no
    delete, no registration. The catalog still equals the SE."""
    production = "AT_fence"
    request = world.request(production, env={"TOY_EVENT_TIME": "0.06"})
    job_id = world.submit(request, production)
    desc1 = world.api.call("POST", f"/jobs/{job_id}/token")
    first = start_wrapper(tmp_path, desc1, world.site_config, "a1")
    try:
        poll(lambda: world.job(job_id)["step"] == "RUNNING-04", what="attempt 1's payload")
        os.kill(first.pid, signal.SIGSTOP)
        # Its heartbeats stop: the reaper (here one pass of `sbk reap`, 1 x heartbeat) times it out.
        poll(lambda: world.sbk_run("reap", SBK_HEARTBEAT_MULTIPLE="1")[0] == 0
             and world.job(job_id)["status"] == "timeout", what="the reaper")
        assert world.api.call("POST", f"/jobs/{job_id}/resubmit")["attempt"] == 2
        desc2 = world.api.call("POST", f"/jobs/{job_id}/token")
        second = start_wrapper(tmp_path, desc2, world.site_config, "a2")
        code2, _, err2 = finish(second)
        assert code2 == 0, err2
        registered = world.catalog(production)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    code1, _, err1 = finish(first)
    assert code1 == 61 and "E061" in err1, err1
    job = world.job(job_id)
    assert (job["status"], job["attempt"], job["error_code"]) == ("done", 2, 0)
    assert world.catalog(production) == registered   # attempt 1 changed nothing
    files = assert_catalog_equals_se(world, production)
    assert not [f for f in files if f.endswith(".1") or ".1.log" in f or ".severus-upload" in f], files
    assert job["removals"] == []   # nothing written by attempt 1, so nothing to remove


def test_a_retry_of_a_job_whose_outputs_were_registered_ends_done_and_the_old_file_goes(world, tmp_path):
    """Finding 4: attempt 1 registers its output, then fails uploading its log (050: the server
    takes no log that small); the retry writes its own file, replaces the replica, ends done; the
    server removes attempt 1's file (`sbk cleanup`). The catalog equals the SE throughout."""
    production = "AT_retry"
    request = world.request(production)
    job_id = world.submit(request, production)
    sbk = world.sbk
    sbk.stop()
    sbk.env["SBK_MAX_LOG_BYTES"] = "100"
    sbk.start()
    try:
        code, _, err = finish(start_wrapper(tmp_path, world.api.call("POST", f"/jobs/{job_id}/token"),
                                            world.site_config, "a1"))
    finally:
        sbk.stop()
        del sbk.env["SBK_MAX_LOG_BYTES"]
        sbk.start()
    assert code == 50, err
    first = world.catalog(production)
    (output,) = [f for f in first if f["lfn"].endswith(".root")]
    assert output["replicas"][0]["surl"].endswith(".root.1")
    assert_catalog_equals_se(world, production)
    assert world.api.call("POST", f"/jobs/{job_id}/resubmit")["attempt"] == 2
    code, _, err = finish(start_wrapper(tmp_path, world.api.call("POST", f"/jobs/{job_id}/token"),
                                        world.site_config, "a2"))
    assert code == 0, err
    job = world.job(job_id)
    assert (job["status"], job["error_code"], job["attempt"]) == ("done", 0, 2)
    (now,) = [f for f in world.catalog(production) if f["lfn"] == output["lfn"]]
    assert now["replicas"][0]["surl"].endswith(".root.2") and [o["attempt"] for o in job["outputs"]
                                                                 if o["lfn"] == output["lfn"]] == [2]
    removal = [r for r in job["removals"] if r["surl"] == output["replicas"][0]["surl"]]
    assert [r["state"] for r in removal] == ["pending"]
    assert_catalog_equals_se(world, production, removals=[r["surl"] for r in job["removals"]])
    code, out = world.sbk_run("job", str(job_id))
    assert code == 0 and "REMOVAL REQUESTS" in out and output["replicas"][0]["surl"] in out, out
    code, out = world.sbk_run("cleanup")
    assert code == 0 and "removed 1 file(s)" in out, out
    assert world.job(job_id)["removals"][0]["state"] == "done"
    assert_catalog_equals_se(world, production)   # attempt 1's file is gone, nothing unregistered


class ThrottledSite:
    """The world's SE behind a slow loopback door, as a site config of its own (same name)."""

    def __init__(self, world, tmp_path, rate, se=None, parallel=2):
        se = se or world.se
        self.proxy = TcpProxy(se.root_port, rate=rate)
        self.path = tmp_path / "site" / f"{d.SITE}.toml"
        self.path.parent.mkdir(exist_ok=True)
        self.path.write_text(
            f'name = "{d.SITE}"\n[se]\nlfn_prefix = "{d.LFN_PREFIX}"\n'
            f'urls = ["{self.proxy.url(se.export)}"]\naccess = "protocol"\n[scratch]\nmin_free_gb = 0\n'
            f"[transfer]\nparallel = {parallel}\nretries = 0\n[wrapper]\nstop_grace_s = {STOP_GRACE_S}\n")

    def close(self):
        self.proxy.close()


@pytest.mark.parametrize("how", ["SIGTERM", "kill"])
def test_a_stop_during_stage_out_is_acted_on_at_once_and_undoes_it(world, tmp_path, how):
    """Finding 6: the batch system's TERM (or a manager's kill) while 6 outputs crawl to the SE:
    queued uploads never start, running ones are cut, what was stored is removed, the log and
    the final report arrive, and the wrapper exits 060/062 well within the grace."""
    production = f"AT_stop_out_{how}"
    request = world.request(production, env={"TOY_OUTPUTS": "6", "TOY_OUTPUT_BYTES": str(600_000)})
    job_id = world.submit(request, production)
    site = ThrottledSite(world, tmp_path, rate=1_000_000)
    try:
        wrapper = start_wrapper(tmp_path, world.api.call("POST", f"/jobs/{job_id}/token"), site.path)
        out_dir = world.export_dir(production)
        poll(lambda: any(n.endswith(".1") for n in se_files(world.se, out_dir)), 60,
             what="a first output stored")
        stopped = time.monotonic()
        if how == "SIGTERM":
            wrapper.send_signal(signal.SIGTERM)
        else:
            assert world.api.call("POST", f"/jobs/{job_id}/kill")["command"] == "kill"
        code, _, err = finish(wrapper)
        took = time.monotonic() - stopped
    finally:
        site.close()
    assert code == (60 if how == "SIGTERM" else 62), err
    assert took < STOP_GRACE_S + HEARTBEAT_S + 3, took   # a kill waits for the next reply
    job = world.job(job_id)
    assert (job["status"], job["error_code"]) == ("sys-failed", code)
    assert job["report"]["failed_step"] == "RUNNING-05"
    uploads = [t for t in job["report"]["transfers"] if t["direction"] == "out" and "_" in t["source"]]
    assert len([t for t in uploads if t["error"] is None]) < 6   # cut short, not run to the end
    files = se_files(world.se, out_dir)
    assert [f for f in files if "/log/" not in f] == [], files   # all or nothing: no output left
    assert [f["lfn"] for f in world.catalog(production) if "/log/" not in f["lfn"]] == []
    assert job["report"]["log"] and job["logs"]   # the log still went, within the grace
    assert_catalog_equals_se(world, production)


def test_sigterm_during_stage_in_is_acted_on_at_once(world, tmp_path):
    """Finding 6: TERM while 8 inputs crawl in: the wrapper stops within the grace, not after
    the queued copies, and says 060."""
    production = "AT_stop_in"
    names = [f"in_{i}.dat" for i in range(8)]
    rel = "production/FastSim/AT_stop_in/input"
    lfns = []
    for name in names:
        data = os.urandom(1_500_000)
        src = tmp_path / name
        src.write_bytes(data)
        url = f"{world.se.root_url}/{rel}/{name}"
        subprocess.run(["xrdcp", "-f", "-s", "--path", str(src), url], check=True, timeout=60)
        lfn = f"lfn:{d.LFN_PREFIX}/{rel}/{name}"
        world.api.call("POST", "/catalog/replicas", json={"lfn": lfn, "site": d.SITE, "surl": url,
                                                           "size": len(data),
                                                           "adler32": f"{zlib.adler32(data) & 0xffffffff:08x}"})
        lfns.append(lfn)
    request = world.request(production, input_mode="LIST", input_paths=lfns)
    job_id = world.submit(request, production)
    site = ThrottledSite(world, tmp_path, rate=400_000, parallel=2)
    try:
        wrapper = start_wrapper(tmp_path, world.api.call("POST", f"/jobs/{job_id}/token"), site.path)
        inputs = tmp_path / "work" / "inputs"
        poll(lambda: world.job(job_id)["step"] == "RUNNING-03" and inputs.is_dir() and any(inputs.iterdir()), 60,
             what="stage-in under way")
        code, err, took = terminate(wrapper)
    finally:
        site.close()
    job = assert_stopped_in_time(world, job_id, code, err, took, "RUNNING-03")
    copied = [t for t in job["report"]["transfers"] if t["direction"] == "in" and t["error"] is None
              and "in_" in t["source"]]
    assert len(copied) < 8, copied   # the queued ones never started
    assert job["logs"]


class HttpProxy:
    """An HTTP proxy in front of `sbk serve` for what the network does to replies: `drop(body)`
    true loses that reply once (the server did its part, the wrapper never hears of it);
    `hold(method, path)` true never answers at all, the request never reaching the server."""

    def __init__(self, upstream_port, drop=None, hold=None):
        proxy = self
        self.dropped = self.held = 0
        self.released = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if hold is not None and hold(self.command, self.path):
                    proxy.held += 1
                    proxy.released.wait(120)   # a door that took the request and went silent
                    self.close_connection = True
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                if drop is not None and not proxy.dropped and drop(data):
                    proxy.dropped += 1
                    self.close_connection = True   # no answer at all
                    return
                self.send_response(reply.status)
                for k, v in reply.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_kill_whose_reply_is_lost_still_stops_the_job(world, tmp_path):
    """Finding 7: the reply carrying `kill` never arrives; the next reply carries it again, the
    wrapper acknowledges it and stops: 062, long before its 20 s payload would have ended."""
    production = "AT_lost_kill"
    request = world.request(production, env={"TOY_EVENT_TIME": "0.4"})
    job_id = world.submit(request, production)
    proxy = HttpProxy(world.sbk.port, drop=lambda reply: b'"command":"kill"' in reply.replace(b" ", b""))
    try:
        desc = world.api.call("POST", f"/jobs/{job_id}/token")
        desc["server"]["url"] = proxy.url
        wrapper = start_wrapper(tmp_path, desc, world.site_config)
        poll(lambda: world.job(job_id)["step"] == "RUNNING-04", what="the payload step")
        killed = time.monotonic()
        assert world.api.call("POST", f"/jobs/{job_id}/kill")["command"] == "kill"
        code, _, err = finish(wrapper)
        took = time.monotonic() - killed
    finally:
        proxy.close()
    assert proxy.dropped == 1
    assert code == 62, err
    assert took < 15, took
    history = world.job(job_id)["history"]
    assert [e for e in history if e["kind"] == "info" and "kill" in e["message"]]
    assert world.job(job_id)["error_code"] == 62


def test_a_file_left_on_an_se_that_died_between_two_uploads_is_removed_later(world, tmp_path):
    """Finding 12: the SE dies after the first output is stored and before the second: the
    wrapper cannot delete the first, the server is asked to; once the SE is back, `sbk cleanup`
    removes it, and nothing unregistered stays on the SE."""
    production = "AT_dead_se"
    request = world.request(production, env={"TOY_OUTPUTS": "2", "TOY_OUTPUT_BYTES": str(800_000)})
    job_id = world.submit(request, production)
    se = start_se(tmp_path / "own-se", name="se-dies")
    software = f"{se.root_url}/{d.SOFTWARE_LFN[len(f'lfn:{d.LFN_PREFIX}/'):]}"   # this SE holds the release too
    subprocess.run(["xrdcp", "-f", "-s", "--path", str(world.release.path), software], check=True, timeout=60)
    site = ThrottledSite(world, tmp_path, rate=1_000_000, se=se, parallel=1)
    try:
        wrapper = start_wrapper(tmp_path, world.api.call("POST", f"/jobs/{job_id}/token"), site.path)
        out_dir = world.export_dir(production, se)
        poll(lambda: any(n.endswith(".root.1") for n in se_files(se, out_dir)), 60, what="a first output stored")
        se.stop()
        code, _, err = finish(wrapper)
        assert code == 40, err
        job = world.job(job_id)
        left = se_files(se, out_dir)
        assert left, "the premise: a file stayed on the dead SE"
        asked = {r["surl"] for r in job["removals"]}
        for rel in left:
            assert any(s.endswith(rel) for s in asked), (rel, asked)
        se.start()
        code, out = world.sbk_run("cleanup")
        assert code == 0, out
        assert {r["state"] for r in world.job(job_id)["removals"]} == {"done"}
        assert se_files(se, out_dir) == {}
    finally:
        site.close()
        se.stop()


def test_a_stop_while_an_upload_hangs_on_a_silent_se_still_ends_within_the_grace(world, tmp_path):
    """Finding 6 at its worst: the SE's door goes silent mid-upload (gfal2 blocked inside XrdCl,
    which neither a cancel nor the exit interrupts), then the batch system's TERM: the undo, the
    log and the final report are bounded by their shares of the grace, the wrapper does not wait
    for the hung copies at exit, and what it could not delete is asked of the server."""
    production = "AT_stop_hung"
    request = world.request(production, env={"TOY_OUTPUTS": "2", "TOY_OUTPUT_BYTES": str(2_000_000)})
    job_id = world.submit(request, production)
    proxy = TcpProxy(world.se.root_port, stall_after=300_000, direction="up")
    path = tmp_path / "site" / f"{d.SITE}.toml"
    path.parent.mkdir()
    path.write_text(f'name = "{d.SITE}"\n[se]\nlfn_prefix = "{d.LFN_PREFIX}"\n'
                    f'urls = ["{proxy.url(world.se.export)}"]\naccess = "protocol"\n[scratch]\nmin_free_gb = 0\n'
                    f"[transfer]\nparallel = 2\nretries = 0\n[wrapper]\nstop_grace_s = {STOP_GRACE_S}\n")
    try:
        wrapper = start_wrapper(tmp_path, world.api.call("POST", f"/jobs/{job_id}/token"), path)
        poll(lambda: proxy.stalled.is_set(), 60, what="an upload hanging on the silent door")
        code, err, took = terminate(wrapper)
    finally:
        proxy.close()
    job = assert_stopped_in_time(world, job_id, code, err, took, "RUNNING-05")
    assert job["logs"]   # the log reached the server (the SE's door was silent)
    assert job["removals"], "the partial uploads it could not delete are asked of the server"
    assert all(r["surl"].endswith(".severus-upload") or r["surl"].endswith(".1") or ".1.log.tgz" in r["surl"]
               for r in job["removals"])


def test_a_server_killed_with_jobs_in_its_local_queue_leaves_none_hanging(world, tmp_path):
    """Restart the server mid-job: the local backend's queue lived in the killed process. The
    job that had started runs on and reports to the new server; the queued one will never start:
    the poller says so (sys-failed 099, `never started`) instead of leaving it `submitted`."""
    production = "AT_lost_queue"
    request = world.request(production, env={"TOY_EVENT_TIME": "0.1"})   # a 5 s payload
    sbk = world.sbk
    sbk.stop()
    sbk.env["SBK_BACKEND_LOCAL_MAX_PARALLEL"] = "1"
    sbk.start()
    try:
        # one submission: one server process's pool, whose one slot the second job waits for
        running, queued = world.submit(request, production, backend="local", runs=2)
        poll(lambda: world.job(running)["step"] == "RUNNING-04", 60, what="the first job's payload")
        assert world.job(queued)["status"] == "submitted"
        sbk.kill()
    finally:
        del sbk.env["SBK_BACKEND_LOCAL_MAX_PARALLEL"]
        sbk.start()
    code, out = world.sbk_run("poll", SBK_BATCH_GRACE_S="0")
    assert code == 0 and f"sys-failed 1 job(s): {queued}" in out, out
    job = world.job(queued)
    assert (job["status"], job["error_code"]) == ("sys-failed", 99) and "never started" in job["message"]
    poll(lambda: world.job(running)["status"] == "done", 60, what="the orphaned wrapper to finish")
    assert world.job(running)["error_code"] == 0


def test_a_stop_while_registration_waits_for_the_server_ends_within_the_grace(world, tmp_path):
    """Finding 6 at registration: the server's door swallows the registration (it never reaches
    the server); TERM: the wait ends at once, the stored outputs, maybe registered for all the
    wrapper knows, are left to the server (removal requests: it keeps what a replica names),
    the wrapper exits 060 within the grace, and after a cleanup pass the catalog equals the SE."""
    production = "AT_stop_register"
    request = world.request(production, env={"TOY_OUTPUTS": "2"})
    job_id = world.submit(request, production)
    proxy = HttpProxy(world.sbk.port, hold=lambda method, path: method == "POST" and path.endswith("/catalog/replicas"))
    site = tmp_path / "site.toml"
    site.write_text(world.site_config.read_text() + f"\n[wrapper]\nstop_grace_s = {STOP_GRACE_S}\n")
    try:
        desc = world.api.call("POST", f"/jobs/{job_id}/token")
        desc["server"]["url"] = proxy.url
        wrapper = start_wrapper(tmp_path, desc, site)
        poll(lambda: proxy.held, 60, what="the registration held at the door")
        code, err, took = terminate(wrapper)
    finally:
        proxy.close()
    job = assert_stopped_in_time(world, job_id, code, err, took, "RUNNING-06")
    asked = {r["surl"] for r in job["removals"]}
    assert len([s for s in asked if s.endswith(".root.1")]) == 3, asked   # <runnum>.root and the 2 others
    code, out = world.sbk_run("cleanup")
    assert code == 0, out
    assert_catalog_equals_se(world, production)
    assert [f for f in se_files(world.se, world.export_dir(production)) if "/log/" not in f] == []
