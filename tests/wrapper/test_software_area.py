"""A read-only shared software area (software.path, the CVMFS way), and the node cache's size limit.

Readability as root: root reads any directory whatever its mode, so the unreadable case drops
privileges for real: the check runs in a child process as `nobody` (uid 65534) against a
directory of mode 0700 owned by root. Missing paths and a path that is a file run as root.
"""
import dataclasses
import fcntl
import json
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from shared.errors import ExecutableMissing, SoftwareAreaUnavailable
from shared.jobdesc import parse_job_description
from wrapper.software import evict_cache, stage_software

from .conftest import job_dict, site_for
from .test_cli import ROOT, Node
from .test_report import event_server  # noqa: F401
from .test_software import publish_release, tarball

NOBODY = 65534
SHARED = {"lfn": None, "adler32": None, "workdir": "App", "exe": "App/bin/run"}
# The payload of the end-to-end run: what it was told, written as its output.
ENV_PAYLOAD = ('#!/bin/sh\nprintf \'{"omp": "%s", "athena": "%s", "cores": "%s", "pwd": "%s"}\' '
               '"$OMP_NUM_THREADS" "$ATHENA_CORE_NUMBER" "$SEVERUS_CORES" "$SEVERUS_SOFTWARE_ROOT" > env.root\n')


def make_area(root, exe=b"#!/bin/sh\necho run\n"):
    """A release tree as a site would publish it: App/bin/run, read-only."""
    (root / "App" / "bin").mkdir(parents=True)
    (root / "App" / "bin" / "run").write_bytes(exe)
    (root / "App" / "bin" / "run").chmod(0o555)
    for d in (root / "App" / "bin", root / "App", root):
        d.chmod(0o555)
    return root


# ---------------------------------------------------------------- the shared area

def test_the_job_description_takes_a_path_or_a_tarball_not_both():
    desc = parse_job_description(job_dict(software=dict(SHARED, path="/cvmfs/vo.org/App/V1")))
    assert desc.software.path == "/cvmfs/vo.org/App/V1" and desc.software.lfn is None
    with pytest.raises(Exception, match="exclude each other"):
        parse_job_description(job_dict(software={"path": "/cvmfs/vo.org/App/V1"}))   # lfn kept
    for bad in ("relative/area", "/cvmfs/../etc"):
        with pytest.raises(Exception, match="software.path"):
            parse_job_description(job_dict(software=dict(SHARED, path=bad)))
    assert parse_job_description(job_dict()).software.path is None   # the tarball way stays


def test_a_shared_area_is_used_in_place(tmp_path, make_site, make_ctx, area):
    shared = make_area(tmp_path / "cvmfs" / "App-V1")
    ctx = make_ctx(site_for(make_site, area, "root"), software=dict(SHARED, path=str(shared)))
    software = stage_software(ctx)
    assert software.root == shared and software.exe == shared / "App" / "bin" / "run"
    assert not (ctx.workdir / "software").exists()          # nothing fetched, nothing unpacked
    assert ctx.facts["software"] == {"path": str(shared), "cache": "shared area"}


@pytest.mark.parametrize("make", [lambda p: p / "not-mounted",
                                  lambda p: (p / "a-file").write_text("x") and p / "a-file"])
def test_a_missing_area_or_a_file_is_017(tmp_path, make_site, make_ctx, area, make):
    path = make(tmp_path)
    ctx = make_ctx(site_for(make_site, area, "root"), software=dict(SHARED, path=str(path)))
    with pytest.raises(SoftwareAreaUnavailable) as caught:
        stage_software(ctx)
    assert caught.value.code == 17 and caught.value.entry.blame == "site"
    assert caught.value.one_line().startswith("E017 software area missing or unreadable: ")
    assert str(path) in caught.value.one_line()


def test_an_area_without_the_exe_is_014(tmp_path, make_site, make_ctx, area):
    shared = make_area(tmp_path / "area")
    ctx = make_ctx(site_for(make_site, area, "root"), software=dict(SHARED, path=str(shared), exe="App/bin/nope"))
    with pytest.raises(ExecutableMissing, match="App/bin/nope"):
        stage_software(ctx)


CHECK_AS_NOBODY = """
import sys
from wrapper.software import check_shared_area
from shared.errors import SeverusError
try:
    check_shared_area(sys.argv[1])
except SeverusError as exc:
    print(exc.one_line())
    sys.exit(exc.code)
"""


@pytest.fixture()
def public_dir():
    """A directory everyone may traverse (pytest's tmp_path is root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="severus-area-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


def _check_as_nobody(path):
    return subprocess.run([sys.executable, "-I", "-c", CHECK_AS_NOBODY, str(path)], cwd=ROOT, user=NOBODY,
                          group=NOBODY, extra_groups=[], env={"PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)


def test_an_area_the_job_user_cannot_read_is_017(public_dir):
    assert os.getuid() == 0, "this test drops privileges to nobody: it runs as root"
    readable = make_area(public_dir / "readable")
    closed = make_area(public_dir / "closed")
    closed.chmod(0o700)                                    # root's alone
    assert stat.S_IMODE(closed.stat().st_mode) == 0o700 and closed.stat().st_uid == 0
    ok = _check_as_nobody(readable)
    assert ok.returncode == 0, ok.stdout + ok.stderr      # the same check passes where nobody may read
    refused = _check_as_nobody(closed)
    assert refused.returncode == 17, refused.stderr
    assert refused.stdout.startswith("E017 ") and "not readable by uid 65534" in refused.stdout


def test_a_job_runs_from_a_shared_area_and_its_payload_is_told_its_cores(tmp_path, event_server):
    """The real `severus run`: software.path, limits.cores = 3, the generic module; the payload writes
    what it was told into its output, which goes to the (direct-access) SE."""
    shared = make_area(tmp_path / "cvmfs" / "App-V1", exe=ENV_PAYLOAD.encode())
    node = Node(tmp_path, event_server, software=dict(SHARED, name="App", version="V1", path=str(shared)),
                payload={"module": "generic"}, limits={"max_wct_s": 60, "cores": 3},
                output={"lfn_dir": "lfn:/grid/superbvo.org/production/FastSim/out", "sites": ["TEST-SITE"],
                        "patterns": ["*.root"]})
    proc = subprocess.run(node.argv(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = event_server.finals()[0]["report"]
    assert report["facts"]["software"] == {"path": str(shared), "cache": "shared area"}
    told = json.loads((node.se / "production/FastSim/out/env.root.1").read_text())
    assert told == {"omp": "3", "athena": "3", "cores": "3", "pwd": str(shared)}


# ---------------------------------------------------------------- the node cache's size limit

@pytest.fixture()
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("SEVERUS_CACHE", str(path))
    return path / "software"


def _releases(area, catalog, site, n):
    """n releases of about 100 kB each (incompressible), published on the SE."""
    out = []
    for i in range(n):
        data = good_release_with(os.urandom(100_000))
        out.append(publish_release(area, catalog, site, data, name=f"sw/app{i}.tgz"))
    return out


def good_release_with(payload):
    return tarball([({"name": "App", "type": tarfile.DIRTYPE, "mode": 0o755}, None),
                    ({"name": "App/bin/run", "mode": 0o755}, b"#!/bin/sh\n"),
                    ({"name": "App/blob", "mode": 0o644}, payload)])


def _cached(cache):
    return sorted(p.name.split("-", 1)[1] for p in cache.iterdir()
                  if not p.name.startswith(".") and p.suffix != ".lock")


def _age(cache, name, seconds):
    path = next(cache.glob(f"*-{name}"))
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_the_cache_evicts_the_longest_unused_first_after_a_fill(area, catalog, make_site, make_ctx, cache):
    site = site_for(make_site, area, "root")
    site = dataclasses.replace(site, software_cache_max_gb=250_000 / 1e9)   # room for two releases
    a, b, c = _releases(area, catalog, site, 3)
    for sw in (a, b):
        stage_software(make_ctx(site, software=sw), catalog=catalog)
    assert _cached(cache) == ["app0.tgz", "app1.tgz"]
    _age(cache, "app0.tgz", 300)
    _age(cache, "app1.tgz", 200)
    hit = make_ctx(site, software=a)
    stage_software(hit, catalog=catalog)                 # a hit renews app0's time
    assert hit.facts["software"]["cache"] == "hit"
    filled = make_ctx(site, software=c)
    stage_software(filled, catalog=catalog)
    assert filled.facts["software"]["cache"] == "filled"
    assert filled.facts["software"]["evicted"] == [f"{b['adler32']}-app1.tgz"]
    assert _cached(cache) == ["app0.tgz", "app2.tgz"]
    assert sum(p.stat().st_size for p in cache.glob("*-app*.tgz")) <= 250_000


def test_an_entry_in_use_is_never_evicted(area, catalog, make_site, make_ctx, cache):
    site = site_for(make_site, area, "root")
    site = dataclasses.replace(site, software_cache_max_gb=150_000 / 1e9)   # room for one
    a, b = _releases(area, catalog, site, 2)
    stage_software(make_ctx(site, software=a), catalog=catalog)
    _age(cache, "app0.tgz", 300)
    with open(cache / f"{a['adler32']}.lock", "a") as reader:   # another job reading app0
        fcntl.flock(reader, fcntl.LOCK_SH)
        filled = make_ctx(site, software=b)
        stage_software(filled, catalog=catalog)
        assert filled.facts["software"]["evicted"] == []
        assert _cached(cache) == ["app0.tgz", "app1.tgz"]     # over the limit while app0 is read
    assert evict_cache(cache, 150_000) == [f"{a['adler32']}-app0.tgz"]   # the next eviction takes it
    assert _cached(cache) == ["app1.tgz"]


def test_a_cache_limit_of_zero_means_no_limit(area, catalog, make_site, make_ctx, cache):
    site = dataclasses.replace(site_for(make_site, area, "root"), software_cache_max_gb=0.0)
    for sw in _releases(area, catalog, site, 2):
        stage_software(make_ctx(site, software=sw), catalog=catalog)
    assert _cached(cache) == ["app0.tgz", "app1.tgz"]


def test_the_site_config_sets_the_cache_limit_and_refuses_bad_ones():
    from shared.errors import SiteConfigError
    from wrapper.siteconfig import parse_site_config
    base = {"name": "S", "se": {"lfn_prefix": "/grid/vo", "urls": ["root://se//d"]}}
    assert parse_site_config(base).software_cache_max_gb == 20.0
    assert parse_site_config(dict(base, scratch={"software_cache_max_gb": 2})).software_cache_max_gb == 2.0
    for bad in ({"software_cache_max_gb": -1}, {"software_cache_max_gb": True},
                {"keep_workdir_on_failure": "yes"}):
        with pytest.raises(SiteConfigError, match="scratch."):
            parse_site_config(dict(base, scratch=bad))
