"""The watchdog that runs a payload step's command (wrapper/modules.py builds it).

`run_payload()` starts the command in its own process group, keeps the tails
of stdout/stderr in size-capped files, enforces the wallclock, memory and
stall limits on the whole process tree, and samples metrics. The tree is the
main process's descendants, its process group and session, and every process
seen in it while it ran (children that left with setsid()), each known by its
PID *and* start time so that a reused PID is never taken for the payload's.

Memory is PSS (/proc/<pid>/smaps_rollup) summed over the tree: pages shared by
forked workers count once, as in CMS (WMCore#8498); a process whose PSS cannot
be read counts its RSS. When the main process ends, for whatever reason, what
is left of the tree gets SIGTERM, then SIGKILL after the grace, and is counted
in metrics["leftover_processes"] (the status does not change).

Processes are read from /proc/<pid>/stat (parent, group, session, start time,
RSS and CPU in one read); psutil is used where there is no /proc.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, NamedTuple, Optional, Tuple

from shared.errors import (ContainerError, PayloadFailed, PayloadMemory, PayloadSignalled,
                           PayloadStalled, PayloadWallclock)
from . import container as ct

try:
    import psutil
except ImportError:  # the /proc reader below does the same job, a little slower
    psutil = None

log = logging.getLogger("severus.payload")

SMAPS_ROLLUP = "/proc/{pid}/smaps_rollup"   # PSS in one short read (Linux >= 4.14)
LEFTOVER_WAIT_S = 5.0      # how long a SIGKILLed process may take to disappear


@dataclass(frozen=True)
class PayloadSpec:
    """A module's answer: what to run, with which environment, how progress shows."""
    argv: Tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    progress_file: Optional[Path] = None      # holds the number of events done so far
    output_patterns: Tuple[str, ...] = ()     # their total size growing also counts as progress
    container: Optional[ct.Container] = None  # run argv in this image (wrapper/container.py)


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
        # The job's memory is one limit, on the PSS of the payload's whole tree: max_rss_mb when
        # the job sets it, else what the batch system was asked for (memory_mb), so the payload is
        # stopped with 033 and a report before the batch system's OOM killer takes the wrapper too.
        values = dict(max_wct_s=limits.max_wct_s, max_rss_mb=limits.max_rss_mb or limits.memory_mb,
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
    container: Optional[str] = None   # runtime, version and image when it ran in a container


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


class ProcInfo(NamedTuple):
    """One process as a scan saw it; `start` tells apart the successive owners of a PID."""
    ppid: int
    pgrp: int
    sid: int
    start: float
    name: str
    rss: int = 0          # bytes
    cpu_s: float = 0.0


class ProcReader:
    """Processes from /proc/<pid>/stat: one read gives all of ProcInfo (start: field 22)."""
    name = "proc"

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.tick = os.sysconf("SC_CLK_TCK")

    def _stat(self, pid):
        """(state, ProcInfo) of `pid`; raises OSError when it is gone."""
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
        # The command name may hold spaces and parentheses: split after the last ')'.
        close = raw.rfind(")")
        f = raw[close + 2:].split()    # f[0] is field 3 of proc(5), the state
        info = ProcInfo(ppid=int(f[1]), pgrp=int(f[2]), sid=int(f[3]), start=float(f[19]),
                        name=raw[raw.find("(") + 1:close], rss=int(f[21]) * self.page,
                        cpu_s=(int(f[11]) + int(f[12])) / self.tick)
        return f[0], info

    def scan(self) -> Dict[int, ProcInfo]:
        """Every live process of the node (zombies are dead: they hold nothing)."""
        procs = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    state, info = self._stat(entry)
                except (OSError, ValueError, IndexError):
                    continue
                if state not in ("Z", "X"):
                    procs[int(entry)] = info
        return procs

    def start_time(self, pid) -> Optional[float]:
        """The start time of live process `pid`, or None (gone or a zombie)."""
        try:
            state, info = self._stat(pid)
        except (OSError, ValueError, IndexError):
            return None
        return None if state in ("Z", "X") else info.start


class PsutilReader:
    """The same through psutil, where there is no /proc (start: create_time)."""
    name = "psutil"
    ATTRS = ["ppid", "create_time", "status", "name", "memory_info", "cpu_times"]

    def scan(self) -> Dict[int, ProcInfo]:
        procs = {}
        for p in psutil.process_iter(self.ATTRS):
            i = p.info
            if (i["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
                    or i["ppid"] is None or i["create_time"] is None):
                continue
            try:
                pgrp, sid = os.getpgid(p.pid), os.getsid(p.pid)
            except OSError:
                continue
            mem, cpu = i["memory_info"], i["cpu_times"]
            procs[p.pid] = ProcInfo(ppid=i["ppid"], pgrp=pgrp, sid=sid, start=i["create_time"],
                                    name=i["name"] or "?", rss=mem.rss if mem else 0,
                                    cpu_s=cpu.user + cpu.system if cpu else 0.0)
        return procs

    def start_time(self, pid) -> Optional[float]:
        try:
            p = psutil.Process(pid)
            if p.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                return None
            return p.create_time()
        except psutil.Error:
            return None


class NullReader:
    """Neither /proc nor psutil: no tree (the process group is still signalled)."""
    name = "none"

    def scan(self):
        return {}

    def start_time(self, pid):
        return None


READER = (ProcReader() if os.path.exists("/proc/self/stat")
          else PsutilReader() if psutil is not None else NullReader())


def payload_tree(procs: Mapping[int, ProcInfo], pgid: int,
                 known: Mapping[int, float]) -> Dict[int, float]:
    """{pid: start} of the payload's processes among `procs` (one scan).

    They are the processes of the payload's process group and session (both
    have the main process's PID, `pgid`), the processes recorded in `known`
    ({pid: start}, the main one first) that still have the same start time (a
    PID taken by another process has another one), and all their descendants.
    """
    children = {}
    for pid, p in procs.items():
        children.setdefault(p.ppid, []).append(pid)
    # The kernel keeps a group's or session's ID while one member lives. Once the ID is
    # a new process's, what has that group or session is that process's, not the payload's.
    leader = procs.get(pgid)
    group_ours = leader is None or known.get(pgid) == leader.start
    todo = [pid for pid, p in procs.items()
            if known.get(pid) == p.start or (group_ours and pgid in (p.pgrp, p.sid))]
    tree = {}
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree[pid] = procs[pid].start
            todo.extend(children.get(pid, ()))
    return tree


def _pss(pid) -> Optional[int]:
    """The PSS of `pid` in bytes, or None when it cannot be read (no smaps_rollup, no right)."""
    try:
        with open(SMAPS_ROLLUP.format(pid=pid), "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass(frozen=True)
class Memory:
    """One sample of the tree's memory: `used_mb` is what the limit compares."""
    rss_mb: float
    used_mb: float         # PSS, with RSS for the processes whose PSS is unreadable
    fallback: int          # how many processes counted their RSS
    processes: int

    @property
    def measure(self):
        if not self.fallback:
            return "PSS"
        return "RSS" if self.fallback == self.processes else "PSS+RSS"

    def describe(self):
        if self.measure == "PSS":
            return f"process tree PSS {self.used_mb:.0f} MB (RSS {self.rss_mb:.0f} MB)"
        if self.measure == "RSS":
            return f"process tree RSS {self.rss_mb:.0f} MB (PSS unreadable)"
        return (f"process tree PSS {self.used_mb:.0f} MB, with RSS for the {self.fallback} of "
                f"{self.processes} processes whose PSS is unreadable (RSS {self.rss_mb:.0f} MB)")


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

    def __init__(self, spec: PayloadSpec, config: WatchConfig, logdir: Path, stop=None, streams="payload"):
        self.spec = spec
        self.config = config
        self.logdir = Path(logdir)
        self.streams = streams       # the stdout and stderr files: <streams>.stdout, <streams>.stderr
        self.stop = stop             # has `.error` (first stop request) and `.fileno()`
        self.metrics: Dict[str, float] = {}
        self.pids = set()
        self.known: Dict[int, float] = {}   # every process seen in the tree: pid -> start time
        self._told_fallback = False
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
        container = self.spec.container
        argv = self.spec.argv
        if container is not None:
            # The runtime is the group and session leader: the watchdog's signals reach it and,
            # by host PID, every process inside (neither runtime forwards signals).
            container.clear()
            argv = container.command(argv)
            log.info("payload in a container: %s", container.describe())
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(argv, cwd=str(self.spec.cwd), env=dict(self.spec.env),
                                    stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w,
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            if container is not None:
                raise ContainerError(f"cannot start {argv[0]}: {exc.strerror}") from None
            raise PayloadFailed(f"cannot start {self.spec.argv[0]}: {exc.strerror}",
                                exit_code=None) from None
        os.close(out_w)
        os.close(err_w)
        self._stdout = TailFile(out_r, self.logdir / f"{self.streams}.stdout", cfg.max_log_bytes)
        self._stderr = TailFile(err_r, self.logdir / f"{self.streams}.stderr", cfg.max_log_bytes,
                                lines=max(50, cfg.tail_lines))
        pgid = proc.pid   # start_new_session: the child leads its own group and session
        self.pids.add(proc.pid)
        began_at = READER.start_time(proc.pid)
        if began_at is not None:
            self.known[proc.pid] = began_at
        error = self._watch(proc, pgid, start)
        # Whatever is left once the main process has ended goes too (and lets go of the pipes).
        left = self._end_leftovers(proc, pgid)
        self.metrics = dict(self.metrics, leftover_processes=len(left))
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
                               pids=tuple(sorted(self.pids)),
                               container=container.describe() if container else None)
        facts = {"exit_code": result.exit_code, "signal": result.signal}
        if container is not None:
            started = container.started()
            container.clear()
            if error is None and not started:
                # The runtime ended before the payload's command ran: the container's fault.
                why = ct.last_line("\n".join(self._stderr.tail())) or f"exit code {rc}"
                raise ContainerError(f"{container.describe()}: {why}", **facts)
            inside = ct.signal_of(rc)
            if error is None and inside is not None:
                # The runtimes report a death by signal N as 128+N: the same code as on the host.
                raise PayloadSignalled(f"killed by {_signal_name(inside)} in the container "
                                       f"(exit code {rc})", exit_code=None, signal=inside)
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
                    self._sample(pgid, start)
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
                    mem = self._sample(pgid, start)
                    if cfg.max_rss_mb and mem.used_mb > cfg.max_rss_mb:
                        self._kill_group(proc, pgid)
                        return PayloadMemory(f"{mem.describe()} > {cfg.max_rss_mb:g} MB",
                                             rss_mb=round(mem.rss_mb, 1),
                                             pss_mb=round(mem.used_mb, 1),
                                             memory_measure=mem.measure)
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

    def _tree(self, pgid) -> Dict[int, ProcInfo]:
        """The payload's live processes now; each is remembered with its start time."""
        procs = READER.scan()
        tree = payload_tree(procs, pgid, self.known)
        self.known.update(tree)
        self.pids.update(tree)
        return {pid: procs[pid] for pid in tree}

    def _sample(self, pgid, start) -> Memory:
        tree = self._tree(pgid)
        rss = sum(p.rss for p in tree.values())
        used, fallback = 0, 0
        for pid, p in tree.items():
            pss = _pss(pid)
            if pss is None:
                pss, fallback = p.rss, fallback + 1
            used += pss
        mem = Memory(rss_mb=rss / 2**20, used_mb=used / 2**20, fallback=fallback,
                     processes=len(tree))
        if fallback and not self._told_fallback:
            self._told_fallback = True
            log.info("PSS unreadable for %d of %d payload processes: their RSS counts instead",
                     fallback, len(tree))
        m = dict(self.metrics)
        m["wct_s"] = round(time.monotonic() - start, 3)
        m["rss_mb"] = round(mem.rss_mb, 1)
        m["max_rss_mb"] = round(max(m.get("max_rss_mb", 0.0), mem.rss_mb), 1)
        m["pss_mb"] = round(mem.used_mb, 1)
        m["max_pss_mb"] = round(max(m.get("max_pss_mb", 0.0), mem.used_mb), 1)
        m["cpu_s"] = round(max(m.get("cpu_s", 0.0), sum(p.cpu_s for p in tree.values())), 3)
        m["processes"] = len(tree)
        if self.spec.progress_file:
            events = _read_events(self.spec.progress_file)
            if events is not None:
                m["events"] = events
        self.metrics = m
        return mem

    def _kill_group(self, proc, pgid):
        """A limit or a stop: end the main process and everything of the payload."""
        self._end_all(proc, pgid)

    def _end_leftovers(self, proc, pgid) -> Dict[int, ProcInfo]:
        """After the main process: end what is left of the payload; return those processes."""
        left, killed = self._end_all(proc, pgid)
        if left:
            how = (f"{len(killed)} of them with SIGKILL after the {self.config.grace_s:g} s grace"
                   if killed else "with SIGTERM")
            log.warning("the payload left %d process(es) behind: %s; ended %s",
                        len(left), _names(left), how)
        return left

    def _end_all(self, proc, pgid):
        """SIGTERM the payload's processes, wait `grace_s`, SIGKILL whatever is left.

        Returns ({pid: ProcInfo} of the processes met other than the main one,
        those of them that were still there for the SIGKILL).
        """
        met: Dict[int, ProcInfo] = {}

        def current():
            tree = self._tree(pgid)
            tree.pop(proc.pid, None)
            met.update(tree)
            return tree

        def all_gone():
            return all(READER.start_time(pid) != p.start for pid, p in met.items())

        tree = current()
        if proc.poll() is not None and not tree:
            return met, {}                  # the common case: nothing was left
        self._signal_all(proc, pgid, tree, signal.SIGTERM)
        deadline = time.monotonic() + self.config.grace_s
        while time.monotonic() < deadline:
            if proc.poll() is not None and all_gone():
                break
            time.sleep(0.05)
        # Always: a process forked during the grace period is in no list yet.
        killed = current()
        self._signal_all(proc, pgid, killed, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + LEFTOVER_WAIT_S
        while not all_gone() and time.monotonic() < deadline:
            time.sleep(0.02)
        alive = {pid: p for pid, p in met.items() if READER.start_time(pid) == p.start}
        if alive:
            log.error("payload process(es) still there after SIGKILL: %s", _names(alive))
        return met, killed

    @staticmethod
    def _signal_all(proc, pgid, tree, sig):
        leader_unreaped = proc.returncode is None   # then its PID cannot be anyone else's
        if leader_unreaped:
            proc.send_signal(sig)
        if leader_unreaped or any(p.pgrp == pgid for p in tree.values()):
            # A group with a member keeps its ID; the group also holds what forks meanwhile.
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        for pid, p in tree.items():   # children that left the group with setsid()
            _signal_if_same(pid, p.start, sig)


def _signal_if_same(pid, start, sig):
    """Send `sig` to `pid` only while it is the process that started at `start`."""
    fd = _pidfd(pid)     # taken before the check: a later reuse of the PID cannot be hit
    try:
        if READER.start_time(pid) != start:
            return False
        sender = getattr(signal, "pidfd_send_signal", None)
        if fd is not None and sender is not None:
            sender(fd, sig)
        else:
            os.kill(pid, sig)
        return True
    except OSError:         # gone meanwhile, or not ours to signal
        return False
    finally:
        if fd is not None:
            os.close(fd)


def _names(procs):
    return ", ".join(f"{pid} ({p.name})" for pid, p in sorted(procs.items()))


def _signal_name(num):
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def run_payload(spec: PayloadSpec, config: WatchConfig, logdir, stop=None, streams="payload") -> PayloadResult:
    """Run `spec` under the watchdog (see PayloadWatch)."""
    return PayloadWatch(spec, config, logdir, stop, streams).run()
