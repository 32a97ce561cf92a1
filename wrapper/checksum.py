"""Adler32, the checksum every SE and the catalog agree on, as 8 lowercase hex digits."""
import os
import threading

try:
    # zlib-ng's SIMD adler32 runs at ~28 GiB/s here against ~3.4 for Debian's zlib: on a
    # 2-core node, verifying a 1 GiB download then costs 0.04 CPU-s instead of 0.3, which
    # the copy itself needs. Used when installed, like psutil; the same values either way.
    from zlib_ng.zlib_ng import adler32 as adler32_update
except ImportError:
    from zlib import adler32 as adler32_update

CHUNK = 1 << 20   # 1 MiB: large enough that zlib releases the GIL and runs at memory speed


def format_adler32(value):
    """An adler32 integer as the 8-hex text the catalog and SEs use."""
    return f"{value & 0xFFFFFFFF:08x}"


def normalize_adler32(text):
    """SEs print adler32 with or without leading zeros and in either case; make it canonical."""
    text = (text or "").strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    return text.zfill(8)


def adler32_file(path, chunk=CHUNK):
    """The adler32 of a local file."""
    value = 1
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            value = adler32_update(block, value)
    return format_adler32(value)


class TrailingAdler32:
    """The adler32 of a file that another thread or process is writing front to back, read
    behind the writer (zlib drops the GIL): verifying a download then costs only its last
    blocks once the copy ends, instead of a second pass over the whole file.

    Only bytes below both the file's size and its first hole are read, so a writer that
    filled the file out of order would make the result wrong, never falsely right: the
    caller compares it with the expected checksum and reads the whole file again (`result()`
    is None) when the file was replaced or its size differs from what was read.
    """
    POLL_S = 0.005

    def __init__(self, path, chunk=CHUNK):   # 1 MiB reads stay in cache: faster than 8 MiB here
        self.path = str(path)
        self.chunk = chunk
        self._finished = threading.Event()
        self._cancelled = False
        self._value, self._pos, self._ino, self._error = 1, 0, None, None
        self._thread = threading.Thread(target=self._run, name="severus-adler32", daemon=True)
        self._thread.start()

    def _open(self):
        while not self._cancelled:
            try:
                return os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                if self._finished.is_set():
                    return None
                self._finished.wait(self.POLL_S)
        return None

    def _run(self):
        try:
            fd = self._open()
            if fd is None:
                return
            try:
                self._follow(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self._error = exc

    def _follow(self, fd):
        self._ino = os.fstat(fd).st_ino
        if hasattr(os, "posix_fadvise"):   # read-ahead for a file on disk
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        buf = bytearray(self.chunk)
        view = memoryview(buf)
        while not self._cancelled:
            # Looked at before the size: once the writer is done, this pass reads to the end.
            last = self._finished.is_set()
            end = _written_end(fd, self._pos)
            while self._pos < end and not self._cancelled:
                n = os.preadv(fd, [view[:min(self.chunk, end - self._pos)]], self._pos)
                if n <= 0:
                    break
                self._value = adler32_update(view[:n], self._value)
                self._pos += n
            if last:
                return
            if self._pos >= end:
                self._finished.wait(self.POLL_S)

    def finish(self):
        """The writer is done: read what is left."""
        self._finished.set()

    def cancel(self):
        """The copy failed: stop reading."""
        self._cancelled = True
        self._finished.set()
        self._thread.join()

    def result(self):
        """The adler32 of the whole file as it is now, or None when it must be read again."""
        self._finished.set()
        self._thread.join()
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        if self._error is not None or self._ino != st.st_ino or st.st_size != self._pos:
            return None
        return format_adler32(self._value)


def _written_end(fd, pos):
    """Where the written bytes from `pos` end: the file's size or its first hole after `pos`."""
    size = os.fstat(fd).st_size
    if pos >= size or not hasattr(os, "SEEK_HOLE"):
        return size
    try:
        return min(size, os.lseek(fd, pos, os.SEEK_HOLE))
    except OSError:   # no SEEK_HOLE on this file system: its size it is
        return size


def settled_adler32(path, size):
    """(adler32, signature) of a file another process writes, once it has all `size` bytes
    and no hole; None before. `unchanged(path, signature)` later tells whether the value
    still holds (same inode, size and modification time)."""
    try:
        # Mostly asked about files still missing or short: one stat says so, before an open.
        if os.stat(path).st_size != size:
            return None
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        before = os.fstat(fd)
        if before.st_size != size or _written_end(fd, 0) < size:
            return None
        value, pos = 1, 0
        while pos < size:   # pread: _written_end moved the file offset
            block = os.pread(fd, min(CHUNK, size - pos), pos)
            if not block:
                return None
            value = adler32_update(block, value)
            pos += len(block)
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            return None
        return format_adler32(value), (before.st_ino, before.st_size, before.st_mtime_ns)
    finally:
        os.close(fd)


def unchanged(path, signature):
    """Whether `path` is still the file `settled_adler32` read."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_ino, st.st_size, st.st_mtime_ns) == signature
