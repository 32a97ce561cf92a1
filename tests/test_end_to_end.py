"""End to end, on real parts: `sbk serve`, a real XRootD SE, gfal2, `severus run` processes.

The spine of issue 2: the demo path, the same job over root:// and over a
direct-access mount, and the failures a manager must see on the server
(software checksum mismatch → 011 sys-failed, payload exit 3 → 030 failed).
"""
import json
import os
import shlex
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from server import demo as d
from server.toy_release import build_toy_release

pytestmark = pytest.mark.timeout(300)


def adler32_of(path):
    return f"{zlib.adler32(Path(path).read_bytes()) & 0xffffffff:08x}"


def test_demo_runs_a_production_and_everything_lands(tmp_path):
    """`sbk demo --open-se`: 4 jobs done, outputs on the SE with the catalog's adler32, history in order, logs
    stored (the demo on the secured SE, its default: tests/test_demo_secure.py)."""
    work = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "server.cli", "demo", "--open-se", "--workdir", str(work)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4/4 jobs done" in proc.stdout
    # The server is gone; read what it stored straight from its database.
    from server import db, models as m
    db.bind(f"sqlite:///{work / 'sbk.db'}")
    with db.connection():
        jobs = list(m.Job.select().order_by(m.Job.runnum))
        assert [j.status for j in jobs] == ["done"] * 4
        export = work / "se" / "export"
        for job in jobs:
            seqs = [e.seq for e in m.Event.select().where(m.Event.job == job.id, m.Event.attempt == 1)
                    .order_by(m.Event.received_at, m.Event.id) if e.seq > 0]
            assert seqs == sorted(seqs) and seqs[0] == 1 and seqs == list(range(1, len(seqs) + 1))
            steps = [e.step for e in m.Event.select().where(m.Event.job == job.id, m.Event.kind == "step")
                     .order_by(m.Event.seq)]
            assert steps == [f"RUNNING-0{i}" for i in range(1, 8)]
            replicas = list(m.Replica.select(m.Replica, m.CatalogFile).join(m.CatalogFile)
                            .where(m.Replica.job == job.id))
            names = sorted(Path(r.file.lfn).name for r in replicas)
            assert names == [f"{job.runnum}.1.log.tgz", f"{job.runnum}.root"]
            for r in replicas:
                on_se = export / r.surl.split(f"{export}/", 1)[1]   # the file the replica names
                assert on_se.is_file(), on_se
                assert adler32_of(on_se) == r.file.adler32
                assert on_se.stat().st_size == r.file.size
            assert m.JobLog.select().where(m.JobLog.job == job.id).count() == 1


def test_demo_on_a_terminal_shows_a_progress_bar(tmp_path):
    """On a terminal (`script` gives it a pty) `sbk demo` draws the client's progress bar of jobs final."""
    command = shlex.join([sys.executable, "-m", "server.cli", "demo", "--open-se", "--jobs", "2",
                          "--workdir", str(tmp_path / "demo")])
    proc = subprocess.run(["script", "-q", "-e", "-c", command, "/dev/null"], capture_output=True, text=True,
                          timeout=240, env=dict(os.environ, COLUMNS="100", TERM="xterm"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "jobs final" in proc.stdout and "2/2" in proc.stdout and "2/2 jobs done" in proc.stdout


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A running server, a real XRootD SE and the toy release on it, for the tests below."""
    base = tmp_path_factory.mktemp("e2e")
    demo = d.Demo(base=base)
    progress = d.Progress()
    try:
        site_config = d.start_storage(demo, progress)
        d.start_server(demo, f"sqlite:///{base / 'sbk.db'}", progress)
        api = d.Api(demo.url, demo.token)
        release = build_toy_release(base)
        d.upload_release(release, demo.se_door, api)
        d.define_production(api, release, jobs=1, events=100)
        yield {"demo": demo, "api": api, "release": release, "site_config": site_config,
               "export": demo.se.export, "base": base}
    finally:
        demo.stop()


def prepare_job(live, production, software_version="V0.2.5", adler32=None, env=None):
    """A production of its own with one valid request and one prepared job; its description."""
    api, release = live["api"], live["release"]
    if software_version != "V0.2.5":
        api.call("POST", "/sessions/FastSim/software", json={
            "name": "PacProductionApp", "version": software_version, "revision": 311,
            "lfn": d.SOFTWARE_LFN, "adler32": adler32 or release.adler32,
            "workdir": release.workdir, "exe": release.exe, "env": env or {}})
    api.call("POST", "/productions", json={"name": production, "session": "FastSim",
                                           "version": software_version, "revision": 311})
    request = api.call("POST", "/requests", json={
        "production": production, "min_runnum": 20000000, "events_per_job": 50,
        "parameters": d.PARAMETERS, "input_mode": "NONE",
        "output_lfn": f"lfn:{d.LFN_PREFIX}/production/FastSim/{production}/output",
        "output_sites": [d.SITE], "max_wct_s": 600})
    api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})
    plan = api.call("POST", "/submissions", json={
        "production": production,
        "bulks": [{"request": request["id"], "sites": [d.SITE], "runs": 1, "events": 50,
                   "log_to_db": True}]})
    job_id = plan["job_ids"][0]
    return job_id, api.call("POST", f"/jobs/{job_id}/token")


def run_wrapper(tmp_path, description, site_config):
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(description))
    return subprocess.run(
        [sys.executable, "-m", "wrapper", "run", str(job_file), "--site-config", str(site_config),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=120)


def write_site_config(path, se_lines):
    path.write_text(f'name = "{d.SITE}"\n\n[se]\nlfn_prefix = "{d.LFN_PREFIX}"\n{se_lines}\n'
                    '\n[scratch]\nmin_free_gb = 0.1\n')
    return path


@pytest.mark.parametrize("mode", ["protocol", "direct"])
def test_same_job_over_root_protocol_and_direct_access(live, tmp_path, mode):
    """The same job succeeds over root:// and over a POSIX mount, and says which it used."""
    se = live["demo"].se
    if mode == "protocol":
        cfg = write_site_config(tmp_path / "site.toml", f'urls = ["{se.root_url}"]\naccess = "auto"')
    else:
        # The export is a directory under /tmp, on the node's root file system: without the probe
        # file that marks it as the SE, auto would (rightly) take it for an empty mount point.
        (se.export / ".severus-se").write_text("severus direct-access probe file\n")
        cfg = write_site_config(tmp_path / "site.toml",
                                f'urls = ["{se.root_url}"]\nlocal_path = "{se.export}"\naccess = "auto"\n'
                                'probe_file = ".severus-se"')
    job_id, desc = prepare_job(live, f"E2E_{mode}")
    proc = run_wrapper(tmp_path, desc, cfg)
    assert proc.returncode == 0, proc.stderr
    job = live["api"].call("GET", f"/jobs/{job_id}")
    assert job["status"] == "done" and job["error_code"] == 0
    access = job["report"]["facts"]["access"]
    assert {v["mode"] for v in access.values()} == {mode}
    (output,) = [o for o in job["outputs"] if o["lfn"].endswith(".root")]
    # The catalog gets the protocol URL either way: a mount path means nothing to other sites.
    assert output["surl"].startswith("root://")
    uploads = [t for t in job["report"]["transfers"] if t["source"].endswith(".root")]
    assert uploads and all(t["error"] is None for t in uploads[-1:])
    if mode == "direct":
        assert {t["tool"] for t in uploads} == {"posix"}
        assert uploads[-1]["destination"].startswith(str(live["export"]))
    else:
        assert "posix" not in {t["tool"] for t in uploads}
        assert uploads[-1]["destination"].startswith("root://")
    # The LFN stays the name; the file on the SE carries the attempt (shared/outputs.py).
    rel = output["lfn"][len(f"lfn:{d.LFN_PREFIX}/"):] + ".1"
    assert output["surl"].endswith(rel)
    assert adler32_of(live["export"] / rel) == output["adler32"]


def test_software_checksum_mismatch_is_011_sys_failed_on_the_server(live, tmp_path):
    """A release whose registered adler32 is not the tarball's: refused before unpacking."""
    # The catalog holds the true checksum; the release (and so the job) claims another.
    job_id, desc = prepare_job(live, "E2E_badsum", software_version="V0.2.6", adler32="0badc0de")
    proc = run_wrapper(tmp_path, desc, live["site_config"])
    assert proc.returncode == 11, proc.stderr
    assert " E011 " in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    job = live["api"].call("GET", f"/jobs/{job_id}")
    assert (job["status"], job["error_code"]) == ("sys-failed", 11)
    assert job["report"]["failed_step"] == "RUNNING-02"
    assert not (tmp_path / "work" / "software" / "bin").exists()   # nothing was unpacked
    # The log is uploaded even when the software stage failed: to the SE and to the server.
    assert job["report"]["log"]["lfn"].endswith(".1.log.tgz") and job["logs"]


def test_payload_exit_3_is_030_failed_with_the_exit_code(live, tmp_path):
    job_id, desc = prepare_job(live, "E2E_exit3", software_version="V0.2.7",
                               env={"TOY_EXIT_CODE": "3"})
    proc = run_wrapper(tmp_path, desc, live["site_config"])
    assert proc.returncode == 30, proc.stderr
    job = live["api"].call("GET", f"/jobs/{job_id}")
    assert (job["status"], job["error_code"]) == ("failed", 30)
    assert job["report"]["payload"]["exit_code"] == 3
    assert job["report"]["failed_step"] == "RUNNING-04"
    assert job["report"]["log"] and job["logs"]
