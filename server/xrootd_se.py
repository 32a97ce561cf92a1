"""Start and stop a real XRootD storage element on loopback.

One daemon serves root:// and http(s)/WebDAV with server-side adler32
(INFRA.md). Used by `sbk demo` and by the test fixtures; stopped by PID.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

XROOTD_USER = "xrootd"


class SEStartError(RuntimeError):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def xrootd_available():
    return shutil.which("xrootd") is not None and shutil.which("xrdfs") is not None


@dataclass
class XRootDSE:
    """A running SE: `export` is the directory it serves, the same files over both URLs."""
    base: Path
    name: str
    root_port: int
    http_port: int
    pid: int = 0

    @property
    def export(self):
        return self.base / "export"

    @property
    def root_url(self):
        return f"root://127.0.0.1:{self.root_port}/{self.export}"

    @property
    def http_url(self):
        return f"http://127.0.0.1:{self.http_port}{self.export}"

    @property
    def dav_url(self):
        return f"dav://127.0.0.1:{self.http_port}{self.export}"

    @property
    def log_file(self):
        return self.base / "log" / self.name / "xrootd.log"

    def alive(self):
        if not self.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL if it lingers; waits until the ports are free."""
        if not self.pid:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.alive():
                _reap(self.pid)
                time.sleep(0.05)
            if not self.alive():
                break
        self.pid = 0

    def start(self, timeout=15.0):
        """(Re)start the daemon on the same ports and export."""
        cfg = self.base / "xrootd.cfg"
        cmd = ["xrootd", "-b", "-n", self.name, "-c", str(cfg), "-l", str(self.base / "log" / "xrootd.log")]
        if os.geteuid() == 0:
            cmd[1:1] = ["-R", XROOTD_USER]   # xrootd refuses to run as root
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise SEStartError(f"xrootd did not start: {proc.stderr.strip() or proc.stdout.strip()}")
        pidfile = self.base / "run" / self.name / "xrootd.pid"
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if pidfile.exists() and pidfile.read_text().strip():
                self.pid = int(pidfile.read_text().split()[0])
                probe = subprocess.run(
                    ["xrdfs", f"root://127.0.0.1:{self.root_port}", "query", "config", "version"],
                    capture_output=True, text=True, timeout=10,
                    env=dict(os.environ, XRD_CONNECTIONRETRY="1"))
                if probe.returncode == 0 and _http_up(self.http_port):
                    return self
                last = probe.stderr.strip()
            time.sleep(0.05)
        self.stop()
        raise SEStartError(f"xrootd not ready after {timeout:.0f}s: {last}; see {self.log_file}")


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _http_up(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def start_se(base, name="se", root_port=None, http_port=None):
    """Configure and start an XRootD SE under `base` (created, owned by xrootd)."""
    if not xrootd_available():
        raise SEStartError("xrootd is not installed (Debian: xrootd-server xrootd-client)")
    base = Path(base).resolve()
    se = XRootDSE(base=base, name=name, root_port=root_port or free_port(),
                  http_port=http_port or free_port())
    for sub in ("export", "run", "admin", "log"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "xrootd.cfg").write_text(
        f"all.role server\n"
        f"all.export {se.export}\n"
        f"all.adminpath {base / 'admin'}\n"
        f"all.pidpath {base / 'run'}\n"
        f"xrd.port {se.root_port}\n"
        f"xrootd.chksum adler32\n"
        f"xrd.protocol XrdHttp:{se.http_port} libXrdHttp.so\n"
        f"xrd.allow host localhost\n")
    if os.geteuid() == 0:
        user = pwd.getpwnam(XROOTD_USER)
        # The daemon (as xrootd) writes here; directories above must be traversable.
        for path in [base] + [p for p in base.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        for parent in base.parents:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
    return se.start()
