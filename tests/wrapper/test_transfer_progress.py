"""A copy's bytes are watched (wrapper/transfer/progress.py): heartbeats carry them, and a copy
that moved nothing for `[transfer] stall_s` is given up long before its size-based timeout,
whatever the tool: the stall logic on a fake clock, a POSIX source that stops, and a real
XRootD SE frozen with SIGSTOP under gfal2 and the command-line tools, both directions."""
import os
import signal
import threading
import time

import pytest

from wrapper.siteconfig import SiteConfigError, TransferConfig, parse_site_config
from wrapper.transfer import CliTransfer, Gfal2Transfer, PosixTransfer, TransferError, copy_with_retries
from wrapper.transfer import watched
from wrapper.transfer.interface import DownloadsProbe
from wrapper.transfer.progress import BYTES, RATE, TOTAL, Progress, StallWatch
from shared.errors import InputError, StageOutError
from wrapper.inputs import stage_inputs
from wrapper.stageout import match_outputs, stage_outputs
from .conftest import adler32, lfn, make_area, site_for
from .test_transfer_timeouts import Call, abandoned_copies_end, unblock_fifo
from ..proxies import TcpProxy
from ..waiting import poll

MIB = 1 << 20


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_count_unchanged_for_stall_s_is_a_stall_and_any_change_starts_again():
    clock = FakeClock()
    watch = StallWatch(10, clock)
    assert not watch.seen(0)
    clock.now += 9.9
    assert not watch.seen(0)
    clock.now += 0.1
    assert watch.seen(0)
    assert "no bytes moved for 10 s (at 0 of 500 bytes" in watch.describe(500)
    assert not watch.seen(1)           # one byte moved: the wait starts again
    clock.now += 9.9
    assert not watch.seen(1)
    clock.now += 0.2
    assert watch.seen(1)


def test_an_unmeasurable_count_or_a_zero_stall_s_never_stalls():
    clock = FakeClock()
    unknown, off = StallWatch(10, clock), StallWatch(0, clock)
    unknown.seen(None)
    off.seen(5)
    clock.now += 1000
    assert not unknown.seen(None) and not off.seen(5)


def test_progress_sums_the_running_copies_and_forgets_ended_ones():
    clock = FakeClock()
    progress = Progress(clock)
    assert progress.metrics() == {}
    a, b = progress.begin(1_000_000), progress.begin(None)
    clock.now += 2
    progress.moved(a, 500_000)
    progress.moved(b, 100_000)
    assert progress.metrics() == {BYTES: 600_000, TOTAL: 1_000_000, RATE: 0.3}
    progress.end(a)
    progress.end(b)
    assert progress.metrics() == {}


def test_stall_s_is_a_site_setting_with_a_ten_minute_default():
    base = {"name": "X-T2", "se": {"lfn_prefix": "/grid/x", "local_path": "/tmp"}}
    assert parse_site_config(base).transfer.stall_s == 600.0
    assert parse_site_config(dict(base, transfer={"stall_s": 30})).transfer.stall_s == 30.0
    with pytest.raises(SiteConfigError, match="transfer.stall_s"):
        parse_site_config(dict(base, transfer={"stall_s": "ten"}))


class TricklingFifo:
    """A FIFO whose writer sends `first` bytes, then `more` bytes every `every` s for `for_s` s,
    and holds it open (a source that stops moving) until `close`."""

    def __init__(self, path, first, more=0, every=0.2, for_s=0.0):
        os.mkfifo(path)
        self.path = path
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._write, args=(first, more, every, for_s), daemon=True)
        self.thread.start()

    def _write(self, first, more, every, for_s):
        fd = os.open(self.path, os.O_WRONLY)   # waits for the copy to open it
        try:
            self.sent += os.write(fd, b"f" * first)
            end = time.monotonic() + for_s
            while more and time.monotonic() < end and not self.stop.wait(every):
                self.sent += os.write(fd, b"m" * more)
            self.stop.wait()
        finally:
            os.close(fd)

    def close(self):
        self.stop.set()
        unblock_fifo(self.path)


def test_a_copy_that_stops_moving_is_given_up_at_stall_s_not_at_its_timeout(tmp_path):
    """3 MiB arrive, then nothing: the try ends ~stall_s after the last byte as a timeout that
    names the stall, the heartbeats' figure showed the bytes meanwhile, and no partial file stays."""
    source = TricklingFifo(tmp_path / "src.fifo", first=3 * MIB)
    dst = tmp_path / "in" / "f.bin.part"
    progress, records = Progress(), []
    config = TransferConfig(retries=0, timeout_base_s=60, stall_s=1.5)
    try:
        call = Call(lambda: copy_with_retries(PosixTransfer(), "in", str(source.path), dst, size=10_000_000,
                                              config=config, record=records.append, adler32="00000001",
                                              progress=progress))
        seen = poll(lambda: progress.metrics().get(BYTES), 10, "the copy's bytes in the progress")
        assert seen == 3 * MIB and progress.metrics()[TOTAL] == 10_000_000
        error = call.error_within(10, "a copy that stopped moving")
        assert error.kind == "timeout" and f"stalled: no bytes moved for 1.5 s (at {3 * MIB} of 10000000 bytes" in \
            error.message, error
        assert 1.5 <= call.ended - call.began < 1.5 + 3.0, call.ended - call.began   # not the 61 s timeout
        assert not dst.exists()
        (record,) = records
        assert record["error"].startswith("timeout") and "stalled" in record["error"], record
        assert progress.metrics() == {}
    finally:
        source.close()
    abandoned_copies_end("a stalled POSIX copy")


def test_a_slow_copy_that_keeps_moving_is_not_a_stall(tmp_path):
    """A MiB every 0.3 s for 3 s with stall_s 1: slow is not stalled; the copy ends when the
    source does, with the bytes the writer sent. (POSIX copies read whole 1 MiB blocks.)"""
    source = TricklingFifo(tmp_path / "slow.fifo", first=MIB, more=MIB, every=0.3, for_s=3.0)
    dst = tmp_path / "slow.bin"
    config = TransferConfig(retries=0, timeout_base_s=60, stall_s=1.0)
    try:
        call = Call(lambda: copy_with_retries(PosixTransfer(), "in", str(source.path), dst, size=12 * MIB,
                                              config=config, record=lambda r: None))
        poll(lambda: source.sent >= 8 * MIB, 10, "the writer to trickle 3 s of bytes")
        source.close()
        assert call.done.wait(10), "a slow copy still running 10 s after its source ended"
    finally:
        source.close()
    assert call.error is None, call.error
    assert dst.stat().st_size == source.sent


@pytest.fixture()
def frozen_se(fresh_se):
    """The test's own XRootD SE, stopped with SIGSTOP (a hung storage node) until the test ends."""
    os.kill(fresh_se.pid, signal.SIGSTOP)
    try:
        yield fresh_se
    finally:
        os.kill(fresh_se.pid, signal.SIGCONT)


@pytest.mark.parametrize("tool", ["gfal2", "cli"])
@pytest.mark.parametrize("direction", ["in", "out"])
def test_a_copy_to_or_from_a_frozen_xrootd_se_is_given_up_at_stall_s(frozen_se, tmp_path, tool, direction):
    """The SE's process is stopped: the connection is accepted by the kernel and no byte ever
    moves. XrdCl would wait for XRD_REQUESTTIMEOUT and the size-based timeout is 300 s; the try
    ends as a stall after ~stall_s, the tool's process group killed, no local file left."""
    transfer = Gfal2Transfer() if tool == "gfal2" else CliTransfer()
    local = tmp_path / "local.bin"
    url = f"{frozen_se.root_url}/stall/f.bin"
    if direction == "out":
        local.write_bytes(os.urandom(4_000_000))
        src, dst, checksum = str(local), url, adler32(local.read_bytes())
    else:
        src, dst, checksum = url, tmp_path / "got.bin", "00000001"
    records = []
    config = TransferConfig(retries=0, timeout_base_s=300, stall_s=2.0)
    call = Call(lambda: copy_with_retries(transfer, direction, src, dst, size=4_000_000, config=config,
                                          record=records.append, adler32=checksum))
    error = call.error_within(30, f"a {tool} copy ({direction}) against a frozen SE")
    assert isinstance(error, TransferError) and error.kind == "timeout", error
    assert "stalled: no bytes moved for 2 s" in error.message, error
    assert 2.0 <= call.ended - call.began < 2.0 + 6.0, call.ended - call.began
    if direction == "in":
        assert not os.path.exists(dst)
    assert records[0]["error"].startswith("timeout: ") and "stalled" in records[0]["error"]
    if tool == "cli":   # the command's process group was killed: no xrdcp of ours is left
        poll(lambda: not [p for p in os.listdir("/proc") if p.isdigit() and _is_child_xrdcp(p)], 10,
             "the killed xrdcp to be gone")


def _is_child_xrdcp(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/comm") as fh:
            comm = fh.read().strip()
    except OSError:
        return False
    return comm == "xrdcp" and int(fields[1]) == os.getpid()   # ppid


def test_a_bulk_copy_s_bytes_are_counted_under_each_file_s_name_on_the_way(tmp_path):
    """Whole at its path, as <path>.part, or in a bulk xrdcp's hidden staging directory."""
    paths = [tmp_path / name for name in ("a", "b", "c", "d")]
    probe = DownloadsProbe([(p, 100) for p in paths], staging_prefixes=(".severus-bulk-",))
    assert probe() == 0
    paths[0].write_bytes(b"x" * 100)                      # whole
    (tmp_path / "b.part").write_bytes(b"x" * 40)          # on its way through .part
    (tmp_path / ".severus-bulk-1").mkdir()
    (tmp_path / ".severus-bulk-1" / "c").write_bytes(b"x" * 7)   # in the staging directory
    assert probe() == 147
    paths[0].unlink()                                     # counted once whole, never looked at again
    assert probe() == 147 and str(paths[0]) not in probe.pending


@pytest.mark.parametrize("tool", ["gfal2", "cli"])
def test_a_bulk_copy_from_a_frozen_xrootd_se_is_given_up_at_stall_s(frozen_se, tmp_path, tool):
    """As stage-in's bulk pass watches it: 10 files, no byte ever comes; given up after stall_s, not
    at the size-based timeout, and neither a file, a .part nor a staging directory stays. (gfal2's
    bulk over http: a gfal2 2.21 bulk copy over root:// cancelled against a hung server crashes the
    process once the server answers again, stall or not; stage-in's root:// bulk is xrdcp's.)"""
    transfer = Gfal2Transfer() if tool == "gfal2" else CliTransfer()
    base = frozen_se.http_url if tool == "gfal2" else frozen_se.root_url
    items = [(f"{base}/bulk/f{i}.bin", tmp_path / "in" / f"f{i}.bin", "00000001") for i in range(10)]
    began = time.monotonic()
    call = Call(lambda: _bulk_watched(transfer, items, 2.0))
    error = call.error_within(30, f"a {tool} bulk copy against a frozen SE")
    assert error.kind == "timeout" and "bulk copy of 10 files: stalled: no bytes moved for 2 s" in error.message, error
    assert 2.0 <= call.ended - began < 2.0 + 6.0, call.ended - began
    assert os.listdir(tmp_path / "in") == []


def _bulk_watched(transfer, items, stall_s):
    probe = transfer.bulk_progress_probe([(path, 1000) for _, path, _ in items])
    with watched(f"bulk copy of {len(items)} files", probe, 10_000, stall_s) as cancel:
        return transfer.copy_in_many(items, 300, parallel=4, sizes=[1000] * len(items), cancel=cancel)


def test_a_stage_in_whose_door_goes_silent_mid_bulk_ends_022_after_stall_s(area, catalog, make_site, make_ctx,
                                                                             tmp_path):
    """12 files through one `xrdcp --parallel 2` behind a door that goes silent after 200 kB: the
    bulk is given up after stall_s, each file tried alone stalls too, and the stage ends 022 naming
    the stall within seconds, not at the 300 s timeouts; nothing partial is left in the inputs."""
    proxy = TcpProxy(area.se.root_port, stall_after=200_000)
    try:
        site = make_site("SITE-A", urls=[proxy.url(area.path)], access="protocol", parallel=2, retries=0,
                         stall_s=2, timeout_base_s=300)
        files = {f"silent/f{i}.root": os.urandom(50_000 + i) for i in range(12)}
        for rel, data in files.items():
            area.put(rel, data)
            catalog.add(lfn(rel), site.name, site.se.url(site.se.urls[0], lfn(rel)), data=data)
        ctx = make_ctx(site, input={"mode": "LIST", "paths": [lfn(r) for r in sorted(files)]})
        began = time.monotonic()
        with pytest.raises(InputError) as failed:
            stage_inputs(ctx, catalog=catalog)
        took = time.monotonic() - began
    finally:
        proxy.close()
    assert failed.value.code == 22 and "stalled: no bytes moved for 2 s" in str(failed.value), failed.value
    assert proxy.stalled.is_set() and took < 2 * 2 + 10, took
    bulk = [t for t in ctx.transfers if "bulk" in t]
    assert bulk and all("bulk copy of" in t["error"] and "stalled" in t["error"] for t in bulk), bulk
    alone = [t for t in ctx.transfers if "bulk" not in t]
    assert alone and all(t["error"].startswith("timeout: ") and "stalled" in t["error"] for t in alone), alone
    # No partial file: no .part, no staging directory; a file verified before the stall keeps its name.
    left = {p.name: p.read_bytes() for p in (ctx.workdir / "inputs").rglob("*")}
    assert all(files.get(f"silent/{name}") == data for name, data in left.items()), sorted(left)


class Throttle:
    """Lets an SE's xrootd run a few ms of every `every_s` (SIGCONT/SIGSTOP): a crawl, until `freeze`
    leaves it stopped; `thaw` lets it run for good."""

    def __init__(self, pid, every_s=0.1):
        self.pid, self.every_s = pid, every_s
        self.frozen, self.thawed = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.frozen.is_set() and not self.thawed.is_set():
            os.kill(self.pid, signal.SIGCONT)
            self.thawed.wait(0.002)
            os.kill(self.pid, signal.SIGSTOP)
            self.thawed.wait(self.every_s)

    def freeze(self):
        self.frozen.set()
        self.thread.join()
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self):
        self.thawed.set()
        self.thread.join()
        os.kill(self.pid, signal.SIGCONT)


@pytest.mark.parametrize("tool", ["gfal2", "cli"])
def test_a_stage_out_that_stops_moving_ends_040_and_its_upload_is_removed(fresh_se, catalog, make_site,
                                                                          make_ctx, tool):
    """An upload under way when the SE freezes: the try ends ~stall_s later naming the stall (not
    at its 300 s timeout), stage-out ends 040, and once the SE answers again the existing failure
    path deletes the partial upload: nothing of it stays on the SE."""
    area = make_area(fresh_se)
    site = site_for(make_site, area, "root", retries=0, stall_s=2, timeout_base_s=300, tool=tool)
    ctx = make_ctx(site)
    (ctx.workdir / "big.root").write_bytes(os.urandom(64 * MIB))
    throttle = Throttle(fresh_se.pid)
    try:
        call = Call(lambda: stage_outputs(ctx, match_outputs(ctx), catalog=catalog))
        upload = area.path / "out" / "run1" / "big.root.1.severus-upload"
        poll(lambda: upload.exists() and upload.stat().st_size > 0, 60, "the upload to be under way")
        throttle.freeze()
        frozen_at = time.monotonic()
        poll(lambda: ctx.transfers, 30, "the stalled try's record")
        given_up_after = time.monotonic() - frozen_at
        throttle.thaw()   # the failure path's delete goes through now
        assert call.done.wait(60), "stage-out still running after the SE answered again"
    finally:
        throttle.thaw()
    assert isinstance(call.error, StageOutError) and call.error.code == 40, call.error
    assert "stalled: no bytes moved for 2 s" in str(call.error), call.error
    assert given_up_after < 2 + 6, given_up_after
    (record,) = ctx.transfers
    assert record["error"].startswith("timeout: ") and record["seconds"] < 300, record
    assert os.listdir(area.path / "out" / "run1") == []
