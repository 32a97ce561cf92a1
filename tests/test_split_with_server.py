"""Splitting a request into jobs on real parts (issue 15): `sbk serve` with its local backend, a real
XRootD SE, `severus run` for every job, `sbk` commands.

A LIST request of 10 input files on the SE, split 3 per job: 4 jobs whose inputs, staged by the wrapper
(its final report's transfers) and recorded by the server (`GET /jobs/<id>`, `sbk job`), are exactly
their slices (3, 3, 3, 1), all done. The input files are checked on the SE with xrdadler32.
"""
import os
import posixpath
import subprocess
import zlib

import pytest

from server import demo as d
from tests.test_attempts_with_server import adler32_on_se
from tests.test_wrapper_with_server import ROOT, poll, server_world

pytestmark = pytest.mark.timeout(300)

PRODUCTION = "SP_split"
INPUT_REL = f"production/FastSim/{PRODUCTION}/input"
FINAL = ("done", "failed", "sys-failed", "timeout")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """test_wrapper_with_server's world (server, SE, toy release, FastSim) with the server's local backend."""
    base = tmp_path_factory.mktemp("split")
    with server_world(base, SBK_BACKEND_SITE_CONFIGS=str(base / "site_configs"),
                      SBK_BACKEND_SANDBOX_DIR=str(base / "sandboxes"), SBK_CLEANUP_INTERVAL_S="0") as w:
        yield dict(w, base=base)


def sbk(world, *args):
    """An `sbk` client command against the world's server: (exit code, stdout + stderr)."""
    sbk_ = world["sbk"]
    out = subprocess.run(d.sbk_command() + list(args), cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(sbk_.env, SBK_URL=sbk_.url, SBK_TOKEN=sbk_.token))
    return out.returncode, out.stdout + out.stderr


def put_inputs(world, tmp_path, count):
    """`count` input files of different sizes written to the SE with xrdcp and registered; their LFNs."""
    se, api = world["demo"].se, world["api"]
    lfns = []
    for i in range(count):
        name = f"in_{i:02d}.dat"
        data = os.urandom(1000 + 100 * i)
        src = tmp_path / name
        src.write_bytes(data)
        url = f"{se.root_url}/{INPUT_REL}/{name}"
        subprocess.run(["xrdcp", "-f", "-s", "--path", str(src), url], check=True, timeout=60)
        adler32 = f"{zlib.adler32(data) & 0xffffffff:08x}"
        assert adler32_on_se(url) == adler32   # what the SE holds, read by XRootD's own client
        lfn = f"lfn:{d.LFN_PREFIX}/{INPUT_REL}/{name}"
        api.call("POST", "/catalog/replicas", json={"lfn": lfn, "site": d.SITE, "surl": url, "size": len(data),
                                                     "adler32": adler32})
        lfns.append(lfn)
    return lfns


def test_a_list_of_10_files_split_3_per_job_runs_4_jobs_on_exactly_their_slices(world, tmp_path):
    api = world["api"]
    lfns = put_inputs(world, tmp_path, 10)
    slices = [lfns[0:3], lfns[3:6], lfns[6:9], lfns[9:10]]
    api.call("POST", "/productions", json={"name": PRODUCTION, "session": "FastSim", "version": "V0.2.5",
                                           "revision": 311})
    code, out = sbk(world, "request", "create", "--production", PRODUCTION, "--files-per-job", "3",
                    *[f"--param={k}={v}" for k, v in d.PARAMETERS.items()], "--input-mode", "LIST",
                    "--input-path", ",".join(lfns), "--min-runnum", "40000000", "--events-per-job", "20",
                    "--output-lfn", f"lfn:{d.LFN_PREFIX}/production/FastSim/{PRODUCTION}/output",
                    "--output-site", d.SITE, "--max-wct", "600")
    assert code == 0, out
    (request,) = [r for r in api.call("GET", "/requests", params={"production": PRODUCTION})["requests"]]
    assert request["files_per_job"] == 3 and request["input_paths"] == lfns
    api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})

    # the summary shows the split before anything is prepared
    code, out = sbk(world, "submit", "--production", PRODUCTION, "--request", str(request["id"]),
                    "--sites", d.SITE, "--events", "20", "--dry-run")
    assert code == 0, out
    assert "Split: 4 slice(s), 3 files per job, of 10 input file(s); 0 already in jobs' slices" in out, out
    assert api.call("GET", f"/requests/{request['id']}")["jobs"] == {}

    plan = api.call("POST", "/submissions", json={
        "production": PRODUCTION, "backend": "local",
        "bulks": [{"request": request["id"], "sites": [d.SITE], "events": 20, "log_to_db": True}]})
    job_ids = plan["job_ids"]
    assert len(job_ids) == 4 and plan["sets"][0]["split"]["slices"] == 4

    jobs = poll(lambda: (lambda js: js if all(j["status"] in FINAL for j in js) else None)(
        [api.call("GET", f"/jobs/{j}") for j in job_ids]), 240, what="the 4 split jobs to end")
    assert [(j["status"], j["error_code"]) for j in jobs] == [("done", 0)] * 4, [j["message"] for j in jobs]
    sizes = {f"{i:02d}": 1000 + 100 * i for i in range(10)}
    for job, piece in zip(sorted(jobs, key=lambda j: j["runnum"]), slices):
        # recorded: the job's own inputs
        assert job["input"] == {"mode": "LIST", "paths": piece, "split": True}
        # staged: exactly the slice's files came in, each into the job's inputs by its name, whole
        staged = [t for t in job["report"]["transfers"]
                  if t["direction"] == "in" and f"/{INPUT_REL}/" in t["source"] and t["error"] is None]
        names = [posixpath.basename(lfn) for lfn in piece]
        assert sorted(posixpath.basename(t["source"]) for t in staged) == sorted(names), staged
        for t in staged:
            name = posixpath.basename(t["source"])
            # (copied to <name>.part, renamed once its adler32 matched the catalog's)
            assert t["destination"].rsplit("/inputs/", 1)[1] in (name, f"{name}.part"), t
            assert t["size"] == sizes[name[3:5]], t
        assert len(job["outputs"]) == 2   # its output and its log, registered
    # `sbk job` shows the slice a job had
    code, out = sbk(world, "job", str(job_ids[3]))
    assert code == 0, out
    assert "slice of 1 file(s) (LIST)" in out and "INPUT SLICE" in out and lfns[9] in out
    assert lfns[0] not in out
    # every file is in a job's slice: submitting the request again makes nothing
    code, out = sbk(world, "submit", "--production", PRODUCTION, "--request", str(request["id"]),
                    "--sites", d.SITE, "--events", "20")
    assert code != 0 and "already in a job's slice" in out, out
    assert len(out.strip().splitlines()) == 1, out
