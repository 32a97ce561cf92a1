"""`sbk demo`: one whole small production on this machine, on embedded defaults.

A server on SQLite in a temporary directory, a real XRootD storage element on
loopback, a toy FastSim release, one production with one request, N jobs run by
`severus run` through the local backend, then the job table and the outputs'
catalog entries. Exits 1 when any job did not end `done`.

The SE is a secured one when its packages are installed (server/secure_se.py:
GSI and tokens on root://, davs:// with client certificates or tokens): the demo
makes its own CA and a VOMS proxy (server/grid_pki.py), the site config demands a
proxy, and the jobs find it as on a grid node (X509_USER_PROXY, X509_CERT_DIR).
Else, or with --open-se, an open XRootD SE; without xrootd (or with --no-xrootd)
a local directory as a direct-access SE.

Everything goes through the same doors a person would use: the `sbk` command
for the server and its first user, the HTTP API for the production, and the
`severus` wrapper for the jobs.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from shared.states import FINAL_STATUSES
from .backends.base import Bunch, JobSpec
from .backends.local import LocalBackend
from .client.output import Output
from .grid_pki import USER_DN, PKIError, demo_missing, make_demo_pki
from .secure_se import start_secure_se
from .toy_release import build_toy_release
from .xrootd_se import SEStartError, free_port, start_se, xrootd_available

SITE = "DEMO-T1"
LFN_PREFIX = "/grid/superbvo.org"
DIRECT_PROBE_FILE = ".severus-se"   # marks the --no-xrootd directory as the SE (it is no mount)
SOFTWARE_LFN = f"lfn:{LFN_PREFIX}/production/FastSim/test_release/V0.2.5_SL-5.3_x86_64_rev311.tjz"
PRODUCTION = "2026_Demo"
PARAMETERS = {"Analysis": "HadRecoilCocktail", "Generator": "B0B0bar_SL", "Geometry": "DG_4",
              "Background": "MixSuperbBkg_NoPair.tcl"}
OUTPUT_LFN = f"lfn:{LFN_PREFIX}/production/FastSim/{PRODUCTION}/output/HadRecoilCocktail/DG_4/B0B0bar_SL"


class DemoError(Exception):
    """The demo cannot go on; the message says why in one line."""


class Progress:
    """Progress lines on a terminal; nothing when piped, except the results."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.live = stream.isatty()

    def step(self, text):
        if self.live:
            print(f"» {text}", file=self.stream, flush=True)


@dataclass
class Demo:
    """What the demo started, so that it can stop it all."""
    base: Path
    server: subprocess.Popen = None
    se: object = None
    url: str = ""
    token: str = ""
    storage: str = ""       # which SE, for the results
    job_env: dict = None    # the jobs' environment on a secured SE: the node's credential
    upload_env: dict = None  # the release manager's, to put the release there
    se_door: str = ""       # the SE's first door in the site config (a URL, or a direct-access path)

    def stop(self):
        if self.server is not None:
            stop_process_group(self.server)
        if self.se is not None:
            self.se.stop()


def stop_process_group(proc, grace_s=15):
    """SIGTERM to `proc`'s process group (it leads one), SIGKILL after `grace_s`; wait for it."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def sbk_command():
    return [sys.executable, "-m", "server.cli"]


def start_server(demo, db_url, progress):
    """`sbk user add` then `sbk serve` on a free port; wait for /health with a deadline."""
    env = dict(os.environ, SBK_DB=db_url)
    out = subprocess.run(sbk_command() + ["user", "add", "demo", "--groups", "Developer"],
                         env=env, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise DemoError(f"sbk user add failed: {out.stderr.strip()}")
    demo.token = out.stdout.strip().splitlines()[-1]
    port = free_port()
    demo.url = f"http://127.0.0.1:{port}"
    log = open(demo.base / "sbk-serve.log", "w")
    demo.server = subprocess.Popen(
        sbk_command() + ["serve", "--port", str(port), "--workers", "2", "--public-url", demo.url],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if demo.server.poll() is not None:
            raise DemoError(f"sbk serve exited; see {demo.base / 'sbk-serve.log'}")
        try:
            if requests.get(f"{demo.url}/api/v1/health", timeout=1).ok:
                progress.step(f"server on {demo.url} ({db_url})")
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise DemoError(f"sbk serve did not answer in 30 s; see {demo.base / 'sbk-serve.log'}")


def start_storage(demo, progress, want_xrootd=True):
    """A real XRootD SE when installed, else a plain directory used as a direct-access SE; the
    path of the site config naming it."""
    if want_xrootd and xrootd_available():
        try:
            demo.se = start_se(demo.base / "se", name="sbk-demo")
        except SEStartError as exc:
            raise DemoError(str(exc)) from None
        root = demo.se.export
        se = {"lfn_prefix": LFN_PREFIX, "urls": [demo.se.root_url, demo.se.http_url],
              "access": "protocol"}
        progress.step(f"XRootD SE on {demo.se.root_url} (and {demo.se.http_url})")
    else:
        root = demo.base / "se" / "export"
        root.mkdir(parents=True, exist_ok=True)
        # A plain directory is no mount: the probe file the site names marks it as the SE.
        (root / DIRECT_PROBE_FILE).write_text("severus demo: this directory is the SE\n")
        se = {"lfn_prefix": LFN_PREFIX, "local_path": str(root), "access": "direct",
              "probe_file": DIRECT_PROBE_FILE}
        if want_xrootd:
            print("xrootd is not installed: using a local directory as a direct-access SE", file=sys.stderr)
    demo.storage = (f"open XRootD SE {demo.se.root_url} (no credentials)" if demo.se
                    else f"a local directory as a direct-access SE ({root})")
    return write_site_config(demo, se)


def start_secure_storage(demo, progress):
    """The secured XRootD SE, its PKI and the jobs' VOMS proxy under the demo's directory; the
    site config demands a proxy. DemoError when a part does not come up."""
    try:
        pki = make_demo_pki(demo.base / "pki")
        demo.se = start_secure_se(demo.base / "secure-se", pki)
    except (PKIError, SEStartError, OSError) as exc:
        raise DemoError(str(exc)) from None
    se = demo.se
    proxy = pki.voms_proxy if pki.voms_proxy.exists() else pki.proxy
    # As a grid node has it: the proxy and the CA directory by their standard variables, nothing
    # of this machine's own credentials (client_env drops them and hides $XDG_RUNTIME_DIR/bt_u*).
    env = se.client_env(proxy=proxy)
    for var in ("XRD_REQUESTTIMEOUT", "XRD_CONNECTIONRETRY"):   # the wrapper's own, not the probe's
        env.pop(var, None)
        if var in os.environ:
            env[var] = os.environ[var]
    demo.job_env = env
    demo.upload_env = se.client_env(proxy=pki.proxy)
    kind = "a VOMS proxy (testvo)" if proxy == pki.voms_proxy else "a proxy"
    demo.storage = (f"secured XRootD SE {se.root_endpoint} (GSI or token) and davs://localhost:{se.http_port} "
                    f"(certificate or token); jobs hold {kind} of {USER_DN}")
    progress.step(f"secured XRootD SE on {se.root_url} and {se.davs_url}, own CA and {kind} in {pki.base}")
    site_config = write_site_config(demo, {"lfn_prefix": LFN_PREFIX, "urls": [se.root_url, se.davs_url],
                                           "access": "protocol"}, require="proxy")
    return site_config, pki


def write_site_config(demo, se, require=None):
    """The demo site's config in `<base>/site_configs`; `require`: its [credentials] require."""
    configs = demo.base / "site_configs"
    configs.mkdir(exist_ok=True)
    lines = [f'name = "{SITE}"', "", "[se]"]
    demo.se_door = (se.get("urls") or [se.get("local_path")])[0]
    for key, value in se.items():
        rendered = "[" + ", ".join(f'"{v}"' for v in value) + "]" if isinstance(value, list) else f'"{value}"'
        lines.append(f"{key} = {rendered}")
    lines += ["", "[scratch]", "min_free_gb = 0.1", ""]
    if require:
        lines += ["[credentials]", f'require = "{require}"', ""]
    (configs / f"{SITE}.toml").write_text("\n".join(lines))
    return configs / f"{SITE}.toml"


def choose_storage(demo, progress, args):
    """The secured SE when it can run, else the open one with one line saying why: (site config,
    the demo's PKI or None)."""
    # Without xrootd at all start_storage says so itself (and uses a directory).
    if not args.open_se and not args.no_xrootd and xrootd_available():
        missing = demo_missing()
        why = f"needs {', '.join(missing)} (scripts/install-deps installs them)" if missing else ""
        if not missing:
            try:
                site_config, pki = start_secure_storage(demo, progress)
                return site_config, pki
            except DemoError as exc:
                why = f"did not start: {exc}"
                demo.stop()
                demo.se = demo.job_env = demo.upload_env = None
        print(f"sbk demo: the secured SE {why}; using the open XRootD SE", file=sys.stderr)
    return start_storage(demo, progress, want_xrootd=not args.no_xrootd), None


class Api:
    """The manager's side of the HTTP API, failing with one line on an error reply."""

    def __init__(self, url, token):
        self.base = url + "/api/v1"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method, path, ok=(200, 201), **kw):
        r = self.http.request(method, self.base + path, timeout=30, **kw)
        if r.status_code not in ok:
            raise DemoError(f"{method} {path}: HTTP {r.status_code} {r.text.strip()[:300]}")
        return r.json() if r.content else None


def define_production(api, release, jobs, events):
    """Session, release, site, production and a valid request, through the API."""
    api.call("POST", "/sessions", ok=(201, 409), json={
        "name": "FastSim", "payload_module": "fastsim",
        "parameters": [{"name": name} for name in PARAMETERS]})
    api.call("POST", "/sessions/FastSim/software", ok=(201, 409), json={
        "name": "PacProductionApp", "version": "V0.2.5", "revision": 311, "lfn": SOFTWARE_LFN,
        "adler32": release.adler32, "workdir": release.workdir, "exe": release.exe})
    api.call("POST", "/sites", ok=(201, 409), json={"name": SITE, "bunch_size": jobs})
    api.call("POST", "/productions", json={"name": PRODUCTION, "session": "FastSim",
                                           "version": "V0.2.5", "revision": 311})
    request = api.call("POST", "/requests", json={
        "production": PRODUCTION, "min_runnum": 10000000, "events_per_job": events,
        "parameters": PARAMETERS, "input_mode": "NONE", "output_lfn": OUTPUT_LFN,
        "output_sites": [SITE], "max_wct_s": 600, "note": "sbk demo"})
    api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})
    return request


def upload_release(release, door, api, env=None):
    """Put the toy tarball on the SE through the wrapper's documented API for it
    (`wrapper.transfer.upload`), and register it. `door`: the SE's first door in the site config
    (a URL, or a direct-access path); the release goes below it at its LFN's path under the
    site's lfn_prefix, the site config's rule for physical names. `env`: a secured SE's (the
    release manager's proxy)."""
    from wrapper.transfer import TransferError, upload

    surl = door.rstrip("/") + SOFTWARE_LFN[len(f"lfn:{LFN_PREFIX}"):]
    try:
        upload(release.path, surl, release.adler32, env=env, timeout=60)
    except TransferError as exc:
        raise DemoError(f"cannot put the toy release on the SE: {exc}") from None
    api.call("POST", "/catalog/replicas", json={
        "lfn": SOFTWARE_LFN, "site": SITE, "surl": surl, "size": release.size,
        "adler32": release.adler32})


def run_jobs(api, demo, job_ids, site_config, progress, timeout):
    """Hand the prepared jobs to the local backend; wait until each is final."""
    specs = []
    for job_id in job_ids:
        # handing jobs to a backend of our own: the explicit hand-off mints each one's token
        desc = api.call("POST", f"/jobs/{job_id}/token")
        specs.append(JobSpec(job_id=job_id, runnum=desc["job"]["runnum"], description=desc))
    backend = LocalBackend(max_parallel=len(specs),
                           env=dict(demo.job_env or os.environ, SEVERUS_SITE_CONFIGS=str(site_config.parent)))
    try:
        backend.submit(Bunch(site=SITE, jobs=tuple(specs), site_config=site_config.read_text(),
                             workdir=str(demo.base / "jobs")))
        progress.step(f"{len(specs)} jobs started with `severus run` (local backend)")
        deadline = time.monotonic() + timeout
        finals = {s.value for s in FINAL_STATUSES}
        # a progress bar on a terminal (the client's own); nothing when piped
        with Output().progress_bar("jobs final", len(job_ids)) as update:
            while True:
                jobs = [api.call("GET", f"/jobs/{job_id}") for job_id in job_ids]
                update(sum(j["status"] in finals for j in jobs))
                if all(j["status"] in finals for j in jobs):
                    return jobs
                if time.monotonic() > deadline:
                    raise DemoError(f"jobs not final after {timeout:.0f} s: "
                                    + ", ".join(f"{j['runnum']} {j['status']}" for j in jobs))
                time.sleep(0.2)
    finally:
        backend.close()


def print_results(jobs, files, storage=""):
    if storage:
        print(f"storage: {storage}\n")
    print(f"{'runnum':>10}  {'status':<14} {'step':<11} {'site':<8} {'wct (s)':>8}")
    for j in sorted(jobs, key=lambda j: j["runnum"]):
        status = j["status"] + ("" if j.get("error_code") in (None, 0) else f" {j['error_code']:03d}")
        wct = f"{j['wct']:.2f}" if j.get("wct") is not None else "-"
        print(f"{j['runnum']:>10}  {status:<14} {j.get('step') or '-':<11} {j.get('site') or '-':<8} {wct:>8}")
    print(f"\ncatalog: {len(files)} files under {OUTPUT_LFN}")
    print(f"  {'name':<22} {'size (B)':>9}  {'adler32':<8}  {'site':<8} surl")
    for f in files:
        name = f["lfn"][len(OUTPUT_LFN) + 1:]
        for r in f["replicas"]:
            print(f"  {name:<22} {f['size']:>9}  {f['adler32']:<8}  {r['site']:<8} {r['surl']}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="sbk demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="number of jobs (default 4)")
    parser.add_argument("--events", type=int, default=1000, help="events per job (default 1000)")
    parser.add_argument("--workdir", help="keep everything in this directory (default: a temp dir, removed)")
    parser.add_argument("--keep", action="store_true", help="leave the server and SE running")
    parser.add_argument("--open-se", action="store_true", help="use an open XRootD SE, no credentials")
    parser.add_argument("--no-xrootd", action="store_true", help="use a direct-access directory SE")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for the jobs")
    args = parser.parse_args(argv)
    progress = Progress()
    base = Path(args.workdir or tempfile.mkdtemp(prefix="sbk-demo-")).resolve()
    base.mkdir(parents=True, exist_ok=True)
    demo = Demo(base=base)
    started = time.monotonic()
    try:
        site_config, pki = choose_storage(demo, progress, args)
        start_server(demo, f"sqlite:///{base / 'sbk.db'}", progress)
        api = Api(demo.url, demo.token)
        release = build_toy_release(base)
        upload_release(release, demo.se_door, api, env=demo.upload_env)
        progress.step(f"toy FastSim release {release.adler32} on the SE and in the catalog")
        request = define_production(api, release, args.jobs, args.events)
        progress.step(f"production {PRODUCTION}, request {request['id']} valid")
        plan = api.call("POST", "/submissions", json={
            "production": PRODUCTION, "bulks": [{"request": request["id"], "sites": [SITE],
                                                 "runs": args.jobs, "events": args.events,
                                                 "log_to_db": True}]})
        jobs = run_jobs(api, demo, plan["job_ids"], site_config, progress, args.timeout)
        files = api.call("GET", "/catalog/files", params={"dir": OUTPUT_LFN})["files"]
        print_results(jobs, files, demo.storage)
        bad = [j for j in jobs if j["status"] != "done"]
        print(f"\n{len(jobs) - len(bad)}/{len(jobs)} jobs done in {time.monotonic() - started:.1f} s"
              + (f"; work in {base}" if args.keep or args.workdir else ""))
        if pki is not None and (args.keep or args.workdir):
            token = f" BEARER_TOKEN_FILE={pki.token}" if pki.token.exists() else ""
            print(f"credentials: X509_USER_PROXY={demo.job_env['X509_USER_PROXY']} X509_CERT_DIR={pki.cert_dir}"
                  f"{token}")
        if args.keep:
            print(f"server {demo.url} token {demo.token}; stop with: kill {demo.server.pid}"
                  + (f" {demo.se.pid}" if demo.se else ""))
            demo.server = demo.se = None
        return 1 if bad else 0
    except (DemoError, requests.RequestException, OSError) as exc:
        print(f"sbk demo: {exc}", file=sys.stderr)
        return 1
    finally:
        demo.stop()
        if not args.workdir and not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
