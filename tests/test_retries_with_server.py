"""Automatic retries on real parts (issue 15, seed 004): `sbk serve` with its batch poller, the local
backend running the real `severus` wrapper, real XRootD SEs, `sbk` commands.

Two sites: RETRY-A, whose SE is down, and RETRY-B, whose SE works (the release stays on the demo
SE of DEMO-T1, read through that site's configuration). A job at RETRY-A runs its payload and
cannot store its output: 040 sys-failed, blamed on the storage. The server retries it on its own
after the request's back-off, as a new attempt at RETRY-B through the same backend, and it ends
done there, its output on RETRY-B's SE (checked with xrdadler32). A payload failure (030) is
never retried. What is on the SE is read with XRootD's own tools.
"""
import datetime

import pytest

from server import demo as d
from server.xrootd_se import start_se
from tests.test_attempts_with_server import World, adler32_on_se, se_files
from tests.test_wrapper_with_server import poll, server_world

pytestmark = pytest.mark.timeout(300)

DOWN, UP = "RETRY-A", "RETRY-B"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A server whose poller runs every 0.5 s, the local backend, and the two sites' SEs (RETRY-A's stopped)."""
    base = tmp_path_factory.mktemp("retries")
    configs = base / "site_configs"   # the demo writes DEMO-T1.toml here too
    se_a = start_se(base / "se-a", name="se-retry-a")
    se_b = start_se(base / "se-b", name="se-retry-b")
    try:
        with server_world(base, SBK_BACKEND_SITE_CONFIGS=str(configs), SEVERUS_SITE_CONFIGS=str(configs),
                          SBK_BACKEND_SANDBOX_DIR=str(base / "sandboxes"), SBK_CLEANUP_INTERVAL_S="0",
                          SBK_BATCH_POLL_INTERVAL_S="0.5", SBK_BATCH_GRACE_S="2",
                          # a dead door fails at once (XrdCl would otherwise retry a refused connection)
                          XRD_CONNECTIONRETRY="1", XRD_REQUESTTIMEOUT="30") as w:
            for name, se in ((DOWN, se_a), (UP, se_b)):
                (configs / f"{name}.toml").write_text(
                    f'name = "{name}"\n\n[se]\nlfn_prefix = "{d.LFN_PREFIX}"\nurls = ["{se.root_url}"]\n'
                    'access = "protocol"\n\n[scratch]\nmin_free_gb = 0.1\n\n[transfer]\nretries = 0\n'
                    'probe_timeout_s = 5\n')
                w["api"].call("POST", "/sites", json={"name": name, "bunch_size": 1})
            se_a.stop()   # RETRY-A's SE is down from now on
            world = World(base, w["demo"], w["sbk"], w["api"], w["site_config"], w["release"])
            world.se_a, world.se_b = se_a, se_b
            yield world
    finally:
        se_a.stop()
        se_b.stop()


def production(world, name, env=None, backoff=1.0):
    """A production of its own whose request stores outputs at the job's own site (no output_sites)
    and retries after `backoff` seconds; DEMO-T1 (the release's site) is not allowed for it."""
    version = f"V9.2.{abs(hash(name)) % 100000}"
    api = world.api
    api.call("POST", "/sessions/FastSim/software", json={
        "name": "PacProductionApp", "version": version, "revision": 311, "lfn": d.SOFTWARE_LFN,
        "adler32": world.release.adler32, "workdir": world.release.workdir, "exe": world.release.exe,
        "env": dict(env or {})})
    api.call("POST", "/productions", json={"name": name, "session": "FastSim", "version": version, "revision": 311})
    request = api.call("POST", "/requests", json={
        "production": name, "min_runnum": 40000000 + abs(hash(name)) % 1000000, "events_per_job": 50,
        "parameters": d.PARAMETERS, "input_mode": "NONE", "output_lfn": world.output_lfn(name),
        "output_sites": [], "max_wct_s": 600, "max_attempts": 3, "retry_backoff_s": backoff})
    assert (request["max_attempts"], request["retry_backoff_s"]) == (3, backoff)
    api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})
    api.call("PATCH", f"/sites/{d.SITE}", json={"productions": {name: {"allowed": False}}})
    return request["id"]


def submit(world, name, request_id, site):
    plan = world.api.call("POST", "/submissions", json={
        "production": name, "backend": "local",
        "bulks": [{"request": request_id, "sites": [site], "runs": 1, "events": 50, "log_to_db": True}]})
    assert plan["errors"] == [], plan["errors"]
    return plan["job_ids"][0]


def when(text):
    return datetime.datetime.fromisoformat(text.rstrip("Z"))


def test_a_job_whose_se_is_down_at_stage_out_is_retried_at_the_other_site_and_a_payload_failure_is_not(world):
    # The payload failure first: once the other job has been retried, the pollers passed after its end.
    payload_prod = "RT_payload"
    payload_job = submit(world, payload_prod, production(world, payload_prod, env={"TOY_EXIT_CODE": "3"}), UP)
    job = poll(lambda: (j := world.job(payload_job))["status"] in ("failed", "sys-failed", "done") and j, 120,
               what="the payload failure")
    assert (job["status"], job["error_code"], job["retry_at"]) == ("failed", 30, None), job

    name = "RT_se_down"
    job_id = submit(world, name, production(world, name, backoff=4.0), DOWN)
    failed = poll(lambda: (j := world.job(job_id))["status"] not in ("prepared", "submitted", "running") and j,
                  120, what=f"attempt 1 to end at {DOWN}")
    # The monitor shows it failed, with when the server retries it.
    assert (failed["status"], failed["error_code"], failed["attempt"], failed["site"]) == \
        ("sys-failed", 40, 1, DOWN), failed
    assert failed["retry_at"] and failed["error"]["blame"] == "storage"
    assert failed["report"]["failed_step"] == "RUNNING-05"   # the stage-out
    assert [j["id"] for j in world.api.call("GET", "/jobs", params={"production": name})["jobs"]
            if j["retry_at"] == failed["retry_at"]] == [job_id]

    done = poll(lambda: (j := world.job(job_id))["status"] in ("done", "failed", "sys-failed", "timeout")
                and j["attempt"] > 1 and j, 180, what="the automatic retry to end")
    assert (done["status"], done["error_code"], done["attempt"], done["site"], done["backend"]) == \
        ("done", 0, 2, UP, "local"), done
    assert (done["retries"], done["retry_at"], [a["automatic"] for a in done["attempts"]]) == (1, None, [False, True])
    # each attempt keeps its history: attempt 1 ended 040, attempt 2 done, each with its own steps
    finals = [(e["attempt"], e["status"], e["code"]) for e in done["history"] if e["kind"] == "final"]
    assert finals == [(1, "sys-failed", 40), (2, "done", 0)], finals
    for attempt in (1, 2):
        steps = [e["step"] for e in done["history"] if e["attempt"] == attempt and e["kind"] == "step"]
        assert steps[:5] == [f"RUNNING-0{i}" for i in range(1, 6)], (attempt, steps)
    ended = max(when(e["received_at"]) for e in done["history"] if e["attempt"] == 1)
    assert (when(done["attempts"][1]["created_at"]) - ended).total_seconds() >= 3   # after the 4 s back-off
    # the output is on RETRY-B's SE, as XRootD reads it, under attempt 2's physical name
    (output,) = [o for o in done["outputs"] if o["lfn"].endswith(".root")]
    assert output["site"] == UP and output["attempt"] == 2 and output["surl"].startswith(world.se_b.root_url)
    assert output["surl"].endswith(".root.2")
    assert adler32_on_se(output["surl"]) == output["adler32"]
    assert any(p.endswith(".root.2") for p in se_files(world.se_b, world.export_dir(name, world.se_b)))

    payload = world.job(payload_job)
    assert (payload["status"], payload["attempt"], payload["retries"], payload["retry_at"]) == ("failed", 1, 0, None)
    # the managers' client: the monitor's "retried" filter and the job's attempts
    code, out = world.sbk_run("jobs", "--production", f"{name},{payload_prod}", "--retried")
    assert code == 0 and str(done["runnum"]) in out and str(payload["runnum"]) not in out, out
    assert "1 jobs found" in out, out
    code, out = world.sbk_run("job", str(job_id))
    assert code == 0 and "2 of 3 (1 automatic retry: 2)" in out, out
