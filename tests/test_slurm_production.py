"""A production on real parts: `sbk serve`, a real XRootD SE, a real Slurm, the real `severus` wrapper.

POST /submissions with "backend": "slurm" puts one job array per bunch on
Slurm; the jobs run `python -m wrapper`, stage out to the SE and report. A
scancel'd job ends sys-failed with Slurm's reason; kill scancels; resubmit
starts a new attempt whose predecessor's token gets 409. The local backend and
concurrent submissions (runnums never shared) run against the same server.
"""
import contextlib
import json
import os
import subprocess
import threading
import time
import zlib
from pathlib import Path

import pytest
import requests

from server import demo as d
from server.toy_release import build_toy_release
from tests.infra.slurm import slurm_cluster  # noqa: F401 (session fixture)
from tests.proxies import TcpProxy

pytestmark = pytest.mark.timeout(240)
FINAL = {"done", "failed", "sys-failed", "timeout"}


@contextlib.contextmanager
def slurm_world(base, slurm_cluster, jobs=2, **env):
    """sbk serve (polling every 0.3 s, `env` added to its settings) + XRootD SE + toy release + a
    production whose site has bunch size `jobs`."""
    demo = d.Demo(base=base)
    progress = d.Progress()
    with pytest.MonkeyPatch.context() as mp:
        try:
            site_config = d.start_storage(demo, progress)
            for key, value in {"SBK_BACKEND_SLURM_CONF": str(slurm_cluster.conf),
                               "SBK_BACKEND_SITE_CONFIGS": str(site_config.parent),
                               "SBK_BACKEND_SANDBOX_DIR": str(base / "sandboxes"),
                               "SBK_BATCH_POLL_INTERVAL_S": "0.3", "SBK_BATCH_GRACE_S": "1", **env}.items():
                mp.setenv(key, value)
            d.start_server(demo, f"sqlite:///{base / 'sbk.db'}", progress)
            api = d.Api(demo.url, demo.token)
            release = build_toy_release(base)
            d.upload_release(release, demo.se_door, api)
            request = d.define_production(api, release, jobs=jobs, events=100)
            yield {"demo": demo, "api": api, "release": release, "request": request, "base": base,
                   "slurm": slurm_cluster, "site_configs": site_config.parent}
        finally:
            demo.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory, slurm_cluster):  # noqa: F811
    """slurm_world with bunch size 2."""
    with slurm_world(tmp_path_factory.mktemp("slurmprod"), slurm_cluster) as world:
        yield world


def submit(api, request_id, runs, backend, production=d.PRODUCTION):
    return api.call("POST", "/submissions", json={
        "production": production, "backend": backend,
        "bulks": [{"request": request_id, "sites": [d.SITE], "runs": runs, "events": 100, "log_to_db": True}]})


def wait_jobs(api, job_ids, done, timeout=90.0, what="final"):
    deadline = time.monotonic() + timeout
    while True:
        jobs = {j: api.call("GET", f"/jobs/{j}") for j in job_ids}
        if all(done(job) for job in jobs.values()):
            return jobs
        if time.monotonic() > deadline:
            pytest.fail(f"jobs not {what} in {timeout:.0f}s: "
                        + ", ".join(f"{j['id']} {j['status']} {j['error_code']} {j['message']!r}"
                                    for j in jobs.values()))
        time.sleep(0.3)


def slurm_state(slurm, gjid):
    out = slurm.run("scontrol", "show", "job", "-o", gjid.split("_")[0]).stdout
    for line in out.splitlines():
        if f"ArrayTaskId={gjid.split('_')[1]} " in line:
            return line.split("JobState=")[1].split()[0]
    return slurm.jobcomp_file.read_text() if slurm.jobcomp_file.exists() else ""


def settled_state(slurm, gjid, timeout=30):
    """The job's Slurm state once it is past the transient COMPLETING."""
    deadline = time.monotonic() + timeout
    while True:
        state = slurm_state(slurm, gjid)
        if "COMPLETING" not in state or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def test_five_jobs_through_slurm_arrays_all_done_with_outputs(live):
    api = live["api"]
    plan = submit(api, live["request"]["id"], 5, "slurm")
    assert plan["errors"] == [] and len(plan["submitted"]) == 5
    arrays = {gjid.split("_")[0] for gjid in plan["submitted"].values()}
    assert len(arrays) == 3 and [len(b["jobs"]) for b in plan["bunches"]] == [2, 2, 1]
    assert [b["gjids"][-1].split("_")[1] for b in plan["bunches"]] == ["1", "1", "0"]   # array task indices
    jobs = wait_jobs(api, plan["job_ids"], lambda j: j["status"] in FINAL)
    assert {j["status"] for j in jobs.values()} == {"done"}, [j["message"] for j in jobs.values()]
    for job in jobs.values():
        assert job["backend"] == "slurm" and job["gjid"] == plan["submitted"][str(job["id"])]
        names = sorted(Path(o["lfn"]).name for o in job["outputs"])
        assert names == [f"{job['runnum']}.1.log.tgz", f"{job['runnum']}.root"]
        assert all(o["site"] == d.SITE and o["adler32"] for o in job["outputs"])


def slow_production(live):
    """A production whose payload takes ~40 s (the release's env slows the toy exe), one valid request."""
    api, release = live["api"], live["release"]
    api.call("POST", "/sessions/FastSim/software", json={
        "name": "PacProductionApp", "version": "V0.2.6", "revision": 311, "lfn": d.SOFTWARE_LFN,
        "adler32": release.adler32, "workdir": release.workdir, "exe": release.exe,
        "env": {"TOY_EVENT_TIME": "0.4"}})
    api.call("POST", "/productions", json={"name": "2026_Slow", "session": "FastSim", "version": "V0.2.6",
                                           "revision": 311})
    request = api.call("POST", "/requests", json={
        "production": "2026_Slow", "min_runnum": 30000000, "events_per_job": 100,
        "parameters": dict(d.PARAMETERS, Geometry="DG_5"), "input_mode": "NONE",
        "output_lfn": f"lfn:{d.LFN_PREFIX}/production/FastSim/2026_Slow/output", "output_sites": [d.SITE],
        "max_wct_s": 600})
    api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})
    return request


def sandbox_token(live, job_id, attempt):
    for path in (live["base"] / "sandboxes").glob("*/job-*.json"):
        desc = json.loads(path.read_text())
        if desc["job"]["id"] == job_id and desc["job"]["attempt"] == attempt:
            return desc["server"]["token"]
    pytest.fail(f"no sandbox description for job {job_id} attempt {attempt}")


def test_scancel_kill_and_resubmit_on_slurm(live):
    api, slurm = live["api"], live["slurm"]
    request = slow_production(live)
    plan = submit(api, request["id"], 2, "slurm", production="2026_Slow")
    cancelled, killed = plan["job_ids"]
    wait_jobs(api, plan["job_ids"], lambda j: j["step"] == "RUNNING-04", timeout=60, what="in their payload")

    # scancel behind the server's back: the job ends and says what Slurm said. Slurm signals the
    # wrapper and its payload at once; whichever dies first, it is the site's stop (060): the
    # wrapper reports it, or the poller does when the wrapper stays silent.
    assert slurm.run("scancel", plan["submitted"][str(cancelled)]).returncode == 0
    job = wait_jobs(api, [cancelled], lambda j: j["status"] in FINAL and "Slurm CANCELLED" in j["message"],
                    timeout=30, what="ended with the batch reason")[cancelled]
    assert (job["status"], job["error_code"]) == ("sys-failed", 60), job

    # kill: recorded for the wrapper and scancel'd on Slurm.
    reply = api.call("POST", f"/jobs/{killed}/kill")
    assert reply["command"] == "kill" and reply["cancelled"] == plan["submitted"][str(killed)]
    job = wait_jobs(api, [killed], lambda j: j["status"] in FINAL, timeout=30)[killed]
    assert job["status"] == "sys-failed" and job["error_code"] in (60, 62), job
    assert "CANCELLED" in settled_state(slurm, job["gjid"])

    # resubmit the sys-failed one through Slurm: attempt 2, a new token; attempt 1's token gets 409.
    old_token = sandbox_token(live, cancelled, 1)
    reply = api.call("POST", f"/jobs/{cancelled}/resubmit", json={"backend": "slurm"})
    assert reply["attempt"] == 2 and list(reply["submitted"]) == [str(cancelled)]
    assert sandbox_token(live, cancelled, 2) != old_token
    late = requests.post(f"{live['demo'].url}/api/v1/jobs/{cancelled}/events", timeout=10,
                         headers={"Authorization": f"Bearer {old_token}"},
                         json={"attempt": 1, "seq": 999, "time": time.time(), "status": "running"})
    assert late.status_code == 409 and late.json()["error"] == "attempt-superseded"
    job = api.call("GET", f"/jobs/{cancelled}")
    assert job["gjid"] == reply["submitted"][str(cancelled)] and job["gjid"] != plan["submitted"][str(cancelled)]
    api.call("POST", f"/jobs/{cancelled}/kill")   # do not leave a 40 s job on the node
    wait_jobs(api, [cancelled], lambda j: j["status"] in FINAL, timeout=30)


def test_local_backend_through_submissions(live):
    api = live["api"]
    plan = submit(api, live["request"]["id"], 2, "local")
    assert all(g.startswith("local:") for g in plan["submitted"].values())
    jobs = wait_jobs(api, plan["job_ids"], lambda j: j["status"] in FINAL)
    assert {j["status"] for j in jobs.values()} == {"done"}, [j["message"] for j in jobs.values()]
    assert all(len(j["outputs"]) == 2 and j["backend"] == "local" for j in jobs.values())


def test_concurrent_submissions_never_share_a_runnum(live):
    """Eight HTTP clients submit at once (gunicorn, 2 workers): every plan is contiguous, no runnum twice."""
    plans, errors = [], []

    def one():
        try:
            http = d.Api(live["demo"].url, live["demo"].token)
            plans.append(http.call("POST", "/submissions", json={
                "production": d.PRODUCTION,
                "bulks": [{"request": live["request"]["id"], "sites": [d.SITE], "runs": 7, "events": 10}]}))
        except Exception as exc:   # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(plans) == 8
    runnums = []
    for plan in plans:
        row = plan["sets"][0]["rows"][0]
        assert row["last_runnum"] - row["first_runnum"] == 6
        runnums += range(row["first_runnum"], row["last_runnum"] + 1)
    assert len(runnums) == len(set(runnums)) == 56
    stored = [j["runnum"] for j in live["api"].call("GET", "/jobs", params={"per_page": 1000})["jobs"]]
    assert len(stored) == len(set(stored)) and set(runnums) <= set(stored)


def test_scancel_during_a_long_stage_in_gets_the_wrappers_own_report_within_killwait(live):
    """Issue 12, finding 6 under Slurm: scancel while inputs crawl in through a slow door. Slurm
    TERMs the job and SIGKILLs it KillWait (2 s here) later; the site's stop_grace_s (1.5 s) is
    set under it. The wrapper stops the copies at once and its own final report (060, failed at
    RUNNING-03) and log reach the server: not the poller's verdict on a job killed silent."""
    api, slurm, base = live["api"], live["slurm"], live["base"]
    se = live["demo"].se
    proxy = TcpProxy(se.root_port, rate=300_000)
    site = "SLOW-T1"
    configs = Path(live["site_configs"])
    (configs / f"{site}.toml").write_text(
        f'name = "{site}"\n[se]\nlfn_prefix = "{d.LFN_PREFIX}"\nurls = ["{proxy.url(se.export)}"]\n'
        'access = "protocol"\n[scratch]\nmin_free_gb = 0\n[transfer]\nparallel = 2\nretries = 0\n'
        "[wrapper]\nstop_grace_s = 1.5\n")
    api.call("POST", "/sites", ok=(201, 409), json={"name": site, "bunch_size": 1})
    # the release, and 6 inputs of 1 MB, reachable through the slow door as the site's replicas
    sw = api.call("GET", "/catalog/replicas", params={"lfn": d.SOFTWARE_LFN})
    api.call("POST", "/catalog/replicas", json={
        "lfn": sw["lfn"], "site": site, "size": sw["size"], "adler32": sw["adler32"],
        "surl": proxy.url(se.export / d.SOFTWARE_LFN[len(f"lfn:{d.LFN_PREFIX}/"):])})
    lfns = []
    for i in range(6):
        rel = f"production/FastSim/slow-input/in_{i}.dat"
        data = os.urandom(1_000_000)
        local = base / f"in_{i}.dat"
        local.write_bytes(data)
        subprocess.run(["xrdcp", "-f", "-s", "--path", str(local), f"{se.root_url}/{rel}"], check=True, timeout=60)
        lfn = f"lfn:{d.LFN_PREFIX}/{rel}"
        api.call("POST", "/catalog/replicas", json={"lfn": lfn, "site": site, "surl": proxy.url(se.export / rel),
                                                     "size": len(data),
                                                     "adler32": f"{zlib.adler32(data) & 0xffffffff:08x}"})
        lfns.append(lfn)
    request = api.call("POST", "/requests", json={
        "production": d.PRODUCTION, "min_runnum": 50000000, "events_per_job": 10,
        "parameters": dict(d.PARAMETERS, Geometry="DG_slow_in"), "input_mode": "LIST", "input_paths": lfns,
        "output_lfn": f"lfn:{d.LFN_PREFIX}/production/FastSim/{d.PRODUCTION}/slow-in/output", "output_sites": [site],
        "max_wct_s": 600})
    api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})
    try:
        plan = api.call("POST", "/submissions", json={
            "production": d.PRODUCTION, "backend": "slurm",
            "bulks": [{"request": request["id"], "sites": [site], "runs": 1, "events": 10, "log_to_db": True}]})
        (job_id,) = plan["job_ids"]
        wait_jobs(api, [job_id], lambda j: j["step"] == "RUNNING-03", timeout=60, what="staging inputs in")
        poll_inputs = time.monotonic() + 30
        while not any(any(p.iterdir()) for p in (base / "sandboxes").glob(f"{site}-*/work-0/inputs")):
            assert time.monotonic() < poll_inputs, "no input arrived"
            time.sleep(0.1)   # polling interval under the deadline above
        assert slurm.run("scancel", plan["submitted"][str(job_id)]).returncode == 0
        job = wait_jobs(api, [job_id], lambda j: j["status"] in FINAL, timeout=30)[job_id]
    finally:
        proxy.close()
    assert (job["status"], job["error_code"]) == ("sys-failed", 60), job
    assert job["report"] and job["report"]["failed_step"] == "RUNNING-03", job["message"]   # the wrapper's own
    assert job["logs"], "the log reached the server before Slurm's SIGKILL"
    copied = [t for t in job["report"]["transfers"] if t["direction"] == "in" and "in_" in t["source"]
              and t["error"] is None]
    assert len(copied) < 6, copied
