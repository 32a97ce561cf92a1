"""The one interface every way of moving files implements, and what downloads share.

    Transfer            copy_in, copy_out, stat, checksum, mkdir, delete, listdir, rename

Downloads are verified on the local bytes: `copy_in` checksums the file while the tool
writes it (`TrailingAdler32`), so the check costs the last blocks, not a second pass; an
upload is verified by the adler32 the SE computes of what it holds. A downloaded file takes
its name only once verified (`part_path`, `publish`).
"""
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..checksum import TrailingAdler32, adler32_file
from .errors import TransferError
from .timeouts import check_cancel
from .urls import is_local, plain_path


@dataclass(frozen=True)
class RemoteStat:
    """What `Transfer.stat` tells of a remote name."""
    size: int
    is_dir: bool


class Transfer:
    """Copy and namespace operations on one kind of endpoint; URLs or, for POSIX, paths."""
    tool = "none"

    def tool_for(self, url):
        """The tool name recorded in attempt records."""
        return self.tool

    def copy_in(self, url, local_path, timeout, adler32=None, *, cancel=None):
        """Download `url` to `local_path`, verified against `adler32` (default: the SE's); return it.
        The local bytes are checksummed while they arrive (a reader follows the writer), so the
        verification overlaps the transfer instead of following it. `cancel` (an Event) ends the
        copy at once, as TransferError("cancelled"); so it does when set before the call."""
        check_cancel(cancel, f"copy {url} -> {local_path}")
        if adler32 is None:
            adler32 = self.checksum(url)
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        remove(local_path)   # the reader must follow this copy's file, not an earlier try's
        reader = TrailingAdler32(local_path)
        try:
            self._copy(url, str(local_path), timeout, None, cancel=cancel)
        except BaseException:
            reader.cancel()
            remove(local_path)   # no half-written file left behind (a timed-out copy, say)
            raise
        got = reader.result() or _local_adler32(local_path)
        if got != adler32:
            raise TransferError("checksum", f"copy {url} -> {local_path}: adler32 {got} != expected {adler32}")
        return adler32

    def copy_out(self, local_path, url, timeout, adler32=None, *, cancel=None):
        """Upload, creating parents; return the adler32 the SE computes of what it holds,
        which must equal `adler32` (default: the file's, computed while the upload runs).
        `cancel` as for copy_in."""
        check_cancel(cancel, f"copy {local_path} -> {url}")
        local = None if adler32 else _BackgroundAdler32(local_path)
        self._copy(str(local_path), url, timeout, None, cancel=cancel)
        expected = adler32 or local.result()
        stored = self.checksum(url)
        if stored != expected:
            raise TransferError("checksum", f"copy {local_path} -> {url}: the SE computes adler32 {stored},"
                                            f" the file has {expected}")
        return stored

    def progress_probe(self, direction, source, destination):
        """A callable giving the bytes a copy (direction "in" or "out") has moved so far, or None
        when that cannot be measured (the stall watch, heartbeats: wrapper/transfer/progress.py).
        Here: the size of a local destination (a download, an upload to a mounted SE)."""
        if direction == "out" and not is_local(destination):
            return lambda: None
        path = plain_path(destination)
        return lambda: _size_or_zero(path)

    def bulk_progress_probe(self, items):
        """copy_in_many's progress_probe: the bytes of (local path, size) downloads written so far."""
        return DownloadsProbe(items)

    def _copy(self, src, dst, timeout, adler32, *, cancel=None):
        """One copy; with `adler32`, the destination's checksum, computed where it lands, must match.
        It ends by `timeout` (TransferError "timeout") and at once when `cancel` is set ("cancelled")."""
        raise NotImplementedError

    bulk_parallel = False   # True: one copy_in_many call itself moves `parallel` files at once

    def copy_in_many(self, items, timeout, parallel=1, sizes=None, *, cancel=None):
        """Download (url, local_path, adler32) items (of `sizes` bytes, when known); return a
        TransferError or None per item. A path appears only once its bytes matched `adler32`:
        each file is written under another name first and renamed then. A `cancel` ends it at
        once with TransferError("cancelled") (files already verified stay at their paths).
        One by one through `<path>.part` here; gfal2 and xrdcp override it with bulk copies."""
        results = []
        for url, local_path, adler32 in items:
            part = part_path(local_path)
            try:
                self.copy_in(url, part, timeout, adler32=adler32, cancel=cancel)
            except TransferError as exc:
                remove(part)
                if exc.kind == "cancelled":
                    raise
                results.append(exc)
            else:
                os.replace(part, local_path)
                results.append(None)
        return results

    def stat(self, url):
        raise NotImplementedError

    def checksum(self, url):
        """The adler32 of `url` as the storage computes it."""
        raise NotImplementedError

    def mkdir(self, url):
        """Make the directory and its parents (no error when it exists)."""
        raise NotImplementedError

    def delete(self, url):
        """Remove a file or an empty directory."""
        raise NotImplementedError

    def listdir(self, url):
        """Names (not paths) in a directory."""
        raise NotImplementedError

    def rename(self, src, dst):
        """Rename within one storage, replacing `dst`."""
        raise NotImplementedError


def part_path(path):
    """Where a download to `path` is written until its checksum matched."""
    path = Path(path)
    return path.with_name(path.name + ".part")


def publish(url, path, adler32, temp, error=None, known=None):
    """Rename a downloaded `temp` to `path` if the copy went well (`error` None) and its bytes
    (their adler32 `known`, or read now) match `adler32`; else remove it (`temp` may be `path`
    itself). Return the copy's error, a checksum error, or None."""
    if error is None:
        try:
            got = known or _local_adler32(temp)
        except TransferError as exc:
            error = exc
        else:
            if got != adler32:
                error = TransferError("checksum", f"copy {url} -> {path}: adler32 {got} != expected {adler32}")
    if error is None:
        if os.fspath(temp) != os.fspath(path):
            os.replace(temp, path)
    else:
        remove(temp)
    return error


def remove(path):
    """Remove a file; none there is no error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class DownloadsProbe:
    """The bytes many downloads (local path, size) have written so far, under whichever name each
    has on the way: its path, `<path>.part`, or its name in a hidden staging directory beside it
    whose name starts with one of `staging_prefixes` (a bulk xrdcp's). A file whole at its path is
    counted once and not looked at again (a bulk of thousands of small files)."""

    def __init__(self, items, staging_prefixes=()):
        self.pending = {os.fspath(path): size for path, size in items}
        self.staging_prefixes = tuple(staging_prefixes)
        self.done = 0

    def __call__(self):
        staged = self._staged()
        moving = 0
        for path, size in list(self.pending.items()):
            got = _size_or_zero(path)
            if got == size:
                self.done += size
                del self.pending[path]
                continue
            parent, name = os.path.split(path)
            moving += max(got, _size_or_zero(path + ".part"),
                          *(_size_or_zero(os.path.join(d, name)) for d in staged.get(parent, ())))
        return self.done + moving

    def _staged(self):
        """Each parent directory's staging directories, read once a call."""
        if not self.staging_prefixes:
            return {}
        staged = {}
        for parent in {os.path.dirname(path) for path in self.pending}:
            try:
                staged[parent] = [e.path for e in os.scandir(parent or ".")
                                  if e.name.startswith(self.staging_prefixes) and e.is_dir()]
            except OSError:
                staged[parent] = []
        return staged


def _size_or_zero(path):
    """A destination's size; 0 before the tool made it (or after a failure removed it)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _local_adler32(path):
    try:
        return adler32_file(path)
    except OSError as exc:
        raise TransferError("failed", f"cannot read {path}: {exc.strerror}") from None


class _BackgroundAdler32:
    """A local file's adler32 computed in a thread, overlapping an upload (zlib drops the GIL)."""

    def __init__(self, path):
        self.path = path
        self._result = {}
        self._thread = threading.Thread(target=self._run, name="severus-adler32", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self._result["value"] = adler32_file(self.path)
        except OSError as exc:
            self._result["error"] = exc

    def result(self):
        self._thread.join()
        if "error" in self._result:
            raise TransferError("failed", f"cannot read {self.path}: {self._result['error']}")
        return self._result["value"]
