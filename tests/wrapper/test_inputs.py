"""Input stage-in in every mode, over root://, http://, dav:// and direct access, and its faults."""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shared.errors import InputChecksumMismatch, InputError, InputNotFound, ScratchSpaceError
from tests.factories import job_description_dict
from wrapper.client import ServerUnreachable
from wrapper.inputs import stage_inputs
from wrapper.transfer import make_transfer
from .conftest import adler32, closed_port, lfn, site_for

SCHEMES = ["root", "http", "dav", "direct"]


def publish(area, catalog, site, files):
    """Put files on the SE and in the catalog, as a production manager would."""
    for rel, data in files.items():
        path = area.put(rel, data)
        catalog.add(lfn(rel), site.name, site.se.url(site.se.urls[0], lfn(rel)) if site.se.urls else str(path),
                    data=data)


def input_files(prefix, n=3, size=50_000):
    return {f"{prefix}/f{i}.root": os.urandom(size + i) for i in range(n)}


def stage_dir(make_ctx, site, catalog, rel):
    """Stage a DIR input; {path below inputs/: content}."""
    ctx = make_ctx(site, input={"mode": "DIR", "paths": [lfn(rel)]})
    paths = stage_inputs(ctx, catalog=catalog)
    return {p.relative_to(ctx.workdir / "inputs").as_posix(): p.read_bytes() for p in paths}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_file_mode(area, catalog, make_site, make_ctx, scheme):
    site = site_for(make_site, area, scheme)
    files = input_files("in", n=1)
    publish(area, catalog, site, files)
    ctx = make_ctx(site, input={"mode": "FILE", "paths": [lfn("in/f0.root")]})
    paths = stage_inputs(ctx, catalog=catalog)
    assert paths == [ctx.workdir / "inputs" / "f0.root"]
    assert paths[0].read_bytes() == files["in/f0.root"]
    assert ctx.facts["access"]["SITE-A/read"]["mode"] == ("direct" if scheme == "direct" else "protocol")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_list_mode(area, catalog, make_site, make_ctx, scheme):
    site = site_for(make_site, area, scheme)
    files = input_files("list", n=6)
    publish(area, catalog, site, files)
    ctx = make_ctx(site, input={"mode": "LIST", "paths": [lfn(r) for r in sorted(files)]})
    paths = stage_inputs(ctx, catalog=catalog)
    assert [p.read_bytes() for p in paths] == [files[r] for r in sorted(files)]
    assert not list((ctx.workdir / "inputs").glob("*.part"))
    assert len(ctx.transfers) == 6 and all(t["error"] is None for t in ctx.transfers)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_dir_mode_from_the_catalog(area, catalog, make_site, make_ctx, scheme):
    site = site_for(make_site, area, scheme)
    files = dict(input_files("dir", n=2), **input_files("dir/sub", n=2))
    publish(area, catalog, site, files)
    assert stage_dir(make_ctx, site, catalog, "dir") == {rel[len("dir/"):]: d for rel, d in files.items()}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_dir_mode_lists_the_se_when_the_catalog_has_nothing(area, catalog, make_site, make_ctx, scheme):
    site = site_for(make_site, area, scheme)
    files = dict(input_files("raw", n=2), **input_files("raw/deeper", n=1))
    for rel, data in files.items():
        area.put(rel, data)
    assert stage_dir(make_ctx, site, catalog, "raw") == {rel[len("raw/"):]: d for rel, d in files.items()}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_none_mode_moves_nothing(area, catalog, make_site, make_ctx, scheme):
    ctx = make_ctx(site_for(make_site, area, scheme))
    assert stage_inputs(ctx, catalog=catalog) == [] and ctx.transfers == []


def test_missing_input_is_020(area, catalog, make_site, make_ctx):
    site = site_for(make_site, area, "root")
    ctx = make_ctx(site, input={"mode": "FILE", "paths": [lfn("in/absent.root")]})
    with pytest.raises(InputNotFound) as exc:
        stage_inputs(ctx, catalog=catalog)
    assert exc.value.code == 20


def test_replica_lost_from_the_se_is_020(area, catalog, make_site, make_ctx):
    site = site_for(make_site, area, "root")
    catalog.add(lfn("in/lost.root"), site.name, area.url("root") + "/in/lost.root", data=b"gone")
    ctx = make_ctx(site, input={"mode": "FILE", "paths": [lfn("in/lost.root")]})
    with pytest.raises(InputNotFound):
        stage_inputs(ctx, catalog=catalog)


@pytest.mark.parametrize("scheme", ["root", "direct"])
def test_corrupted_input_is_021_and_leaves_no_file(area, catalog, make_site, make_ctx, scheme):
    site = site_for(make_site, area, scheme)
    publish(area, catalog, site, {"in/c.root": b"good data" * 1000})
    area.put("in/c.root", b"bad! data" * 1000)   # same size, other bytes
    ctx = make_ctx(site, input={"mode": "FILE", "paths": [lfn("in/c.root")]})
    with pytest.raises(InputChecksumMismatch) as exc:
        stage_inputs(ctx, catalog=catalog)
    assert exc.value.code == 21
    assert list((ctx.workdir / "inputs").iterdir()) == []
    assert len(ctx.transfers) == 2   # retried once (retries = 1) before giving up


def test_no_space_is_003(area, catalog, make_site, make_ctx):
    site = site_for(make_site, area, "root", min_free_gb=10 ** 5)   # 100 TB free: nowhere
    publish(area, catalog, site, {"in/s.root": b"s" * 10})
    ctx = make_ctx(site, input={"mode": "FILE", "paths": [lfn("in/s.root")]})
    with pytest.raises(ScratchSpaceError) as exc:
        stage_inputs(ctx, catalog=catalog)
    assert exc.value.code == 3 and ctx.transfers == []


@pytest.mark.parametrize("scheme", ["root", "http"])
def test_dead_endpoint_fails_within_seconds(catalog, make_site, make_ctx, scheme):
    url = f"{scheme}://127.0.0.1:{closed_port()}//data"
    site = make_site("SITE-A", urls=[url], access="protocol", retries=2)
    catalog.add(lfn("in/d.root"), "SITE-A", url + "/in/d.root", data=b"d")
    ctx = make_ctx(site, input={"mode": "FILE", "paths": [lfn("in/d.root")]})
    start = time.monotonic()
    with pytest.raises(InputError) as exc:
        stage_inputs(ctx, catalog=catalog)
    assert time.monotonic() - start < 10
    assert exc.value.code == 22
    assert ctx.facts["access"]["SITE-A/read"]["mode"] is None


def test_replica_at_another_site_is_used_when_the_local_one_is_missing(xrootd_se, area, catalog,
                                                                        make_site, make_ctx):
    from .conftest import make_area
    other_area = make_area(xrootd_se)
    local = site_for(make_site, area, "root", name="SITE-A")
    other = site_for(make_site, other_area, "http", name="SITE-B")
    data = os.urandom(10_000)
    other_area.put("in/r.root", data)
    catalog.add(lfn("in/r.root"), "SITE-A", area.url("root") + "/in/r.root", data=data)   # lost there
    catalog.add(lfn("in/r.root"), "SITE-B", other_area.url("http") + "/in/r.root", data=data)
    ctx = make_ctx(local, input={"mode": "FILE", "paths": [lfn("in/r.root")]})
    assert stage_inputs(ctx, catalog=catalog)[0].read_bytes() == data
    assert [t["source"].split("/in/")[0] for t in ctx.transfers] == [area.url("root"), other_area.url("http")]


def test_files_move_in_parallel(area, catalog, make_site, make_ctx):
    site = site_for(make_site, area, "root", parallel=3)
    files = input_files("par", n=3, size=1000)
    publish(area, catalog, site, files)
    barrier = threading.Barrier(3, timeout=20)

    def factory(url, tool="auto"):
        transfer = make_transfer(url, tool)
        real_copy_in = transfer.copy_in

        def copy_in(*args, **kwargs):
            barrier.wait()   # only passes when three copies are under way at once
            return real_copy_in(*args, **kwargs)

        transfer.copy_in = copy_in
        return transfer

    ctx = make_ctx(site, input={"mode": "LIST", "paths": [lfn(r) for r in sorted(files)]})
    assert len(stage_inputs(ctx, catalog=catalog, transfer_factory=factory)) == 3


@pytest.mark.parametrize("scheme,tool", [("root", "xrdcp"), ("http", "gfal-copy")])
def test_without_gfal2_the_command_line_moves_the_same_files(monkeypatch, area, catalog, make_site,
                                                             make_ctx, scheme, tool):
    monkeypatch.setitem(sys.modules, "gfal2", None)
    site = site_for(make_site, area, scheme)
    files = input_files("cli", n=2)
    publish(area, catalog, site, files)
    ctx = make_ctx(site, input={"mode": "LIST", "paths": [lfn(r) for r in sorted(files)]})
    paths = stage_inputs(ctx, catalog=catalog)
    assert [adler32(p.read_bytes()) for p in paths] == [adler32(files[r]) for r in sorted(files)]
    assert {t["tool"] for t in ctx.transfers} == {tool}


@pytest.mark.parametrize("scheme", ["root", "http", "direct"])
def test_many_files_go_in_bulk_and_each_is_verified(area, catalog, make_site, make_ctx, scheme):
    site = site_for(make_site, area, scheme, parallel=2)
    files = input_files("bulk", n=12, size=2000)
    publish(area, catalog, site, files)
    ctx = make_ctx(site, input={"mode": "LIST", "paths": [lfn(r) for r in sorted(files)]})
    paths = stage_inputs(ctx, catalog=catalog)
    assert [p.read_bytes() for p in paths] == [files[r] for r in sorted(files)]
    # root://: one `xrdcp --parallel 2` moves all 12; else 2 workers with a bulk of 6 each.
    expected = {"root": ({12}, {"xrdcp"}), "http": ({6}, {"gfal2"}), "direct": ({6}, {"posix"})}[scheme]
    assert len(ctx.transfers) == 12
    assert ({t["bulk"] for t in ctx.transfers}, {t["tool"] for t in ctx.transfers}) == expected
    assert not [p for p in (ctx.workdir / "inputs").iterdir() if p.name.startswith(".severus-bulk")]


def test_a_corrupted_file_in_a_bulk_is_retried_alone_then_021(area, catalog, make_site, make_ctx):
    site = site_for(make_site, area, "root", parallel=2)
    files = input_files("bulkbad", n=10, size=2000)
    publish(area, catalog, site, files)
    area.put("bulkbad/f3.root", bytes(len(files["bulkbad/f3.root"])))
    ctx = make_ctx(site, input={"mode": "LIST", "paths": [lfn(r) for r in sorted(files)]})
    with pytest.raises(InputChecksumMismatch):
        stage_inputs(ctx, catalog=catalog)
    bad = [t for t in ctx.transfers if t["source"].endswith("f3.root")]
    assert [("bulk" in t, "checksum" in t["error"]) for t in bad] == [(True, True), (False, True), (False, True)]
    assert not (ctx.workdir / "inputs" / "f3.root").exists()


def test_catalog_lookups_of_a_list_run_in_parallel(area, catalog, make_site, make_ctx):
    site = site_for(make_site, area, "root", parallel=3)
    files = input_files("lookups", n=3, size=1000)
    publish(area, catalog, site, files)
    barrier = threading.Barrier(3, timeout=20)
    real_replicas = catalog.replicas

    def replicas(lfn_):
        barrier.wait()   # only passes when three lookups are under way at once
        return real_replicas(lfn_)

    catalog.replicas = replicas
    ctx = make_ctx(site, input={"mode": "LIST", "paths": [lfn(r) for r in sorted(files)]})
    paths = stage_inputs(ctx, catalog=catalog)
    assert [p.read_bytes() for p in paths] == [files[r] for r in sorted(files)]


def test_a_catalog_failure_in_a_long_list_is_one_input_error(area, catalog, make_site, make_ctx):
    """A failed lookup among many (the workers share the LFNs) reaches the job as InputError."""
    site = site_for(make_site, area, "root", parallel=4)
    files = input_files("lookupfail", n=40, size=100)
    publish(area, catalog, site, files)
    real_replicas = catalog.replicas

    def replicas(lfn_):
        if lfn_.endswith("f7.root"):
            raise ServerUnreachable("the catalog went away")
        return real_replicas(lfn_)

    catalog.replicas = replicas
    ctx = make_ctx(site, input={"mode": "LIST", "paths": [lfn(r) for r in sorted(files)]})
    with pytest.raises(InputError, match="catalog: the catalog went away"):
        stage_inputs(ctx, catalog=catalog)



def test_a_list_of_two_files_of_one_name_is_refused_at_the_description_before_any_work(tmp_path):
    """LIST inputs land in inputs/ by file name: two of one name would overwrite each other (issue 18)."""
    clash = [lfn("a/same.root"), lfn("b/same.root")]
    job = tmp_path / "job.json"
    job.write_text(json.dumps(job_description_dict(input={"mode": "LIST", "paths": clash})))
    proc = subprocess.run([sys.executable, "-m", "wrapper", "run", str(job), "--workdir", str(tmp_path / "w")],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("E001") and clash[0] in line and clash[1] in line
    assert not (tmp_path / "w").exists()
