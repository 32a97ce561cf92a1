"""A production through a real ARC CE into the tests' real Slurm: `sbk serve`, XRootD SE, A-REX (LRMS slurm).

POST /submissions with "backend": "arc" sends each job to the CE named by the
site config's `[ce]`; A-REX puts it on Slurm as the grid user; the real
wrapper (severus.pyz, packed by the backend) stages out to the open SE and
reports. A kill reaches Slurm (the job is cancelled there); a job scancel'd
behind the CE's back is found by the poller through the CE and ends sys-failed
with the CE's reason.
"""
import math
import os
import signal
import subprocess
from pathlib import Path

import pytest

from server import demo as d
from server.backends.resources import STAGING_MARGIN_S
from server.toy_release import build_toy_release
from tests.infra.arc_ce import arc_ce_slurm, arc_slurm_cluster  # noqa: F401 (session fixtures)
from tests.test_slurm_production import FINAL, slow_production, submit, wait_jobs
from tests.waiting import poll

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def live(tmp_path_factory, arc_ce_slurm, arc_slurm_cluster):  # noqa: F811
    """sbk serve (polling every 0.5 s) with the arc backend's credential + SE + toy release + a production."""
    base = tmp_path_factory.mktemp("arcprod")
    ce = arc_ce_slurm
    demo = d.Demo(base=base)
    progress = d.Progress()
    with pytest.MonkeyPatch.context() as mp:
        try:
            site_config = d.start_storage(demo, progress)
            with open(site_config, "a") as fh:
                fh.write(f'\n[ce]\nurl = "{ce.url}"\nqueue = "{ce.queue}"\n')
            for key, value in {"SBK_BACKEND_ARC_CERT": str(ce.cert), "SBK_BACKEND_ARC_KEY": str(ce.key),
                               "SBK_BACKEND_ARC_CA": str(ce.ca_dir),
                               "SBK_BACKEND_SITE_CONFIGS": str(site_config.parent),
                               "SBK_BACKEND_SANDBOX_DIR": str(base / "sandboxes"),
                               "SBK_BATCH_POLL_INTERVAL_S": "0.5", "SBK_BATCH_GRACE_S": "1"}.items():
                mp.setenv(key, value)
            d.start_server(demo, f"sqlite:///{base / 'sbk.db'}", progress)
            api = d.Api(demo.url, demo.token)
            release = build_toy_release(base)
            d.upload_release(release, demo.se_door, api)
            request = d.define_production(api, release, jobs=2, events=100)
            yield {"demo": demo, "api": api, "release": release, "request": request, "base": base,
                   "ce": ce, "slurm": arc_slurm_cluster}
        finally:
            demo.stop()


@pytest.fixture(scope="module")
def slow(live):
    """A request whose payload takes ~40 s (tests/test_slurm_production.py's slow production)."""
    return slow_production(live)


def slurm_id(ce, gjid):
    """The Slurm job id A-REX gave the job (its `localid`), once it has one."""
    def read():
        text = ce.session().get(f"{ce.url}/rest/1.0/jobs/{gjid.split('#')[1]}/diagnose/local", timeout=10).text
        return next((line.split("=", 1)[1] for line in text.splitlines()
                     if line.startswith("localid=") and line.split("=", 1)[1].strip()), None)
    try:
        return poll(read, timeout=90, what=f"a Slurm id for {gjid}", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{ce.log_tail()}") from None


def job_out(ce, gjid):
    """The wrapper's stdout and stderr as the CE kept them (the job's one declared output)."""
    reply = ce.session().get(f"{ce.url}/rest/1.0/jobs/{gjid.split('#')[1]}/session/job.out", timeout=10)
    return reply.text[-3000:] if reply.ok else f"(no job.out: HTTP {reply.status_code})"


def slurm_state(slurm, job_id):
    """JobState from the controller, else the job completion log's record."""
    out = slurm.run("scontrol", "show", "job", "-o", job_id).stdout
    if "JobState=" in out:
        return out.split("JobState=")[1].split()[0]
    text = slurm.jobcomp_file.read_text() if slurm.jobcomp_file.exists() else ""
    return next((line.split("JobState=")[1].split()[0] for line in text.splitlines()
                 if f"JobId={job_id} " in line), "")


def test_production_through_the_ce_into_slurm_ends_done_with_outputs_on_the_se(live):
    api, ce, se = live["api"], live["ce"], live["demo"].se
    plan = submit(api, live["request"]["id"], 2, "arc")
    assert plan["errors"] == [] and len(plan["submitted"]) == 2, plan
    assert all(g.startswith(ce.url + "#") for g in plan["submitted"].values())
    ids = [slurm_id(ce, g) for g in plan["submitted"].values()]
    assert all(i.isdigit() for i in ids)   # A-REX put them on Slurm
    jobs = wait_jobs(api, plan["job_ids"], lambda j: j["status"] in FINAL, timeout=240)
    assert {j["status"] for j in jobs.values()} == {"done"}, \
        [(j["message"], job_out(ce, j["gjid"])) for j in jobs.values()]
    for job in jobs.values():
        assert job["backend"] == "arc" and job["gjid"] == plan["submitted"][str(job["id"])]
        assert sorted(o["lfn"].rsplit("/", 1)[1] for o in job["outputs"]) == \
            [f"{job['runnum']}.1.log.tgz", f"{job['runnum']}.root"]
        for output in job["outputs"]:
            # the SE's own checksum of the replica the job registered, by an independent tool
            assert output["surl"].startswith(se.root_url) or output["surl"].startswith(se.http_url), output
            path = output["surl"].split(str(se.export), 1)[1]
            real = subprocess.run(["xrdadler32", f"{se.root_url}{path}"], capture_output=True,
                                  text=True, timeout=30)
            assert real.returncode == 0 and real.stdout.split()[0] == output["adler32"], (real, output)
    assert all(slurm_state(live["slurm"], i) == "COMPLETED" for i in ids)
    # the walltime A-REX asked Slurm for: max_wct_s (600 s) plus the staging margin, in minutes
    record = live["slurm"].run("scontrol", "show", "job", "-o", ids[0]).stdout
    minutes = math.ceil((600 + STAGING_MARGIN_S) / 60)
    assert f"TimeLimit={minutes // 60:02d}:{minutes % 60:02d}:00" in record, record


def test_cores_and_memory_reach_slurm_through_the_ce(live):
    """A request for 2 cores and 600 MB: xRSL count=2, memory=300 (per core), Slurm gets both."""
    api, ce = live["api"], live["ce"]
    request = api.call("POST", "/requests", json={
        "production": d.PRODUCTION, "min_runnum": 40000000, "events_per_job": 100,
        "parameters": dict(d.PARAMETERS, Geometry="DG_cores"), "input_mode": "NONE",
        "output_lfn": f"lfn:{d.LFN_PREFIX}/production/FastSim/{d.PRODUCTION}/cores/output",
        "output_sites": [d.SITE], "max_wct_s": 300, "cores": 2, "memory_mb": 600})
    api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})
    plan = submit(api, request["id"], 1, "arc")
    (job_id,) = plan["job_ids"]
    slurm_job = slurm_id(ce, plan["submitted"][str(job_id)])
    record = live["slurm"].run("scontrol", "show", "job", "-o", slurm_job).stdout
    assert "NumCPUs=2 " in record and "MinMemoryCPU=300M" in record, record
    minutes = math.ceil((300 + STAGING_MARGIN_S) / 60)
    assert f"TimeLimit={minutes // 60:02d}:{minutes % 60:02d}:00" in record, record
    job = wait_jobs(api, [job_id], lambda j: j["status"] in FINAL, timeout=180)[job_id]
    assert job["status"] == "done", (job["message"], job_out(ce, job["gjid"]))


def test_kill_cancels_the_slurm_job_and_scancel_is_found_through_the_ce(live, slow):
    api, ce, slurm = live["api"], live["ce"], live["slurm"]
    plan = submit(api, slow["id"], 2, "arc", production="2026_Slow")
    assert plan["errors"] == [], plan
    behind, killed = plan["job_ids"]
    ids = {j: slurm_id(ce, plan["submitted"][str(j)]) for j in plan["job_ids"]}
    wait_jobs(api, plan["job_ids"], lambda j: j["step"] == "RUNNING-04", timeout=180, what="in their payload")

    # scancel behind the CE's back: A-REX sees Slurm end the job; the poller reads it through the CE
    assert slurm.run("scancel", ids[behind]).returncode == 0
    job = wait_jobs(api, [behind], lambda j: j["status"] in FINAL and "ARC FINISHED" in (j["message"] or ""),
                    timeout=180, what="ended with the CE's reason")[behind]
    assert job["status"] == "sys-failed" and job["error_code"] in (60, 99), job

    # kill: recorded for the wrapper, action=kill on the CE, and A-REX scancels the Slurm job
    reply = api.call("POST", f"/jobs/{killed}/kill")
    assert reply["command"] == "kill" and reply["cancelled"] == plan["submitted"][str(killed)]
    poll(lambda: slurm_state(slurm, ids[killed]) == "CANCELLED", timeout=120,
         what=f"Slurm job {ids[killed]} cancelled by the CE", interval=0.5)
    job = wait_jobs(api, [killed], lambda j: j["status"] in FINAL, timeout=120)[killed]
    assert job["status"] == "sys-failed" and job["error_code"] in (60, 62), job


def test_a_job_whose_wrapper_dies_in_slurm_is_ended_by_the_poller_through_the_ce(live, slow):
    """SIGKILL to the wrapper and its payload on the node (a crash): no report at all, only the CE can tell."""
    api, ce = live["api"], live["ce"]
    plan = submit(api, slow["id"], 1, "arc", production="2026_Slow")
    (job_id,) = plan["job_ids"]
    gjid = plan["submitted"][str(job_id)]
    slurm_id(ce, gjid)
    wait_jobs(api, [job_id], lambda j: j["step"] == "RUNNING-04", timeout=180, what="in its payload")
    session = ce.session_dir / gjid.split("#")[1]
    victims = [pid for pid in processes_in(session) if pid != os.getpid()]
    assert victims, f"no process runs in {session}"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    job = wait_jobs(api, [job_id], lambda j: j["status"] in FINAL, timeout=180)[job_id]
    assert job["status"] == "sys-failed" and job["report"] is None, job
    assert job["error_code"] in (60, 99) and "ARC FINISHED" in job["message"], job


def processes_in(directory):
    """Pids whose working directory is `directory` or below it."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (os.readlink(entry / "cwd") + "/").startswith(f"{directory}/"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
