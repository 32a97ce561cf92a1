"""A storage element that demands credentials: one real XRootD serving root:// (GSI or a
WLCG token via ztn, over TLS) and https/davs:// through XrdHttp (client certificate or bearer
token), authorised by a grid-mapfile + authdb (proxies) and the SciTokens plugin (tokens).

The PKI comes from server/grid_pki.py; the SE starts in ~1 s. Used by `sbk demo` and by the
test fixtures (tests/infra/secure_se.py). Clients must say `root://localhost`: GSI checks the
host name against the host cert's CN, and 127.0.0.1 fails it.
"""
import os
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from server.grid_pki import AUDIENCE, ISSUER, USER_DN
from server.xrootd_se import SEStartError, free_port

XROOTD_USER = "xrootd"
STORE = "/store"   # the directory under the SE's root the tests write to


@dataclass
class SecureSE:
    base: Path
    pki: object
    root_port: int
    http_port: int
    pid: int = 0
    env: dict = field(default_factory=dict)

    @property
    def data(self):
        """Where the SE keeps its files (for cleanup only: checks go through xrdfs/xrdadler32)."""
        return self.base / "data"

    @property
    def root_url(self):
        return f"root://localhost:{self.root_port}/{STORE}"

    @property
    def davs_url(self):
        return f"davs://localhost:{self.http_port}{STORE}"

    @property
    def root_endpoint(self):
        return f"root://localhost:{self.root_port}"

    @property
    def log_file(self):
        return self.base / "log" / "xrootd.log"

    def client_env(self, proxy=None, token=None, base=None):
        """An environment for xrdcp/xrdfs/gfal-* as a node would have it: only the credential
        named (a proxy file, or a token file passed as BEARER_TOKEN_FILE and BEARER_TOKEN)."""
        env = {k: v for k, v in (base or os.environ).items()
               if k not in ("X509_USER_PROXY", "BEARER_TOKEN", "BEARER_TOKEN_FILE", "X509_USER_CERT",
                            "X509_USER_KEY", "SEVERUS_BEARER_TOKEN_SOURCE")}
        env.update(X509_CERT_DIR=str(self.pki.cert_dir), XRD_CONNECTIONRETRY="1", XRD_REQUESTTIMEOUT="10",
                   GFAL_PYTHONBIN="/usr/bin/python3")
        # No default credential of the node leaks in: an absent proxy file and runtime dir.
        env["XDG_RUNTIME_DIR"] = str(self.base / "no-runtime")
        if proxy is not None:
            env["X509_USER_PROXY"] = str(proxy)
        if token is not None:
            env["BEARER_TOKEN_FILE"] = str(token)
            env["BEARER_TOKEN"] = Path(token).read_text().strip()
        return env

    def run(self, args, proxy=None, token=None, timeout=30):
        """A client command against this SE with the credential given; CompletedProcess."""
        return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                              env=self.client_env(proxy, token), stdin=subprocess.DEVNULL)

    def adler32(self, path):
        """The SE's adler32 of `path` (under STORE), read with the user's proxy by xrdadler32."""
        proc = self.run(["xrdadler32", f"{self.root_endpoint}/{STORE}/{path.lstrip('/')}"], proxy=self.pki.proxy)
        return proc.stdout.split()[0] if proc.returncode == 0 else None

    def listing(self, path=""):
        """Names under STORE/path as xrdfs sees them with the user's proxy ([] when absent)."""
        proc = self.run(["xrdfs", self.root_endpoint, "ls", f"{STORE}/{path}".rstrip("/")], proxy=self.pki.proxy)
        if proc.returncode != 0:
            return []
        return sorted(os.path.basename(line.rstrip("/")) for line in proc.stdout.splitlines() if line.strip())

    def alive(self):
        if not self.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout=10.0):
        """SIGTERM (gone in < 2 s), SIGKILL if it lingers; by PID only."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if not self.alive():
                break
            os.kill(self.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.alive():
                try:
                    os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.02)
        self.pid = 0


def _config(se, etc):
    pki = se.pki
    return f"""all.role server
all.export /
oss.localroot {se.data}
all.adminpath {se.base / 'admin'}
all.pidpath {se.base / 'run'}
xrd.port {se.root_port}
xrd.allow host localhost
xrootd.chksum adler32
xrd.tls {etc / 'hostcert.pem'} {etc / 'hostkey.pem'}
xrd.tlsca certdir {pki.cert_dir}
xrootd.seclib libXrdSec.so
sec.protocol ztn
sec.protocol gsi -certdir:{pki.cert_dir} -cert:{etc / 'hostcert.pem'} -key:{etc / 'hostkey.pem'} -gridmap:{etc / 'grid-mapfile'} -gmapopt:2 -crl:0 -dlgpxy:0 -vomsat:0
sec.protbind * only ztn gsi
ofs.authorize 1
ofs.authlib ++ libXrdAccSciTokens.so config={etc / 'scitokens.cfg'}
acc.authdb {etc / 'authdb'}
xrd.protocol XrdHttp:{se.http_port} libXrdHttp.so
http.header2cgi Authorization authz
http.gridmap {etc / 'grid-mapfile'}
"""


def _let_others_in(dirs):
    for d in dirs:
        if d != Path("/") and not d.stat().st_mode & 0o001:
            os.chmod(d, d.stat().st_mode | 0o005)


def start_secure_se(base, pki, timeout=20.0):
    """Configure and start the secured SE under `base`; ready when xrdfs with the proxy answers."""
    base = Path(base).resolve()
    se = SecureSE(base=base, pki=pki, root_port=free_port(), http_port=free_port())
    etc = base / "etc"
    for sub in ("etc", "data" + STORE, "run", "admin", "log", "cache"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for name in ("hostcert.pem", "hostkey.pem"):
        (etc / name).write_bytes((pki.base / name).read_bytes())
    os.chmod(etc / "hostcert.pem", 0o644)
    os.chmod(etc / "hostkey.pem", 0o400)   # XrdSecgsi refuses a host key others can read
    (etc / "grid-mapfile").write_text(f'"{USER_DN}" testuser\n')
    (etc / "authdb").write_text("u testuser / a\n")
    # The WLCG profile's storage.* scopes map onto this base path; a token without a matching
    # audience validates but is denied.
    (etc / "scitokens.cfg").write_text(f"[Global]\naudience = {AUDIENCE}\nonmissing = passthrough\n\n"
                                       f"[Issuer test]\nissuer = {ISSUER}\nbase_path = /\ndefault_user = tokenuser\n")
    (etc / "xrootd.cfg").write_text(_config(se, etc))
    pki.seed_key_cache(base / "cache")
    cmd = ["xrootd", "-b", "-n", "secse", "-c", str(etc / "xrootd.cfg"), "-l", str(se.log_file)]
    if os.geteuid() == 0:
        user = pwd.getpwnam(XROOTD_USER)
        for path in [base, *base.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        # The daemon must traverse down to its directory and read the CA dir (pytest makes
        # its temporary directories 0700).
        _let_others_in(base.parents)
        _let_others_in([pki.cert_dir, *pki.cert_dir.parents])
        for path in pki.cert_dir.iterdir():
            os.chmod(path, 0o644)
        cmd[1:1] = ["-R", XROOTD_USER]   # xrootd refuses to run as root
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=base,
                          env=dict(os.environ, XDG_CACHE_HOME=str(base / "cache")))
    if proc.returncode != 0:
        raise SEStartError(f"xrootd did not start: {proc.stderr.strip() or proc.stdout.strip()}")
    pidfile = base / "run" / "secse" / "xrootd.pid"
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if pidfile.exists() and pidfile.read_text().strip():
            se.pid = int(pidfile.read_text().split()[0])
            probe = se.run(["xrdfs", se.root_endpoint, "query", "config", "version"], proxy=pki.proxy, timeout=10)
            if probe.returncode == 0:
                return se
            last = probe.stderr.strip()
        time.sleep(0.05)
    se.stop()
    raise SEStartError(f"secured SE not ready after {timeout:.0f} s: {last}; see {se.log_file}")
