"""`severus` as a user runs it: real subprocesses, real stages on a direct-access SE.

The SE is a local directory (direct access); the server is the stdlib events
and catalog server of test_report. The integrator adds the real-sbk versions.
"""
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from server.toy_release import build_toy_release
from tests.processes import children_matching, gone
from wrapper import cli
from wrapper.report import JOURNAL_NAME, read_journal

from .test_report import EventServer, event_server, make_desc, poll  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"Analysis": "HadRecoilCocktail", "Generator": "B0B0bar_SL", "Geometry": "DG_4",
          "Background": "MixSuperbBkg_NoPair.tcl"}
SW_LFN = "lfn:/grid/superbvo.org/production/FastSim/test_release/V0.2.5_rev311.tjz"


class Node:
    """A worker node's files: a direct-access SE holding the toy release, a site config, a job."""

    def __init__(self, tmp_path, server, **desc_over):
        self.tmp = tmp_path
        self.se = tmp_path / "se"
        sw_dir = self.se / "production/FastSim/test_release"
        sw_dir.mkdir(parents=True)
        release = build_toy_release(sw_dir, name="V0.2.5_rev311.tjz")
        server.catalog[SW_LFN] = {"lfn": SW_LFN, "size": release.size, "adler32": release.adler32,
                                  "replicas": [{"site": "TEST-SITE", "surl": str(release.path)}]}
        # A directory under /tmp is on the node's root file system: the probe file marks it as the SE.
        (self.se / ".severus-se").write_text("severus direct-access probe file\n")
        self.site_config = tmp_path / "TEST-SITE.toml"
        self.site_config.write_text(
            'name = "TEST-SITE"\n[se]\nlfn_prefix = "/grid/superbvo.org"\n'
            f'local_path = "{self.se}"\naccess = "direct"\nprobe_file = ".severus-se"\n'
            '[scratch]\nmin_free_gb = 0\n')
        software = {"name": "PacProductionApp", "version": "V0.2.5", "revision": 311,
                    "lfn": SW_LFN, "adler32": release.adler32, "workdir": release.workdir,
                    "exe": release.exe}  # both relative to the unpack root
        over = {"software": software, "payload": {"module": "fastsim", "parameters": PARAMS},
                "output": {"lfn_dir": "lfn:/grid/superbvo.org/production/FastSim/out",
                           "sites": ["TEST-SITE"], "patterns": ["*.root"]},
                "log": {"to_db": True}}
        over.update(desc_over)
        self.job = tmp_path / "job.json"
        self.job.write_text(json.dumps(make_desc(server.url, **over)))
        self.workdir = tmp_path / "work"

    def argv(self, *extra, python=(sys.executable, "-m", "wrapper")):
        return [*python, "run", str(self.job), "--site-config", str(self.site_config),
                "--workdir", str(self.workdir), "--sample-s", "0.2", *extra]


def severus(*args, cwd=ROOT, timeout=60):
    return subprocess.run([sys.executable, "-m", "wrapper", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_run_a_job_end_to_end(tmp_path, event_server):
    node = Node(tmp_path, event_server)
    proc = subprocess.run(node.argv(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "done E000" in proc.stdout
    final = event_server.finals()[0]
    assert final["code"] == 0 and final["report"]["metrics"]["events"] == 50
    out_lfn = "lfn:/grid/superbvo.org/production/FastSim/out/10000003.root"
    assert out_lfn in event_server.catalog
    # The LFN is the name; the SE's file carries the attempt (shared/outputs.py).
    assert event_server.catalog[out_lfn]["replicas"][0]["surl"].endswith("/production/FastSim/out/10000003.root.1")
    assert (node.se / "production/FastSim/out/10000003.root.1").is_file()
    assert event_server.seqs() == list(range(1, len(event_server.seqs()) + 1))


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    (json.dumps({"schema": 1}), "job"),
    (json.dumps({"schema": 7}), "unknown schema 7"),
])
def test_bad_job_description_is_one_line_and_exit_1(tmp_path, content, needle):
    job = tmp_path / "job.json"
    job.write_text(content)
    proc = severus("run", str(job), "--workdir", str(tmp_path / "w"))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("E001") and needle in lines[0]
    assert not (tmp_path / "w").exists()      # refused before any work


def test_missing_site_config_is_002_and_the_server_is_told(tmp_path, event_server):
    node = Node(tmp_path, event_server)
    proc = severus("run", str(node.job), "--workdir", str(node.workdir),
                   "--site-config", str(tmp_path / "nope.toml"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("E002") and len(proc.stderr.strip().splitlines()) == 1
    assert event_server.finals()[0]["code"] == 2


def _payload_of(proc):
    """The wrapper's payload processes, once they are there: the simulation's own command line (a
    bare "PacProduction" also matched a short-lived process of the software stage, now and then gone
    before the test signalled it)."""
    return poll(lambda: children_matching(proc.pid, "PacProduction --events"), timeout=60,
                what="the payload process")


def _slow_run(tmp_path, event_server):
    """A real `severus run` whose payload takes long: (node, process)."""
    node = Node(tmp_path, event_server, payload={"module": "fastsim", "parameters": PARAMS,
                                                 "env": {"TOY_EVENT_TIME": "10"}})
    proc = subprocess.Popen(node.argv(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return node, proc


def test_sigterm_mid_payload_is_060_with_the_log_and_the_final_report(tmp_path, event_server):
    node, proc = _slow_run(tmp_path, event_server)
    try:
        payload = _payload_of(proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 60, err
    assert "E060" in err and "SIGTERM" in err
    assert gone(payload)
    _, events = read_journal(node.workdir / JOURNAL_NAME)
    assert events[-1]["kind"] == "final" and events[-1]["code"] == 60
    assert events[-1]["report"]["failed_step"] == "RUNNING-04"
    assert event_server.finals()[0]["code"] == 60          # delivered
    assert event_server.logs                               # log sent to the server (to_db)
    log_lfn = "lfn:/grid/superbvo.org/production/FastSim/out/log/10000003.1.log.tgz"
    assert log_lfn in event_server.catalog                 # and stored on the SE
    with tarfile.open(event_server.catalog[log_lfn]["replicas"][0]["surl"]) as tar:
        assert any(n.endswith(JOURNAL_NAME) for n in tar.getnames())


@pytest.mark.parametrize("wrapper_signalled, code", [(True, 60), (False, 31)])
def test_payload_dying_of_a_batch_signal_before_the_wrapper_is_a_site_stop(
        tmp_path, event_server, wrapper_signalled, code):
    """scancel signals the payload and the wrapper at once; the payload may die first."""
    node, proc = _slow_run(tmp_path, event_server)
    try:
        payload = _payload_of(proc)
        for p in payload:
            p.send_signal(signal.SIGTERM)
        poll(lambda: gone(payload), timeout=30, what="the payload to die")
        if wrapper_signalled:      # the batch system's TERM reaches the wrapper a moment later
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert event_server.finals()[0]["code"] == code


def test_replay_delivers_a_journal_later(tmp_path):
    server = EventServer().start()
    server.stop()                                         # down for the whole job
    node = Node(tmp_path, server)
    proc = subprocess.run(node.argv("--final-deadline", "1"), cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 15   # no catalog while the server is down: software stage-in fails
    assert "not delivered" in proc.stderr
    server.start()
    try:
        journal = node.workdir / JOURNAL_NAME
        replay = severus("replay", str(journal), "--job-file", str(node.job))
        assert replay.returncode == 0, replay.stderr
        _, events = read_journal(journal)
        assert "%d new event(s)" % len(events) in replay.stdout
        assert [server.events[k] for k in server.order] == events
        assert server.finals()[0]["code"] == 15
    finally:
        server.stop()


def test_check_reports_each_item_and_fails_on_a_bad_site_config(tmp_path, event_server):
    node = Node(tmp_path, event_server)
    good = severus("check", "--site-config", str(node.site_config), "--workdir", str(tmp_path),
                   "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    result = json.loads(good.stdout)
    names = {c["name"]: c for c in result["checks"]}
    assert names["site config"]["ok"] and names["scratch"]["ok"]
    assert names["access"]["detail"].startswith("direct")
    node.site_config.write_text('name = "TEST-SITE"\n[se]\nlfn_prefix = 3\n')
    bad = severus("check", "--site-config", str(node.site_config))
    assert bad.returncode == 2
    assert "CRITICAL site config" in bad.stdout


def test_an_unexpected_error_is_099_one_line_traceback_in_a_file(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("kaboom")
    monkeypatch.setitem(cli.COMMANDS, "pack", boom)
    assert cli.main(["pack"]) == 99
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("E099") and "kaboom" in err[0]
    crash = err[0].split("traceback in ")[1].rstrip(")")
    assert "Traceback" in Path(crash).read_text()
    os.unlink(crash)
