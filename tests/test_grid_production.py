"""The grid, whole: a production through a real ARC CE into the tests' Slurm, staging from and to the
secured XRootD SE, each payload in the site's bubblewrap container. The jobs hold, in turn: the node's
own credential (a proxy, then a token: found where a grid node keeps them), and the CE's delegation of
the submitter's VOMS proxy (the server's credential, davs:// first); a delegated proxy too short for
the job ends it with 006, the manager's to mend.

Real parts throughout: `sbk serve` with the `arc` backend, A-REX 6 (LRMS slurm) trusting the SE's CA
and mapping its user to the grid user, Slurm, the secured XRootD (GSI + tokens on root://, XrdHttp on
davs://), `severus.pyz` run by Slurm as the grid user, bubblewrap on a busybox image. What landed on
the SE is checked with xrdadler32 holding a proxy.
"""
import json
import os
import pwd
import re
import shutil
import zlib
from pathlib import Path

import pytest

from server import demo as d
from server.grid_pki import USER_DN, make_proxy
from tests.infra import images
from tests.infra.arc_ce import arc_slurm_cluster, ce_fixture, finish  # noqa: F401 (session fixture)
from tests.infra.secure_se import private_dir
from tests.test_container_end_to_end import SOFTWARE_LFN, shell_release
from tests.test_slurm_production import FINAL, wait_jobs
from server.toy_release import EXE, WORKDIR
from wrapper.transfer import CliTransfer

pytestmark = pytest.mark.timeout(600)

GRID_USER = "gridjob"       # the account the CE maps jobs to (tests/infra/arc_ce.py)


def node_credential_paths():
    """Where a grid node keeps the job user's proxy and token (the wrapper's discovery defaults)."""
    uid = pwd.getpwnam(GRID_USER).pw_uid
    return Path(f"/tmp/x509up_u{uid}"), Path(f"/tmp/bt_u{uid}"), uid


def give_node(kind, pki):
    """The grid user's node credential: only a VOMS proxy, or only a token, mode 0600 and theirs."""
    proxy_path, token_path, uid = node_credential_paths()
    for path in (proxy_path, token_path):
        path.unlink(missing_ok=True)
    path, data = (proxy_path, pki.voms_proxy.read_bytes()) if kind == "proxy" else (token_path, pki.token.read_bytes())
    path.write_bytes(data)
    os.chown(path, uid, uid)
    path.chmod(0o600)


@pytest.fixture(scope="module")
def grid(arc_slurm_cluster, tmp_path_factory):  # noqa: F811
    base = private_dir("severus-grid-")
    base.chmod(0o755)                 # the grid user reads the image and the CA directory below it
    demo = d.Demo(base=base)
    progress = d.Progress()
    ce = None
    with pytest.MonkeyPatch.context() as mp:
        try:
            site_config, pki = d.start_secure_storage(demo, progress)
            # The CE of this grid trusts the SE's CA and maps its user: the submitter's proxy is
            # the server's credential, and what the CE delegates to the jobs.
            ce = ce_fixture("slurm", slurm_conf=str(arc_slurm_cluster.conf), trust_cert_dirs=[pki.cert_dir],
                            subjects=[USER_DN])
            server_credential = base / "server-proxy.pem"
            shutil.copy(pki.voms_proxy, server_credential)
            image = images.make_busybox_image(base / "images" / "busybox")
            for p in (base / "images", image):
                p.chmod(0o755)
            site = {"base": site_config.read_text().replace('require = "proxy"', 'require = "any"'),
                    "path": site_config, "ce": ce, "image": image, "pki": pki}
            write_site(site, delegate=False)
            for key, value in {"SBK_BACKEND_ARC_CERT": str(server_credential),
                               "SBK_BACKEND_ARC_CA": str(ce.ca_dir),
                               "SBK_BACKEND_SITE_CONFIGS": str(site_config.parent),
                               "SBK_BACKEND_SANDBOX_DIR": str(base / "sandboxes"),
                               "SBK_BATCH_POLL_INTERVAL_S": "1"}.items():
                mp.setenv(key, value)
            d.start_server(demo, f"sqlite:///{base / 'sbk.db'}", progress)
            api = d.Api(demo.url, demo.token)
            request = define(api, demo, site_config)
            yield {"demo": demo, "api": api, "pki": pki, "request": request, "ce": ce, "site": site,
                   "server_credential": server_credential}
        finally:
            for path in node_credential_paths()[:2]:
                path.unlink(missing_ok=True)
            demo.stop()
            if ce is not None:
                finish(ce, tmp_path_factory.mktemp("grid-ce-logs"))
            shutil.rmtree(base, ignore_errors=True)


def write_site(site, delegate, davs_first=False):
    """The site's whole story in its config: its CE (and whether the server delegates to it), the
    credential its SE demands and where its nodes keep the CA certificates (a CE's job environment
    is bare), its container. The server reads it at each submission."""
    text = site["base"]
    if davs_first:
        (line,) = [line for line in text.splitlines() if line.startswith("urls = ")]
        urls = line[len("urls = "):].strip("[]").split(", ")
        text = text.replace(line, f"urls = [{', '.join(reversed(urls))}]")
    ce, pki = site["ce"], site["pki"]
    site["path"].write_text(
        text + f'cert_dir = "{pki.cert_dir}"\nmin_lifetime_s = 600\n\n'
        f'[ce]\nurl = "{ce.url}"\nqueue = "{ce.queue}"\ndelegate = {str(delegate).lower()}\n'
        # ENV/PROXY copies the job's proxy beside it: without a delegation, A-REX's proxy file
        # holds only the submitter's certificates, no key (the wrapper then says so: 005)
        + ('runtime_environments = ["ENV/PROXY"]\n\n' if delegate else '\n') +
        f'[container]\nruntimes = ["bwrap"]\nimage = "{site["image"]}"\nrequired = true\n')


def define(api, demo, site_config):
    """The shell release (busybox has no Python) on the secured SE with the release manager's proxy,
    a production of it and a valid request."""
    from wrapper.siteconfig import load_site_config
    blob = shell_release()
    adler32 = f"{zlib.adler32(blob) & 0xffffffff:08x}"
    tarball = demo.base / "busybox-release.tjz"
    tarball.write_bytes(blob)
    site = load_site_config(site_config)
    surl = site.se.url(site.se.urls[0], SOFTWARE_LFN)
    transfer = CliTransfer()
    transfer.env = dict(demo.upload_env, XRD_CONNECTIONRETRY="1")
    transfer.mkdir(surl.rsplit("/", 1)[0])
    transfer.copy_out(str(tarball), surl, timeout=60, adler32=adler32)
    api.call("POST", "/catalog/replicas", json={"lfn": SOFTWARE_LFN, "site": d.SITE, "surl": surl,
                                                "size": len(blob), "adler32": adler32})
    api.call("POST", "/sessions", ok=(201, 409), json={
        "name": "FastSim", "payload_module": "fastsim", "parameters": [{"name": n} for n in d.PARAMETERS]})
    api.call("POST", "/sessions/FastSim/software", json={
        "name": "PacProductionApp", "version": "V0.3.0", "revision": 1, "lfn": SOFTWARE_LFN, "adler32": adler32,
        "workdir": WORKDIR, "exe": EXE})
    api.call("POST", "/sites", ok=(201, 409), json={"name": d.SITE, "bunch_size": 2})
    api.call("POST", "/productions", json={"name": "2026_Grid", "session": "FastSim", "version": "V0.3.0",
                                           "revision": 1})
    request = api.call("POST", "/requests", json={
        "production": "2026_Grid", "min_runnum": 50000000, "events_per_job": 40, "parameters": d.PARAMETERS,
        "input_mode": "NONE", "output_lfn": f"lfn:{d.LFN_PREFIX}/production/FastSim/2026_Grid/output",
        "output_sites": [d.SITE], "max_wct_s": 600})
    api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})
    return request


def submit(grid, runs=2):
    plan = grid["api"].call("POST", "/submissions", json={
        "production": "2026_Grid", "backend": "arc",
        "bulks": [{"request": grid["request"]["id"], "sites": [d.SITE], "runs": runs, "events": 40,
                   "log_to_db": True}]})
    assert not plan.get("errors"), plan
    return wait_jobs(grid["api"], plan["job_ids"], lambda j: j["status"] in FINAL, 300)


@pytest.mark.parametrize("credential", ["proxy", "token", "delegated"])
def test_a_production_through_the_ce_with_the_nodes_credential_and_a_container(grid, credential):
    if credential == "delegated":
        # nothing on the node: the job holds the CE's delegation of the server's VOMS proxy, and
        # reads and writes davs:// first (gfal2 over HTTPS, beside A-REX's X509_USER_CERT=fake)
        for path in node_credential_paths()[:2]:
            path.unlink(missing_ok=True)
        write_site(grid["site"], delegate=True, davs_first=True)
    else:
        give_node(credential, grid["pki"])    # the site's min_lifetime_s (600 s) lets a 1 h token run a job
        write_site(grid["site"], delegate=False)
    jobs = submit(grid)
    for job in jobs.values():
        assert (job["status"], job["error_code"]) == ("done", 0), json.dumps(job)[:3000]
        assert job["gjid"].startswith(grid["ce"].url)                      # it went through the CE
        facts = job["report"]["facts"]
        assert "bwrap" in facts["container"]                               # the site's container
        # software, output and log, each by gfal2 in the wrapper's own fresh process (a worker node's
        # one job), through the site's first door: root:// with the node's proxy or token (gfal2 reads
        # the token from BEARER_TOKEN), davs:// with the delegated proxy
        door = "davs" if credential == "delegated" else "root"
        moved = {(t["tool"], t["direction"], next(u for u in (t["source"], t["destination"]) if "://" in u)
                  .split("://")[0]) for t in job["report"]["transfers"]}
        assert moved == {("gfal2", "in", door), ("gfal2", "out", door)}, job["report"]["transfers"]
        (output,) = [o for o in job["outputs"] if o["lfn"].endswith(".root")]
        on_se = output["lfn"][len(f"lfn:{d.LFN_PREFIX}/"):] + ".1"             # under the SE's /store
        assert grid["demo"].se.adler32(on_se) == output["adler32"]
        if credential == "delegated":
            assert output["surl"].startswith("davs://"), output           # the site's first SE door


def test_a_delegated_proxy_too_short_for_the_job_is_the_managers_to_renew(grid):
    """The submitter's proxy has 5 minutes left, the site asks for 10: the server renews the CE's
    delegation from it, and each job stops before any transfer with 006 (blame manager), not 005."""
    for path in node_credential_paths()[:2]:
        path.unlink(missing_ok=True)
    write_site(grid["site"], delegate=True)
    pki = grid["pki"]
    make_proxy(pki.usercert, pki.userkey, grid["server_credential"], 330, start_offset_s=-30)
    jobs = submit(grid, runs=1)
    for job in jobs.values():
        assert (job["status"], job["error_code"]) == ("sys-failed", 6), json.dumps(job)[:3000]
        assert job["error"]["blame"] == "manager" and job["report"]["failed_step"] == "RUNNING-02"
        assert re.search(r"the delegated proxy has 0h0[1-5]m left, software needs 0h10m", job["message"]), job["message"]
        assert [o["lfn"] for o in job["outputs"]] == [f"lfn:{d.LFN_PREFIX}/production/FastSim/2026_Grid/output/log/"
                                                      f"{job['runnum']}.1.log.tgz"]   # the log still went up
