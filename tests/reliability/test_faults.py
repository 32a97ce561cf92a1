"""Faults injected into real processes: the server, the SE, the network, the disk, the batch system."""
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from server import demo as d
from server import models as m
from tests.proxies import TcpProxy
from tests.startup import interpreter_startup_s
from wrapper.report import JOURNAL_NAME, read_journal

from .conftest import make_world, poll, read_db, run_wrapper, start_wrapper, write_site_config

pytestmark = pytest.mark.timeout(600)

TOY_SLOW = {"TOY_EVENT_TIME": "0.01"}   # 100 events per second: the payload runs long enough to hit


def journal_events(directory):
    path = Path(directory) / "work" / JOURNAL_NAME
    return read_journal(path)[1] if path.exists() else []


def reached(directory, step):
    return any(e.get("step") == step for e in journal_events(directory))


def progress(directory):
    """The toy payload's event count (its progress file): the payload's own 'nearly done' signal."""
    try:
        return int((Path(directory) / "work" / "severus-progress").read_text() or 0)
    except (OSError, ValueError):
        return 0


def wait_all(procs, deadline_s):
    poll(lambda: all(p.poll() is not None for p in procs), deadline_s, "the wrappers to exit", 0.1)
    return [p.returncode for p in procs]


def stderr_of(directory):
    return (Path(directory) / "stderr").read_text()


def test_server_sigkilled_while_jobs_run_loses_no_event(world, tmp_path, full, figures):
    """SIGKILL the server mid-run, restart it on the same port and DB: every journal arrives once, in order."""
    n = 20 if full else 6
    ids = world.prepare("REL_killsrv", runs=n, events=400, env=TOY_SLOW)
    dirs = {i: tmp_path / str(i) for i in ids}
    procs = {i: start_wrapper(dirs[i], world.description(i), world.site_config, "--final-deadline", "120")
             for i in ids}
    try:
        poll(lambda: all(reached(dirs[i], "RUNNING-04") for i in ids), 120, "every payload to start", 0.1)
        before = {i: len(journal_events(dirs[i])) for i in ids}
        killed_at = time.monotonic()
        world.server.kill(signal.SIGKILL)
        # The wrappers keep journaling (heartbeats, steps) while nobody answers.
        poll(lambda: all(len(journal_events(dirs[i])) > before[i] for i in ids), 60,
             "an event journaled by every wrapper while the server is dead", 0.1)
        down_s = time.monotonic() - killed_at
        world.server.start()
        codes = wait_all(list(procs.values()), 180)
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert codes == [0] * n, [stderr_of(dirs[i]) for i in ids]
    assert not any("not delivered" in (dirs[i] / "stdout").read_text() for i in ids)
    total = 0
    with read_db(world.server.db_url):
        for i in ids:
            journal = [(e["seq"], e["kind"], e["status"]) for e in journal_events(dirs[i])]
            stored = [(e.seq, e.kind, e.status) for e in
                      m.Event.select().where(m.Event.job == i, m.Event.attempt == 1, m.Event.seq > 0)
                      .order_by(m.Event.id)]
            # Once (no duplicate), in order (arrival order is seq order), nothing missing.
            assert stored == journal, (i, stored[-5:], journal[-5:])
            assert [s for s, _, _ in journal] == list(range(1, len(journal) + 1))
            total += len(stored)
            job = m.Job.get_by_id(i)
            assert (job.status, job.error_code) == ("done", 0)
    figures("server SIGKILL + restart", f"{n} jobs running, server down {down_s:.1f} s",
            "all events once, in order; all done",
            f"{total} events journaled = stored; 0 lost, 0 duplicated")


def run_with_se_stopped_mid_payload(world, directory, job_id, cfg):
    """Run the job; stop the local SE once its payload is well on its way; restart it at the end."""
    proc = start_wrapper(directory, world.description(job_id), cfg)
    try:
        poll(lambda: progress(directory) >= 200, 60, "the payload to be well on its way")
        assert proc.poll() is None, "the payload ended before the SE could be stopped"
        world.se.stop()
        return wait_all([proc], 120)[0]
    finally:
        world.se.start()


def test_se_stopped_before_stageout_uses_the_fallback_site(world, fresh_se, tmp_path, figures):
    """The local SE dies while the payload finishes: outputs go to the fallback site, recorded there."""
    fallback = "REL-FALLBACK"
    world.api.call("POST", "/sites", ok=(201, 409), json={"name": fallback, "bunch_size": 5})
    write_site_config(tmp_path / f"{fallback}.toml", fresh_se, name=fallback)
    cfg = write_site_config(tmp_path / f"{d.SITE}.toml", world.se,
                            extra=f'[stageout]\nfallback_sites = ["{fallback}"]\n'
                                  '[transfer]\nretries = 0\nprobe_timeout_s = 2\n')
    (job_id,) = world.prepare("REL_fallback", events=600, env=TOY_SLOW)
    code = run_with_se_stopped_mid_payload(world, tmp_path / "job", job_id, cfg)
    assert code == 0, stderr_of(tmp_path / "job")
    job = world.job(job_id)
    assert job["status"] == "done"
    (out,) = [o for o in job["outputs"] if o["lfn"].endswith(".root")]
    assert out["site"] == fallback and out["surl"].startswith(fresh_se.root_url)
    rel = out["lfn"][len(f"lfn:{d.LFN_PREFIX}/"):] + ".1"   # the file carries the attempt
    assert out["surl"].endswith(rel)
    assert (fresh_se.export / rel).stat().st_size == out["size"]
    assert not (world.se.export / rel).exists()
    messages = [e["message"] for e in job_history(world, job_id)]
    assert any(f"stored at fallback site {fallback}" in msg for msg in messages), messages
    figures("SE stopped before stage-out, fallback", "local XRootD SE stopped mid-payload",
            "output on the fallback SE, catalog and history say so", f"{out['size']} B at {fallback}")


def job_history(world, job_id):
    with read_db(world.server.db_url):
        return [{"message": e.message, "kind": e.kind, "step": e.step, "code": e.code} for e in
                m.Event.select().where(m.Event.job == job_id).order_by(m.Event.id)]


def test_se_stopped_without_fallback_leaves_nothing_half_written(world, tmp_path, figures):
    """No fallback: 040, and no output (final or temporary name) on the SE or in the catalog."""
    cfg = write_site_config(tmp_path / f"{d.SITE}.toml", world.se,
                            extra='[transfer]\nretries = 0\nprobe_timeout_s = 2\n')
    production = "REL_nofallback"
    (job_id,) = world.prepare(production, events=600, env=TOY_SLOW)
    code = run_with_se_stopped_mid_payload(world, tmp_path / "job", job_id, cfg)
    assert code == 40, stderr_of(tmp_path / "job")
    job = world.job(job_id)
    assert (job["status"], job["error_code"]) == ("sys-failed", 40)
    assert job["report"]["failed_step"] == "RUNNING-05"
    out_dir = world.se.export / world.output_lfn(production)[len(f"lfn:{d.LFN_PREFIX}/"):]
    left = [p for p in out_dir.rglob("*") if p.is_file()] if out_dir.exists() else []
    assert left == []
    files = world.api.call("GET", "/catalog/files", params={"dir": world.output_lfn(production)})["files"]
    assert [f for f in files if f["lfn"].endswith(".root")] == []
    assert job["logs"], "the log still reached the server"
    figures("SE stopped, no fallback", "local XRootD SE stopped mid-payload",
            "040; no file on the SE, none in the catalog; log on the server",
            f"{len(left)} files left, {len(files)} catalog entries")


def test_stalled_upload_gives_up_within_the_size_based_timeout(world, tmp_path, full, figures):
    """An SE that stops answering mid-upload: the attempt ends at base + size/min_rate, 040 reported."""
    stall_site = "REL-STALL"
    world.api.call("POST", "/sites", ok=(201, 409), json={"name": stall_site, "bunch_size": 5})
    proxy = TcpProxy(world.se.root_port, stall_after=20000, direction="up")
    transfer = "[transfer]\nretries = 0\ntimeout_base_s = 2\nmin_rate_mb_s = 0.03\nprobe_timeout_s = 3\n"
    write_site_config(tmp_path / f"{stall_site}.toml",
                      f"root://127.0.0.1:{proxy.port}/{world.se.export}", name=stall_site, extra=transfer)
    cfg = write_site_config(tmp_path / f"{d.SITE}.toml", world.se, extra=transfer)
    production = "REL_stall"
    (job_id,) = world.prepare(production, events=600, env={"TOY_EVENT_TIME": "0"},
                              output_sites=(stall_site,))
    try:
        began = time.monotonic()
        # XrdCl's own request timeout (30 s here) must not be what ends the stall: the wrapper gives
        # up at the size-based timeout. The short run lowers it (still above that timeout) so that
        # the cleanup of the stalled SE's temporary name and the exit, which wait on XrdCl, are quick.
        env = None if full else {"XRD_REQUESTTIMEOUT": "15", "XRD_TIMEOUTRESOLUTION": "1"}
        code, stderr = run_wrapper(tmp_path / "job", world.description(job_id), cfg, timeout=240, env=env)
        wall = time.monotonic() - began
    finally:
        proxy.close()
    assert proxy.stalled.is_set(), "the upload never reached the stall"
    assert code == 40, stderr
    job = world.job(job_id)
    assert (job["status"], job["error_code"]) == ("sys-failed", 40)
    (attempt,) = [t for t in job["report"]["transfers"] if t["direction"] == "out"
                  and t["source"].endswith(".root")]
    limit = 2 + attempt["size"] / 1e6 / 0.03
    figures("transfer stalls mid-upload", f"proxy to the SE goes silent after {proxy.stall_after} B",
            "040 reported; the attempt ended at the size-based timeout",
            f"timeout {limit:.1f} s, attempt took {attempt['seconds']:.1f} s ({attempt['error'][-40:]}); "
            f"job {wall:.1f} s")
    assert limit - 0.5 <= attempt["seconds"] <= limit + 5 + interpreter_startup_s(), (attempt["seconds"], limit)
    assert attempt["error"] and attempt["error"].startswith("timeout"), attempt
    assert attempt["timeout"] == pytest.approx(limit, abs=0.01), attempt


@pytest.fixture()
def small_scratch(tmp_path):
    """A 20 MB tmpfs as the job's scratch, unmounted at the end."""
    mount = tmp_path / "scratch"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_scratch_filling_during_the_payload_is_003_and_the_log_arrives(world, tmp_path, small_scratch, figures):
    """A payload that writes until ENOSPC: reported as the site's scratch problem (003), log uploaded."""
    (job_id,) = world.prepare("REL_scratch", events=2_000_000, env={"TOY_EVENT_TIME": "0"})
    code, stderr = run_wrapper(tmp_path / "job", world.description(job_id), world.site_config,
                               workdir=small_scratch / "work")
    job = world.job(job_id)
    figures("scratch fills during the payload", "20 MB tmpfs work dir, payload writes until ENOSPC",
            f"exit {code}, server {job['status']} {job['error_code']}, log {'stored' if job['logs'] else 'MISSING'}",
            f"payload exit {job['report'].get('payload', {}).get('exit_code')}")
    assert code == 3, stderr
    assert (job["status"], job["error_code"]) == ("sys-failed", 3)
    assert job["report"]["failed_step"] == "RUNNING-04"
    assert job["logs"] and job["report"]["log"], "the log must still be uploaded"
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


def test_sigterm_with_grace_delivers_the_final_report(world, tmp_path, figures):
    """The batch system's TERM mid-payload: 060 reaches the server within the grace, log included."""
    (job_id,) = world.prepare("REL_term", events=3000, env=TOY_SLOW)
    directory = tmp_path / "job"
    proc = start_wrapper(directory, world.description(job_id), world.site_config)
    grace_s = 30
    try:
        poll(lambda: progress(directory) >= 100, 60, "the payload to run")
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)   # the batch system signals the job's process group
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 60, stderr_of(directory)
    job = world.job(job_id)
    assert (job["status"], job["error_code"]) == ("sys-failed", 60)
    assert job["report"]["log"] and job["logs"]
    figures("batch kill with grace", f"SIGTERM to the process group, SIGKILL after {grace_s} s",
            "060 final report and log on the server before the grace ended", f"wrapper gone {took:.1f} s after TERM")


def test_sigkill_without_grace_is_reaped_as_timeout_100(rel_se, tmp_path, figures):
    """SIGKILL straight away: no final report; the server's reaper marks the job timeout 100."""
    heartbeat_s, multiple = 1.0, 2.0
    w = make_world(tmp_path / "srv", rel_se, {"SBK_HEARTBEAT_S": str(heartbeat_s),
                                                "SBK_HEARTBEAT_MULTIPLE": str(multiple),
                                                "SBK_REAP_INTERVAL_S": "0.5"})
    try:
        (job_id,) = w.prepare("REL_kill9", events=3000, env=TOY_SLOW)
        directory = tmp_path / "job"
        proc = start_wrapper(directory, w.description(job_id), w.site_config)
        try:
            poll(lambda: progress(directory) >= 100, 60, "the payload to run")
            assert w.job(job_id)["status"] == "running"
            os.killpg(proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        job = poll(lambda: (lambda j: j if j["status"] != "running" else None)(w.job(job_id)), 30,
                   "the reaper to act", 0.1)
        after = time.monotonic() - killed
    finally:
        w.server.stop()
    assert (job["status"], job["error_code"]) == ("timeout", 100)
    # the reaper's deadline (heartbeat x multiple), its interval, and room for a busy machine
    assert after <= heartbeat_s * multiple + 0.5 + 2 + 2 * interpreter_startup_s(), after
    figures("batch kill without grace", "SIGKILL to the process group (no final report)",
            "server reaper: timeout 100", f"reaped {after:.1f} s after the kill (heartbeat {heartbeat_s:g} s x {multiple:g})")


def test_a_reply_cut_short_is_unreachable_not_a_dead_sender(tmp_path):
    """Found by the server-SIGKILL scenario: a reply cut mid-body (IncompleteRead) killed the
    sender thread, so the final report of a done job never left. It must be 'try again'."""
    from wrapper.client import ServerClient, ServerUnreachable
    sock = socket.create_server(("127.0.0.1", 0))

    def answer_half():
        conn, _ = sock.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{")
        conn.close()
    t = threading.Thread(target=answer_half, daemon=True)
    t.start()
    try:
        with pytest.raises(ServerUnreachable):
            ServerClient(f"http://127.0.0.1:{sock.getsockname()[1]}", "t", timeout=5).post("/x", [{}])
    finally:
        t.join(5)
        sock.close()
