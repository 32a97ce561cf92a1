"""Access detection: direct when the mount is real and usable, else the first URL that answers."""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from shared.errors import SiteConfigError
from wrapper import access as access_module
from wrapper.access import NoAccess, detect_access, site_access
from wrapper.siteconfig import parse_site_config
from wrapper.transfer import CliTransfer, Gfal2Transfer, PosixTransfer
from .conftest import PROBE_FILE, closed_port, mark_se

NOT_MOUNTED = "is not on a mounted file system (its mount point is /)"


def _mount(*args):
    """Run mount(8) as root; skip the test where the sandbox does not allow mounting."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting needs root and mount(8)")
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} is not permitted here: {done.stderr.strip()}")


@pytest.fixture()
def mounts():
    """Mount with mount(8); every mount point is unmounted in teardown, the last first."""
    points = []

    def mount(*args):
        _mount(*args)
        points.append(args[-1])
        return Path(args[-1])

    yield mount
    for point in reversed(points):
        subprocess.run(["umount", str(point)], capture_output=True, timeout=30)


def test_direct_when_the_mount_is_readable_and_writable(area, make_site, make_ctx):
    area.put("some/file.root", b"data")
    mark_se(area.path)
    site = make_site("SITE-A", urls=[area.url("root")], local_path=str(area.path), probe_file=PROBE_FILE)
    ctx = make_ctx(site)
    for purpose in ("read", "write"):
        access = site_access(ctx, site, purpose)
        assert (access.mode, access.base) == ("direct", str(area.path))
        assert isinstance(access.transfer, PosixTransfer)
        assert ctx.facts["access"][f"SITE-A/{purpose}"]["mode"] == "direct"
    assert [n for n in ctx.notes if "direct" in n]
    assert sorted(os.listdir(area.path)) == [PROBE_FILE, "some"]   # the write probe cleaned up after itself


def test_an_empty_mount_point_on_the_root_file_system_is_protocol_and_says_why(
        area, make_site, make_ctx, on_root_fs):
    """GPFS or the automounter down on one node: the URL is used, and the reason is logged and reported."""
    site = make_site("SITE-A", urls=[area.url("root")], local_path=str(on_root_fs))
    ctx = make_ctx(site)
    for purpose in ("read", "write"):
        access = site_access(ctx, site, purpose)
        assert (access.mode, access.base) == ("protocol", area.url("root"))
        assert f"{on_root_fs} {NOT_MOUNTED}" in access.reason
        fact = ctx.facts["access"][f"SITE-A/{purpose}"]
        assert fact["mode"] == "protocol" and f"{on_root_fs} {NOT_MOUNTED}" in fact["reason"]
        assert any(f"{purpose}: protocol" in n and NOT_MOUNTED in n for n in ctx.notes)
    assert os.listdir(on_root_fs) == []   # nothing was written to the node's own disk


def test_forced_direct_on_an_empty_mount_point_is_no_access(area, make_site, make_ctx, on_root_fs):
    site = make_site("SITE-A", urls=[area.url("root")], local_path=str(on_root_fs), access="direct")
    ctx = make_ctx(site)
    for purpose in ("read", "write"):
        with pytest.raises(NoAccess) as exc:
            site_access(ctx, site, purpose)
        assert f"access is direct but {on_root_fs} {NOT_MOUNTED}" in exc.value.message
        assert ctx.facts["access"][f"SITE-A/{purpose}"] == {"mode": None, "reason": exc.value.message}
    assert os.listdir(on_root_fs) == []


def test_the_named_probe_file_makes_a_root_file_system_directory_direct(area, make_site, on_root_fs):
    site = make_site("SITE-A", urls=[area.url("root")], local_path=str(on_root_fs), probe_file=PROBE_FILE)
    missing = detect_access(site, "read")
    assert missing.mode == "protocol"
    assert f"{on_root_fs} does not hold the probe file {PROBE_FILE} (its mount point is /)" in missing.reason
    mark_se(on_root_fs)
    for purpose in ("read", "write"):
        access = detect_access(site, purpose)
        assert (access.mode, access.base) == ("direct", str(on_root_fs))
        assert f"probe file {PROBE_FILE} found" in access.reason
    forced = make_site("SITE-B", local_path=str(on_root_fs), access="direct", probe_file=PROBE_FILE)
    assert detect_access(forced, "write").mode == "direct"
    assert os.listdir(on_root_fs) == [PROBE_FILE]


def test_an_unreadable_probe_file_is_not_direct(area, make_site, on_root_fs):
    (on_root_fs / PROBE_FILE).mkdir()   # there, but not a file anyone can read
    site = make_site("SITE-A", urls=[area.url("root")], local_path=str(on_root_fs), access="direct",
                     probe_file=PROBE_FILE)
    with pytest.raises(NoAccess) as exc:
        detect_access(site, "read")
    assert f"probe file {PROBE_FILE} is unreadable" in exc.value.message


def test_a_real_mount_is_direct_without_a_probe_file_and_protocol_once_unmounted(
        area, make_site, make_ctx, tmp_path, mounts):
    """tmpfs on the SE mount point (its name has a space: mountinfo escapes it); then the node loses it."""
    point = tmp_path / "gpfs superb"
    point.mkdir()
    mounts("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(point))
    vo = point / "superbvo.org"
    vo.mkdir()
    (vo / "file.root").write_bytes(b"data")
    for access_mode in ("auto", "direct"):
        site = make_site("SITE-A", urls=[area.url("root")], local_path=str(vo), access=access_mode)
        ctx = make_ctx(site)
        for purpose in ("read", "write"):
            access = site_access(ctx, site, purpose)
            assert (access.mode, access.base) == ("direct", str(vo))
            assert f"{vo} is mounted (tmpfs at {point}) and {purpose}able" == access.reason
    # A site that names a probe file wants it, mount or not: the mount holding local_path may be
    # a parent file system (/storage) while the SE's own (/storage/gpfs) is missing.
    named = make_site("SITE-B", urls=[area.url("root")], local_path=str(vo), probe_file=PROBE_FILE)
    access = detect_access(named, "read")
    assert access.mode == "protocol"
    assert f"{vo} does not hold the probe file {PROBE_FILE} (tmpfs at {point})" in access.reason
    mark_se(vo)
    assert detect_access(named, "read").mode == "direct"

    subprocess.run(["umount", str(point)], check=True, timeout=30)
    vo.mkdir()   # what a node without the file system shows: the empty directories
    site = make_site("SITE-A", urls=[area.url("root")], local_path=str(vo))
    access = detect_access(site, "read")
    assert access.mode == "protocol" and f"{vo} {NOT_MOUNTED}" in access.reason


def test_a_bind_mount_of_the_root_file_system_is_not_a_real_mount(area, make_site, mounts, on_root_fs):
    source = on_root_fs / "disk"
    source.mkdir()
    point = on_root_fs / "storage"
    point.mkdir()
    mounts("--bind", str(source), str(point))
    # os.path.ismount cannot see it (same device as its parent); the kernel's mount table can.
    assert not os.path.ismount(point) and f" {point} " in Path("/proc/self/mountinfo").read_text()
    site = make_site("SITE-A", urls=[area.url("root")], local_path=str(point))
    access = detect_access(site, "read")
    assert access.mode == "protocol"
    assert f"{point} is not on a mounted file system ({point} is a bind mount of the root file system)" \
        in access.reason


def test_an_automount_trigger_with_nothing_mounted_is_not_a_real_mount(area, make_site, on_root_fs, tmp_path,
                                                                       monkeypatch):
    """autofs is down or cannot mount: local_path is left on the automounter's own placeholder file system."""
    storage = on_root_fs / "storage"
    (storage / "superbvo.org").mkdir(parents=True)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        f"50 27 0:52 / {storage} rw,relatime shared:30 - autofs /etc/auto.storage rw,fd=7,indirect\n")
    monkeypatch.setattr(access_module, "MOUNTINFO", str(mountinfo))
    site = make_site("SITE-A", urls=[area.url("root")], local_path=str(storage / "superbvo.org"))
    access = detect_access(site, "read")
    assert access.mode == "protocol"
    assert (f"{storage / 'superbvo.org'} is not on a mounted file system (its mount point {storage} is an "
            "automount trigger with nothing mounted)") in access.reason


@pytest.mark.parametrize("probe_file, message", [
    ("/etc/passwd", "'se.probe_file' must be a path relative to 'se.local_path'"),
    ("../outside", "'se.probe_file' must be a path relative to 'se.local_path'"),
    ("", "'se.probe_file' must be a path relative to 'se.local_path'"),
    (3, "'se.probe_file' must be a path relative to 'se.local_path'"),
])
def test_probe_file_must_be_a_relative_path(probe_file, message):
    data = {"name": "S", "se": {"lfn_prefix": "/grid/vo", "local_path": "/storage/vo", "probe_file": probe_file}}
    with pytest.raises(SiteConfigError) as exc:
        parse_site_config(data)
    assert message in str(exc.value)


def test_probe_file_needs_local_path():
    data = {"name": "S", "se": {"lfn_prefix": "/grid/vo", "urls": ["root://h//p"], "probe_file": ".severus-se"}}
    with pytest.raises(SiteConfigError) as exc:
        parse_site_config(data)
    assert "'se.probe_file' is set but 'se.local_path' is not" in str(exc.value)
    data["se"]["local_path"] = "/storage/vo"
    assert parse_site_config(data).se.probe_file == ".severus-se"


def test_missing_mount_falls_back_to_the_first_url_that_answers(area, make_site):
    dead = f"root://127.0.0.1:{closed_port()}//dead"
    site = make_site("SITE-A", urls=[dead, area.url("http"), area.url("root")],
                     local_path="/nonexistent/mount")
    start = time.monotonic()
    access = detect_access(site, "read")
    assert time.monotonic() - start < 10
    assert (access.mode, access.base) == ("protocol", area.url("http"))
    assert isinstance(access.transfer, Gfal2Transfer)
    assert "/nonexistent/mount" in access.reason and "answered" in access.reason


def test_a_mount_point_that_is_not_a_directory_is_not_direct(area, make_site, tmp_path):
    (tmp_path / "stale").write_text("an unmounted, overwritten mount point")
    site = make_site("SITE-A", urls=[area.url("root")], local_path=str(tmp_path / "stale"))
    for purpose in ("read", "write"):
        access = detect_access(site, purpose)
        assert access.mode == "protocol" and "not a mounted directory" in access.reason


def test_forced_protocol_ignores_a_usable_mount(area, make_site):
    site = make_site("SITE-A", urls=[area.url("root")], local_path=str(area.path), access="protocol",
                     tool="cli")
    access = detect_access(site, "write")
    assert access.mode == "protocol" and isinstance(access.transfer, CliTransfer)


def test_forced_direct_without_the_mount_fails(area, make_site, tmp_path):
    site = make_site("SITE-A", urls=[area.url("root")], local_path=str(tmp_path / "absent"), access="direct")
    with pytest.raises(NoAccess) as exc:
        detect_access(site, "read")
    assert "direct" in str(exc.value)


def test_nothing_answers_fails_within_seconds(make_site, make_ctx):
    site = make_site("SITE-A", urls=[f"root://127.0.0.1:{closed_port()}//a",
                                     f"http://127.0.0.1:{closed_port()}/b"], access="protocol")
    ctx = make_ctx(site)
    start = time.monotonic()
    with pytest.raises(NoAccess):
        site_access(ctx, site, "read")
    assert time.monotonic() - start < 10
    assert ctx.facts["access"]["SITE-A/read"]["mode"] is None
