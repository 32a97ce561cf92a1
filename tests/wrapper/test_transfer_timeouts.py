"""Every copy ends by its deadline whatever the tool does, and at once on a cancel
(wrapper/transfer/timeouts.py), through each implementation: a silent server, a stalled
copy, a POSIX source blocked in the kernel, and copy_with_retries' tries and backoff."""
import os
import socket
import threading
import time

import psutil
import pytest

from wrapper.siteconfig import TransferConfig
from wrapper.transfer import CliTransfer, Gfal2Transfer, PosixTransfer, TransferError, copy_with_retries
from wrapper.transfer import timeouts
from .conftest import adler32
from .test_transfer import IMPLEMENTATIONS, endpoint
from ..proxies import TcpProxy
from ..waiting import poll


class SilentServer:
    """A loopback listener that accepts connections and never answers (a hung SE)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        """Stop listening and drop the connections (again: no-op)."""
        if self.sock.fileno() != -1:
            self.sock.shutdown(socket.SHUT_RDWR)   # wakes the accept; the clients see the end
            self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture()
def silent_server():
    server = SilentServer()
    yield server
    server.close()


@pytest.mark.parametrize("tool", ["gfal2", "cli"])
@pytest.mark.parametrize("direction", ["out", "in"])
def test_a_silent_server_ends_the_copy_at_its_timeout(silent_server, tmp_path, tool, direction):
    """XrdCl would wait for XRD_REQUESTTIMEOUT (30 s here, twice for an upload) whatever
    gfal2's params.timeout says: the copy must end at the size-based timeout, as a timeout,
    leaving no local file, and the attempt record must say so."""
    transfer = Gfal2Transfer() if tool == "gfal2" else CliTransfer()
    remote = f"root://127.0.0.1:{silent_server.port}//se/f.bin"
    local, back = tmp_path / "f.bin", tmp_path / "back" / "f.bin.part"
    local.write_bytes(os.urandom(100_000))
    config = TransferConfig(retries=0, timeout_base_s=1.5, min_rate_mb_s=1000, timeout_max_s=100)
    records = []
    src, dst = (local, remote) if direction == "out" else (remote, back)
    start = time.monotonic()
    with pytest.raises(TransferError) as exc:
        copy_with_retries(transfer, direction, src, dst, size=100_000, config=config,
                          record=records.append, adler32="00000001")
    elapsed = time.monotonic() - start
    limit = config.timeout_for(100_000)
    assert exc.value.kind == "timeout", exc.value
    assert limit <= elapsed < limit + 1.0, (elapsed, limit)
    (record,) = records
    assert record["error"].startswith("timeout") and record["timeout"] == pytest.approx(limit, abs=0.01)
    assert not back.exists()
    silent_server.close()
    # An abandoned gfal2 copy ends once the server goes away, and leaves nothing either.
    deadline = time.monotonic() + 20
    while timeouts._ABANDONED_WORKERS and time.monotonic() < deadline:
        time.sleep(0.05)   # polled with a deadline
    assert not timeouts._ABANDONED_WORKERS and not back.exists()



class Call:
    """fn() on a thread of its own, so that a test bounds how long it may take: a copy that
    hangs fails the test instead of hanging the suite."""

    def __init__(self, fn):
        self.done = threading.Event()
        self.value = self.error = None
        self.began = time.monotonic()
        threading.Thread(target=self._run, args=(fn,), daemon=True).start()

    def _run(self, fn):
        try:
            self.value = fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()
            self.done.set()

    def error_within(self, seconds, what):
        """The TransferError the call raised, no later than `seconds` from now."""
        assert self.done.wait(seconds), f"{what}: still running after {seconds} s"
        assert isinstance(self.error, TransferError), (self.error, self.value)
        return self.error


class FifoWriter:
    """The writing end of a FIFO: opens it once a reader does, writes `data`, then holds it open
    without writing (the reader blocks in read()) until `release()` closes it."""

    def __init__(self, path, data=b""):
        self.path, self.data = path, data
        self.released = threading.Event()
        self.written = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        with open(self.path, "wb", buffering=0) as fh:
            fh.write(self.data)
            self.written.set()
            self.released.wait()

    def release(self):
        self.released.set()


def unblock_fifo(path):
    """Let a reader blocked in open() of a FIFO go on: a writer comes and goes (the reader sees EOF)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:   # no reader waiting (any more)
        pass


def abandoned_copies_end(what, timeout=40):
    poll(lambda: not timeouts._ABANDONED_WORKERS, timeout, f"the abandoned copy to end ({what})")


@pytest.fixture()
def fifo(tmp_path):
    path = tmp_path / "source.fifo"
    os.mkfifo(path)
    yield path
    unblock_fifo(path)   # today's code, or a failed test, may still sit in open()


def test_posix_copy_from_a_source_blocked_in_open_ends_at_its_timeout(fifo, tmp_path):
    """Finding 10: a source that blocks in the kernel (a FIFO without a writer: open() never
    returns) must not hold the copy past its deadline; nothing is left at the destination."""
    dst = tmp_path / "in" / "f.bin.part"
    call = Call(lambda: PosixTransfer().copy_in(str(fifo), dst, 2.0, adler32="00000001"))
    error = call.error_within(10, "a POSIX copy from a FIFO nobody writes")
    assert error.kind == "timeout", error
    assert 2.0 <= call.ended - call.began < 3.5, call.ended - call.began
    assert not dst.exists()
    unblock_fifo(fifo)
    abandoned_copies_end("a POSIX copy whose source got EOF")
    assert not dst.exists()


def test_posix_copy_blocked_mid_read_ends_at_its_timeout_and_its_destination_waits(fifo, tmp_path):
    """A source that hangs in read() after 3 MiB: timeout at the deadline, the partial file is
    gone at once, and a new copy to that destination waits while the abandoned one may still
    write it (two writers never share a file), then works once the abandoned copy ended."""
    writer = FifoWriter(fifo, os.urandom(3 << 20))
    dst = tmp_path / "in" / "f.bin.part"
    call = Call(lambda: PosixTransfer().copy_in(str(fifo), dst, 2.0, adler32="00000001"))
    error = call.error_within(10, "a POSIX copy whose source stops sending")
    assert writer.written.is_set(), "the copy never read the first bytes"
    assert error.kind == "timeout" and 2.0 <= call.ended - call.began < 3.5, (error, call.ended - call.began)
    assert not dst.exists()
    regular = tmp_path / "regular.bin"
    regular.write_bytes(b"r" * 1000)
    with pytest.raises(TransferError) as waited:
        PosixTransfer().copy_in(str(regular), dst, 1.0, adler32=adler32(b"r" * 1000))
    assert waited.value.kind == "timeout" and "abandoned" in waited.value.message, waited.value
    writer.release()
    abandoned_copies_end("a POSIX copy whose source got EOF")
    assert not dst.exists()
    assert PosixTransfer().copy_in(str(regular), dst, 5.0, adler32=adler32(b"r" * 1000)) == adler32(b"r" * 1000)
    assert dst.read_bytes() == b"r" * 1000


@pytest.mark.parametrize("source", ["open", "read"])
def test_a_cancel_ends_a_posix_copy_blocked_in_the_kernel(fifo, tmp_path, source):
    """Cancel from another thread 0.5 s into a copy stuck in open() or in read(): 'cancelled'
    at once, long before its timeout, and no partial destination."""
    writer = FifoWriter(fifo, os.urandom(3 << 20)) if source == "read" else None
    dst = tmp_path / "in" / "f.bin.part"
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()   # whenever it comes, the copy must end at once
    call = Call(lambda: PosixTransfer().copy_in(str(fifo), dst, 60, adler32="00000001", cancel=cancel))
    error = call.error_within(10, "a cancelled POSIX copy")
    assert error.kind == "cancelled", error
    assert call.ended - call.began < 0.5 + 1.0, call.ended - call.began
    assert not dst.exists()
    if writer:
        writer.release()
    else:
        unblock_fifo(fifo)
    abandoned_copies_end("a cancelled POSIX copy")
    assert not dst.exists()


def test_posix_bulk_copy_ends_at_its_deadline_with_the_verified_files_kept(fifo, tmp_path):
    """PosixTransfer.copy_in_many runs its files on one worker thread under one deadline: a
    source stuck mid-read stops the batch there; the file before it is verified at its path,
    it and the ones after fail as timeouts, and no .part name is left, then or later."""
    good = tmp_path / "good.bin"
    good.write_bytes(b"g" * 5000)
    writer = FifoWriter(fifo, os.urandom(1 << 20))
    dest = tmp_path / "in"
    items = [(str(good), dest / "good.bin", adler32(b"g" * 5000)), (str(fifo), dest / "stuck.bin", "00000001"),
             (str(good), dest / "after.bin", adler32(b"g" * 5000))]
    call = Call(lambda: PosixTransfer().copy_in_many(items, 2.0))
    assert call.done.wait(10), "a POSIX bulk copy with a stuck source: still running after 10 s"
    assert call.error is None, call.error
    assert 2.0 <= call.ended - call.began < 3.5, call.ended - call.began
    assert [r and r.kind for r in call.value] == [None, "timeout", "timeout"]
    assert os.listdir(dest) == ["good.bin"]
    writer.release()
    abandoned_copies_end("a POSIX bulk copy whose source got EOF")
    assert os.listdir(dest) == ["good.bin"] and (dest / "good.bin").read_bytes() == b"g" * 5000


@pytest.fixture()
def stalling_proxy(xrootd_se):
    proxies = []

    def make(direction, after_bytes=1 << 20):
        proxies.append(TcpProxy(xrootd_se.root_port, stall_after=after_bytes, direction=direction))
        return proxies[-1]
    yield make
    for proxy in proxies:
        proxy.close()


def alive(process):
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def copy_processes():
    """The copy tools this process runs (xrdcp, gfal-copy and their children)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if alive(p) and any(tool in " ".join(p.cmdline()) for tool in ("xrdcp", "gfal-copy")):
                found.append(p)
        except psutil.NoSuchProcess:   # ended while we looked
            pass
    return found


@pytest.mark.parametrize("tool", ["cli", "gfal2"])
@pytest.mark.parametrize("direction", ["in", "out"])
def test_a_cancel_ends_a_stalled_copy_at_once(area, tmp_path, stalling_proxy, tool, direction):
    """Finding 6's transfer half: a copy stalled mid-transfer (the SE goes silent after 1 MiB)
    with a long timeout ends within ~1 s of the cancel as 'cancelled': the xrdcp process group
    is killed, the gfal2 copy cancelled and abandoned; no local partial file is left."""
    data = os.urandom(48 << 20)
    proxy = stalling_proxy("down" if direction == "in" else "up")
    transfer = CliTransfer() if tool == "cli" else Gfal2Transfer()
    cancel = threading.Event()
    local = tmp_path / "in" / "big.bin.part"
    if direction == "in":
        area.put("big.bin", data)
        call = Call(lambda: transfer.copy_in(proxy.url(area.path / "big.bin"), local, 300, adler32=adler32(data),
                                             cancel=cancel))
    else:
        src = tmp_path / "big.bin"
        src.write_bytes(data)
        call = Call(lambda: transfer.copy_out(src, proxy.url(area.path / "up/big.bin"), 300, adler32=adler32(data),
                                              cancel=cancel))
    poll(lambda: proxy.stalled.is_set() or call.done.is_set(), 30, "the copy to stall mid-transfer")
    assert not call.done.is_set(), (call.error, call.value)
    tools = poll(copy_processes, 10, "the copy process") if tool == "cli" else []
    cancel.set()
    cancelled_at = time.monotonic()
    error = call.error_within(10, "a cancelled stalled copy")
    assert error.kind == "cancelled", error
    assert call.ended - cancelled_at < 1.5, call.ended - cancelled_at
    assert not any(alive(p) for p in tools), tools
    assert not local.exists()
    proxy.close()   # the abandoned gfal2 copy ends once its connection drops
    abandoned_copies_end("a cancelled gfal2 copy")
    assert not local.exists()


def test_a_cancel_ends_a_bulk_xrdcp_copy_at_once(area, tmp_path, stalling_proxy):
    """copy_in_many's one `xrdcp --parallel`: cancelled mid-way it raises 'cancelled' within
    ~1 s, xrdcp is gone, and no staging directory or unverified file is left."""
    proxy = stalling_proxy("down", after_bytes=6 << 20)
    data = {f"b{i}.root": os.urandom(8 << 20) for i in range(6)}
    for name, blob in data.items():
        area.put(f"bulk/{name}", blob)
    dest = tmp_path / "in"
    items = [(proxy.url(area.path / f"bulk/{name}"), dest / name, adler32(blob)) for name, blob in data.items()]
    cancel = threading.Event()
    call = Call(lambda: CliTransfer().copy_in_many(items, 300, parallel=2, sizes=[8 << 20] * 6, cancel=cancel))
    poll(lambda: proxy.stalled.is_set() or call.done.is_set(), 30, "the bulk copy to stall")
    assert not call.done.is_set(), (call.error, call.value)
    tools = poll(copy_processes, 10, "the xrdcp process")
    cancel.set()
    cancelled_at = time.monotonic()
    error = call.error_within(10, "a cancelled bulk copy")
    assert error.kind == "cancelled", error
    assert call.ended - cancelled_at < 1.5, call.ended - cancelled_at
    assert not any(alive(p) for p in tools), tools
    left = os.listdir(dest)
    assert all(name in data and (dest / name).read_bytes() == data[name] for name in left), left


@pytest.mark.parametrize("tool,scheme", IMPLEMENTATIONS)
def test_a_cancel_set_before_the_copy_copies_nothing(area, tmp_path, tool, scheme):
    transfer, base = endpoint(area, tool, scheme)
    area.put("c.bin", b"c" * 1000)
    src = tmp_path / "c.bin"
    src.write_bytes(b"c" * 1000)
    cancel = threading.Event()
    cancel.set()
    for copy in (lambda: transfer.copy_in(f"{base}/c.bin", tmp_path / "in" / "c.bin", 60,
                                          adler32=adler32(b"c" * 1000), cancel=cancel),
                 lambda: transfer.copy_out(src, f"{base}/out/c.bin", 60, cancel=cancel),
                 lambda: transfer.copy_in_many([(f"{base}/c.bin", tmp_path / "many" / "c.bin", adler32(b"c" * 1000))],
                                               60, sizes=[1000], cancel=cancel)):
        with pytest.raises(TransferError) as exc:
            copy()
        assert exc.value.kind == "cancelled", exc.value
    assert not (tmp_path / "in").exists() or not os.listdir(tmp_path / "in")
    assert not (tmp_path / "many" / "c.bin").exists()
    assert not (area.path / "out").exists()


def test_copy_with_retries_does_not_try_again_after_a_cancel(fifo, tmp_path):
    """Cancelled during its first try (a source stuck in open()): one attempt, recorded as
    cancelled, no backoff, no second try."""
    records = []
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    config = TransferConfig(retries=3, backoff_s=30, timeout_base_s=60)
    call = Call(lambda: copy_with_retries(PosixTransfer(), "in", str(fifo), tmp_path / "f.part", size=100,
                                          config=config, record=records.append, adler32="00000001",
                                          cancel=cancel))
    error = call.error_within(10, "copy_with_retries cancelled during a try")
    assert error.kind == "cancelled", error
    assert call.ended - call.began < 0.5 + 1.0
    (record,) = records
    assert record["error"].startswith("cancelled"), record
    unblock_fifo(fifo)
    abandoned_copies_end("a cancelled POSIX copy")


def test_copy_with_retries_backoff_ends_on_a_cancel(area, tmp_path):
    """A try fails (the bytes differ from the catalog's): the 30 s backoff ends as soon as the
    cancel comes, as 'cancelled', without another try."""
    records = []
    area.put("r.bin", b"r" * 100)
    cancel = threading.Event()
    config = TransferConfig(retries=3, backoff_s=30)
    call = Call(lambda: copy_with_retries(PosixTransfer(), "in", str(area.path / "r.bin"), tmp_path / "r.part",
                                          size=100, config=config, record=records.append, adler32="00000bad",
                                          cancel=cancel))
    poll(lambda: records, 10, "the first try's record")
    cancel.set()
    cancelled_at = time.monotonic()
    error = call.error_within(5, "copy_with_retries cancelled in its backoff")
    assert error.kind == "cancelled" and call.ended - cancelled_at < 0.5, (error, call.ended - cancelled_at)
    (record,) = records
    assert record["error"].startswith("checksum"), record


def test_copy_with_retries_with_a_cancel_already_set_tries_nothing(area, tmp_path):
    records = []
    area.put("s.bin", b"s" * 100)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TransferError) as exc:
        copy_with_retries(PosixTransfer(), "in", str(area.path / "s.bin"), tmp_path / "s.part", size=100,
                          config=TransferConfig(retries=2, backoff_s=30), record=records.append, cancel=cancel)
    assert exc.value.kind == "cancelled" and records == [] and not (tmp_path / "s.part").exists()
