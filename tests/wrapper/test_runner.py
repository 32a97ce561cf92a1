"""run_job: the steps in order, the first error decides, the log always goes up.

The stage functions (software, inputs, stage-out, log) are replaced by local
ones that do real file work (unpack the toy release, copy outputs and the log
into directories); the payload, the watchdog and the reporter are real and
talk to the stdlib events server of test_report.
"""
import os
import sys
import tarfile
import threading
from pathlib import Path

import pytest

import wrapper.inputs
import wrapper.joblog
import wrapper.software
import wrapper.stageout
from server.toy_release import build_toy_release
from tests.processes import children_matching, pids_gone
from shared.errors import LogUploadError, SoftwareChecksumMismatch
from shared.events import parse_events
from shared.jobdesc import parse_job_description
from wrapper.client import ServerClient
from wrapper.context import JobContext
from wrapper.report import JOURNAL_NAME, Reporter, SenderConfig, read_journal
from wrapper.runner import Stop, run_job
from wrapper.siteconfig import parse_site_config
from wrapper.software import SoftwareArea

from .test_report import TOKEN, EventServer, event_server, make_desc, poll  # noqa: F401

PARAMS = {"Analysis": "HadRecoilCocktail", "Generator": "B0B0bar_SL", "Geometry": "DG_4",
          "Background": "MixSuperbBkg_NoPair.tcl"}


class LocalStages:
    """Stage functions that work on local directories, recording what they were asked."""

    def __init__(self, tmp_path, monkeypatch):
        self.tmp = tmp_path
        self.release = build_toy_release(tmp_path)
        self.se = tmp_path / "se"
        self.se.mkdir()
        self.calls = []
        self.fail = {}        # stage name -> exception to raise
        for module, name in ((wrapper.software, "stage_software"),
                             (wrapper.inputs, "stage_inputs"),
                             (wrapper.stageout, "stage_outputs"),
                             (wrapper.stageout, "register_outputs"),
                             (wrapper.joblog, "upload_log")):
            monkeypatch.setattr(module, name, getattr(self, name))

    def _enter(self, name):
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def stage_software(self, ctx):
        self._enter("stage_software")
        root = ctx.workdir / "software"
        with tarfile.open(self.release.path) as tar:
            tar.extractall(root)
        return SoftwareArea(root=root, workdir=root / self.release.workdir,
                            exe=root / self.release.exe)

    def stage_inputs(self, ctx):
        self._enter("stage_inputs")
        return []

    def stage_outputs(self, ctx, paths):
        self._enter("stage_outputs")
        stored = []
        for path in paths:
            target = self.se / path.name
            target.write_bytes(path.read_bytes())
            stored.append(wrapper.stageout.StoredFile(
                lfn=f"{ctx.desc.output.lfn_dir}/{path.name}", site=ctx.site.name,
                surl=str(target), url=str(target), size=target.stat().st_size,
                adler32="00000001", path=path))
        return stored

    def register_outputs(self, ctx, stored):
        self._enter("register_outputs")

    def upload_log(self, ctx, files, cancel=None):
        self._enter("upload_log")
        self.log_files = [Path(f).name for f in files]
        tarball = self.se / "log.tgz"
        with tarfile.open(tarball, "w:gz") as tar:
            for f in files:
                tar.add(f, arcname=Path(f).name)
        return {"lfn": f"{ctx.desc.output.lfn_dir}/log/log.tgz", "size": tarball.stat().st_size}


@pytest.fixture()
def stages(tmp_path, monkeypatch):
    return LocalStages(tmp_path, monkeypatch)


def site(tmp_path, min_free_gb=0):
    return parse_site_config({"name": "TEST-SITE",
                              "se": {"lfn_prefix": "/grid/superbvo.org", "local_path": str(tmp_path)},
                              "scratch": {"min_free_gb": min_free_gb}})


def start_job(tmp_path, server, payload=None, limits=None, min_free_gb=0, heartbeat_s=300.0):
    """A context, a started reporter and a Stop for a toy FastSim job."""
    over = {"payload": payload or {"module": "fastsim", "parameters": PARAMS}}
    if limits:
        over["limits"] = limits
    desc = parse_job_description(make_desc(server.url, heartbeat_s=heartbeat_s, **over))
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = ServerClient(server.url, TOKEN, timeout=5)
    stop = Stop()
    reporter = Reporter(desc, client, workdir, on_stop=stop.request,
                        config=SenderConfig(heartbeat_s=heartbeat_s, backoff_s=0.05,
                                            backoff_max_s=0.2, final_deadline_s=10))
    ctx = JobContext(desc=desc, site=site(tmp_path, min_free_gb), workdir=workdir, server=client)
    return ctx, reporter.start(), stop


def run(tmp_path, server, **kw):
    ctx, reporter, stop = start_job(tmp_path, server, **kw)
    try:
        return ctx, run_job(ctx, reporter, stop, watch_overrides={"sample_s": 0.1})
    finally:
        stop.close()


def steps_sent(server):
    return [e.get("step") for k, e in sorted(server.events.items()) if e["kind"] == "step"]


ALL_STEPS = [f"RUNNING-0{n}" for n in range(1, 8)]


def test_a_good_job_runs_every_step_and_reports_done(tmp_path, event_server, stages):
    ctx, outcome = run(tmp_path, event_server)
    assert (outcome.code, outcome.status, outcome.delivered) == (0, "done", True)
    assert steps_sent(event_server) == ALL_STEPS
    final = event_server.finals()[0]
    assert final["code"] == 0 and final["status"] == "done"
    report = final["report"]
    assert report["payload"]["exit_code"] == 0 and report["failed_step"] is None
    assert set(report["timings"]) >= {"software", "inputs", "payload", "outputs", "log"}
    assert report["metrics"]["events"] == 50
    assert [o["lfn"].rsplit("/", 1)[1] for o in report["outputs"]] == ["10000003.root"]
    assert (stages.se / "10000003.root").read_bytes().startswith(b"TOYROOT")
    assert set(stages.log_files) == {"severus-journal.jsonl", "payload.stdout", "payload.stderr"}
    # Everything the runner journaled passes the server's schema, in seq order.
    _, events = read_journal(ctx.workdir / JOURNAL_NAME)
    parse_events(events)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_payload_failure_skips_stage_out_but_uploads_the_log(tmp_path, event_server, stages):
    payload = {"module": "fastsim", "parameters": PARAMS, "env": {"TOY_EXIT_CODE": "3"}}
    _, outcome = run(tmp_path, event_server, payload=payload)
    assert (outcome.code, outcome.status) == (30, "failed")
    assert "stage_outputs" not in stages.calls and stages.calls[-1] == "upload_log"
    report = event_server.finals()[0]["report"]
    assert report["failed_step"] == "RUNNING-04"
    assert report["payload"]["exit_code"] == 3
    assert report["blame"] == "payload"
    assert steps_sent(event_server) == ["RUNNING-01", "RUNNING-02", "RUNNING-03", "RUNNING-04",
                                        "RUNNING-07"]


def test_first_error_decides_even_when_the_log_upload_fails_too(tmp_path, event_server, stages):
    stages.fail["stage_software"] = SoftwareChecksumMismatch("adler32 00000000 != 1a2b3c4d")
    stages.fail["upload_log"] = LogUploadError("SE down")
    _, outcome = run(tmp_path, event_server)
    assert (outcome.code, outcome.status) == (11, "sys-failed")
    report = event_server.finals()[0]["report"]
    assert report["failed_step"] == "RUNNING-02"
    assert "SE down" in report["log_error"]
    assert stages.calls == ["stage_software", "upload_log"]


def test_log_upload_failure_alone_is_050(tmp_path, event_server, stages):
    stages.fail["upload_log"] = LogUploadError("SE down")
    _, outcome = run(tmp_path, event_server)
    assert outcome.code == 50
    assert event_server.finals()[0]["report"]["failed_step"] == "RUNNING-07"


def test_a_bug_in_a_stage_is_099_and_the_log_still_goes_up(tmp_path, event_server, stages):
    stages.fail["stage_inputs"] = KeyError("oops")
    _, outcome = run(tmp_path, event_server)
    assert outcome.code == 99
    assert "KeyError" in outcome.message
    assert stages.calls[-1] == "upload_log"


def test_too_little_scratch_is_003_before_any_transfer(tmp_path, event_server, stages):
    _, outcome = run(tmp_path, event_server, min_free_gb=10 ** 5)
    assert outcome.code == 3
    assert stages.calls == ["upload_log"]


def test_wallclock_limit_through_the_runner_is_timeout_032(tmp_path, event_server, stages):
    payload = {"module": "fastsim", "parameters": PARAMS, "env": {"TOY_EVENT_TIME": "1"}}
    _, outcome = run(tmp_path, event_server, payload=payload, limits={"max_wct_s": 1, "grace_s": 1})
    assert (outcome.code, outcome.status) == (32, "timeout")
    assert stages.calls[-1] == "upload_log"


def slow_payload_in_background(tmp_path, server):
    """Start a 500 s toy payload in a thread; return (thread, result holder, stop, payload pids)."""
    payload = {"module": "fastsim", "parameters": PARAMS, "env": {"TOY_EVENT_TIME": "10"}}
    # Commands ride on replies: short heartbeats bring them back quickly.
    ctx, reporter, stop = start_job(tmp_path, server, payload=payload, heartbeat_s=0.2)
    holder = {}

    def target():
        holder["outcome"] = run_job(ctx, reporter, stop, watch_overrides={"sample_s": 0.1})

    thread = threading.Thread(target=target)
    thread.start()
    poll(lambda: any(e.get("step") == "RUNNING-04" for e in server.events.values()),
         what="the payload step")
    pid = poll(lambda: [p.pid for p in children_matching(os.getpid(), "PacProduction")],
               what="payload process")
    return thread, holder, stop, pid


def test_kill_command_stops_the_payload_uploads_the_log_and_ends_062(tmp_path, event_server,
                                                                     stages):
    thread, holder, stop, pids = slow_payload_in_background(tmp_path, event_server)
    event_server.command = "kill"
    try:
        thread.join(20)
    finally:
        stop.close()
    assert holder["outcome"].code == 62
    assert pids_gone(pids)
    assert stages.calls[-1] == "upload_log" and "stage_outputs" not in stages.calls
    assert event_server.finals()[0]["code"] == 62


def test_superseded_attempt_stops_and_uploads_nothing(tmp_path, event_server, stages):
    thread, holder, stop, pids = slow_payload_in_background(tmp_path, event_server)
    before = len(event_server.events)
    event_server.current_attempt = 2
    try:
        thread.join(30)
    finally:
        stop.close()
    assert holder["outcome"].code == 61
    assert "upload_log" not in stages.calls
    assert event_server.finals() == [] and len(event_server.events) == before
