"""Transfer implementations against a real XRootD SE (root://, http://, dav://) and POSIX."""
import os
import socket
import sys
import threading
import time

import psutil
import pytest

from wrapper.checksum import TrailingAdler32, settled_adler32, unchanged
from wrapper import transfer as transfer_module
from wrapper.siteconfig import TransferConfig
from wrapper.transfer import (CliTransfer, Gfal2Transfer, PosixTransfer, TransferError,
                              bulk_transfer_for, classify_error, copy_with_retries, make_transfer)
from .conftest import adler32, closed_port
from ..proxies import TcpProxy
from ..waiting import poll

IMPLEMENTATIONS = [("gfal2", "root"), ("gfal2", "http"), ("gfal2", "dav"),
                   ("cli", "root"), ("cli", "http"), ("posix", "path")]


def endpoint(area, tool, scheme):
    if tool == "posix":
        return PosixTransfer(), str(area.path)
    return (Gfal2Transfer() if tool == "gfal2" else CliTransfer()), area.url(scheme)


@pytest.mark.parametrize("tool,scheme", IMPLEMENTATIONS)
def test_round_trip_through_every_operation(area, tmp_path, tool, scheme):
    transfer, base = endpoint(area, tool, scheme)
    data = os.urandom(300_000)
    src = tmp_path / "a.bin"
    src.write_bytes(data)
    unset = threading.Event()   # a cancel that never comes changes nothing
    assert transfer.copy_out(src, f"{base}/d/a.tmp", 60, cancel=unset) == adler32(data)
    transfer.rename(f"{base}/d/a.tmp", f"{base}/d/a.bin")
    assert transfer.listdir(f"{base}/d") == ["a.bin"]
    st = transfer.stat(f"{base}/d/a.bin")
    assert (st.size, st.is_dir) == (len(data), False)
    assert transfer.stat(f"{base}/d").is_dir
    assert transfer.checksum(f"{base}/d/a.bin") == adler32(data)
    dst = tmp_path / "back" / "a.bin"
    assert transfer.copy_in(f"{base}/d/a.bin", dst, 60, adler32=adler32(data), cancel=unset) == adler32(data)
    assert dst.read_bytes() == data
    transfer.mkdir(f"{base}/e/f")
    assert transfer.stat(f"{base}/e/f").is_dir
    transfer.delete(f"{base}/d/a.bin")
    assert (area.path / "d").exists() and not (area.path / "d" / "a.bin").exists()


@pytest.mark.parametrize("tool,scheme", IMPLEMENTATIONS)
def test_wrong_checksum_and_missing_file_have_their_kinds(area, tmp_path, tool, scheme):
    transfer, base = endpoint(area, tool, scheme)
    area.put("x.bin", b"x" * 1000)
    with pytest.raises(TransferError) as bad:
        transfer.copy_in(f"{base}/x.bin", tmp_path / "x.bin", 60, adler32="deadbeef")
    assert bad.value.kind == "checksum"
    with pytest.raises(TransferError) as missing:
        transfer.copy_in(f"{base}/nope.bin", tmp_path / "nope.bin", 60, adler32="deadbeef")
    assert missing.value.kind == "not_found"
    with pytest.raises(TransferError) as missing_stat:
        transfer.stat(f"{base}/nope.bin")
    assert missing_stat.value.kind == "not_found"


@pytest.mark.parametrize("tool", ["gfal2", "cli"])
@pytest.mark.parametrize("scheme", ["root", "http"])
def test_dead_endpoint_fails_within_seconds(tool, scheme):
    transfer = Gfal2Transfer() if tool == "gfal2" else CliTransfer()
    url = f"{scheme}://127.0.0.1:{closed_port()}//no/where"
    start = time.monotonic()
    with pytest.raises(TransferError) as exc:
        transfer.stat(url)
    assert time.monotonic() - start < 10
    assert exc.value.kind in ("failed", "timeout")


def test_every_attempt_is_recorded_and_retried(area, tmp_path):
    records = []
    config = TransferConfig(retries=2, backoff_s=0.01)
    area.put("r.bin", b"r" * 100)
    with pytest.raises(TransferError):
        copy_with_retries(Gfal2Transfer(), "in", f"{area.url('root')}/r.bin", tmp_path / "r.bin",
                          size=100, config=config, record=records.append, adler32="00000bad")
    assert len(records) == 3
    assert all(r["tool"] == "gfal2" and "checksum" in r["error"] for r in records)
    assert set(records[0]) >= {"tool", "source", "destination", "seconds", "size", "error"}


def test_missing_file_is_not_retried(area, tmp_path):
    records = []
    with pytest.raises(TransferError) as exc:
        copy_with_retries(CliTransfer(), "in", f"{area.url('root')}/none.bin", tmp_path / "n",
                          size=1, config=TransferConfig(retries=3, backoff_s=0.01), record=records.append)
    assert exc.value.kind == "not_found" and len(records) == 1
    assert records[0]["tool"] == "xrdcp"


def test_size_based_timeout_is_passed_to_the_tool(area, tmp_path):
    seen = []

    class Spy(PosixTransfer):
        def copy_in(self, url, local_path, timeout, adler32=None, *, cancel=None):
            seen.append(timeout)
            return super().copy_in(url, local_path, timeout, adler32, cancel=cancel)

    area.put("t.bin", b"t")
    config = TransferConfig(timeout_base_s=10, min_rate_mb_s=1, timeout_max_s=1000)
    copy_with_retries(Spy(), "in", str(area.path / "t.bin"), tmp_path / "t", size=500_000_000,
                      config=config, record=lambda r: None)
    assert seen == [510.0]


def test_without_gfal2_bindings_the_command_line_is_chosen(monkeypatch, area):
    monkeypatch.setitem(sys.modules, "gfal2", None)
    assert isinstance(make_transfer(area.url("root")), CliTransfer)
    assert isinstance(make_transfer(area.url("http"), tool="gfal2"), CliTransfer)
    assert isinstance(make_transfer(str(area.path)), PosixTransfer)


def test_gfal2_sets_the_xrootd_client_environment(monkeypatch):
    monkeypatch.setenv("XRD_CONNECTIONRETRY", "5")
    monkeypatch.delenv("XRD_CPUSEPGWRTRD", raising=False)
    Gfal2Transfer()
    assert os.environ["XRD_CONNECTIONRETRY"] == "1" and os.environ["XRD_CPUSEPGWRTRD"] == "0"


def _write_in_blocks(path, data, order):
    """A writer thread putting 1 MiB blocks of `data` into `path` in the given block order."""
    def run():
        with open(path, "r+b" if path.exists() else "wb") as fh:
            for k in order:
                fh.seek(k << 20)
                fh.write(data[k << 20:(k + 1) << 20])
                fh.flush()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_trailing_adler32_follows_a_file_written_front_to_back(tmp_path):
    data = os.urandom(24 << 20)
    path = tmp_path / "f.part"
    reader = TrailingAdler32(path, chunk=1 << 20)
    _write_in_blocks(path, data, range(24)).join()
    reader.finish()
    assert reader.result() == adler32(data)


def test_trailing_adler32_is_never_wrong_when_written_out_of_order(tmp_path):
    """Blocks written last-first: the reader stops at holes and at the size, so its value is
    the right one or None (read again), never a wrong one that would pass as verified."""
    data = os.urandom(16 << 20)
    path = tmp_path / "f.part"
    reader = TrailingAdler32(path, chunk=1 << 20)
    _write_in_blocks(path, data, list(range(8, 16)) + list(range(8))).join()
    reader.finish()
    assert reader.result() in (None, adler32(data))


def test_trailing_adler32_gives_none_when_the_file_was_replaced_after_reading(tmp_path):
    path = tmp_path / "f.part"
    path.write_bytes(b"old bytes")
    reader = TrailingAdler32(path)
    reader.finish()
    reader._thread.join()
    path.unlink()
    path.write_bytes(b"the new bytes")   # what was read is not this file
    assert reader.result() is None



@pytest.mark.parametrize("with_sizes", [False, True])
def test_xrdcp_bulk_judges_each_file_and_handles_repeated_names(area, tmp_path, with_sizes):
    """Two sources named alike, one missing, one whose bytes differ from the catalog's; with
    sizes, files are checksummed as they arrive. Only the verified files appear at their paths."""
    data = {f"{d}/same.root": os.urandom(5000) for d in ("a", "b")}
    data["a/other.root"] = os.urandom(5000)
    for rel, blob in data.items():
        area.put(rel, blob)
    base = area.url("root")
    items = [(f"{base}/{rel}", tmp_path / "in" / rel.replace("/", "-"), adler32(blob)) for rel, blob in data.items()]
    items[2] = (items[2][0], items[2][1], adler32(b"what the catalog says"))
    items.append((f"{base}/a/gone.root", tmp_path / "in" / "gone.root", "00000001"))
    sizes = [5000, 5000, 5000, 123] if with_sizes else None
    results = CliTransfer().copy_in_many(items, 60, parallel=2, sizes=sizes)
    assert results[:2] == [None, None]
    assert [(url, p.read_bytes()) for url, p, _ in items[:2]] == [(items[0][0], data["a/same.root"]),
                                                                  (items[1][0], data["b/same.root"])]
    assert results[2].kind == "checksum" and results[3] is not None and not items[3][1].exists()
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a-same.root", "b-same.root"]


@pytest.mark.parametrize("tool,scheme", [("cli", "root"), ("gfal2", "root"), ("posix", "path")])
def test_bulk_copies_show_a_file_under_its_name_only_once_verified(area, tmp_path, tool, scheme):
    """While a bulk copy runs, every file seen under its final name is whole and right; one
    whose bytes differ from the expected checksum never appears there."""
    transfer, base = endpoint(area, tool, scheme)
    data = {f"v{i:02d}.root": os.urandom((1 << 20) + i) for i in range(16)}
    for name, blob in data.items():
        area.put(f"verified/{name}", blob)
    dest = tmp_path / "in"
    items = [(f"{base}/verified/{name}", dest / name, adler32(blob)) for name, blob in data.items()]
    items[5] = (items[5][0], items[5][1], adler32(b"not what the SE holds"))
    results, done = [], threading.Event()

    def copy():
        try:
            results.extend(transfer.copy_in_many(items, 60, parallel=4, sizes=[len(b) for b in data.values()]))
        finally:
            done.set()

    threading.Thread(target=copy, daemon=True).start()
    while not done.is_set():   # watching, not waiting: look as often as possible until it ends
        for entry in os.scandir(dest) if dest.is_dir() else ():
            if entry.name in data:
                assert entry.name != "v05.root" and open(entry.path, "rb").read() == data[entry.name]
    assert [r is None for r in results] == [i != 5 for i in range(16)] and results[5].kind == "checksum"
    assert sorted(os.listdir(dest)) == sorted(n for n in data if n != "v05.root")
    assert all(p.read_bytes() == data[p.name] for p in dest.iterdir())


def test_an_arrival_takes_its_name_only_verified_and_is_judged_again_if_written_since(tmp_path):
    """_Arrivals renames a whole file whose checksum matches, leaves a whole wrong one in
    staging, and a file changed after its rename is read again (and removed when wrong)."""
    staging, dest = tmp_path / "staging", tmp_path / "in"
    staging.mkdir()
    dest.mkdir()
    arrived = {name: os.urandom(3000) for name in ("good", "bad", "later")}
    expected = dict(arrived, bad=b"what the catalog says")
    for name, blob in arrived.items():
        (staging / name).write_bytes(blob)
    arrivals = transfer_module._Arrivals([(i, str(staging / name), 3000, adler32(expected[name]), dest / name)
                                          for i, name in enumerate(arrived)], window=8)
    assert arrivals.check()
    assert sorted(os.listdir(dest)) == ["good", "later"] and os.listdir(staging) == ["bad"]
    with open(dest / "later", "r+b") as fh:   # its writer went on after the rename
        fh.write(b"changed")
    os.utime(dest / "later", ns=(0, 0))
    results = []
    for i, name in enumerate(arrived):
        where, known = arrivals.result(i, str(staging / name))
        results.append(transfer_module._publish("root://se//f", dest / name, adler32(expected[name]),
                                                where, None, known))
    assert [r and r.kind for r in results] == [None, "checksum", "checksum"]
    assert os.listdir(dest) == ["good"] and (dest / "good").read_bytes() == arrived["good"]
    assert os.listdir(staging) == []


def test_many_root_files_go_through_xrdcp_others_keep_their_transfer():
    gfal = Gfal2Transfer()
    assert isinstance(bulk_transfer_for(gfal, "root://host//f"), CliTransfer)
    assert bulk_transfer_for(gfal, "https://host/f") is gfal
    posix = PosixTransfer()
    assert bulk_transfer_for(posix, "/mnt/se/f") is posix


def test_settled_adler32_waits_for_the_whole_file_and_notices_changes(tmp_path):
    path = tmp_path / "f"
    data = os.urandom(3 << 20)
    path.write_bytes(data[:1 << 20])
    assert settled_adler32(path, len(data)) is None            # not all there yet
    with open(path, "ab") as fh:
        fh.write(data[1 << 20:])
    value, signature = settled_adler32(path, len(data))
    assert value == adler32(data) and unchanged(path, signature)
    os.utime(path, ns=(0, 0))                                    # written again since
    assert not unchanged(path, signature)
    with open(path, "r+b") as fh:                                # a hole below the size
        fh.truncate(0)
        fh.seek(len(data) - 1)
        fh.write(b"x")
    assert settled_adler32(path, len(data)) is None


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
    while transfer_module._ABANDONED_WORKERS and time.monotonic() < deadline:
        time.sleep(0.05)   # polled with a deadline
    assert not transfer_module._ABANDONED_WORKERS and not back.exists()


def test_operation_expired_is_a_timeout():
    message = "Error on XrdCl::CopyProcess::Run(): [ERROR] Operation expired:  (destination)"
    assert classify_error(message, 116) == "timeout"


# ---------------------------------------------------------------- stopping copies: deadline and cancel

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
    poll(lambda: not transfer_module._ABANDONED_WORKERS, timeout, f"the abandoned copy to end ({what})")


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
