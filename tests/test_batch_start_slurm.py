"""On the real Slurm, a job shows `running` while its wrapper has not yet reported (issue 15).

`sbk serve` submits through the Slurm backend with a sandbox wrapper this test controls, as a
site's own wrapper script would be: it runs on the node, says so in a file, and waits for the
test's release file before it execs the real `severus` (nothing in the shipped wrapper knows).
While it waits, the batch poller sees Slurm's RUNNING and makes the job running (batch-start)
with no wrapper event; released, the wrapper reports, stages out to the real XRootD SE and the
job ends done. `sbk job` prints the queue time and the run time apart.
"""
import datetime
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server import demo as d
from server.jobs import BATCH_STARTED
from tests.infra.slurm import slurm_cluster  # noqa: F401 (session fixture)
from tests.test_slurm_production import FINAL, settled_state, slurm_state, slurm_world, submit, wait_jobs
from tests.waiting import poll

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parent.parent

# The sandbox wrapper: BACKEND_WRAPPER names it, the Slurm backend copies it into each sandbox
# (as severus.pyz) and runs it with BACKEND_PYTHON and `severus run`'s arguments.
HELD_WRAPPER = """\
import json, os, sys, time
from pathlib import Path
gates = Path({gates!r})
job = json.loads(Path(sys.argv[2]).read_text())["job"]
(gates / f"on-node-{{job['id']}}").write_text(os.environ.get("SLURM_JOB_ID", ""))
release = gates / f"release-{{job['id']}}"
deadline = time.monotonic() + 150
while not release.exists() and time.monotonic() < deadline:
    time.sleep(0.1)
os.environ["PYTHONPATH"] = {root!r}
os.execv({python!r}, [{python!r}, "-m", "wrapper"] + sys.argv[1:])
"""


@pytest.fixture(scope="module")
def held(tmp_path_factory, slurm_cluster):  # noqa: F811
    """sbk serve (polling Slurm every 0.3 s) whose Slurm jobs run the held wrapper; SE, release, production."""
    base = tmp_path_factory.mktemp("batchstart")
    gates = base / "gates"
    gates.mkdir()
    launcher = base / "held_wrapper.py"
    launcher.write_text(HELD_WRAPPER.format(gates=str(gates), root=str(ROOT), python=sys.executable))
    with slurm_world(base, slurm_cluster, jobs=1, SBK_BACKEND_WRAPPER=str(launcher),
                     SBK_BACKEND_PYTHON=sys.executable) as world:
        try:
            yield dict(world, gates=gates)
        finally:
            for gate in gates.glob("on-node-*"):   # never leave a held job waiting out its deadline
                (gates / gate.name.replace("on-node-", "release-")).touch()


def sbk_job(held, job_id):
    """`sbk job ID` as a manager runs it (its own process, over HTTP): its stdout."""
    env = {"SBK_URL": held["demo"].url, "SBK_TOKEN": held["demo"].token}
    run = subprocess.run(d.sbk_command() + ["job", str(job_id)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, **env))
    assert run.returncode == 0, run.stderr
    return run.stdout


def shown_seconds(text, label):
    """The seconds `sbk job` prints for `label` ('queue time: 12.3 s (12s)'); None for '-'."""
    found = re.search(rf"^{label}: +(?:([\d.]+) s \(((?:\d+[dhms] ?)+)\)|-)$", text, re.M)
    assert found, text
    return None if found.group(1) is None else float(found.group(1))


def unix(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def test_a_slurm_job_is_running_before_its_wrapper_reports_then_ends_done(held):
    api, gates, slurm = held["api"], held["gates"], held["slurm"]
    plan = submit(api, held["request"]["id"], 1, "slurm")
    assert plan["errors"] == [], plan
    (job_id,) = plan["job_ids"]
    gjid = plan["submitted"][str(job_id)]

    # On the node and held: Slurm runs it, the poller says running, and no wrapper event exists.
    poll(lambda: (gates / f"on-node-{job_id}").exists(), timeout=60, what="the batch job on the node")
    job = wait_jobs(api, [job_id], lambda j: j["status"] != "submitted", timeout=30, what="seen started")[job_id]
    seen = time.time()
    assert (job["status"], job["step"], job["history"], job["message"]) == ("running", None, [], BATCH_STARTED), job
    assert "RUNNING" in slurm_state(slurm, gjid)
    assert not (gates / f"release-{job_id}").exists()
    assert job["queue_s"] >= 0 and job["run_s"] >= 0
    assert unix(job["submitted_at"]) - 1 <= unix(job["started_at"]) <= seen
    text = sbk_job(held, job_id)
    assert re.search(r"^status: +running$", text, re.M), text
    assert shown_seconds(text, "queue time") == pytest.approx(job["queue_s"], abs=0.1)
    assert shown_seconds(text, "run time") >= job["run_s"]   # still running: up to now
    still = api.call("GET", f"/jobs/{job_id}")
    assert (still["status"], still["history"]) == ("running", []), still   # not reaped, nothing reported

    released = time.time()
    (gates / f"release-{job_id}").touch()
    job = wait_jobs(api, [job_id], lambda j: j["status"] in FINAL, timeout=120)[job_id]
    assert (job["status"], job["error_code"]) == ("done", 0), job
    assert job["started_at"] == still["started_at"]   # the batch start, not the wrapper's first report
    wrapper_events = [e for e in job["history"] if e["seq"] > 0]
    first_report = unix(wrapper_events[0]["time"])   # times are shown to the second
    assert unix(job["started_at"]) <= seen < released and int(released) <= first_report
    names = sorted(Path(o["lfn"]).name for o in job["outputs"])
    assert names == [f"{job['runnum']}.1.log.tgz", f"{job['runnum']}.root"]
    # queue time = started - submitted, run time = finished - started (the held part included)
    assert job["queue_s"] == pytest.approx(unix(job["started_at"]) - unix(job["submitted_at"]), abs=1.01)
    assert job["run_s"] == pytest.approx(unix(job["finished_at"]) - unix(job["started_at"]), abs=1.01)
    text = sbk_job(held, job_id)
    assert re.search(r"^status: +done$", text, re.M), text
    assert shown_seconds(text, "queue time") == pytest.approx(job["queue_s"], abs=0.1)
    assert shown_seconds(text, "run time") == pytest.approx(job["run_s"], abs=0.1)
    assert "COMPLETED" in settled_state(slurm, gjid)
