"""A whole job in a container, on real parts: `sbk serve`, the XRootD SE, `severus run`, bubblewrap.

The release is a shell-script toy (the busybox image has no Python): it refuses to run
on the host (the host has /etc/debian_version, the image has not), writes its
`<runnum>.root` and counts its events like the Python toy.
"""
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import zlib

import pytest

from server import demo as d
from server.toy_release import EXE, WORKDIR
from tests.infra import images
from tests import test_end_to_end

pytestmark = pytest.mark.timeout(300)
busybox_image, bwrap_path = images.busybox_image, images.bwrap_path
live = test_end_to_end.live          # a server and an SE of this module's own

SH_EXE = r"""#!/bin/sh
# Toy PacProduction for a busybox image: --events N --runnum R, <runnum>.root, progress.
while [ $# -gt 0 ]; do
  case "$1" in --events) events=$2; shift;; --runnum) runnum=$2; shift;; esac; shift
done
if [ -e /etc/debian_version ]; then echo "not in the container" >&2; exit 9; fi
i=0
while [ "$i" -lt "$events" ]; do i=$((i + 1)); echo "event $i"; done > "$runnum.root"
echo "$events" > "$SEVERUS_PROGRESS_FILE"
echo "in $(cat /proc/1/cmdline | tr '\0' ' ' | cut -c1-40)"
echo "done: $events events"
"""
SOFTWARE_LFN = f"lfn:{d.LFN_PREFIX}/production/FastSim/test_release/V0.3.0_busybox_rev1.tjz"


def shell_release():
    """The release's bytes, the same at every call (a fixed gzip time: the catalog holds one adler32)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for dirname in ("FastSim", WORKDIR, "bin"):
            info = tarfile.TarInfo(dirname)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = SH_EXE.encode()
        info = tarfile.TarInfo(EXE)
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def prepare_container_job(live, production="E2E_container", version="V0.3.0"):
    """The shell release on the SE and in the catalog, a production of it, one prepared job."""
    from wrapper.siteconfig import load_site_config
    from wrapper.transfer import make_transfer
    api, blob = live["api"], shell_release()
    adler32 = f"{zlib.adler32(blob) & 0xffffffff:08x}"
    tarball = live["base"] / "busybox-release.tjz"
    tarball.write_bytes(blob)
    site = load_site_config(live["site_config"])
    base = site.se.urls[0] if site.se.urls else site.se.local_path
    surl = site.se.url(base, SOFTWARE_LFN)
    make_transfer(surl).copy_out(str(tarball), surl, timeout=60, adler32=adler32)
    api.call("POST", "/catalog/replicas", json={"lfn": SOFTWARE_LFN, "site": d.SITE, "surl": surl,
                                                "size": len(blob), "adler32": adler32})
    api.call("POST", "/sessions/FastSim/software", json={
        "name": "PacProductionApp", "version": version, "revision": 1, "lfn": SOFTWARE_LFN,
        "adler32": adler32, "workdir": WORKDIR, "exe": EXE, "env": {}})
    api.call("POST", "/productions", json={"name": production, "session": "FastSim",
                                           "version": version, "revision": 1})
    request = api.call("POST", "/requests", json={
        "production": production, "min_runnum": 30000000, "events_per_job": 40,
        "parameters": d.PARAMETERS, "input_mode": "NONE",
        "output_lfn": f"lfn:{d.LFN_PREFIX}/production/FastSim/{production}/output",
        "output_sites": [d.SITE], "max_wct_s": 600})
    api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})
    plan = api.call("POST", "/submissions", json={
        "production": production,
        "bulks": [{"request": request["id"], "sites": [d.SITE], "runs": 1, "events": 40,
                   "log_to_db": True}]})
    job_id = plan["job_ids"][0]
    return job_id, api.call("POST", f"/jobs/{job_id}/token")


def test_a_job_in_a_bubblewrap_container_ends_done_with_its_outputs(live, tmp_path, busybox_image,
                                                                    bwrap_path):
    job_id, desc = prepare_container_job(live)
    # The server does not write a container section yet: the job asks for the image itself.
    desc["container"] = {"image": str(busybox_image)}
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(desc))
    # Only bubblewrap on this node's PATH (Apptainer, where installed, is elsewhere).
    env = dict(os.environ, PATH=os.path.dirname(bwrap_path) + ":/usr/bin:/bin")
    proc = subprocess.run([sys.executable, "-m", "wrapper", "run", str(job_file), "--site-config",
                           str(live["site_config"]), "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    job = live["api"].call("GET", f"/jobs/{job_id}")
    assert (job["status"], job["error_code"]) == ("done", 0), job
    # The work dir is gone after a job: its log tarball on the SE holds the payload's stdout.
    log_path = live["export"] / job["report"]["log"]["lfn"][len(f"lfn:{d.LFN_PREFIX}/"):]
    with tarfile.open(log_path) as tar:
        logs = {os.path.basename(m.name): tar.extractfile(m).read().decode()
                for m in tar.getmembers() if m.isfile()}
    assert "done: 40 events" in logs["payload.stdout"]
    assert "bwrap --unshare" in logs["payload.stdout"]     # PID 1 inside is bubblewrap's
    assert "payload in a container: bwrap" in logs["severus.log"]
    (output,) = [o for o in job["outputs"] if o["lfn"].endswith(".root")]
    on_se = live["export"] / (output["lfn"][len(f"lfn:{d.LFN_PREFIX}/"):] + ".1")
    assert on_se.read_text().count("event ") == 40
    checked = subprocess.run(["xrdadler32", str(on_se)], capture_output=True, text=True, check=True)
    assert checked.stdout.split()[0] == output["adler32"]      # the SE's file, by an independent tool
    assert job["report"]["payload"]["exit_code"] == 0


def test_a_site_that_requires_a_container_runs_a_job_that_asks_for_none_in_its_image(live, tmp_path, busybox_image,
                                                                                       bwrap_path):
    """The site's [container] reaches the payload under `severus run`: required, with its default image."""
    job_id, desc = prepare_container_job(live, "E2E_site_container", "V0.3.1")
    assert not desc.get("container")
    site_config = tmp_path / "site.toml"
    site_config.write_text(live["site_config"].read_text() + f"""
[container]
runtimes = ["bwrap"]
image = "{busybox_image}"
required = true
""")
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(desc))
    env = dict(os.environ, PATH=os.path.dirname(bwrap_path) + ":/usr/bin:/bin")
    proc = subprocess.run([sys.executable, "-m", "wrapper", "run", str(job_file), "--site-config", str(site_config),
                           "--workdir", str(tmp_path / "work")], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr     # the release's script exits 9 on the host
    job = live["api"].call("GET", f"/jobs/{job_id}")
    assert (job["status"], job["error_code"]) == ("done", 0), job
    assert "bwrap" in job["report"]["facts"]["container"]
