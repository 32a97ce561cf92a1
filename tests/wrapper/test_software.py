"""Software stage-in: fetch by LFN, verify, safe unpack, exe check, node cache."""
import io
import os
import tarfile
import threading

import pytest

from shared.errors import (ExecutableMissing, SoftwareChecksumMismatch, SoftwareNotFound,
                           SoftwareUnpackError, UnsafeArchive)
from wrapper.software import stage_software, unpack_safely
from .conftest import adler32, lfn, site_for

EXE = b"#!/bin/sh\necho run\n"


def tarball(members, mode="w:gz"):
    """A tarball of (TarInfo fields, content) pairs."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for fields, content in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if content is not None:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def good_release(exe_mode=0o755):
    return tarball([({"name": "App", "type": tarfile.DIRTYPE, "mode": 0o755}, None),
                    ({"name": "App/bin/run", "mode": exe_mode}, EXE),
                    ({"name": "App/share/data.txt", "mode": 0o644}, b"data\n" * 100),
                    ({"name": "App/bin/alias", "type": tarfile.SYMTYPE, "linkname": "run"}, None)])


def publish_release(area, catalog, site, data, name="sw/app.tgz"):
    area.put(name, data)
    catalog.add(lfn(name), site.name, area.url("root") + "/" + name, data=data)
    return {"lfn": lfn(name), "adler32": adler32(data)}


@pytest.mark.parametrize("scheme", ["root", "http", "direct"])
def test_fetch_verify_unpack_and_find_the_exe(area, catalog, make_site, make_ctx, scheme):
    site = site_for(make_site, area, scheme)
    sw = publish_release(area, catalog, site, good_release())
    ctx = make_ctx(site, software=sw)
    software = stage_software(ctx, catalog=catalog)
    assert software.exe == ctx.workdir / "software" / "App" / "bin" / "run"
    assert software.exe.read_bytes() == EXE and os.access(software.exe, os.X_OK)
    assert software.workdir == ctx.workdir / "software" / "App"
    assert (software.workdir / "bin" / "alias").resolve() == software.exe
    assert not (ctx.workdir / ".severus" / "app.tgz").exists()   # scratch freed after unpack


def test_unknown_lfn_is_010(area, catalog, make_site, make_ctx):
    ctx = make_ctx(site_for(make_site, area, "root"), software={"lfn": lfn("sw/none.tgz")})
    with pytest.raises(SoftwareNotFound) as exc:
        stage_software(ctx, catalog=catalog)
    assert exc.value.code == 10


def test_checksum_mismatch_is_011_and_nothing_is_unpacked(area, catalog, make_site, make_ctx):
    site = site_for(make_site, area, "root")
    sw = publish_release(area, catalog, site, good_release())
    ctx = make_ctx(site, software=dict(sw, adler32="0badc0de"))
    with pytest.raises(SoftwareChecksumMismatch) as exc:
        stage_software(ctx, catalog=catalog)
    assert exc.value.code == 11
    assert not (ctx.workdir / "software").exists()


@pytest.mark.parametrize("member", [
    {"name": "../evil.sh"},
    {"name": "App/../../evil.sh"},
    {"name": "/tmp/evil.sh"},
    {"name": "App/link", "type": tarfile.SYMTYPE, "linkname": "../../etc/passwd"},
    {"name": "App/abs", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"},
    {"name": "App/hard", "type": tarfile.LNKTYPE, "linkname": "../outside"},
    {"name": "App/dev", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3},
    {"name": "App/fifo", "type": tarfile.FIFOTYPE},
], ids=["dotdot", "dotdot-inside", "absolute", "symlink-out", "symlink-abs", "hardlink-out", "device", "fifo"])
def test_members_escaping_the_root_are_013(area, catalog, make_site, make_ctx, tmp_path, member):
    site = site_for(make_site, area, "root")
    content = b"x" if member.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else None
    sw = publish_release(area, catalog, site, tarball([(dict(member), content)]))
    ctx = make_ctx(site, software=sw)
    with pytest.raises(UnsafeArchive) as exc:
        stage_software(ctx, catalog=catalog)
    assert exc.value.code == 13
    assert not (tmp_path / "evil.sh").exists() and not (ctx.workdir / "evil.sh").exists()


def test_a_tarball_bomb_is_refused(tmp_path):
    bomb = tmp_path / "bomb.tgz"
    bomb.write_bytes(tarball([({"name": f"z{i}"}, bytes(1 << 20)) for i in range(8)]))
    assert bomb.stat().st_size < 100_000   # 8 MiB of zeros compress to almost nothing
    with pytest.raises(UnsafeArchive) as exc:
        unpack_safely(bomb, tmp_path / "root", max_bytes=4 << 20)
    assert "bomb" in str(exc.value)
    assert not (tmp_path / "root").exists()
    unpack_safely(bomb, tmp_path / "root", max_bytes=16 << 20)   # under the cap it unpacks
    assert (tmp_path / "root" / "z7").stat().st_size == 1 << 20


@pytest.mark.parametrize("keep", [0.5, -8], ids=["half", "trailer-cut"])
def test_a_damaged_tarball_is_012(area, catalog, make_site, make_ctx, keep):
    site = site_for(make_site, area, "root")
    data = good_release()
    sw = publish_release(area, catalog, site, data[:int(len(data) * keep) if keep > 0 else keep])
    with pytest.raises(SoftwareUnpackError) as exc:
        stage_software(make_ctx(site, software=sw), catalog=catalog)
    assert exc.value.code == 12


@pytest.mark.parametrize("change", [{"exe": "App/bin/nothere"}, {"workdir": "Nope"}, {"exe_mode": 0o644}])
def test_missing_or_not_executable_exe_is_014(area, catalog, make_site, make_ctx, change):
    site = site_for(make_site, area, "root")
    sw = publish_release(area, catalog, site, good_release(exe_mode=change.pop("exe_mode", 0o755)))
    with pytest.raises(ExecutableMissing) as exc:
        stage_software(make_ctx(site, software=dict(sw, **change)), catalog=catalog)
    assert exc.value.code == 14


def test_node_cache_serves_the_second_job_without_the_se(fresh_se, catalog, make_site, make_ctx,
                                                         monkeypatch, tmp_path):
    from .conftest import make_area
    area = make_area(fresh_se)
    monkeypatch.setenv("SEVERUS_CACHE", str(tmp_path / "cache"))
    site = site_for(make_site, area, "root")
    sw = publish_release(area, catalog, site, good_release())
    first = make_ctx(site, software=sw)
    stage_software(first, catalog=catalog)
    assert first.facts["software"]["cache"] == "filled"
    fresh_se.stop()   # the second job must not need the SE at all
    second = make_ctx(site, software=sw)
    assert stage_software(second, catalog=catalog).exe.read_bytes() == EXE
    assert second.facts["software"]["cache"] == "hit" and second.transfers == []


def test_two_jobs_filling_the_cache_at_once_download_once(area, catalog, make_site, make_ctx,
                                                           monkeypatch, tmp_path):
    monkeypatch.setenv("SEVERUS_CACHE", str(tmp_path / "cache"))
    site = site_for(make_site, area, "root")
    sw = publish_release(area, catalog, site, good_release())
    jobs = [make_ctx(site, software=sw) for _ in range(2)]
    start = threading.Barrier(2, timeout=20)
    results = {}

    def run(ctx):
        start.wait()
        results[id(ctx)] = stage_software(ctx, catalog=catalog)

    threads = [threading.Thread(target=run, args=(ctx,)) for ctx in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2
    assert sorted(ctx.facts["software"]["cache"] for ctx in jobs) == ["filled", "hit"]
    assert sum(len(ctx.transfers) for ctx in jobs) == 1
    cached = list((tmp_path / "cache" / "software").iterdir())
    assert sorted(p.name for p in cached if not p.name.endswith(".lock")) == [f"{sw['adler32']}-app.tgz"]
