"""The reliability suite's shared parts: the short/full switch, the figures table,
a real `sbk serve` that a test may SIGKILL and restart, and real jobs to run.

Short versions by default (so `make test` stays fast); `--reliability-full`
(what `make reliability` passes) runs every scenario at its full size.
"""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from server import db
from server import demo as d
from server.toy_release import build_toy_release
from server.xrootd_se import free_port, start_se
from tests.infra.postgres import postgres_available, start_cluster

ROOT = Path(__file__).resolve().parents[2]
ROWS = []   # (scenario, injected, what held, figures), one per passing scenario


def pytest_addoption(parser):
    parser.addoption("--reliability-full", action="store_true", default=False,
                     help="run the reliability scenarios at full size (minutes, not seconds)")


@pytest.fixture(scope="session")
def full(request):
    return bool(request.config.getoption("reliability_full", default=False))


@pytest.fixture(scope="session")
def figures():
    """figures(scenario, injected, held, numbers): one row of the table printed at the end."""
    def record(scenario, injected, held, numbers=""):
        ROWS.append((scenario, injected, held, numbers))
    return record


def pytest_terminal_summary(terminalreporter):
    if not ROWS:
        return
    head = ("scenario", "injected", "what held", "figures")
    widths = [min(60, max(len(str(r[i])) for r in ROWS + [head])) for i in range(4)]
    tr = terminalreporter
    tr.write_sep("=", "reliability figures")
    line = " | ".join(h.ljust(w) for h, w in zip(head, widths))
    tr.write_line(line)
    tr.write_line("-" * len(line))
    for row in ROWS:
        tr.write_line(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def poll(predicate, deadline_s, what, interval_s=0.05):
    """predicate()'s first truthy value, polled until the deadline (then AssertionError)."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s:g} s waiting for {what}")
        time.sleep(interval_s)   # polling interval; the deadline bounds the wait


# ---------------------------------------------------------------------- the server

@dataclass
class Server:
    """`sbk serve` (gunicorn) on a fixed port and database, to be killed and restarted."""
    base: Path
    db_url: str
    env: dict = field(default_factory=dict)
    workers: int = 2
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen = None
    token: str = ""
    starts: int = 0

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def _env(self):
        return {**os.environ, "SBK_DB": self.db_url, **self.env}

    def add_user(self, name, groups):
        out = subprocess.run([sys.executable, "-m", "server.cli", "user", "add", name, "--groups", groups],
                             env=self._env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def start(self):
        if not self.token:
            self.token = self.add_user("rel-dev", "Developer")
        self.starts += 1
        log = open(self.base / f"serve-{self.starts}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--port", str(self.port),
             "--workers", str(self.workers), "--public-url", self.url],
            env=self._env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def healthy():
            assert self.proc.poll() is None, f"sbk serve exited; see {log.name}"
            try:
                return requests.get(self.url + "/api/v1/health", timeout=1).ok
            except requests.RequestException:
                return False
        poll(healthy, 30, "sbk serve /health")
        return self

    def kill(self, sig=signal.SIGKILL):
        """The whole process group (gunicorn master and workers) at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def stop(self):
        self.kill(signal.SIGTERM)

    def logs(self):
        return "".join(p.read_text() for p in sorted(self.base.glob("serve-*.log")))

    def api(self):
        return d.Api(self.url, self.token)


def read_db(db_url):
    """Bind this process to the server's database, for assertions on what it stored."""
    db.bind(db_url)
    return db.connection()


# ---------------------------------------------------------------------- jobs on a real SE

@dataclass
class World:
    """A server, a real XRootD SE with the toy release on it, and the site config for it."""
    base: Path
    server: Server
    se: object
    site_config: Path
    release: object
    versions: int = 0

    @property
    def api(self):
        return self.server.api()

    def prepare(self, production, runs=1, events=50, env=None, output_sites=(d.SITE,), software=None):
        """A production of its own (own release version when `env` or `software` overrides are
        given); its job ids."""
        api = self.api
        version = "V0.2.5"
        if env or software:
            self.versions += 1
            version = f"V9.{self.versions}"
            api.call("POST", "/sessions/FastSim/software", json={
                "name": "PacProductionApp", "version": version, "revision": 311,
                "lfn": d.SOFTWARE_LFN, "adler32": self.release.adler32,
                "workdir": self.release.workdir, "exe": self.release.exe, "env": env or {},
                **(software or {})})
        api.call("POST", "/productions", json={"name": production, "session": "FastSim",
                                               "version": version, "revision": 311})
        request = api.call("POST", "/requests", json={
            "production": production, "min_runnum": 30000000, "events_per_job": events,
            "parameters": d.PARAMETERS, "input_mode": "NONE",
            "output_lfn": self.output_lfn(production), "output_sites": list(output_sites),
            "max_wct_s": 600})
        api.call("PATCH", f"/requests/{request['id']}", json={"status": "valid"})
        plan = api.call("POST", "/submissions", json={
            "production": production,
            "bulks": [{"request": request["id"], "sites": [d.SITE], "runs": runs, "events": events,
                       "log_to_db": True}]})
        return plan["job_ids"]

    @staticmethod
    def output_lfn(production):
        return f"lfn:{d.LFN_PREFIX}/production/FastSim/{production}/output"

    def description(self, job_id):
        return self.api.call("POST", f"/jobs/{job_id}/token")

    def job(self, job_id):
        return self.api.call("GET", f"/jobs/{job_id}")


def write_site_config(path, se, name=d.SITE, extra=""):
    """A site config for `se` (an XRootD SE or a URL) with small scratch needs; `extra` TOML appended."""
    url = se if isinstance(se, str) else se.root_url
    path.write_text(f'name = "{name}"\n\n[se]\nlfn_prefix = "{d.LFN_PREFIX}"\n'
                    f'urls = ["{url}"]\naccess = "protocol"\n\n[scratch]\nmin_free_gb = 0.01\n\n{extra}\n')
    return path


def wrapper_command(job_file, site_config, workdir, *more):
    return [sys.executable, "-m", "wrapper", "run", str(job_file), "--site-config", str(site_config),
            "--workdir", str(workdir), "--sample-s", "0.2", *more]


def start_wrapper(directory, description, site_config, *more, **popen):
    """A real `severus run` process in its own session; stdout/stderr in files of `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    job_file = directory / "job.json"
    job_file.write_text(json.dumps(description))
    out = open(directory / "stdout", "w")
    err = open(directory / "stderr", "w")
    proc = subprocess.Popen(wrapper_command(job_file, site_config, directory / "work", *more),
                            cwd=ROOT, stdout=out, stderr=err, start_new_session=True, **popen)
    out.close()
    err.close()
    return proc


def run_wrapper(directory, description, site_config, timeout=120, workdir=None, env=None):
    """`severus run` to its end; (exit code, stderr)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    job_file = directory / "job.json"
    job_file.write_text(json.dumps(description))
    proc = subprocess.run(wrapper_command(job_file, site_config, workdir or directory / "work"),
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})
    return proc.returncode, proc.stderr


def make_world(base, se, env, db_url=None, site_extra=""):
    """A server of its own (SQLite unless `db_url`) knowing the SE's toy release, FastSim and the site."""
    server = Server(base, db_url or f"sqlite:///{base / 'sbk.db'}", env=env).start()
    try:
        api = server.api()
        site_config = write_site_config(base / f"{d.SITE}.toml", se, extra=site_extra)
        release = build_toy_release(base)
        d.upload_release(release, se.root_url, api)
        api.call("POST", "/sessions", json={
            "name": "FastSim", "payload_module": "fastsim",
            "parameters": [{"name": name} for name in d.PARAMETERS]})
        api.call("POST", "/sessions/FastSim/software", json={
            "name": "PacProductionApp", "version": "V0.2.5", "revision": 311, "lfn": d.SOFTWARE_LFN,
            "adler32": release.adler32, "workdir": release.workdir, "exe": release.exe})
        api.call("POST", "/sites", json={"name": d.SITE, "bunch_size": 50})
    except BaseException:
        server.stop()
        raise
    return World(base, server, se, site_config, release)


@pytest.fixture(scope="session")
def pg():
    """A PostgreSQL cluster for the suite's scenarios on PostgreSQL (each takes a new database)."""
    if not postgres_available():
        pytest.fail("PostgreSQL 15 is not installed: run `make test` (it installs postgresql)")
    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def rel_se(tmp_path_factory):
    se = start_se(tmp_path_factory.mktemp("rel-se"), name="se-rel")
    yield se
    se.stop()


@pytest.fixture(scope="session")
def world(tmp_path_factory, rel_se):
    """One server (SQLite, 2 workers, heartbeats every 2 s) and one SE for the fault scenarios."""
    w = make_world(tmp_path_factory.mktemp("rel-world"), rel_se, {"SBK_HEARTBEAT_S": "2"})
    yield w
    w.server.stop()
