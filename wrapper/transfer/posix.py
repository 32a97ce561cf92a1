"""Direct access: the SE is a mounted file system, its files plain paths.

adler32 is computed while copying (one read of the data). A copy runs on a worker thread
given up at its deadline or on a cancel (wrapper/transfer/timeouts.py): a read or an open may
block in the kernel (a hung mount, a FIFO), where no check between blocks would ever run.
"""
import os
import stat as stat_mod
from contextlib import contextmanager
from pathlib import Path

from ..checksum import CHUNK, adler32_file, adler32_update, format_adler32
from .errors import TransferError
from .interface import RemoteStat, Transfer, part_path, publish
from .timeouts import CopyWorker, check_cancel, run_bounded
from .urls import plain_path


class PosixTransfer(Transfer):
    """Direct access: the SE is a mounted file system; adler32 is computed while copying."""
    tool = "posix"

    @contextmanager
    def _errors(self, what):
        try:
            yield
        except FileNotFoundError as exc:
            raise TransferError("not_found", f"{what}: {exc.strerror}") from None
        except OSError as exc:
            raise TransferError("failed", f"{what}: {exc.strerror or exc}") from None

    def _stream_once(self, src, dst, stop, buf):
        """Copy `src` to `dst` in blocks of `buf`, computing adler32 on the way (one read of the
        data); its adler32, or None when `stop` was set meanwhile (the copy was abandoned)."""
        view = memoryview(buf)
        value = 1
        with self._errors(f"copy {src} -> {dst}"):
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as fin:
                if stop.is_set():   # given up while open() blocked: no destination made
                    return None
                with open(dst, "wb") as fout:
                    while True:
                        n = fin.readinto(buf)
                        if not n:
                            break
                        value = adler32_update(view[:n], value)
                        fout.write(view[:n])
                        if stop.is_set():
                            return None
        return format_adler32(value)

    def _stream(self, src, dst, timeout, adler32, cancel):
        """One copy on a worker thread, abandoned at the deadline or on `cancel`
        (`run_bounded`): a read or an open may block in the kernel (a hung mount, a FIFO), where
        no check between blocks would ever run."""
        src, dst = plain_path(src), plain_path(dst)
        what = f"copy {src} -> {dst}"
        check_cancel(cancel, what)
        got = run_bounded(what, timeout, [dst], cancel,
                          lambda dsts: CopyWorker(lambda stop: self._stream_once(src, dst, stop, bytearray(CHUNK)),
                                                  dsts))
        if adler32 is not None and got != adler32:
            raise TransferError("checksum", f"{what}: adler32 {got} != expected {adler32}")
        return got

    def copy_in(self, url, local_path, timeout, adler32=None, *, cancel=None):
        return self._stream(url, local_path, timeout, adler32, cancel)

    def _copy(self, src, dst, timeout, adler32, *, cancel=None):
        # copy_out then reads the stored file back: the POSIX analogue of the SE's checksum.
        self._stream(src, dst, timeout, adler32, cancel)

    def copy_in_many(self, items, timeout, parallel=1, sizes=None, *, cancel=None):
        """The files one after the other through their .part names on ONE worker thread, all
        within `timeout` (a thread per file would cost more than a small file's copy); at the
        deadline the files not copied yet fail as a timeout, the verified ones stay."""
        what = f"bulk copy of {len(items)} files"
        check_cancel(cancel, what)
        parts = [str(part_path(path)) for _, path, _ in items]
        results = []

        def work(stop):
            buf = bytearray(CHUNK)
            for (url, path, adler32), part in zip(items, parts):
                try:
                    got = self._stream_once(plain_path(url), part, stop, buf)
                except TransferError as exc:
                    got, error = None, exc
                else:
                    error = None
                if stop.is_set():   # abandoned: this file may be incomplete
                    return results
                results.append(publish(url, path, adler32, part, error, got))
            return results
        try:
            return run_bounded(what, timeout, parts, cancel, lambda dsts: CopyWorker(work, dsts))
        except TransferError as exc:
            if exc.kind != "timeout":
                raise
            done = list(results)   # what the abandoned worker publishes later is copied again
            return done + [TransferError("timeout", f"copy {url} -> {path}: {exc.message}")
                           for url, path, _ in items[len(done):]]

    def stat(self, url):
        with self._errors(f"stat {url}"):
            st = os.stat(plain_path(url))
        return RemoteStat(size=st.st_size, is_dir=stat_mod.S_ISDIR(st.st_mode))

    def checksum(self, url):
        with self._errors(f"checksum {url}"):
            return adler32_file(plain_path(url))

    def mkdir(self, url):
        with self._errors(f"mkdir {url}"):
            os.makedirs(plain_path(url), exist_ok=True)

    def delete(self, url):
        path = plain_path(url)
        with self._errors(f"delete {url}"):
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            else:
                os.unlink(path)

    def listdir(self, url):
        with self._errors(f"list {url}"):
            return sorted(os.listdir(plain_path(url)))

    def rename(self, src, dst):
        with self._errors(f"rename {src} -> {dst}"):
            os.replace(plain_path(src), plain_path(dst))
