"""Payload modules and the watchdog that runs the payload.

A payload module only turns the job into a command line, an environment and
a progress source (seed: "the specific session module now only launches the
executable with specific parameters"). Modules are found in the explicit
MODULES registry, then in the `severus.payload_modules` entry point group so a
site can add its own without touching this file:

    class MyModule(PayloadModule):
        name = "mysim"
        def argv(self, job): ...
    # setup.py: entry_points={"severus.payload_modules": ["mysim = mypkg:MyModule"]}

`run_payload()` starts the command in its own process group, keeps the tails
of stdout/stderr in size-capped files, enforces the wallclock, memory and
stall limits on the whole process tree, and samples metrics (psutil when it
is importable, /proc otherwise).
"""
import glob
import logging
import os
import resource
import select
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

from shared.errors import (JobDescriptionError, PayloadFailed, PayloadMemory, PayloadSignalled,
                           PayloadStalled, PayloadWallclock)

try:
    import psutil
except ImportError:  # the /proc reader below does the same job, a little slower
    psutil = None

log = logging.getLogger("severus.payload")

ENTRY_POINT_GROUP = "severus.payload_modules"
PROGRESS_FILE = "severus-progress"


@dataclass(frozen=True)
class PayloadJob:
    """What a module may read: the job description, the software and the inputs."""
    desc: object                 # shared.jobdesc.JobDescription
    exe: Path                    # absolute path of the software's executable
    software_root: Path
    software_workdir: Path       # the release's own directory (software.workdir)
    cwd: Path                    # where the payload runs and writes its outputs
    inputs: Tuple[Path, ...] = ()


@dataclass(frozen=True)
class PayloadSpec:
    """A module's answer: what to run, with which environment, how progress shows."""
    argv: Tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    progress_file: Optional[Path] = None      # holds the number of events done so far
    output_patterns: Tuple[str, ...] = ()     # their total size growing also counts as progress


class PayloadModule:
    """Base class: `argv()` and `extra_env()` are the only things a module decides."""
    name = "base"
    required_parameters: Tuple[str, ...] = ()

    def argv(self, job: PayloadJob):
        return (str(job.exe),) + tuple(job.desc.payload.args)

    def extra_env(self, job: PayloadJob):
        return {}

    def build(self, job: PayloadJob) -> PayloadSpec:
        """The PayloadSpec for `job`; a missing parameter is a bad description (001)."""
        params = job.desc.payload.parameters
        missing = [p for p in self.required_parameters if not params.get(p)]
        if missing:
            raise JobDescriptionError(
                f"payload module {self.name} needs parameter(s) {', '.join(missing)}")
        d = job.desc
        progress = job.cwd / PROGRESS_FILE
        env = dict(os.environ)
        env.update({
            "SEVERUS_JOB_ID": str(d.job.id),
            "SEVERUS_ATTEMPT": str(d.job.attempt),
            "SEVERUS_RUNNUM": str(d.job.runnum),
            "SEVERUS_EVENTS": str(d.job.events),
            "SEVERUS_SESSION": d.job.session,
            "SEVERUS_PRODUCTION": d.job.production,
            "SEVERUS_SOFTWARE_ROOT": str(job.software_root),
            "SEVERUS_SOFTWARE_WORKDIR": str(job.software_workdir),
            "SEVERUS_INPUTS": os.pathsep.join(str(p) for p in job.inputs),
            "SEVERUS_PROGRESS_FILE": str(progress),
        })
        for key, value in params.items():
            env["SEVERUS_PARAM_" + key.upper()] = value
        env.update(self.extra_env(job))
        env.update(d.payload.env)          # the job's own settings win
        return PayloadSpec(argv=tuple(self.argv(job)), env=env, cwd=job.cwd,
                           progress_file=progress, output_patterns=tuple(d.output.patterns))


class GenericModule(PayloadModule):
    """Runs the software's exe with the job's args; the job is in SEVERUS_* variables."""
    name = "generic"


class SimulationModule(PayloadModule):
    """SuperB simulations: the seed's four job parameters become options."""
    required_parameters = ("Analysis", "Generator", "Geometry", "Background")

    def argv(self, job):
        p, d = job.desc.payload.parameters, job.desc
        return (str(job.exe), "--events", str(d.job.events), "--runnum", str(d.job.runnum),
                "--analysis", p["Analysis"], "--generator", p["Generator"],
                "--geometry", p["Geometry"], "--background", p["Background"]) + tuple(d.payload.args)


class FastSimModule(SimulationModule):
    name = "fastsim"


class FullSimModule(SimulationModule):
    name = "fullsim"

    def extra_env(self, job):
        # FullSim (Bruno, Geant4) reads its geometry by name from the environment.
        return {"BRUNO_GEOMETRY": job.desc.payload.parameters["Geometry"]}


MODULES = {m.name: m for m in (GenericModule, FastSimModule, FullSimModule)}


def _entry_points(group):
    from importlib import metadata
    eps = metadata.entry_points()
    if hasattr(eps, "select"):
        return list(eps.select(group=group))
    return list(eps.get(group, ()))  # Python 3.9: a dict of groups


def find_module(name) -> PayloadModule:
    """An instance of the payload module called `name`; unknown name → 001."""
    if name in MODULES:
        return MODULES[name]()
    for ep in _entry_points(ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                cls = ep.load()
            except Exception as exc:  # a site's broken plugin: say which one and why
                raise JobDescriptionError(f"payload module {name} ({ep.value}) "
                                          f"cannot be loaded: {exc}") from None
            return cls()
    known = sorted(set(MODULES) | {ep.name for ep in _entry_points(ENTRY_POINT_GROUP)})
    raise JobDescriptionError(f"unknown payload module {name!r} (known: {', '.join(known)})")


# --------------------------------------------------------------------------- watching

@dataclass(frozen=True)
class WatchConfig:
    """How the watchdog runs; limits come from the job, the rest are tunables."""
    max_wct_s: float = 86400.0
    max_rss_mb: float = 0.0       # 0: no limit
    stall_s: float = 0.0          # 0: no stall detection
    grace_s: float = 10.0
    sample_s: float = 2.0         # metrics/limits sampling period
    max_log_bytes: int = 20 * 1024 * 1024   # per stream; the tail is kept
    tail_lines: int = 50

    @classmethod
    def from_limits(cls, limits, **overrides):
        values = dict(max_wct_s=limits.max_wct_s, max_rss_mb=limits.max_rss_mb,
                      stall_s=limits.stall_s, grace_s=limits.grace_s)
        values.update(overrides)
        return cls(**values)


@dataclass
class PayloadResult:
    """What happened: exit code or signal, and the metrics at the end."""
    exit_code: Optional[int]
    signal: Optional[int]
    metrics: Dict[str, float]
    stdout: Path
    stderr: Path
    pids: Tuple[int, ...] = ()        # every PID seen in the tree (tests check they are gone)


def _close_quietly(fh):
    """Close a file whose last flush may fail (disk full); return None."""
    try:
        if fh is not None:
            fh.close()
    except OSError:
        pass
    return None


class TailFile:
    """Copies a pipe to a file capped at `max_bytes` (keeping the tail) and keeps last lines."""

    def __init__(self, pipe, path, max_bytes, lines=50):
        self.path = Path(path)
        self.max_bytes = max(4096, max_bytes)
        self.lines = deque(maxlen=lines)
        self._partial = b""
        self._pipe = pipe
        self._thread = threading.Thread(target=self._copy, name=f"tail-{self.path.name}",
                                        daemon=True)
        self._thread.start()

    def _copy(self):
        out, size = open(self.path, "wb"), 0
        while True:
            chunk = os.read(self._pipe, 65536)
            if not chunk:
                break
            if out is not None:
                try:
                    out.write(chunk)
                    out.flush()
                    size += len(chunk)
                    if size > self.max_bytes:
                        size = self._trim(out)
                except OSError as exc:
                    # A full scratch must not stop the draining: the payload would block on its pipe.
                    log.warning("%s: %s; copy stopped", self.path, exc.strerror)
                    out = _close_quietly(out)
            self._keep_lines(chunk)
        _close_quietly(out)
        os.close(self._pipe)
        if self._partial:
            self.lines.append(self._partial.decode("utf-8", "replace"))

    def _trim(self, out):
        """Keep the last half of the cap, marked, so a chatty payload cannot fill the disk."""
        keep = self.max_bytes // 2
        with open(self.path, "rb") as fh:
            fh.seek(-keep, os.SEEK_END)
            tail = fh.read()
        out.seek(0)
        out.truncate()
        out.write(b"[severus: earlier output dropped, size cap reached]\n" + tail)
        out.flush()
        return out.tell()

    def _keep_lines(self, chunk):
        parts = (self._partial + chunk).split(b"\n")
        self._partial = parts.pop()[-4096:]
        for line in parts[-self.lines.maxlen:]:
            self.lines.append(line.decode("utf-8", "replace")[:4096])

    def tail(self, n=None):
        lines = list(self.lines)
        return lines[-n:] if n else lines

    def join(self, timeout):
        self._thread.join(timeout)


def _proc_tree(root_pid, pgid):
    """{pid: (rss_bytes, cpu_s)} of root_pid's descendants and its process group, from /proc."""
    if psutil is not None:
        try:
            root = psutil.Process(root_pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            procs = []
        tree = {}
        for p in procs:
            try:
                with p.oneshot():
                    cpu = p.cpu_times()
                    tree[p.pid] = (p.memory_info().rss, cpu.user + cpu.system)
            except psutil.Error:
                pass
        return tree
    page = os.sysconf("SC_PAGE_SIZE")
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                raw = fh.read().decode("ascii", "replace")
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = raw[raw.rfind(")") + 2:].split()
        stats[int(name)] = (int(fields[1]), int(fields[2]), int(fields[21]) * page,
                            (int(fields[11]) + int(fields[12])) / tick)
    children = {}
    for pid, (ppid, _, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    wanted, todo = set(), [root_pid] + [p for p, s in stats.items() if s[1] == pgid]
    while todo:
        pid = todo.pop()
        if pid in wanted or pid not in stats:
            continue
        wanted.add(pid)
        todo.extend(children.get(pid, ()))
    return {pid: (stats[pid][2], stats[pid][3]) for pid in wanted}


def _read_events(path):
    """The event count a payload wrote into its progress file, or None."""
    try:
        with open(path, "rb") as fh:
            text = fh.read(64).decode("ascii", "replace").split()
        return int(text[-1]) if text else None
    except (OSError, ValueError):
        return None


def _outputs_size(cwd, patterns):
    total = 0
    for pattern in patterns:
        for name in glob.glob(os.path.join(glob.escape(str(cwd)), pattern)):
            try:
                total += os.stat(name).st_size
            except OSError:
                pass
    return total


def _wait_readable(fds, timeout):
    try:
        return select.select(fds, [], [], max(0.0, timeout))[0]
    except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for safety
        return []


def _pidfd(pid):
    """A pollable handle on the child (Linux >= 5.3), or None to fall back to polling."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


class PayloadWatch:
    """Runs one payload and watches it; `snapshot()` is safe to call from the reporter thread."""

    def __init__(self, spec: PayloadSpec, config: WatchConfig, logdir: Path, stop=None):
        self.spec = spec
        self.config = config
        self.logdir = Path(logdir)
        self.stop = stop             # has `.error` (first stop request) and `.fileno()`
        self.metrics: Dict[str, float] = {}
        self.pids = set()
        self._stdout: Optional[TailFile] = None
        self._stderr: Optional[TailFile] = None

    # The reporter reads these while the payload runs.
    def snapshot(self):
        return dict(self.metrics)

    def stdout_tail(self, n=20):
        return self._stdout.tail(n) if self._stdout else []

    def stderr_tail(self, n=50):
        return self._stderr.tail(n) if self._stderr else []

    def run(self) -> PayloadResult:
        """Run to the end; return the result or raise the PayloadError that ended it."""
        cfg = self.config
        self.logdir.mkdir(parents=True, exist_ok=True)
        if self.spec.progress_file:
            try:
                os.unlink(self.spec.progress_file)
            except FileNotFoundError:
                pass
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(self.spec.argv, cwd=str(self.spec.cwd), env=dict(self.spec.env),
                                    stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w,
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            raise PayloadFailed(f"cannot start {self.spec.argv[0]}: {exc.strerror}",
                                exit_code=None) from None
        os.close(out_w)
        os.close(err_w)
        self._stdout = TailFile(out_r, self.logdir / "payload.stdout", cfg.max_log_bytes)
        self._stderr = TailFile(err_r, self.logdir / "payload.stderr", cfg.max_log_bytes,
                                lines=max(50, cfg.tail_lines))
        pgid = proc.pid   # start_new_session: the child leads its own group
        self.pids.add(proc.pid)
        error = self._watch(proc, pgid, start)
        self._stdout.join(2.0)
        self._stderr.join(2.0)
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        self.metrics["cpu_s"] = round(max(self.metrics.get("cpu_s", 0.0), cpu), 3)
        self.metrics["wct_s"] = round(time.monotonic() - start, 3)
        if usage1.ru_maxrss > usage0.ru_maxrss:
            # ru_maxrss is the largest child ever: only news when this payload raised it.
            self.metrics["max_rss_mb"] = round(max(self.metrics.get("max_rss_mb", 0.0),
                                                   usage1.ru_maxrss / 1024.0), 1)
        rc = proc.returncode
        result = PayloadResult(exit_code=rc if rc >= 0 else None,
                               signal=-rc if rc < 0 else None, metrics=self.snapshot(),
                               stdout=self._stdout.path, stderr=self._stderr.path,
                               pids=tuple(sorted(self.pids)))
        facts = {"exit_code": result.exit_code, "signal": result.signal}
        if error is not None:
            error.data.update(facts)
            raise error
        if rc < 0:
            name = _signal_name(-rc)
            raise PayloadSignalled(f"killed by {name}", **facts)
        if rc > 0:
            raise PayloadFailed(f"exit code {rc}", **facts)
        return result

    def _watch(self, proc, pgid, start):
        """Sample until the payload ends or a limit/stop ends it; return that error or None."""
        cfg = self.config
        pidfd = _pidfd(proc.pid)
        wake = [fd for fd in (pidfd, self.stop.fileno() if self.stop else None) if fd is not None]
        deadline = start + cfg.max_wct_s
        next_sample = start
        last_progress_at, last_events, last_size = start, None, 0
        poll_s = 0.01    # short at first so a quick payload costs little, longer later
        try:
            while True:
                if proc.poll() is not None:
                    self._sample(proc.pid, pgid, start)
                    return None
                now = time.monotonic()
                if self.stop is not None and self.stop.error is not None:
                    self._kill_group(proc, pgid)
                    return self.stop.error
                if now >= deadline:
                    self._kill_group(proc, pgid)
                    return PayloadWallclock(f"still running after {cfg.max_wct_s:g} s")
                if now >= next_sample:
                    next_sample = now + cfg.sample_s
                    rss_mb = self._sample(proc.pid, pgid, start)
                    if cfg.max_rss_mb and rss_mb > cfg.max_rss_mb:
                        self._kill_group(proc, pgid)
                        return PayloadMemory(f"process tree RSS {rss_mb:.0f} MB "
                                             f"> {cfg.max_rss_mb:g} MB", rss_mb=rss_mb)
                    events = self.metrics.get("events")
                    size = _outputs_size(self.spec.cwd, self.spec.output_patterns)
                    if events != last_events or size > last_size:
                        last_progress_at, last_events, last_size = now, events, size
                    self.metrics["output_mb"] = round(size / 1e6, 3)
                    if cfg.stall_s and now - last_progress_at > cfg.stall_s:
                        self._kill_group(proc, pgid)
                        return PayloadStalled(f"no progress for {now - last_progress_at:.0f} s "
                                              f"(events: {events})", events=events)
                timeout = min(deadline, next_sample) - time.monotonic()
                if pidfd is None:
                    timeout = min(timeout, poll_s)
                    poll_s = min(poll_s * 2, 1.0)
                _wait_readable(wake, timeout)
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _sample(self, pid, pgid, start):
        tree = _proc_tree(pid, pgid)
        self.pids.update(tree)
        rss_mb = sum(r for r, _ in tree.values()) / (1024.0 * 1024.0)
        m = dict(self.metrics)
        m["wct_s"] = round(time.monotonic() - start, 3)
        m["rss_mb"] = round(rss_mb, 1)
        m["max_rss_mb"] = round(max(m.get("max_rss_mb", 0.0), rss_mb), 1)
        m["cpu_s"] = round(max(m.get("cpu_s", 0.0), sum(c for _, c in tree.values())), 3)
        m["processes"] = len(tree)
        if self.spec.progress_file:
            events = _read_events(self.spec.progress_file)
            if events is not None:
                m["events"] = events
        self.metrics = m
        return rss_mb

    def _kill_group(self, proc, pgid):
        """SIGTERM the group and the tree, wait `grace_s`, then SIGKILL whatever is left."""
        tree = set(_proc_tree(proc.pid, pgid)) | {proc.pid}
        self.pids.update(tree)
        self._signal_all(pgid, tree, signal.SIGTERM)
        deadline = time.monotonic() + self.config.grace_s
        while time.monotonic() < deadline:
            if proc.poll() is not None and not any(_is_running(p) for p in tree):
                break
            time.sleep(0.05)
        # Always: a process forked during the grace period is in the group but not in `tree`.
        tree |= set(_proc_tree(proc.pid, pgid))
        self._signal_all(pgid, tree, signal.SIGKILL)
        proc.wait()

    @staticmethod
    def _signal_all(pgid, pids, sig):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in pids:  # children that left the group with setsid()
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _is_running(pid):
    """True for a live process; a zombie waiting for its reaper counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
        return raw[raw.rfind(b")") + 2:][:1] not in (b"Z", b"X")
    except OSError:
        return False


def _signal_name(num):
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def run_payload(spec: PayloadSpec, config: WatchConfig, logdir, stop=None) -> PayloadResult:
    """Run `spec` under the watchdog (see PayloadWatch)."""
    return PayloadWatch(spec, config, logdir, stop).run()
