"""Start and stop a private NorduGrid ARC 6 CE (A-REX with its REST interface) for tests.

Made from INFRA.md's verified recipe, without systemd: a test CA, host and user
certificates from `arcctl test-ca`, a `gridjob` account to map to (A-REX refuses
to run jobs as root), arc.conf, and the two `arched` daemons (job manager and web
service) started directly; ready once the REST endpoint answers the test user
(~2 s). LRMS `fork` runs jobs on this machine (fast tests); `slurm` puts them on
a private Slurm cluster of tests/infra/slurm.py (its SLURM_CONF in the daemons' environment).

Everything lives under one directory outside pytest's tmp tree: the `gridjob`
account must reach the session directory, and pytest makes its dirs mode 0700.
"""
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import requests

from server.xrootd_se import free_port
from tests.infra.slurm import slurm_available, start_slurm

GRID_USER = "gridjob"
USER_CN = "Severus Test User"
USER_DN = f"/DC=org/DC=nordugrid/DC=ARC/O=TestCA/CN={USER_CN}"
CA_ID = "severus"
TOOLS = ("/usr/sbin/arched", "/usr/sbin/arcctl", "/usr/lib/arc/arcconfig-parser", "/usr/lib/arc/libarex.so")
INSTALL_HINT = ("the ARC CE is not installed: run scripts/install-deps (Debian: nordugrid-arc-arex "
                "nordugrid-arc-client nordugrid-arc-arcctl nordugrid-arc-plugins-arcrest nordugrid-arc-plugins-needed)")


class ArcStartError(RuntimeError):
    pass


def arc_available():
    return all(os.path.exists(t) for t in TOOLS)


@dataclass
class ArcCE:
    """A running CE; `url` is the A-REX endpoint, `cert`/`key`/`ca_dir` the client credential it accepts."""
    base: Path
    port: int
    lrms: str
    queue: str

    @property
    def url(self):
        return f"https://localhost:{self.port}/arex"

    @property
    def ca_dir(self):
        return self.base / "ca"

    @property
    def ca_file(self):
        return self.ca_dir / f"ARC-TestCA-{CA_ID}.pem"

    @property
    def cert(self):
        return self.base / "certs" / f"client-{USER_CN.replace(' ', '-')}-cert.pem"

    @property
    def key(self):
        return self.base / "certs" / f"client-{USER_CN.replace(' ', '-')}-key.pem"

    @property
    def session_dir(self):
        return self.base / "spool" / "session"

    @property
    def control_dir(self):
        return self.base / "spool" / "control"

    def pidfiles(self):
        return [self.base / "run" / "arched-arex-ws.pid", self.base / "run" / "arched-arex.pid"]

    def log_tail(self, lines=30):
        out = []
        for log in sorted((self.base / "log").glob("*")):
            if log.is_file():
                text = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    def session(self):
        """A requests session as the test user (trust_env off: REQUESTS_CA_BUNDLE would override verify)."""
        s = requests.Session()
        s.trust_env = False
        s.verify = str(self.ca_file)
        s.cert = (str(self.cert), str(self.key))
        s.headers["Accept"] = "application/json"
        return s

    def stop(self, timeout=15.0):
        """SIGTERM both arched by pid file; SIGKILL what is still there at the deadline."""
        pids = []
        for path in self.pidfiles():
            try:
                pids.append(int(path.read_text().strip()))
            except (OSError, ValueError):
                continue
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
        # A-REX's helpers (submit-*-job, sbatch, scan scripts) outlive arched: they name our base dir.
        for pid in _processes_naming(self.base):
            _signal(pid, signal.SIGKILL)


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _processes_naming(base):
    """Pids of live processes whose command line names a path under `base` or that run in it: the
    CE's own helpers, and fork-LRMS jobs (a fork job survives action=kill, INFRA.md)."""
    mark = str(base).encode() + b"/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark in (entry / "cmdline").read_bytes() or os.readlink(entry / "cwd").startswith(str(base) + "/"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def ensure_grid_user():
    """The account jobs run as: A-REX will not map a grid identity to root."""
    try:
        return pwd.getpwnam(GRID_USER)
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise ArcStartError(f"the ARC CE test needs root, or a `{GRID_USER}` account made beforehand")
    subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", GRID_USER],
                   check=True, capture_output=True, timeout=30)
    return pwd.getpwnam(GRID_USER)


def make_pki(base):
    """Test CA, host cert (CN=localhost) and the test user's cert under `base` (arcctl test-ca)."""
    certs = base / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    for args in (["init"], ["hostcert", "-n", "localhost"], ["usercert", "-n", USER_CN, "--no-auth"]):
        proc = subprocess.run(["arcctl", "test-ca", "--ca-dir", str(base / "ca"), "--ca-id", CA_ID] + args,
                              cwd=certs, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise ArcStartError(f"arcctl test-ca {args[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")


def _arc_conf(base, port, lrms, queue, slurm_bin, subjects):
    if lrms == "slurm":
        # sacct needs accounting storage, which the tests' cluster does not run
        lrms_conf = f"lrms = slurm\nslurm_bin_path = {slurm_bin}\nslurm_use_sacct = no"
    else:
        lrms_conf = "lrms = fork"
    subject_lines = "\n".join(f"subject = {dn}" for dn in (USER_DN, *subjects))
    return f"""[common]
hostname = localhost
x509_host_key = {base}/certs/host-localhost-key.pem
x509_host_cert = {base}/certs/host-localhost-cert.pem
x509_cert_dir = {base}/ca

[authgroup:severus]
{subject_lines}

[mapping]
map_to_user = severus {GRID_USER}:{GRID_USER}

[lrms]
{lrms_conf}

[arex]
logfile = {base}/log/arex.log
joblog = {base}/log/arex-jobs.log
helperlog = {base}/log/job.helper.errors
controldir = {base}/spool/control
sessiondir = {base}/spool/session
tmpdir = {base}/tmp
pidfile = {base}/run/arched-arex.pid
wakeupperiod = 5

[arex/ws]
wsurl = https://localhost:{port}/arex
logfile = {base}/log/ws-interface.log
pidfile = {base}/run/arched-arex-ws.pid

[arex/ws/jobs]
allowaccess = severus

[infosys]
logfile = {base}/log/infoprovider.log

[infosys/glue2]

[infosys/cluster]

[queue:{queue}]
"""


_GM_XML = """<?xml version="1.0"?>
<ArcConfig xmlns="http://www.nordugrid.org/schemas/ArcConfig/2007"
           xmlns:arex="http://www.nordugrid.org/schemas/a-rex/Config">
  <Server><PidFile>{base}/run/arched-arex.pid</PidFile>
    <Logger><File>{base}/log/arex.log</File><Level>INFO</Level></Logger></Server>
  <ModuleManager><Path>/usr/lib/arc/</Path></ModuleManager>
  <Plugins><Name>arex</Name></Plugins>
  <Chain><Service name="a-rex" id="a-rex">
    <arex:endpoint>https://localhost:{port}/arex</arex:endpoint>
    <arex:gmconfig>{base}/run/arex.cfg</arex:gmconfig>
  </Service></Chain>
</ArcConfig>
"""

# What /usr/share/arc/arc-arex-ws-start would generate, listening on 127.0.0.1 only.
_WS_XML = """<?xml version="1.0"?>
<ArcConfig xmlns="http://www.nordugrid.org/schemas/ArcConfig/2007"
           xmlns:tcp="http://www.nordugrid.org/schemas/ArcMCCTCP/2007"
           xmlns:arex="http://www.nordugrid.org/schemas/a-rex/Config">
  <Server><PidFile>{base}/run/arched-arex-ws.pid</PidFile>
    <Logger><File>{base}/log/ws-interface.log</File><Level>INFO</Level></Logger></Server>
  <ModuleManager><Path>/usr/lib/arc/</Path></ModuleManager>
  <Plugins><Name>mcctcp</Name></Plugins><Plugins><Name>mcctls</Name></Plugins>
  <Plugins><Name>mcchttp</Name></Plugins><Plugins><Name>mccsoap</Name></Plugins>
  <Plugins><Name>arex</Name></Plugins><Plugins><Name>identitymap</Name></Plugins>
  <Plugins><Name>arcshc</Name></Plugins><Plugins><Name>arcshclegacy</Name></Plugins>
  <Chain>
    <Component name="tcp.service" id="tcp"><next id="tls"/>
      <tcp:Listen><tcp:Interface>127.0.0.1</tcp:Interface><tcp:Port>{port}</tcp:Port></tcp:Listen></Component>
    <Component name="tls.service" id="tls"><next id="http"/>
      <KeyPath>{base}/certs/host-localhost-key.pem</KeyPath>
      <CertificatePath>{base}/certs/host-localhost-cert.pem</CertificatePath>
      <CACertificatesDir PolicyGlobus="true">{base}/ca</CACertificatesDir>
      <VOMSProcessing>standard</VOMSProcessing>
      <ClientAuthn>false</ClientAuthn>
      <DHParamFile>{base}/spool/control/dhparam.pem</DHParamFile></Component>
    <Component name="http.service" id="http"><next id="soap">POST</next><next id="plexer"/>
      <SecHandler name="arclegacy.handler" event="incoming"><ConfigFile>{base}/run/arex.cfg</ConfigFile></SecHandler>
    </Component>
    <Component name="soap.service" id="soap"><next id="plexer"/><ContinueNonSOAP>true</ContinueNonSOAP></Component>
    <Plexer name="plexer.service" id="plexer"><next id="a-rex">^/arex</next></Plexer>
    <Service name="a-rex" id="a-rex">
      <SecHandler name="arclegacy.map" event="incoming">
        <ConfigBlock><ConfigFile>{base}/run/arex.cfg</ConfigFile><BlockName>mapping</BlockName></ConfigBlock>
      </SecHandler>
      <arex:endpoint>https://localhost:{port}/arex</arex:endpoint>
      <arex:gmconfig>{base}/run/arex.cfg</arex:gmconfig>
      <arex:gmrun>none</arex:gmrun>
    </Service>
  </Chain>
</ArcConfig>
"""


def start_ce(base=None, lrms="fork", queue=None, slurm_conf=None, pki_from=None, timeout=30.0,
             trust_cert_dirs=(), subjects=()):
    """Configure and start an A-REX under `base` (a fresh dir in /tmp when None); returns a ready ArcCE.

    `pki_from`: the base of an earlier CE whose CA and certificates to reuse (arcctl is ~1 s a call).
    `trust_cert_dirs`: grid CA directories (hashed, with signing policies) the CE trusts besides its
    own test CA; `subjects`: DNs it maps to the grid user besides its test user's. The CE's runtime
    environment ENV/PROXY (the delegated proxy copied beside the job on request) is enabled.
    """
    if not arc_available():
        raise ArcStartError(INSTALL_HINT)
    if lrms not in ("fork", "slurm"):
        raise ValueError(f"lrms must be fork or slurm, got {lrms!r}")
    if lrms == "slurm" and not slurm_conf:
        raise ValueError("an LRMS slurm CE needs the cluster's slurm_conf")
    ensure_grid_user()
    base = Path(base or tempfile.mkdtemp(prefix="severus-arc-")).resolve()
    os.chmod(base, 0o755)
    for sub in ("spool/control", "spool/session", "log", "run"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "tmp").mkdir(exist_ok=True)
    os.chmod(base / "tmp", 0o1777)    # arc-config-check demands a sticky tmpdir
    ce = ArcCE(base=base, port=free_port(), lrms=lrms, queue=queue or ("debug" if lrms == "slurm" else "fork"))
    if pki_from:
        for sub in ("ca", "certs"):
            shutil.copytree(Path(pki_from) / sub, base / sub, dirs_exist_ok=True)
    elif not ce.cert.exists():
        make_pki(base)
    for cert_dir in trust_cert_dirs:
        for entry in Path(cert_dir).iterdir():
            if entry.is_file() and not (ce.ca_dir / entry.name).exists():
                shutil.copy(entry, ce.ca_dir / entry.name)     # a hash link becomes its CA's file
    dhparam = ce.control_dir / "dhparam.pem"
    if not dhparam.exists():
        # Pre-made from a named group: otherwise the start would run `openssl dhparam 4096` for minutes.
        subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe4096",
                        "-out", str(dhparam)], check=True, capture_output=True, timeout=60)
        os.chmod(dhparam, 0o600)
    slurm_bin = os.path.dirname(shutil.which("sbatch") or "/usr/bin/sbatch")
    (base / "arc.conf").write_text(_arc_conf(base, ce.port, lrms, ce.queue, slurm_bin, subjects))
    parse = subprocess.run(["/usr/lib/arc/arcconfig-parser", "--config", str(base / "arc.conf"),
                            "--runconfig", str(base / "run" / "arex.cfg"), "--save"],
                           capture_output=True, text=True, timeout=60)
    if parse.returncode != 0:
        raise ArcStartError(f"arcconfig-parser refused arc.conf: {parse.stderr.strip()}")
    rte = subprocess.run(["arcctl", "-c", str(base / "arc.conf"), "rte", "enable", "ENV/PROXY"],
                         capture_output=True, text=True, timeout=60)
    if rte.returncode != 0:
        raise ArcStartError(f"arcctl rte enable ENV/PROXY failed: {rte.stderr.strip() or rte.stdout.strip()}")
    (base / "run" / "arex-gm.xml").write_text(_GM_XML.format(base=base, port=ce.port))
    (base / "run" / "arex-ws.xml").write_text(_WS_XML.format(base=base, port=ce.port))
    # A clean environment: the daemons pass theirs on to every job (sbatch exports it), and the
    # test process's (HOME, X509_*, BEARER_TOKEN* of other fixtures, in dirs `gridjob` cannot
    # enter) would make the jobs' world differ from a real CE's.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "X509_USER_CERT": str(base / "certs" / "host-localhost-cert.pem"),
           "X509_USER_KEY": str(base / "certs" / "host-localhost-key.pem"), "X509_CERT_DIR": str(ce.ca_dir),
           "HOSTNAME": "localhost", "TMPDIR": str(base / "tmp")}
    if slurm_conf:
        env["SLURM_CONF"] = str(slurm_conf)
    deadline = time.monotonic() + timeout
    try:
        for xml in ("arex-gm.xml", "arex-ws.xml"):
            # arched daemonizes itself and writes its pid file; its own exit code says if that went well
            proc = subprocess.run(["/usr/sbin/arched", "-c", str(base / "run" / xml)], env=env,
                                  capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                raise ArcStartError(f"arched -c {xml} exited {proc.returncode}: {proc.stderr.strip()}")
        _wait_ready(ce, deadline)
    except BaseException:
        ce.stop()
        raise
    return ce


def _wait_ready(ce, deadline):
    """Poll until the REST endpoint answers an authenticated job listing with 200."""
    session, last = ce.session(), ""
    try:
        while time.monotonic() < deadline:
            try:
                reply = session.get(f"{ce.url}/rest/1.0/jobs", timeout=5)
                if reply.status_code == 200:
                    return
                last = f"HTTP {reply.status_code}"
            except requests.RequestException as exc:
                last = str(exc)
            time.sleep(0.1)
    finally:
        session.close()
    raise ArcStartError(f"ARC CE not ready on {ce.url} in time (last: {last})\n{ce.log_tail()}")


def ce_fixture(lrms, slurm_conf: Optional[str] = None, **kw):
    """Start a CE (start_ce's keywords) or fail the test with the install hint (never skip)."""
    if not arc_available():
        pytest.fail(INSTALL_HINT)
    return start_ce(lrms=lrms, slurm_conf=slurm_conf, **kw)


def finish(ce, keep_logs):
    """Stop the CE, keep its logs (in pytest's tmp tree, for a failure's post-mortem), drop the rest."""
    ce.stop()
    shutil.copytree(ce.base / "log", keep_logs, dirs_exist_ok=True)
    shutil.rmtree(ce.base, ignore_errors=True)


@pytest.fixture(scope="session")
def arc_ce_fork(tmp_path_factory):
    """A CE with LRMS fork (jobs run here as `gridjob`) for the whole session."""
    ce = ce_fixture("fork")
    yield ce
    finish(ce, tmp_path_factory.mktemp("arc-ce-fork-logs"))


@pytest.fixture(scope="session")
def arc_slurm_cluster():
    """The tests' private Slurm (tests/infra/slurm.py), started outside pytest's tmp tree.

    Jobs through a CE run as `gridjob`, and slurmd execs their script from its spool dir: under
    /tmp/pytest-of-<user>, which pytest resets to 0700 whenever any session starts, they could not.
    A-REX also runs sbatch, squeue and scancel as that user: slurm.conf and the munge socket too."""
    if not slurm_available():
        pytest.fail("Slurm is not installed: run `make test` (it installs slurmd slurmctld slurm-client munge)")
    base = Path(tempfile.mkdtemp(prefix="severus-arc-slurm-"))
    os.chmod(base, 0o755)
    cluster = start_slurm(base)
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def arc_ce_slurm(arc_slurm_cluster, tmp_path_factory):
    """A CE with LRMS slurm in front of arc_slurm_cluster (import both into the test module)."""
    ce = ce_fixture("slurm", slurm_conf=str(arc_slurm_cluster.conf))
    yield ce
    finish(ce, tmp_path_factory.mktemp("arc-ce-slurm-logs"))
