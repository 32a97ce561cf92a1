"""Start and stop a private single-node Slurm (munged, slurmctld, slurmd) for tests.

Everything lives under one directory: munge key and socket, slurm.conf, state,
spool and logs; ports are chosen free. No systemd is needed (INFRA.md). Clients
find the cluster through `SLURM_CONF` (see `SlurmCluster.env`). The daemons run
in the foreground as our children and are stopped by PID.
"""
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server.xrootd_se import free_port


class SlurmStartError(RuntimeError):
    pass


def slurm_available():
    """True when the Debian packages slurmctld, slurmd, slurm-client and munge are installed."""
    return all(shutil.which(t) for t in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo"))


@dataclass
class SlurmCluster:
    """A running private cluster; `env()` is what a Slurm client needs to reach it."""
    base: Path
    node: str
    cpus: int
    procs: dict = field(default_factory=dict)   # name -> Popen, stopped in reverse order

    @property
    def conf(self):
        return self.base / "slurm.conf"

    @property
    def jobcomp_file(self):
        return self.base / "jobcomp.txt"

    def env(self):
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def run(self, *cmd, timeout=30):
        """Run a Slurm client command against this cluster; returns the CompletedProcess."""
        return subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, timeout=timeout)

    def log_tail(self, lines=20):
        """Last lines of every daemon log, for failure messages."""
        out = []
        for log in sorted((self.base / "log").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self, timeout=10.0):
        """Cancel leftover jobs, then SIGTERM each daemon (slurmd first, munged last), SIGKILL what lingers."""
        self._drain_jobs(deadline=time.monotonic() + timeout / 2)
        for name in reversed(list(self.procs)):
            proc = self.procs.pop(name)
            if proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


    def _drain_jobs(self, deadline):
        """A job still running would outlive slurmd in its slurmstepd: cancel it and wait for the queue to empty."""
        if self.procs.get("slurmctld") is None or self.procs["slurmctld"].poll() is not None:
            return
        self.run("scancel", f"--user={os.getuid()}", timeout=10)
        while time.monotonic() < deadline:
            queue = self.run("squeue", "-h", "-o", "%i", timeout=10)
            if queue.returncode != 0 or not queue.stdout.strip():
                return
            time.sleep(0.1)


def _write_munge(base):
    mdir = base / "munge"
    mdir.mkdir(mode=0o755)
    os.chmod(mdir, 0o755)    # munged refuses a socket dir writable by others; umask may differ
    key = mdir / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    return mdir


def _slurm_conf(base, node, cpus, munge_socket):
    ports = free_port(), free_port()
    log = base / "log"
    return "\n".join([
        "ClusterName=severus-test",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={ports[0]}",
        f"SlurmdPort={ports[1]}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        f"AuthInfo=socket={munge_socket}",
        "CredType=cred/munge",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={base / 'jobcomp.txt'}",
        "SchedulerType=sched/backfill",
        # Start array tasks as soon as CPUs free up, not on the next 3 s scheduling tick.
        "SchedulerParameters=batch_sched_delay=0",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        # Short grace so cancellations in tests settle in about a second.
        "KillWait=2",
        "MinJobAge=300",
        f"StateSaveLocation={base / 'state'}",
        f"SlurmdSpoolDir={base / 'spool'}",
        f"SlurmctldPidFile={base / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={base / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={log / 'slurmctld.log'}",
        f"SlurmdLogFile={log / 'slurmd.log'}",
        f"PlugStackConfig={base / 'plugstack.conf'}",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} Sockets=1 CoresPerSocket={cpus} "
        "ThreadsPerCore=1 RealMemory=1024 State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _wait_ready(cluster, deadline):
    """Poll until the controller answers and the node is idle; raise with the logs if not."""
    last = ""
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise SlurmStartError(f"{name} exited with {proc.returncode}\n{cluster.log_tail()}")
        ping = cluster.run("scontrol", "ping", timeout=10)
        if ping.returncode == 0 and "UP" in ping.stdout:
            info = cluster.run("sinfo", "-h", "-N", "-o", "%T", timeout=10)
            last = info.stdout.strip() or info.stderr.strip()
            if info.returncode == 0 and last.rstrip("*") in ("idle", "mixed", "allocated"):
                return
        else:
            last = ping.stdout.strip() or ping.stderr.strip()
        time.sleep(0.1)
    raise SlurmStartError(f"Slurm not ready in time (last: {last!r})\n{cluster.log_tail()}")


def start_slurm(base, timeout=30.0):
    """Configure and start munged, slurmctld and slurmd under `base`; returns a ready `SlurmCluster`."""
    if not slurm_available():
        raise SlurmStartError("Slurm is not installed (Debian: slurmd slurmctld slurm-client munge)")
    base = Path(base).resolve()
    for sub in ("state", "spool", "run", "log"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    cluster = SlurmCluster(base=base, node=node, cpus=max(1, min(os.cpu_count() or 1, 2)))
    mdir = _write_munge(base)
    munge_socket = mdir / "munge.socket.2"
    (base / "plugstack.conf").write_text("")
    cluster.conf.write_text(_slurm_conf(base, node, cluster.cpus, munge_socket))
    log = base / "log"
    daemons = {
        "munged": ["munged", "-F", "--force", f"--key-file={mdir / 'munge.key'}",
                   f"--socket={munge_socket}", f"--pid-file={mdir / 'munged.pid'}",
                   f"--seed-file={mdir / 'munged.seed'}", f"--log-file={log / 'munged.log'}"],
        # -i: ignore any state from an earlier run of this directory.
        "slurmctld": ["slurmctld", "-D", "-i", "-f", str(cluster.conf)],
        "slurmd": ["slurmd", "-D", "-f", str(cluster.conf)],
    }
    deadline = time.monotonic() + timeout
    try:
        for name, cmd in daemons.items():
            out = open(log / f"{name}.out", "wb")
            with out:
                cluster.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                       stdin=subprocess.DEVNULL, env=cluster.env(),
                                                       preexec_fn=_die_with_parent)
            if name == "munged":
                _wait_for_path(munge_socket, cluster, deadline)
        _wait_ready(cluster, deadline)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _die_with_parent():
    """In the child: SIGTERM when the test process dies, so a killed run leaves no daemons behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)   # 1 = PR_SET_PDEATHSIG (Linux)


def _wait_for_path(path, cluster, deadline):
    while not path.exists():
        proc = cluster.procs["munged"]
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SlurmStartError(f"munged did not create {path}\n{cluster.log_tail()}")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A private single-node Slurm for the whole session (import this fixture into a test module or conftest)."""
    if not slurm_available():
        pytest.fail("Slurm is not installed: run `make test` (it installs slurmd slurmctld slurm-client munge)")
    cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()
