"""Transfers through the command-line tools, for nodes without the gfal2 bindings: xrdcp and
xrdfs for root://, the gfal-* commands for the other schemes.

Every command runs in a process group of its own, killed at its deadline or at once on a
cancel; its failure is classified from its stderr (`CliTransfer._run`). Many small root://
files go through one `xrdcp --parallel N` per batch, each file checked as it arrives
(`_Arrivals`).
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse

from ..checksum import normalize_adler32, settled_adler32, unchanged
from .errors import TransferError, classify_error
from .interface import DownloadsProbe, RemoteStat, Transfer, publish
from .timeouts import CANCEL_POLL_S, check_cancel
from .urls import file_url, is_local, is_root

GFAL_PYTHONBIN = "/usr/bin/python3"   # gfal-* scripts run /usr/bin/python otherwise (INFRA.md)
BULK_STAGING_PREFIX = ".severus-bulk-"   # a bulk xrdcp's hidden directory beside its files


class CliTransfer(Transfer):
    """Command-line tools for nodes without the bindings: xrdcp/xrdfs for root://, gfal-* else."""
    tool = "cli"
    namespace_timeout = 120.0

    def __init__(self, env=None):
        """The tools run in `env` (default: this process's environment), with the XRootD client
        set to fail fast and skip page checksums, and gfal-* run by the system Python."""
        env = dict(os.environ if env is None else env)
        env.update(XRD_CONNECTIONRETRY="1", XRD_CPUSEPGWRTRD="0", GFAL_PYTHONBIN=GFAL_PYTHONBIN)
        env.setdefault("XRD_REQUESTTIMEOUT", "60")
        self.env = env
        self._uploads = {}   # (src, dst) -> the pid of the command uploading it, when watched

    def progress_probe(self, direction, source, destination):
        """An upload's bytes: what its command has written (/proc/<pid>/io `wchar`: the socket
        fills and stops taking bytes when the SE stalls); None where there is no /proc."""
        if direction == "in" or is_local(destination):
            return super().progress_probe(direction, source, destination)
        key = (str(source), str(destination))
        self._uploads[key] = None
        return lambda: _written_bytes(self._uploads.get(key))

    def tool_for(self, url):
        return "xrdcp" if is_root(url) else "gfal-copy"

    def _popen(self, args, **kw):
        # A session of its own: at the deadline the whole group goes (gfal-* run python children).
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, env=self.env, start_new_session=True, **kw)

    def bulk_progress_probe(self, items):
        return DownloadsProbe(items, (BULK_STAGING_PREFIX,))

    def _run(self, args, what, timeout=None, cancel=None, started=None):
        """Run a command to its end; its stdout, or TransferError. By `timeout`, or at once when
        `cancel` is set, its process group is killed. `started(pid)` is told the command's pid."""
        timeout = timeout or self.namespace_timeout
        check_cancel(cancel, what)
        deadline = time.monotonic() + timeout
        try:
            proc = self._popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            raise TransferError("failed", f"{what}: cannot run {args[0]}: {exc.strerror}") from None
        if started is not None:
            started(proc.pid)
        try:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    # Called again after a TimeoutExpired, communicate loses no output.
                    stdout, stderr = proc.communicate(
                        timeout=max(0.0, remaining if cancel is None else min(CANCEL_POLL_S, remaining)))
                    break
                except subprocess.TimeoutExpired:
                    if cancel is not None and cancel.is_set():
                        raise TransferError("cancelled", f"{what}: cancelled ({' '.join(args)})") from None
                    if time.monotonic() >= deadline:
                        raise TransferError("timeout",
                                            f"{what}: no answer in {timeout:.1f} s ({' '.join(args)})") from None
        finally:
            _kill_group(proc)
        if proc.returncode != 0:
            text = " ".join((stderr.strip() or stdout.strip()).split())[-500:]
            raise TransferError(classify_error(text), f"{what}: {text} ({' '.join(args)})")
        return stdout

    def _copy(self, src, dst, timeout, adler32, *, cancel=None):
        what = f"copy {src} -> {dst}"
        if is_root(src) or is_root(dst):
            args = ["xrdcp", "-f", "-s", "--path"] + (["--cksum", f"adler32:{adler32}"] if adler32 else [])
            args += [src, dst]
        else:
            args = ["gfal-copy", "-f", "-p", "-t", str(int(max(1, timeout)))]
            if adler32:
                args += ["-K", f"adler32:{adler32}", "--checksum-mode", "target"]
            args += [file_url(src) if is_local(src) else src, file_url(dst) if is_local(dst) else dst]
        key = (str(src), str(dst))
        watched = key in self._uploads   # progress_probe reads the command's written bytes
        self._run(args, what, timeout, cancel, started=(lambda pid: self._uploads.__setitem__(key, pid))
                  if watched else None)

    bulk_parallel = True

    def copy_in_many(self, items, timeout, parallel=1, sizes=None, *, cancel=None):
        """root:// files: one `xrdcp --parallel N --infiles LIST` per batch of distinct names
        (xrdcp names what it writes after the sources) into a hidden staging directory, which
        plays the part of the .part names: each file is checksummed as soon as it has its
        expected size (`sizes`) while the others still arrive, and once it matched is renamed
        straight to its path (`_Arrivals`); the others are judged when xrdcp has ended.
        Other schemes: one by one. A cancel kills xrdcp and raises TransferError("cancelled");
        the files renamed to their paths by then stay, verified."""
        if not items or not all(is_root(url) for url, _, _ in items):
            return super().copy_in_many(items, timeout, parallel, sizes, cancel=cancel)
        parallel = max(1, int(parallel))
        names = [_basename(url) for url, _, _ in items]
        parents = [os.path.dirname(path) or "." for _, path, _ in items]
        for parent in set(parents):
            os.makedirs(parent, exist_ok=True)
        errors = [None] * len(items)
        for batch in _distinct_name_batches(names):
            check_cancel(cancel, f"bulk copy of {len(batch)} files")
            # Beside the first file: a rename moves no bytes within one file system.
            staging = tempfile.mkdtemp(prefix=BULK_STAGING_PREFIX, dir=parents[batch[0]])
            try:
                temps = {i: os.path.join(staging, names[i]) for i in batch}
                sources = os.path.join(staging, ".sources")
                with open(sources, "w") as fh:
                    fh.writelines(items[i][0] + "\n" for i in batch)
                arrivals = _Arrivals([(i, temps[i], sizes[i], items[i][2], items[i][1]) for i in batch]
                                     if sizes else [], window=4 * parallel)
                failure = self._run_watching(
                    ["xrdcp", "-f", "-s", "--parallel", str(parallel), "--infiles", sources, staging + "/"],
                    f"bulk copy of {len(batch)} files", timeout, os.path.join(staging, ".stderr"), arrivals.check,
                    cancel)
                if failure is not None and failure.kind == "cancelled":
                    raise failure
                for i in batch:
                    url, path, adler32 = items[i]
                    where, known = arrivals.result(i, temps[i])
                    error = None
                    if failure is not None and known is None and not os.path.exists(where):
                        # Some may have arrived although xrdcp failed: each file is judged alone.
                        error = TransferError(failure.kind, f"copy {url} -> {path}: {failure.message}")
                    # A file renamed on arrival but changed since is read again where it is.
                    errors[i] = publish(url, path, adler32, where, error, known)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return errors

    def _run_watching(self, args, what, timeout, stderr_path, tick, cancel=None):
        """Run a command, calling `tick()` (True when it did something) until it ends; return
        its TransferError or None. By `timeout`, or at once on `cancel`, its group is killed."""
        deadline = time.monotonic() + timeout
        with open(stderr_path, "w+") as err:
            try:
                proc = self._popen(args, stdout=subprocess.DEVNULL, stderr=err)
            except OSError as exc:
                return TransferError("failed", f"{what}: cannot run {args[0]}: {exc.strerror}")
            try:
                while proc.poll() is None:
                    if cancel is not None and cancel.is_set():
                        return TransferError("cancelled", f"{what}: cancelled ({' '.join(args)})")
                    if time.monotonic() > deadline:
                        return TransferError("timeout", f"{what}: no answer in {timeout:.1f} s ({' '.join(args)})")
                    if not tick():
                        time.sleep(0.002)
            finally:
                _kill_group(proc)
            if proc.returncode == 0:
                return None
            err.seek(0)
            text = " ".join(err.read().split())[-500:]
        return TransferError(classify_error(text), f"{what}: {text} ({' '.join(args)})")

    def _xrdfs(self, url, *args, what):
        server, path = _split_root(url)
        return self._run(["xrdfs", server] + [a if a is not None else path for a in args], what)

    def stat(self, url):
        what = f"stat {url}"
        if is_root(url):
            out = self._xrdfs(url, "stat", None, what=what)
            fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
            return RemoteStat(size=int(fields.get("Size", "0").strip()),
                              is_dir="IsDir" in fields.get("Flags", ""))
        out = self._run(["gfal-stat", url], what)
        for line in out.splitlines():
            if line.strip().startswith("Size:"):
                parts = line.split()
                return RemoteStat(size=int(parts[1]), is_dir="directory" in line)
        raise TransferError("failed", f"{what}: cannot read gfal-stat output")

    def checksum(self, url):
        what = f"checksum {url}"
        if is_root(url):
            out = self._xrdfs(url, "query", "checksum", None, what=what)
        else:
            out = self._run(["gfal-sum", url, "ADLER32"], what)
        words = out.split()
        if len(words) < 2:
            raise TransferError("failed", f"{what}: cannot read the checksum in {out!r}")
        return normalize_adler32(words[-1])

    def mkdir(self, url):
        if is_root(url):
            self._xrdfs(url, "mkdir", "-p", None, what=f"mkdir {url}")
        else:
            self._run(["gfal-mkdir", "-p", url], f"mkdir {url}")

    def delete(self, url):
        is_dir = self.stat(url).is_dir
        if is_root(url):
            self._xrdfs(url, "rmdir" if is_dir else "rm", None, what=f"delete {url}")
        else:
            self._run(["gfal-rm"] + (["-r"] if is_dir else []) + [url], f"delete {url}")

    def listdir(self, url):
        if is_root(url):
            out = self._xrdfs(url, "ls", None, what=f"list {url}")
            return sorted(os.path.basename(line.rstrip("/")) for line in out.splitlines() if line.strip())
        out = self._run(["gfal-ls", url], f"list {url}")
        return sorted(line.strip() for line in out.splitlines() if line.strip() not in ("", ".", ".."))

    def rename(self, src, dst):
        if is_root(src):
            _, dst_path = _split_root(dst)
            self._xrdfs(src, "mv", None, dst_path, what=f"rename {src} -> {dst}")
        else:
            self._run(["gfal-rename", src, dst], f"rename {src} -> {dst}")


class _Arrivals:
    """The files a bulk copy writes to a staging directory, each checksummed once it is whole
    while the copy goes on (they arrive about in list order: a window past the first unchecked
    one is looked at) and, when that matches, renamed to its destination at once, so that the
    renames overlap the copy too. A checksum is trusted at the end only if the file has not
    changed since it was taken."""

    def __init__(self, expected, window):
        # [(index, staging path, size, expected adler32, destination)] in the tool's order
        self.expected = expected
        self.window = window
        self.first = 0
        self.sums = {}   # index -> (where the file is, adler32, signature)

    def check(self):
        """Checksum the files that became whole and rename those that match; True when there
        was one."""
        found = False
        for i, temp, size, adler32, path in self.expected[self.first:self.first + self.window]:
            if i not in self.sums:
                got = settled_adler32(temp, size)
                if got is not None:
                    value, signature = got
                    if value == adler32:
                        os.replace(temp, path)   # a rename keeps the inode and mtime of the signature
                        temp = path
                    self.sums[i] = (temp, value, signature)
                    found = True
        while self.first < len(self.expected) and self.expected[self.first][0] in self.sums:
            self.first += 1
        return found

    def result(self, i, temp):
        """(where file i is, its checksum taken on arrival if that still holds, else None);
        `temp` and None when it was not checksummed."""
        if i not in self.sums:
            return temp, None
        where, value, signature = self.sums[i]
        return where, (value if unchanged(where, signature) else None)


def _distinct_name_batches(names):
    """Indices of `names` in batches without a repeated name (one directory can hold them)."""
    batches = []
    for i, name in enumerate(names):
        for seen, members in batches:
            if name not in seen:
                break
        else:
            seen, members = set(), []
            batches.append((seen, members))
        seen.add(name)
        members.append(i)
    return [members for _, members in batches]


def _basename(url):
    return urllib.parse.urlsplit(str(url)).path.rstrip("/").rsplit("/", 1)[-1]


def _split_root(url):
    """root://host:port//abs/path -> ("root://host:port", "/abs/path")."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", "/" + parts.path.lstrip("/")


def _written_bytes(pid):
    """The bytes process `pid` has written (wchar of /proc/<pid>/io); 0 before it started, None
    where that cannot be read."""
    if pid is None:
        return 0
    try:
        with open(f"/proc/{pid}/io") as fh:
            for line in fh:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _kill_group(proc):
    """Kill a command's process group unless it has ended, and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
