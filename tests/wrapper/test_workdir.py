"""The work dir goes after the job: kept for a failed job when the site says so, and whenever the
final report is still in its journal. The real `severus run` on a direct-access SE."""
import os
import subprocess

import pytest

from .test_cli import PARAMS, ROOT, Node
from .test_report import EventServer, event_server  # noqa: F401


@pytest.fixture(autouse=True)
def node_default(monkeypatch):
    monkeypatch.delenv("SEVERUS_KEEP_WORKDIR", raising=False)   # what a node does (tests/conftest.py sets it)


def run(node, *extra):
    return subprocess.run(node.argv(*extra), cwd=ROOT, capture_output=True, text=True, timeout=120)


def failing(tmp_path, server):
    return Node(tmp_path, server, payload={"module": "fastsim", "parameters": PARAMS,
                                           "env": {"TOY_EXIT_CODE": "3"}})


def keep_failed(node):
    with open(node.site_config, "a") as fh:   # [scratch] is the file's last table
        fh.write("keep_workdir_on_failure = true\n")


def test_a_done_job_leaves_no_work_dir(tmp_path, event_server):
    node = Node(tmp_path, event_server)
    keep_failed(node)                                    # only failed jobs' are kept
    proc = run(node)
    assert proc.returncode == 0, proc.stderr
    assert event_server.finals()[0]["code"] == 0
    assert (node.se / "production/FastSim/out/10000003.root.1").is_file()   # the output went first
    assert not node.workdir.exists()


def test_a_failed_job_leaves_no_work_dir_by_default(tmp_path, event_server):
    node = failing(tmp_path, event_server)
    proc = run(node)
    assert proc.returncode == 30, proc.stderr
    assert event_server.finals()[0]["code"] == 30
    assert not node.workdir.exists()


def test_the_site_keeps_a_failed_jobs_work_dir(tmp_path, event_server):
    node = failing(tmp_path, event_server)
    keep_failed(node)
    proc = run(node)
    assert proc.returncode == 30, proc.stderr
    assert (node.workdir / "severus.log").is_file() and (node.workdir / "payload.stdout").is_file()
    assert (node.workdir / "software").is_dir()


def test_an_undelivered_final_report_keeps_its_journal(tmp_path):
    server = EventServer().start()
    server.stop()                                        # down for the whole job
    node = Node(tmp_path, server)
    proc = run(node, "--final-deadline", "1")
    assert proc.returncode == 15 and "not delivered" in proc.stderr
    assert (node.workdir / "severus-journal.jsonl").is_file()   # for `severus replay`


def test_the_directory_the_wrapper_runs_in_is_not_removed(tmp_path, event_server):
    node = Node(tmp_path, event_server)
    node.workdir.mkdir()
    proc = subprocess.run(node.argv()[:-4] + ["--workdir", ".", "--sample-s", "0.2"], cwd=node.workdir,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert (node.workdir / "severus.log").is_file()
