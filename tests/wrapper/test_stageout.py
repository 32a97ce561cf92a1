"""Stage-out: verified upload, fallback sites, all or nothing, registration where files went."""
import os
import sys

import pytest

from shared.errors import AttemptSuperseded, NoOutputsMatched, OutputChecksumMismatch, StageOutError
from shared.outputs import UPLOAD_SUFFIX
from wrapper.stageout import match_outputs, output_sites, register_outputs, stage_outputs
from wrapper.transfer import make_transfer
from .conftest import adler32, lfn, make_area, site_for

OUT_DIR = "out/run1"


def write_outputs(ctx, names=("a.root", "b.root")):
    outputs = {}
    for name in names:
        data = os.urandom(100_000)
        (ctx.workdir / name).write_bytes(data)
        outputs[name] = data
    return outputs


@pytest.mark.parametrize("scheme", ["root", "http", "dav", "direct"])
def test_outputs_are_verified_renamed_and_registered(area, catalog, make_site, make_ctx, scheme):
    site = site_for(make_site, area, scheme)
    ctx = make_ctx(site)
    outputs = write_outputs(ctx)
    (ctx.workdir / "notes.txt").write_text("not an output")
    stored = stage_outputs(ctx, match_outputs(ctx), catalog=catalog)
    register_outputs(ctx, stored, catalog=catalog)
    assert catalog.fences == 1   # asked once, before the first write
    for s in stored:
        name = s.lfn.rsplit("/", 1)[1]
        # The LFN stays the name; the file on the SE carries the attempt (shared/outputs.py).
        assert (area.path / OUT_DIR / f"{name}.1").read_bytes() == outputs[name]
        entry = catalog.replicas(lfn(f"{OUT_DIR}/{name}"))
        assert (entry.size, entry.adler32) == (len(outputs[name]), adler32(outputs[name]))
        assert entry.replicas[0].site == "SITE-A"
        # Direct writes are registered under the site's protocol URL, usable from other nodes.
        assert entry.replicas[0].surl == f"{area.url('root' if scheme == 'direct' else scheme)}/{OUT_DIR}/{name}.1"
    assert sorted(os.listdir(area.path / OUT_DIR)) == ["a.root.1", "b.root.1"]   # no temporary names left
    assert ctx.writes.take() == ([], [])   # registered: no longer the attempt's to delete


def test_no_matching_output_is_042(area, catalog, make_site, make_ctx):
    ctx = make_ctx(site_for(make_site, area, "root"))
    (ctx.workdir / "out.txt").write_text("x")
    with pytest.raises(NoOutputsMatched) as exc:
        match_outputs(ctx)
    assert exc.value.code == 42
    with pytest.raises(NoOutputsMatched):
        stage_outputs(ctx, [], catalog=catalog)


def test_target_order_local_first_then_fallbacks(area, make_site, make_ctx):
    site = site_for(make_site, area, "root", name="SITE-A", fallback=["SITE-C", "SITE-B"])
    assert output_sites(make_ctx(site, output={"sites": ["SITE-B", "SITE-A"]})) == ["SITE-A", "SITE-B", "SITE-C"]
    assert output_sites(make_ctx(site)) == ["SITE-A", "SITE-C", "SITE-B"]


def test_stopped_se_sends_outputs_to_the_fallback_site_and_says_so(fresh_se, area, catalog, make_site,
                                                                   make_ctx):
    local_area = make_area(fresh_se)
    site = site_for(make_site, local_area, "root", name="SITE-A", fallback=["SITE-B"])
    site_for(make_site, area, "root", name="SITE-B")
    fresh_se.stop()
    ctx = make_ctx(site)
    outputs = write_outputs(ctx, ["a.root"])
    stored = stage_outputs(ctx, match_outputs(ctx), catalog=catalog)
    register_outputs(ctx, stored, catalog=catalog)
    assert [s.site for s in stored] == ["SITE-B"]
    assert (area.path / OUT_DIR / "a.root.1").read_bytes() == outputs["a.root"]
    assert catalog.replicas(lfn(f"{OUT_DIR}/a.root")).replicas[0].site == "SITE-B"
    assert ctx.facts["access"]["SITE-A/write"]["mode"] is None
    assert ctx.facts["outputs"][0]["site"] == "SITE-B"
    assert any("fallback site SITE-B" in n for n in ctx.notes)


def corrupting_factory(area, names):
    """Transfers whose uploads land with overwritten bytes on the SE (a faulty SE or network)."""
    def factory(url, tool="auto"):
        transfer = make_transfer(url, tool)
        real_copy = transfer._copy

        def copy(src, dst, timeout, adler32, **kw):
            real_copy(src, dst, timeout, adler32, **kw)
            if dst.endswith(UPLOAD_SUFFIX) and any(f"/{n}." in dst for n in names):
                on_disk = area.path / dst.split(area.name + "/", 1)[1]
                data = bytearray(on_disk.read_bytes())
                data[10:20] = bytes(10)
                on_disk.write_bytes(bytes(data))

        transfer._copy = copy
        return transfer
    return factory


@pytest.mark.parametrize("scheme", ["root", "direct"])
def test_se_file_corrupted_after_upload_is_detected_and_not_registered(area, catalog, make_site,
                                                                      make_ctx, scheme):
    site = site_for(make_site, area, scheme)
    ctx = make_ctx(site)
    write_outputs(ctx, ["a.root"])
    with pytest.raises(OutputChecksumMismatch) as exc:
        stored = stage_outputs(ctx, match_outputs(ctx), transfer_factory=corrupting_factory(area, ["a.root"]),
                               catalog=catalog)
        register_outputs(ctx, stored, catalog=catalog)
    assert exc.value.code == 41
    assert catalog.files == {}
    assert os.listdir(area.path / OUT_DIR) == []   # neither the final nor the temporary name
    assert len(ctx.transfers) == 2 and all("the SE computes adler32" in t["error"] for t in ctx.transfers)


def test_all_or_nothing_removes_what_was_stored(area, catalog, make_site, make_ctx):
    site = site_for(make_site, area, "root", parallel=1)
    ctx = make_ctx(site)
    write_outputs(ctx, ["a.root", "b.root"])
    with pytest.raises(StageOutError) as exc:
        stage_outputs(ctx, match_outputs(ctx), transfer_factory=corrupting_factory(area, ["b.root"]),
                      catalog=catalog)
    assert 40 <= exc.value.code <= 49
    assert os.listdir(area.path / OUT_DIR) == []   # a.root was stored, then removed
    assert any(t["destination"].endswith("a.root.1" + UPLOAD_SUFFIX) and t["error"] is None
               for t in ctx.transfers)


def test_every_se_dead_is_040(fresh_se, catalog, make_site, make_ctx):
    site = site_for(make_site, make_area(fresh_se), "root")
    fresh_se.stop()
    ctx = make_ctx(site)
    write_outputs(ctx, ["a.root"])
    with pytest.raises(StageOutError) as exc:
        stage_outputs(ctx, match_outputs(ctx), catalog=catalog)
    assert exc.value.code == 40


def test_a_second_attempt_never_touches_the_first_attempts_file(area, catalog, make_site, make_ctx):
    site = site_for(make_site, area, "root")
    area.put(f"{OUT_DIR}/a.root.1", b"written and registered by attempt 1")
    ctx = make_ctx(site, job={"attempt": 2})
    outputs = write_outputs(ctx, ["a.root"])
    stored = stage_outputs(ctx, match_outputs(ctx), catalog=catalog)
    register_outputs(ctx, stored, catalog=catalog)
    register_outputs(ctx, stored, catalog=catalog)   # a retry after a lost reply: no-op
    assert (area.path / OUT_DIR / "a.root.1").read_bytes() == b"written and registered by attempt 1"
    assert (area.path / OUT_DIR / "a.root.2").read_bytes() == outputs["a.root"]
    replicas = catalog.replicas(lfn(f"{OUT_DIR}/a.root")).replicas
    assert len(replicas) == 1 and replicas[0].surl.endswith("/a.root.2")


def test_a_superseded_attempt_writes_nothing(area, catalog, make_site, make_ctx):
    ctx = make_ctx(site_for(make_site, area, "root"))
    write_outputs(ctx, ["a.root"])
    catalog.fenced = AttemptSuperseded("attempt 1 of job 7 was superseded by attempt 2")
    with pytest.raises(AttemptSuperseded):
        stage_outputs(ctx, match_outputs(ctx), catalog=catalog)
    assert not (area.path / OUT_DIR).exists() and ctx.transfers == []


def test_without_gfal2_the_command_line_stores_the_same_files(monkeypatch, area, catalog, make_site,
                                                             make_ctx):
    monkeypatch.setitem(sys.modules, "gfal2", None)
    ctx = make_ctx(site_for(make_site, area, "root"))
    outputs = write_outputs(ctx)
    stored = stage_outputs(ctx, match_outputs(ctx), catalog=catalog)
    assert {s.adler32 for s in stored} == {adler32(d) for d in outputs.values()}
    assert {t["tool"] for t in ctx.transfers} == {"xrdcp"}
    assert sorted(os.listdir(area.path / OUT_DIR)) == ["a.root.1", "b.root.1"]
