"""Workflows for real (issue 15): `sbk serve` with its local backend and batch poller, a real XRootD SE,
`severus run` jobs.

- Steps (seed 001): a session's step templates chosen by a request (the simulation, then a data-quality
  check); the check passes on a good output and fails on a bad one: the job ends 035, nothing stored.
- A follow-up stage (seed 002's merge of the Monte Carlo output): three jobs end done; the merge job
  starts by itself (prepared at the last job's end, submitted by the poller through the backend the
  jobs ran on), stages their outputs, runs the built-in `merge` module and registers the merged file.
What is on the SE is checked with xrdadler32 and read from the SE's own export directory."""
import io
import tarfile
import urllib.parse
import zlib
from pathlib import Path

import pytest

from server import demo as d
from tests.test_attempts_with_server import adler32_on_se
from tests.test_wrapper_with_server import poll, server_world

pytestmark = pytest.mark.timeout(300)

PRODUCTION = "2026_Merge"
OUTPUT = f"lfn:{d.LFN_PREFIX}/production/FastSim/{PRODUCTION}/output"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("stages")
    with server_world(base, SBK_BACKEND_SITE_CONFIGS=str(base / "site_configs"),
                      SBK_BACKEND_SANDBOX_DIR=str(base / "sandboxes"), SBK_BATCH_POLL_INTERVAL_S="0.5") as w:
        yield w


def test_a_request_of_steps_runs_the_simulation_then_its_check_and_a_failed_check_is_035(world):
    api = world["api"]
    api.call("POST", "/sessions/FastSim/steps", json={"name": "sim", "module": "fastsim"})
    # the check reads what the simulation wrote in the work dir: at least MIN bytes (its parameter, in
    # SEVERUS_PARAM_MIN) of <runnum>.root
    check = 'test "$(wc -c < "$SEVERUS_RUNNUM.root")" -ge "$SEVERUS_PARAM_MIN"'
    api.call("POST", "/sessions/FastSim/steps", json={"name": "dq", "module": "dq",
                                                      "args": ["/bin/sh", "-c", check]})
    api.call("POST", "/productions", json={"name": "2026_Steps", "session": "FastSim", "version": "V0.2.5",
                                           "revision": 311})
    outcome = {}
    for label, minimum in (("good", "1"), ("bad", "1000000000")):
        params = dict(d.PARAMETERS, Generator=f"Steps_{label}")
        request = api.call("POST", "/requests", json={
            "production": "2026_Steps", "min_runnum": 53000000 + (label == "bad") * 1000, "events_per_job": 20,
            "parameters": params, "input_mode": "NONE",
            "output_lfn": f"lfn:{d.LFN_PREFIX}/production/FastSim/2026_Steps/output/{label}",
            "output_sites": [d.SITE], "max_wct_s": 600,
            "steps": ["sim", {"template": "dq", "parameters": {"MIN": minimum}}]})
        api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})
        (job_id,) = api.call("POST", "/submissions", json={
            "production": "2026_Steps", "backend": "local",
            "bulks": [{"request": request["id"], "sites": [d.SITE], "runs": 1, "events": 20}]})["job_ids"]
        outcome[label] = poll(lambda: (lambda j: j if j["status"] not in ("prepared", "submitted", "running")
                                       else None)(api.call("GET", f"/jobs/{job_id}")),
                              timeout=120, what=f"the {label} job to end")
    good, bad = outcome["good"], outcome["bad"]
    assert (good["status"], good["error_code"]) == ("done", 0), good["message"]
    steps = [e["message"] for e in good["history"] if e["step"] == "RUNNING-04" and e["kind"] == "step"]
    assert steps == ["step 1/2 sim (fastsim)", "step 2/2 dq (dq)"], steps
    assert [s["name"] for s in good["report"]["payload"]["steps"]] == ["sim", "dq"]
    (output,) = [o for o in good["outputs"] if o["lfn"].endswith(".root")]
    assert adler32_on_se(output["surl"]) == output["adler32"]
    assert (bad["status"], bad["error_code"], bad["error"]["blame"]) == ("failed", 35, "payload"), bad["message"]
    assert "step 2/2 dq (dq)" in bad["message"]
    assert not [o for o in bad["outputs"] if o["lfn"].endswith(".root")]       # nothing stored but the log


def test_the_merge_starts_by_itself_when_the_last_job_is_done_and_registers_the_merged_file(world):
    api = world["api"]
    api.call("POST", "/sessions/FastSim/steps", json={"name": "merge", "module": "merge",
                                                      "parameters": {"how": "tar"}})
    api.call("POST", "/productions", json={"name": PRODUCTION, "session": "FastSim", "version": "V0.2.5",
                                           "revision": 311})
    request = api.call("POST", "/requests", json={
        "production": PRODUCTION, "min_runnum": 52000000, "events_per_job": 20, "parameters": d.PARAMETERS,
        "input_mode": "NONE", "output_lfn": OUTPUT, "output_sites": [d.SITE], "max_wct_s": 600,
        "followup": {"template": "merge"}})
    api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})
    ids = api.call("POST", "/submissions", json={
        "production": PRODUCTION, "backend": "local",
        "bulks": [{"request": request["id"], "sites": [d.SITE], "runs": 3, "events": 20}]})["job_ids"]

    def jobs_of_request():
        listing = api.call("GET", "/jobs", params={"request": request["id"], "per_page": 50})["jobs"]
        return {j["id"]: j for j in listing}
    # the three jobs end done; then a fourth job (the merge) appears, is submitted and ends done
    everything = poll(lambda: (lambda js: js if len(js) == 4 and all(j["status"] in ("done", "failed", "sys-failed",
                                                                                          "timeout") for j in js.values())
                               else None)(jobs_of_request()), timeout=240, what="the jobs and their merge to end")
    merge_id = next(j for j in everything if j not in ids)
    merge = api.call("GET", f"/jobs/{merge_id}")
    assert (merge["status"], merge["error_code"]) == ("done", 0), merge["message"]
    assert merge["backend"] == "local"                                   # the backend the jobs ran on
    inputs = sorted(f"{OUTPUT}/{api.call('GET', f'/jobs/{j}')['runnum']}.root" for j in ids)
    assert api.call("GET", f"/jobs/{merge_id}/description")["input"] == {"mode": "LIST", "paths": inputs}
    (merged,) = [o for o in merge["outputs"] if ".merged." in o["lfn"]]
    assert merged["lfn"] == f"{OUTPUT}/merge/{merge['runnum']}.merged.tgz"
    # on the SE: xrdadler32's checksum, and a tarball of the three outputs with their bytes
    assert adler32_on_se(merged["surl"]) == merged["adler32"]
    with tarfile.open(fileobj=io.BytesIO(local_file(merged["surl"]).read_bytes())) as tar:
        members = {m.name.rsplit("/", 1)[-1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert sorted(members) == sorted(i.rsplit("/", 1)[-1] for i in inputs)
    for job_id in ids:
        (output,) = [o for o in api.call("GET", f"/jobs/{job_id}")["outputs"] if o["lfn"].endswith(".root")]
        assert zlib.adler32(members[output["lfn"].rsplit("/", 1)[-1]]) == int(output["adler32"], 16)
    shown = api.call("GET", f"/requests/{request['id']}")["stage"]
    assert shown["state"] == "done" and shown["jobs"] == {"done": 1}


def local_file(surl):
    """The file an SE URL of the tests' local XRootD names (it serves a local directory)."""
    return Path("/" + urllib.parse.urlsplit(surl).path.lstrip("/"))
