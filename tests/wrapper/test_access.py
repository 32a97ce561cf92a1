"""Access detection: direct when the mount is usable, else the first URL that answers."""
import os
import time

import pytest

from wrapper.access import NoAccess, detect_access, site_access
from wrapper.transfer import CliTransfer, Gfal2Transfer, PosixTransfer
from .conftest import closed_port


def test_direct_when_the_mount_is_readable_and_writable(area, make_site, make_ctx):
    area.put("some/file.root", b"data")
    site = make_site("SITE-A", urls=[area.url("root")], local_path=str(area.path))
    ctx = make_ctx(site)
    for purpose in ("read", "write"):
        access = site_access(ctx, site, purpose)
        assert (access.mode, access.base) == ("direct", str(area.path))
        assert isinstance(access.transfer, PosixTransfer)
        assert ctx.facts["access"][f"SITE-A/{purpose}"]["mode"] == "direct"
    assert [n for n in ctx.notes if "direct" in n]
    assert os.listdir(area.path) == ["some"]   # the write probe cleaned up after itself


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
