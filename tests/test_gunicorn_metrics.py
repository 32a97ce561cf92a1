"""Prometheus metrics under gunicorn's multiprocess mode: a real gunicorn of two workers, its
counters summed over both at /metrics, a killed worker's counts kept, a restart starting from zero.

Both ways of running gunicorn: `sbk serve` and contrib/gunicorn.conf.py."""
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from tests.infra.postgres import free_port
from tests.server.test_concurrency import wait_for_health
from tests.waiting import poll

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
HEALTH = 'sbk_requests_total{endpoint="meta.health",method="GET",status="200"}'
LAUNCHERS = {
    "sbk serve": lambda port: [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--workers", "2"],
    "contrib/gunicorn.conf.py": lambda port: [str(VENV_BIN / "gunicorn"), "-c", str(ROOT / "contrib" / "gunicorn.conf.py"),
                                              "-b", f"127.0.0.1:{port}", "server:create_app()"],
}


class Served:
    """A server process group started by a test, its output in files."""

    def __init__(self, argv, env, port, out_dir, cwd=ROOT):
        self.base = f"http://127.0.0.1:{port}"
        self.out_path, self.err_path = Path(out_dir) / "stdout", Path(out_dir) / "stderr"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            # its own session: the whole group (master and workers) is ours to end, by its id
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)

    def workers(self):
        return [p.pid for p in psutil.Process(self.proc.pid).children()]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def stderr(self):
        return self.err_path.read_text()


@contextlib.contextmanager
def serving(argv, env, port, out_dir, cwd=ROOT):
    """Start `argv`, wait for /health, yield the Served; stopped however the test ends."""
    served = Served(argv, env, port, out_dir, cwd)
    try:
        try:
            wait_for_health(served.base, served.proc, deadline_s=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its stderr:\n{served.stderr()[-3000:]}") from None
        yield served
    finally:
        served.stop()


def server_env(tmp_path, **extra):
    """The environment of a server under test: its own SQLite database and settings only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBK_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(SBK_DB=f"sqlite:///{tmp_path}/sbk.db", SBK_DATA_DIR=str(tmp_path / "sbk-data"),
               SBK_REAP_INTERVAL_S="3600", SBK_BATCH_POLL_INTERVAL_S="0", SBK_CLEANUP_INTERVAL_S="0")
    env.update(extra)
    return env


def metric(text, sample):
    """The value of one sample line of /metrics (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def per_process(metrics_dir, sample):
    """Each process's own count of `sample`, read file by file from the multiprocess directory."""
    counts = {}
    for path in Path(metrics_dir).glob("counter_*.db"):
        alone = path.parent.parent / f"alone-{path.stem}"
        alone.mkdir(exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(alone))
        value = metric(generate_latest(registry).decode(), sample)
        if value:
            counts[int(path.stem.rsplit("_", 1)[1])] = value
    return counts


def hammer(base, count, threads=8):
    """`count` GET /health over fresh connections from `threads` clients at once; the failures."""
    failures, per_thread = [], count // threads
    assert per_thread * threads == count

    def run():
        for _ in range(per_thread):
            r = requests.get(base + "/api/v1/health", timeout=30)
            if r.status_code != 200:
                failures.append(r.status_code)
    clients = [threading.Thread(target=run) for _ in range(threads)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(timeout=120)
    return failures


def scrape(base):
    r = requests.get(base + "/metrics", timeout=30)
    assert r.status_code == 200
    return r.text


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_counters_add_up_across_two_workers_and_survive_a_dead_one(tmp_path, launcher):
    metrics_dir = tmp_path / "prometheus"
    port = free_port()
    env = server_env(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    with serving(LAUNCHERS[launcher](port), env, port, tmp_path) as served:
        # /health answers as soon as one worker is up: until the other answers too, requests go on
        poll(lambda: hammer(served.base, 8) == [] and len(per_process(metrics_dir, HEALTH)) == 2, 30,
             what="both workers answering")
        before = metric(scrape(served.base), HEALTH)
        assert hammer(served.base, 64) == []
        assert metric(scrape(served.base), HEALTH) == before + 64
        counts = per_process(metrics_dir, HEALTH)
        assert len(counts) == 2 and set(counts) == set(served.workers()), (counts, served.workers())
        assert sum(counts.values()) == before + 64

        # a worker killed outright: gunicorn starts another; what the dead one counted stays counted
        dead = served.workers()[0]
        os.kill(dead, signal.SIGKILL)
        poll(lambda: dead not in served.workers() and len(served.workers()) == 2, 30, what="a new worker")
        assert hammer(served.base, 16) == []
        assert metric(scrape(served.base), HEALTH) == before + 64 + 16
        assert dead in per_process(metrics_dir, HEALTH)
    assert served.proc.returncode == 0, served.stderr()[-2000:]

    # the next start empties the directory: the counts begin again
    with serving(LAUNCHERS[launcher](port), env, port, tmp_path) as served:
        text = scrape(served.base)
        assert metric(text, HEALTH) == 1, text   # the start-up wait's one check, nothing of the last run
        assert re.search(r'^sbk_request_seconds_count\{endpoint="meta.health",method="GET"\} \d', text, re.M)


def test_without_a_multiprocess_dir_sbk_serve_says_the_counts_are_one_workers(tmp_path):
    port = free_port()
    with serving(LAUNCHERS["sbk serve"](port), server_env(tmp_path), port, tmp_path) as served:
        pass
    assert "PROMETHEUS_MULTIPROC_DIR is not set" in served.stderr()
