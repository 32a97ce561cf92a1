"""Transfers through the gfal2 bindings (root://, http(s)://, dav(s)://), and their context pool.

gfal2 contexts are not thread-safe, so each thread leases its own (`_ContextLease`); making
and freeing contexts while other threads copy has crashed gfal2 (heap corruption), so they
are made one at a time, returned to a free list and never freed. A copy runs on a worker of
its own context (`_Gfal2CopyWorker`), given up at its deadline or on a cancel
(wrapper/transfer/timeouts.py): its context is then cancelled and never reused.
"""
import errno
import os
import stat as stat_mod
import threading
from contextlib import contextmanager
from pathlib import Path

from ..checksum import normalize_adler32
from .errors import TransferError, classify_error
from .interface import RemoteStat, Transfer, part_path, publish, remove
from .timeouts import CopyWorker, check_cancel, run_bounded, start_canceller
from .urls import file_url, is_local, is_root, plain_path


def prepare_xrootd_env(request_timeout=60):
    """XRootD client settings, read when a client is created: fail fast on dead servers (no
    5 connection retries over 120 s) and skip page checksums our adler32 makes redundant."""
    os.environ["XRD_CONNECTIONRETRY"] = "1"
    os.environ["XRD_CPUSEPGWRTRD"] = "0"
    os.environ.setdefault("XRD_REQUESTTIMEOUT", str(int(request_timeout)))


def gfal2_available():
    """Whether the gfal2 bindings can be imported here."""
    try:
        import gfal2  # noqa: F401
    except ImportError:
        return False
    return True


class Gfal2Transfer(Transfer):
    """gfal2 bindings; gfal2 contexts are not thread-safe, so each thread gets its own."""
    tool = "gfal2"

    def __init__(self):
        prepare_xrootd_env()   # before the first context: XrdCl reads the environment once
        import gfal2           # lazy: the wrapper imports only the stdlib at import time
        self._gfal2 = gfal2
        self._local = threading.local()
        self._moved = {}   # (src, dst) -> bytes an upload has moved, from gfal2's monitor callback

    def _context(self):
        lease = getattr(self._local, "lease", None)
        if lease is None:
            lease = self._local.lease = _ContextLease(self._gfal2)
        return lease.ctx

    @contextmanager
    def _errors(self, what):
        try:
            yield
        except self._gfal2.GError as exc:
            raise TransferError(classify_error(exc.message, exc.code), f"{what}: {exc.message}") from None

    def _params(self, ctx, timeout):
        params = ctx.transfer_parameters()
        params.overwrite = True
        params.create_parent = True
        params.timeout = int(max(1, timeout))   # honoured by http(s); root:// ignores it (run_bounded)
        return params

    def _bounded(self, what, timeout, destinations, work, cancel=None):
        """`work(ctx)` on a worker thread with a context of its own; its value, or TransferError.
        gfal2's xrootd plugin ignores params.timeout and ctx.cancel() does not interrupt a request
        waiting on a silent server (XrdCl waits for XRD_REQUESTTIMEOUT, twice for an upload; the
        cancel itself blocks as long): so at the deadline, or on `cancel`, the copy is cancelled
        and given up (`run_bounded`)."""
        with self._errors(what):
            return run_bounded(what, timeout, destinations, cancel,
                               lambda dsts: _Gfal2CopyWorker(self._gfal2, work, dsts))

    def progress_probe(self, direction, source, destination):
        if direction == "in" or is_local(destination):
            return super().progress_probe(direction, source, destination)
        key = (str(source), str(destination))
        self._moved[key] = 0   # _copy's monitor callback moves it on (dict writes are atomic)
        return lambda: self._moved.get(key)

    def _copy(self, src, dst, timeout, adler32, *, cancel=None):
        gfal2 = self._gfal2
        src_url = file_url(src) if is_local(src) else src
        dst_url = file_url(dst) if is_local(dst) else dst
        key = (str(src), str(dst))

        def monitor(_src, _dst, _average, _instant, moved, _elapsed):
            self._moved[key] = moved

        def work(ctx):
            params = self._params(ctx, timeout)
            if key in self._moved:   # watched (progress_probe): gfal2 reports the bytes moved
                params.monitor_callback = monitor
            if adler32:
                # target mode: one checksum, computed by the destination, compared with the known value.
                params.set_checksum(gfal2.checksum_mode.target, "adler32", adler32)
            ctx.filecopy(params, src_url, dst_url)
        self._bounded(f"copy {src} -> {dst}", timeout, [plain_path(dst)] if is_local(dst) else [], work, cancel)

    def copy_in_many(self, items, timeout, parallel=1, sizes=None, *, cancel=None):
        # A bulk filecopy takes one checksum for all files: copy plain to .part names, verify
        # each file here (small files: adler32 costs microseconds). About 1.6x the files/s of
        # single copies.
        if any(is_root(url) for url, _, _ in items):
            # gfal2 2.21's bulk filecopy over root://, cancelled (a stop, a stall, its deadline)
            # while the SE hangs, crashes the process (SIGSEGV) once the SE answers again, and the
            # final report with it. One by one, each copy's cancel is safe; root:// bulks normally
            # go through xrdcp anyway (bulk_transfer_for).
            return super().copy_in_many(items, timeout, parallel, sizes, cancel=cancel)
        what = f"bulk copy of {len(items)} files from {items[0][0] if items else ''}"
        check_cancel(cancel, what)
        for parent in {Path(path).parent for _, path, _ in items}:
            parent.mkdir(parents=True, exist_ok=True)
        parts = [str(part_path(path)) for _, path, _ in items]
        for part in parts:
            remove(part)

        def work(ctx):
            params = self._params(ctx, timeout)
            # No per-file checks by gfal2 (destination stat, parent creation): the parents are
            # made, the .part names are new, and each file is verified below. ~1.4x the files/s.
            params.strict_copy = True
            return ctx.filecopy(params, [url for url, _, _ in items], [file_url(part) for part in parts])
        try:
            errors = self._bounded(what, timeout, parts, work, cancel)
        except TransferError:
            for part in parts:
                remove(part)
            raise
        return [publish(url, path, adler32, part, None if error is None else TransferError(
                    classify_error(error.message, error.code), f"copy {url} -> {path}: {error.message}"))
                for (url, path, adler32), part, error in zip(items, parts, errors)]

    def stat(self, url):
        with self._errors(f"stat {url}"):
            st = self._context().stat(url)
        return RemoteStat(size=st.st_size, is_dir=stat_mod.S_ISDIR(st.st_mode))

    def checksum(self, url):
        with self._errors(f"checksum {url}"):
            return normalize_adler32(self._context().checksum(url, "adler32"))

    def mkdir(self, url):
        with self._errors(f"mkdir {url}"):
            try:
                self._context().mkdir_rec(url, 0o755)
            except self._gfal2.GError as exc:
                if exc.code != errno.EEXIST:
                    raise

    def delete(self, url):
        with self._errors(f"delete {url}"):
            ctx = self._context()
            if stat_mod.S_ISDIR(ctx.stat(url).st_mode):
                ctx.rmdir(url)
            else:
                ctx.unlink(url)

    def listdir(self, url):
        with self._errors(f"list {url}"):
            return sorted(n for n in self._context().listdir(url) if n not in (".", ".."))

    def rename(self, src, dst):
        with self._errors(f"rename {src} -> {dst}"):
            self._context().rename(src, dst)


_FREE_CONTEXTS = []                  # gfal2 contexts no thread holds, for the next thread
_CONTEXT_LOCK = threading.Lock()
_CANCELLED_CONTEXTS = []             # kept, never freed (see _ContextLease), never reused


def _take_context(gfal2):
    with _CONTEXT_LOCK:
        return _FREE_CONTEXTS.pop() if _FREE_CONTEXTS else gfal2.creat_context()


class _ContextLease:
    """A thread's gfal2 context, returned for reuse when the thread ends. Making and freeing
    contexts while other threads copy has crashed gfal2 here (heap corruption), and each
    stage-in starts new worker threads: so contexts are made one at a time and never freed."""

    def __init__(self, gfal2):
        self.ctx = _take_context(gfal2)

    def __del__(self, _free=_FREE_CONTEXTS):   # bound here: module globals may be gone at exit
        _free.append(self.ctx)


class _Gfal2CopyWorker(CopyWorker):
    """`work(ctx)` with a gfal2 context of its own; abandoned, the context is cancelled and
    never reused."""
    await_at_exit = True   # a copy still inside XrdCl when the process exits aborts it
    thread_name = "severus-gfal2-copy"

    def __init__(self, gfal2, work, destinations):
        self.ctx = _take_context(gfal2)
        super().__init__(work, destinations)

    def _call(self):
        return self.work(self.ctx)

    def _ended(self, abandoned):
        # A cancelled context may stay cancelled: kept aside, never reused.
        (_CANCELLED_CONTEXTS if abandoned else _FREE_CONTEXTS).append(self.ctx)

    def _interrupt(self):
        # Ends a copy that still moves data (a silent server still holds it); its own thread, as
        # gfal2_cancel returns only when the copy does.
        start_canceller(self.ctx.cancel, "severus-gfal2-cancel")
