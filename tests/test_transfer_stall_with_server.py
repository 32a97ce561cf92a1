"""A stage-in that stops moving bytes, over a real `sbk serve`, a real XRootD SE and a real
`severus run`: while the SE is slow the job's heartbeats carry the bytes moved (the server's job
view and `sbk job` show them); once the SE's process is frozen (SIGSTOP) the copy is given up after
the site's `[transfer] stall_s` with the stage's transfer code (022), long before the copy's
size-based timeout, and no partial input is left in the work dir.
"""
import os
import re
import subprocess
import time
import zlib

import pytest
import requests

from server import demo as d
from .test_wrapper_with_server import ROOT, finish, job, poll, server_world, start_wrapper
from .wrapper.test_transfer_progress import Throttle

pytestmark = pytest.mark.timeout(300)

SIZE = 96 * 1024 * 1024
STALL_S = 3
TIMEOUT_BASE_S = 300   # the copy's size-based timeout is this plus ~96 s: what a stall must not wait for
INPUT_REL = "production/stall/input"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with server_world(tmp_path_factory.mktemp("stall")) as world:
        yield world


def put_input(world, tmp_path, name):
    """A 96 MiB input on the SE (written by xrdcp) and in the catalog; its LFN."""
    se, api = world["demo"].se, world["api"]
    src = tmp_path / name
    data = os.urandom(SIZE)
    src.write_bytes(data)
    url = f"{se.root_url}/{INPUT_REL}/{name}"
    subprocess.run(["xrdcp", "-f", "-s", "--path", str(src), url], check=True, timeout=60)
    lfn = f"lfn:{d.LFN_PREFIX}/{INPUT_REL}/{name}"
    api.call("POST", "/catalog/replicas", json={"lfn": lfn, "site": d.SITE, "surl": url, "size": SIZE,
                                                 "adler32": f"{zlib.adler32(data) & 0xffffffff:08x}"})
    return lfn


def prepare_input_job(world, production, lfn):
    api = world["api"]
    api.call("POST", "/productions", json={"name": production, "session": "FastSim", "version": "V0.2.5",
                                           "revision": 311})
    request = api.call("POST", "/requests", json={
        "production": production, "min_runnum": 30000000, "events_per_job": 50, "parameters": d.PARAMETERS,
        "input_mode": "FILE", "input_paths": [lfn],
        "output_lfn": f"lfn:{d.LFN_PREFIX}/production/FastSim/{production}/output",
        "output_sites": [d.SITE], "max_wct_s": 600})
    api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})
    plan = api.call("POST", "/submissions", json={
        "production": production,
        "bulks": [{"request": request["id"], "sites": [d.SITE], "runs": 1, "events": 50, "log_to_db": True}]})
    job_id = plan["job_ids"][0]
    return job_id, api.call("POST", f"/jobs/{job_id}/token")


def site_config(world, path, tool):
    """The demo site reached over root:// only (a frozen xrootd must matter), a 3 s stall limit,
    no retries, and the failed job's work dir kept to look into."""
    path.write_text(f'name = "{d.SITE}"\n\n[se]\nlfn_prefix = "{d.LFN_PREFIX}"\n'
                    f'urls = ["{world["demo"].se.root_url}"]\naccess = "protocol"\n\n'
                    '[scratch]\nmin_free_gb = 0.1\nkeep_workdir_on_failure = true\n\n'
                    f'[transfer]\nstall_s = {STALL_S}\nretries = 0\ntimeout_base_s = {TIMEOUT_BASE_S}\n'
                    f'tool = "{tool}"\n')
    return path


def job_page(world, job_id):
    """The job's web page as a signed-in manager's browser gets it."""
    url = world["sbk"].url
    with requests.Session() as browser:
        form = browser.get(f"{url}/signin", timeout=30).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        browser.post(f"{url}/signin", data={"csrf": csrf, "token": world["sbk"].token, "next": "/"}, timeout=30)
        page = browser.get(f"{url}/jobs/{job_id}", timeout=30)
    assert page.status_code == 200, page.text[:300]
    return page.text


def sbk_job(world, job_id):
    sbk = world["sbk"]
    out = subprocess.run(d.sbk_command() + ["job", str(job_id)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=dict(sbk.env, SBK_URL=sbk.url, SBK_TOKEN=sbk.token))
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("tool", ["gfal2", "cli"])
def test_a_stage_in_shows_its_bytes_then_a_stall_ends_it_022_long_before_its_timeout(world, tmp_path, tool):
    lfn = put_input(world, tmp_path, f"big-{tool}.dat")
    job_id, desc = prepare_input_job(world, f"STALL_{tool}", lfn)
    cfg = site_config(world, tmp_path / "site.toml", tool)
    throttle = Throttle(world["demo"].se.pid, every_s=0.3)   # ~10 MB/s here: seconds for 96 MiB
    proc = start_wrapper(tmp_path, desc, cfg)
    try:
        # A heartbeat of the stage-in with some bytes, not all: the server's view of the copy.
        def moving():
            progress = job(world, job_id).get("transfer_progress")
            return progress if progress and progress["step"] == "RUNNING-03" and 0 < progress["bytes"] < SIZE \
                else None   # (the software's tarball, at RUNNING-02, crawls too)
        progress = poll(moving, 90, "a heartbeat carrying the stage-in's bytes")
        assert progress["total_bytes"] == SIZE, progress
        assert progress["rate_mb_s"] > 0, progress
        shown = sbk_job(world, job_id)
        assert " of 100,663,296 bytes (" in shown and "MB/s (RUNNING-03" in shown, shown
        row = re.search(r'id="transfer-progress">([^<]*)<', job_page(world, job_id))
        assert row and " of 100,663,296 bytes (" in row.group(1) and "MB/s (RUNNING-03" in row.group(1), row

        throttle.freeze()
        frozen_at = time.monotonic()
        # The stage gives up: the next step the server hears of is the log's (or the end).
        poll(lambda: job(world, job_id)["step"] == "RUNNING-07" or job(world, job_id)["status"] != "running",
             60, "the stalled stage-in to be given up")
        given_up_after = time.monotonic() - frozen_at
        throttle.thaw()   # the log goes to the SE now
        code, out, err = finish(proc, timeout=120)
    finally:
        throttle.thaw()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # ~stall_s after the last byte (with a heartbeat's lag and a busy machine's room); the copy's
    # own timeout was more than 390 s.
    assert given_up_after < STALL_S + 12, given_up_after
    assert code == 22, err
    info = job(world, job_id)
    assert (info["status"], info["error_code"]) == ("sys-failed", 22), info["message"]
    assert f"stalled: no bytes moved for {STALL_S} s" in info["message"], info["message"]
    assert info["transfer_progress"] is None   # not running any more
    (attempt,) = [t for t in info["report"]["transfers"] if t["source"].endswith(f"/big-{tool}.dat")]
    assert attempt["error"].startswith("timeout: ") and "stalled" in attempt["error"], attempt
    assert attempt["seconds"] < TIMEOUT_BASE_S, attempt
    # Nothing of the input stayed in the (kept) work dir: no file, no .part.
    inputs = tmp_path / "work" / "inputs"
    assert not inputs.exists() or not [p.name for p in inputs.rglob("*") if p.is_file()], list(inputs.rglob("*"))
