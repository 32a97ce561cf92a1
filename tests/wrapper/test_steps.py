"""A job of steps (issue 15, seed 001): the steps run in order in the work dir, each reported as its
own RUNNING-04 event and report entry, the first failure ends the job with its code, the `dq` module's
failure is 035, and a bad step is 001 before any transfer.

The runner tests use real payload processes (the toy release, with a data-quality check added) and
the stdlib events server of test_report, with local stand-ins for the transfers (test_runner); the
last ones run `severus run` itself against a real XRootD SE, and with `sbk serve`.
"""
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from pathlib import Path

import pytest

import wrapper.runner as runner
from server.toy_release import ToyRelease, WORKDIR, build_toy_release
from shared.errors import JobDescriptionError
from shared.events import MAX_REPORT_BYTES, parse_events
from shared.jobdesc import parse_job_description
from tests.processes import children_matching, pids_gone
from wrapper.modules import PayloadJob, find_module, plan_steps
from wrapper.report import JOURNAL_NAME, read_journal
from wrapper.runner import combine_metrics, run_job

from ..test_end_to_end import live, prepare_job, run_wrapper, write_site_config  # noqa: F401  (fixture)
from .conftest import lfn, site_for
from .test_report import event_server, make_desc, poll  # noqa: F401  (fixture)
from .test_runner import PARAMS, run, start_job, stages  # noqa: F401  (fixture)

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]
OUTPUT = "10000003.root"     # what the toy simulation writes for make_desc's run number

# A data-quality check as a release would ship it: every file named holds at least --min-events
# events (the toy writes each event line four times).
CHECK_SOURCE = r'''#!/usr/bin/env python3
import argparse, sys
p = argparse.ArgumentParser()
p.add_argument("files", nargs="+")
p.add_argument("--min-events", type=int, default=1)
args = p.parse_args()
bad = 0
for name in args.files:
    with open(name, "rb") as fh:
        header = fh.readline()
        events = len({line for line in fh if line.startswith(b"event ")})
    ok = header.startswith(b"TOYROOT") and events >= args.min_events
    print("%s: %d events %s" % (name, events, "ok" if ok else "BAD"), flush=True)
    bad += not ok
sys.exit(3 if bad else 0)
'''
CHECK = "dq/check_events"     # in the release, relative to its workdir


def release_with_check(directory):
    """The toy release with CHECK added under its workdir."""
    toy = build_toy_release(directory, name="toy-plain.tjz")
    buf = io.BytesIO()
    with tarfile.open(toy.path) as src, tarfile.open(fileobj=buf, mode="w:gz") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        folder = tarfile.TarInfo(f"{WORKDIR}/dq")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        dst.addfile(folder)
        data = CHECK_SOURCE.encode()
        script = tarfile.TarInfo(f"{WORKDIR}/{CHECK}")
        script.size, script.mode = len(data), 0o755
        dst.addfile(script, io.BytesIO(data))
    blob = buf.getvalue()
    path = Path(directory) / "V0.2.5_dq.tjz"
    path.write_bytes(blob)
    return ToyRelease(path=path, adler32=f"{zlib.adler32(blob) & 0xffffffff:08x}", size=len(blob))


@pytest.fixture()
def checked(stages, tmp_path):
    """The local stages, staging the release that carries the check."""
    stages.release = release_with_check(tmp_path)
    return stages


def sim(name="sim", **over):
    return dict({"name": name, "module": "fastsim"}, **over)


def dq(name="dq", min_events=50, **over):
    return dict({"name": name, "module": "dq", "args": [CHECK, OUTPUT, "--min-events", str(min_events)]}, **over)


def steps_payload(*steps):
    return {"parameters": PARAMS, "env": {"TOY_LEVEL": "job"}, "steps": list(steps)}


def events_of(server):
    return [e for _, e in sorted(server.events.items())]


def payload_events(server):
    """(kind, message) of the RUNNING-04 step and info events, in order."""
    return [(e["kind"], e["message"]) for e in events_of(server)
            if e.get("step") == "RUNNING-04" and e["kind"] in ("step", "info")]


# ---------------------------------------------------------------------- the modules

def payload_job(tmp_path, payload, index=1):
    desc = parse_job_description(make_desc("http://127.0.0.1:1", payload=payload))
    step = desc.payload.steps_to_run()[index - 1]
    return PayloadJob(desc=desc, exe=tmp_path / "bin/exe", software_root=tmp_path,
                      software_workdir=tmp_path / "FastSim", cwd=tmp_path, step=step, index=index)


def test_dq_runs_its_args_from_the_release_workdir_or_an_absolute_path(tmp_path):
    job = payload_job(tmp_path, steps_payload(sim(), dq()), index=2)
    spec = find_module("dq").build(job)
    assert spec.argv == (str(tmp_path / "FastSim" / CHECK), OUTPUT, "--min-events", "50")
    job = payload_job(tmp_path, steps_payload(dq(args=["/usr/bin/test", "-s", OUTPUT])))
    assert find_module("dq").build(job).argv == ("/usr/bin/test", "-s", OUTPUT)


def test_a_step_sees_the_payload_settings_under_its_own_and_its_name(tmp_path):
    payload = steps_payload(sim(parameters={"Geometry": "DG_5"}, env={"TOY_LEVEL": "step", "TOY_EXTRA": "1"}),
                            dq())
    spec = find_module("fastsim").build(payload_job(tmp_path, payload))
    argv = list(spec.argv)
    assert argv[argv.index("--geometry") + 1] == "DG_5" and argv[argv.index("--analysis") + 1] == PARAMS["Analysis"]
    assert (spec.env["TOY_LEVEL"], spec.env["TOY_EXTRA"]) == ("step", "1")
    assert (spec.env["SEVERUS_STEP"], spec.env["SEVERUS_STEP_INDEX"]) == ("sim", "1")
    assert spec.env["SEVERUS_PARAM_GEOMETRY"] == "DG_5"
    dq_spec = find_module("dq").build(payload_job(tmp_path, payload, index=2))
    assert (dq_spec.env["TOY_LEVEL"], dq_spec.env["SEVERUS_STEP"]) == ("job", "dq")
    assert "TOY_EXTRA" not in dq_spec.env


@pytest.mark.parametrize("payload, words", [
    (steps_payload(sim(), dict(dq(), module="nosuch")),
     "'payload.steps[1].module': unknown payload module 'nosuch' (known: dq, fastsim, fullsim, generic"),
    (dict(steps_payload(sim(), dq()), parameters={"Analysis": "A"}),
     "'payload.steps[0]' (sim): payload module fastsim needs parameter(s) Generator, Geometry, Background"),
    (steps_payload(sim(), dq(args=[])), "'payload.steps[1]' (dq): payload module dq needs args"),
    (steps_payload(sim(), dq(args=["../../bin/sh", "-c", "true"])), "must be absolute or a path inside"),
    ({"module": "fastsim", "parameters": {"Analysis": "A", "Generator": "G", "Geometry": "DG_4"}},
     "'payload': payload module fastsim needs parameter(s) Background"),
    ({"module": "nosuch"}, "'payload.module': unknown payload module 'nosuch'"),
])
def test_a_step_that_cannot_run_is_refused_naming_its_field(payload, words):
    desc = parse_job_description(make_desc("http://127.0.0.1:1", payload=payload))
    with pytest.raises(JobDescriptionError) as info:
        plan_steps(desc.payload)
    assert info.value.code == 1 and words in info.value.one_line(), info.value.one_line()


def test_the_job_metrics_add_the_steps_times_and_keep_their_peaks():
    one = {"wct_s": 2.0, "cpu_s": 1.5, "max_rss_mb": 80.0, "rss_mb": 70.0, "events": 50, "leftover_processes": 0}
    two = {"wct_s": 0.5, "cpu_s": 0.25, "max_rss_mb": 20.0, "rss_mb": 15.0, "leftover_processes": 1}
    assert combine_metrics([one]) == one
    assert combine_metrics([one, two]) == {"wct_s": 2.5, "cpu_s": 1.75, "max_rss_mb": 80.0, "rss_mb": 15.0,
                                           "events": 50, "leftover_processes": 1}


def test_twenty_steps_with_long_tails_fit_the_report_keeping_their_last_lines():
    steps = [{"name": f"s{n}", "module": "generic", "code": 0, "exit_code": 0, "signal": None, "metrics": {},
              "tail": [f"step {n} line {k} ".ljust(4000, "x") for k in range(20)]} for n in range(20)]
    report = runner._fit({"status": "done", "payload": {"steps": steps}, "transfers": [], "outputs": []})
    assert len(json.dumps(report)) <= MAX_REPORT_BYTES
    for n, st in enumerate(report["payload"]["steps"]):
        assert st["tail"] and st["tail"][-1].startswith(f"step {n} line 19 ")
    assert "payload.steps.tail" in report["truncated"]


# ---------------------------------------------------------------------- the runner, real payloads

def test_two_steps_run_in_order_on_the_same_files_and_each_is_reported(tmp_path, event_server, checked):
    ctx, outcome = run(tmp_path, event_server, payload=steps_payload(sim(), dq()))
    assert (outcome.code, outcome.status, outcome.delivered) == (0, "done", True), outcome.message
    assert payload_events(event_server) == [
        ("step", "step 1/2 sim (fastsim)"), ("info", "step 1/2 sim (fastsim) ended: exit code 0"),
        ("step", "step 2/2 dq (dq)"), ("info", "step 2/2 dq (dq) ended: exit code 0")]
    steps = [e.get("step") for e in events_of(event_server) if e["kind"] == "step"]
    assert steps == [f"RUNNING-0{n}" for n in (1, 2, 3, 4, 4, 5, 6, 7)]
    ended = [e for e in events_of(event_server) if e["kind"] == "info" and " ended: " in e["message"]]
    assert ended[0]["metrics"]["exit_code"] == 0 and ended[0]["metrics"]["events"] == 50
    assert "done: 50 events" in ended[0]["tail"]
    assert ended[1]["tail"] == [f"{OUTPUT}: 50 events ok"]      # the check read the first step's file
    assert "events" not in ended[1]["metrics"] and ended[1]["metrics"]["wct_s"] > 0
    report = event_server.finals()[0]["report"]
    assert [(s["name"], s["module"], s["code"], s["exit_code"]) for s in report["payload"]["steps"]] == [
        ("sim", "fastsim", 0, 0), ("dq", "dq", 0, 0)]
    sim_wct, dq_wct = (s["metrics"]["wct_s"] for s in report["payload"]["steps"])
    assert report["metrics"]["wct_s"] == pytest.approx(sim_wct + dq_wct, abs=0.01)
    assert report["metrics"]["events"] == 50 and report["failed_step"] is None
    assert (checked.se / OUTPUT).read_bytes().startswith(b"TOYROOT")
    assert set(checked.log_files) == {"severus-journal.jsonl", "payload-1-sim.stdout", "payload-1-sim.stderr",
                                      "payload-2-dq.stdout", "payload-2-dq.stderr"}
    _, journal = read_journal(ctx.workdir / JOURNAL_NAME)
    parse_events(journal)      # every event the runner wrote passes the server's schema


def test_a_failing_check_ends_the_job_035_and_no_later_step_runs(tmp_path, event_server, checked):
    marker = tmp_path / "third-step-ran"
    later = {"name": "after", "module": "dq", "args": [PY, "-c", f"open({str(marker)!r}, 'w')"]}
    payload = steps_payload(sim(), dq(min_events=51), later)
    _, outcome = run(tmp_path, event_server, payload=payload)
    assert (outcome.code, outcome.status) == (35, "failed")
    assert outcome.message == ("E035 data-quality check failed on the outputs: step 2/3 dq (dq): exit code 3")
    assert not marker.exists()
    assert "stage_outputs" not in checked.calls and checked.calls[-1] == "upload_log"
    final = event_server.finals()[0]
    report = final["report"]
    assert (final["code"], report["blame"], report["retryable"], report["failed_step"]) == (
        35, "payload", False, "RUNNING-04")
    assert [(s["code"], s["exit_code"]) for s in report["payload"]["steps"]] == [(0, 0), (35, 3), (None, None)]
    assert report["payload"]["steps"][1]["tail"] == [f"{OUTPUT}: 50 events BAD"]
    assert report["payload"]["exit_code"] == 3 and report["payload"]["module"] == "dq"
    assert payload_events(event_server)[-1] == ("info", "step 2/3 dq (dq) ended: E035 exit code 3")
    assert not any("step 3/3" in m for _, m in payload_events(event_server))


def test_a_failing_first_step_keeps_the_payloads_own_code(tmp_path, event_server, checked):
    _, outcome = run(tmp_path, event_server, payload=steps_payload(sim(env={"TOY_EXIT_CODE": "4"}), dq()))
    assert (outcome.code, outcome.status) == (30, "failed")
    assert outcome.message == "E030 payload exited non-zero: step 1/2 sim (fastsim): exit code 4"
    report = event_server.finals()[0]["report"]
    assert [s["code"] for s in report["payload"]["steps"]] == [30, None]


def test_a_signal_in_a_check_stays_031(tmp_path, event_server, checked):
    killed = dq(args=[PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    _, outcome = run(tmp_path, event_server, payload=steps_payload(sim(), killed))
    assert (outcome.code, outcome.status) == (31, "failed")
    assert "step 2/2 dq (dq): killed by SIGKILL" in outcome.message
    assert event_server.finals()[0]["report"]["payload"]["signal"] == 9


def test_the_wallclock_limit_counts_over_all_the_steps(tmp_path, event_server, checked):
    # The first step takes ~2 s of the job's 6; the second would take 50 s: it gets what is left.
    payload = steps_payload(sim("first", env={"TOY_EVENT_TIME": "0.04"}),
                            sim("second", env={"TOY_EVENT_TIME": "1"}))
    began = time.monotonic()
    _, outcome = run(tmp_path, event_server, payload=payload, limits={"max_wct_s": 6, "grace_s": 1})
    took = time.monotonic() - began
    assert (outcome.code, outcome.status) == (32, "timeout")
    assert "step 2/2 second (fastsim): still running at the job's wallclock limit (6 s over its steps)" \
        in outcome.message
    first, second = event_server.finals()[0]["report"]["payload"]["steps"]
    assert (first["code"], second["code"]) == (0, 32)
    assert first["metrics"]["wct_s"] >= 1.5            # the first step used its share ...
    # ... and the second only the rest (plus the TERM-to-KILL grace and a sampling period)
    assert second["metrics"]["wct_s"] < 6 - first["metrics"]["wct_s"] + 1 + 1.5
    assert took < 30


def test_a_module_unknown_in_a_later_step_is_001_before_any_transfer(tmp_path, event_server, checked):
    _, outcome = run(tmp_path, event_server, payload=steps_payload(sim(), dict(dq(), module="nosuch")))
    assert (outcome.code, outcome.status) == (1, "sys-failed")
    assert "'payload.steps[1].module': unknown payload module 'nosuch'" in outcome.message
    assert checked.calls == ["upload_log"]              # no software, input or output transfer
    report = event_server.finals()[0]["report"]
    assert (report["failed_step"], report["blame"]) == ("RUNNING-01", "manager")
    assert [s["code"] for s in report["payload"]["steps"]] == [None, None]


def test_a_single_module_job_missing_a_parameter_is_001_before_any_transfer(tmp_path, event_server, checked):
    params = {k: v for k, v in PARAMS.items() if k != "Geometry"}
    _, outcome = run(tmp_path, event_server, payload={"module": "fastsim", "parameters": params})
    assert outcome.code == 1 and "'payload': payload module fastsim needs parameter(s) Geometry" in outcome.message
    assert checked.calls == ["upload_log"]
    report = event_server.finals()[0]["report"]
    assert report["failed_step"] == "RUNNING-01" and "steps" not in report["payload"]


def test_a_kill_during_a_later_step_ends_it_and_the_rest_does_not_run(tmp_path, event_server, checked):
    payload = steps_payload(sim("quick"), sim("slow", env={"TOY_EVENT_TIME": "10"}), dq())
    ctx, reporter, stop = start_job(tmp_path, event_server, payload=payload, heartbeat_s=0.2)
    holder = {}
    thread = threading.Thread(target=lambda: holder.update(outcome=run_job(
        ctx, reporter, stop, watch_overrides={"sample_s": 0.1})))
    thread.start()
    try:
        poll(lambda: ("step", "step 2/3 slow (fastsim)") in payload_events(event_server), timeout=30,
             what="the second step")
        pids = poll(lambda: [p.pid for p in children_matching(os.getpid(), "PacProduction")], timeout=30,
                    what="the second step's process")
        event_server.command = "kill"
        thread.join(30)
    finally:
        stop.close()
    assert holder["outcome"].code == 62
    assert pids_gone(pids)
    report = event_server.finals()[0]["report"]
    assert [s["code"] for s in report["payload"]["steps"]] == [0, 62, None]
    assert not any("step 3/3" in m for _, m in payload_events(event_server))
    assert checked.calls[-1] == "upload_log" and "stage_outputs" not in checked.calls


# ---------------------------------------------------------------------- `severus run`, a real XRootD SE

def xrdadler32(url):
    """The SE's own adler32 of a file (the server-side checksum xrootd computes)."""
    out = subprocess.run(["xrdadler32", url], capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.split()[0]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("good", [True, False], ids=["good-output", "bad-output"])
def test_a_simulation_and_its_check_through_a_real_se(tmp_path, event_server, area, make_site, sites_dir, good):
    """`severus run` on a two-step job, the release and the outputs on a real XRootD SE: a good output
    is stored and registered; a bad one fails the check, 035, nothing stored, the log still uploaded."""
    site_for(make_site, area, "root", name="SITE-A")
    release = release_with_check(tmp_path)
    data = release.path.read_bytes()
    area.put("sw/V0.2.5_dq.tjz", data)
    sw_lfn = lfn("sw/V0.2.5_dq.tjz")
    event_server.catalog[sw_lfn] = {"lfn": sw_lfn, "size": len(data), "adler32": release.adler32,
                                    "replicas": [{"site": "SITE-A", "surl": area.url("root") + "/sw/V0.2.5_dq.tjz"}]}
    # The bad output: the simulation step's own args make it write no event.
    first = sim() if good else sim(args=["--events", "0"])
    job = tmp_path / "job.json"
    job.write_text(json.dumps(make_desc(
        event_server.url, software={"name": "PacProductionApp", "version": "V0.2.5", "revision": 311,
                                    "lfn": sw_lfn, "adler32": release.adler32, "workdir": release.workdir,
                                    "exe": release.exe},
        payload=steps_payload(first, dq()), log={"to_db": True},
        output={"lfn_dir": lfn("out/run1"), "sites": ["SITE-A"], "patterns": ["*.root"]},
        limits={"max_wct_s": 120})))
    workdir = tmp_path / "work"
    proc = subprocess.run([PY, "-m", "wrapper", "run", str(job), "--site-config", str(sites_dir / "SITE-A.toml"),
                           "--workdir", str(workdir), "--sample-s", "0.2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    final = event_server.finals()[0]
    report = final["report"]
    out_lfn, log_lfn = lfn(f"out/run1/{OUTPUT}"), lfn("out/run1/log/10000003.1.log.tgz")
    # The log goes up either way, stored on the SE with the checksum the catalog has.
    log_entry = event_server.catalog[log_lfn]
    assert xrdadler32(log_entry["replicas"][0]["surl"]) == log_entry["adler32"]
    if good:
        assert proc.returncode == 0, proc.stderr
        assert (final["code"], [s["code"] for s in report["payload"]["steps"]]) == (0, [0, 0])
        entry = event_server.catalog[out_lfn]
        local = (workdir / OUTPUT).read_bytes()
        assert xrdadler32(entry["replicas"][0]["surl"]) == entry["adler32"] == \
            f"{zlib.adler32(local) & 0xffffffff:08x}"
        assert report["payload"]["steps"][1]["tail"] == [f"{OUTPUT}: 50 events ok"]
        return
    assert proc.returncode == 35, proc.stderr
    assert proc.stderr.strip().endswith("E035 data-quality check failed on the outputs: step 2/2 dq (dq): exit code 3")
    assert (final["code"], final["status"], report["blame"], report["failed_step"]) == (
        35, "failed", "payload", "RUNNING-04")
    assert out_lfn not in event_server.catalog
    stored = [p.relative_to(area.path).as_posix() for p in (area.path / "out").rglob("*") if p.is_file()]
    assert stored and all(p.startswith("out/run1/log/") for p in stored), stored     # no output on the SE
    with tarfile.open(fileobj=io.BytesIO(event_server.logs[next(iter(event_server.logs))])) as tar:
        check_out = tar.extractfile("payload-2-dq.stdout").read().decode()
    assert check_out == f"{OUTPUT}: 0 events BAD\n"


# ---------------------------------------------------------------------- `sbk serve` takes the steps' events


@pytest.mark.timeout(300)
def test_the_server_takes_each_steps_events_and_keeps_the_report(live, tmp_path):
    """A prepared job's description given steps (the server's step templates write them so): `sbk serve`
    moves the job running → running on the second RUNNING-04, keeps each step's event with its tail,
    and stores the report's steps."""
    job_id, desc = prepare_job(live, "STEPS_server")
    desc["payload"] = {"parameters": desc["payload"]["parameters"], "env": desc["payload"].get("env", {}),
                       "steps": [sim(), dq(args=[PY, "-c", "import glob; print(sorted(glob.glob('*.root')))"])]}
    se = live["demo"].se
    cfg = write_site_config(tmp_path / "site.toml", f'urls = ["{se.root_url}"]\naccess = "protocol"')
    proc = run_wrapper(tmp_path, desc, cfg)
    assert proc.returncode == 0, proc.stderr
    job = live["api"].call("GET", f"/jobs/{job_id}")
    assert (job["status"], job["error_code"]) == ("done", 0)
    runnum = job["runnum"]
    history = [e for e in job["history"] if e["step"] == "RUNNING-04" and e["kind"] in ("step", "info")]
    assert [(e["kind"], e["message"]) for e in history] == [
        ("step", "step 1/2 sim (fastsim)"), ("info", "step 1/2 sim (fastsim) ended: exit code 0"),
        ("step", "step 2/2 dq (dq)"), ("info", "step 2/2 dq (dq) ended: exit code 0")]
    assert history[3]["tail"] == [f"['{runnum}.root']"] and history[1]["metrics"]["events"] == 50
    assert [(s["name"], s["code"]) for s in job["report"]["payload"]["steps"]] == [("sim", 0), ("dq", 0)]
    assert [o["lfn"].rsplit("/", 1)[1] for o in job["outputs"] if o["lfn"].endswith(".root")] == [f"{runnum}.root"]
