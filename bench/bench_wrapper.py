"""Wrapper benchmarks (issues 4, 17): time to payload start, peak RSS, CPU while watching,
each beside the same payload started by a bare `subprocess.run`.

    python -m bench.bench_wrapper [--quick] [--repeat R]

A real `severus run` subprocess, real stages on a direct-access SE in a temp dir,
the software cache warm (SEVERUS_CACHE, one untimed run first), and the stdlib
events/catalog server of the wrapper tests. The reference is a Python process
that only calls `subprocess.run` on the same unpacked payload. The payload's
start is the moment its interpreter starts (a sitecustomize on the payload's
PYTHONPATH writes time.monotonic(), one clock for every process), so the
payload's own start-up cancels out.

Goals (issue 17): payload start <= 0.15 s later than the bare start; wrapper peak
RSS <= 40 MB; wrapper CPU <= 0.2 % of a core while it watches a 60 s payload
(6 s with --quick). Best of R runs (3; 2 with --quick).
"""
import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import psutil

from bench.gate import Gate
from tests.wrapper.test_cli import PARAMS, ROOT, Node
from tests.wrapper.test_report import EventServer

GOALS = {"start": ("over", 0.15), "rss": ("max", 40.0), "cpu": ("max", 0.2)}
MARK_ENV = "BENCH_PAYLOAD_START"
# Imported by every interpreter started with this PYTHONPATH: only the toy payload's marks. The
# payload is the interpreter running the script PacProduction (sys.argv[0]); the bare reference's
# own interpreter has that path among its arguments too (`python -c ... PacProduction`) and must not
# mark: it would put the bare start before the payload's interpreter had even begun.
SITECUSTOMIZE = f'''import os, sys, time
_mark = os.environ.get("{MARK_ENV}")
if _mark:
    _payload = os.path.basename(getattr(sys, "argv", [""])[0]) == "PacProduction"
    if _payload:
        try:
            with open(_mark, "x") as _fh:
                _fh.write(repr(time.monotonic()))
        except FileExistsError:
            pass
'''
BARE = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


class Watched:
    """A started process: its peak RSS and its CPU seconds between two moments."""

    def __init__(self, argv, env=None, cwd=ROOT):
        self.began = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.ps = psutil.Process(self.proc.pid)
        self.peak_mb, self.marks = 0.0, []

    def sample(self, watch):
        try:
            self.peak_mb = max(self.peak_mb, self.ps.memory_info().rss / 2 ** 20)
            if watch and len(self.marks) < len(watch) and time.monotonic() - self.began >= watch[len(self.marks)]:
                t = self.ps.cpu_times()
                self.marks.append((time.monotonic(), t.user + t.system))
        except psutil.NoSuchProcess:
            pass

    def cpu_pct(self):
        if len(self.marks) != 2:
            return None
        (t0, c0), (t1, c1) = self.marks
        return 100.0 * (c1 - c0) / (t1 - t0)


def run_all(procs, watch=None):
    """Sample until every process ends (a polling interval, not a synchronisation)."""
    while any(p.proc.poll() is None for p in procs):
        for p in procs:
            if p.proc.poll() is None:
                p.sample(watch)
        time.sleep(0.02)
    for p in procs:
        err = p.proc.stderr.read().decode()
        if p.proc.returncode != 0:
            raise SystemExit(f"a benchmark job failed ({p.proc.returncode}): {err.strip()}")


def started_after(mark, began):
    if not mark.exists():
        raise SystemExit("the payload never marked its start: was its PYTHONPATH passed?")
    value = float(mark.read_text())
    mark.unlink()
    return value - began


class Bench:
    def __init__(self, tmp, server):
        self.tmp, self.server, self.n = tmp, server, 0
        site = tmp / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.mark = tmp / "payload-start"
        self.payload_env = {"PYTHONPATH": str(site), MARK_ENV: str(self.mark)}
        self.env = dict(os.environ, SEVERUS_CACHE=str(tmp / "cache"))

    def node(self, events, env=None):
        self.n += 1
        over = {"payload": {"module": "fastsim", "parameters": PARAMS, "env": {**self.payload_env, **(env or {})}},
                "job": {"id": 42, "runnum": 10000003, "attempt": 1, "session": "FastSim",
                        "production": "2010_July", "request": 7, "events": events},
                "limits": {"max_wct_s": 3600}}
        path = self.tmp / f"node{self.n}"
        path.mkdir()
        return Node(path, self.server, **over)

    def severus(self, node):
        """`severus run` of the node's job in a fresh work dir (the same SE and software cache)."""
        self.n += 1
        argv = node.argv("--sample-s", "2")
        argv[argv.index("--workdir") + 1] = str(self.tmp / f"work{self.n}")
        return Watched(argv, env=self.env)

    def bare(self, node, events, env=None):
        """The same payload, unpacked here, started by a bare subprocess.run."""
        self.n += 1
        sw = node.se / "production/FastSim/test_release/V0.2.5_rev311.tjz"
        unpacked = self.tmp / f"bare{self.n}"
        with tarfile.open(sw) as tar:
            tar.extractall(unpacked)
        cwd = unpacked / "FastSim/V0.2.5"
        env = dict(os.environ, **self.payload_env, **(env or {}))
        exe = str(unpacked / "bin/PacProduction")
        return Watched([sys.executable, "-c", BARE, exe, "--events", str(events), "--runnum", "1"], env=env, cwd=cwd)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 6 s payload instead of 60 s, two runs")
    parser.add_argument("--repeat", type=int, help="runs per figure, best kept (default 3, 2 with --quick)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (2 if args.quick else 3)   # quick: two, one start alone is noise
    watch_s = 6 if args.quick else 60
    gate = Gate("bench_wrapper", args.quick)
    gate.start()
    ours, bare = {"start": [], "rss": []}, {"start": [], "rss": []}
    server = EventServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-wrapper-") as tmp:
            b = Bench(Path(tmp), server)
            noop = b.node(0)
            run_all([b.severus(noop)])   # untimed: fills the software cache
            b.mark.unlink()
            for _ in range(repeat):
                for kind, start in (("ours", lambda: b.severus(noop)), ("bare", lambda: b.bare(noop, 0))):
                    p = start()
                    run_all([p])
                    into = ours if kind == "ours" else bare
                    into["start"].append(started_after(b.mark, p.began))
                    into["rss"].append(p.peak_mb)
            # 100 events at watch_s/100 s each: progress every 100 events, so the stall check sees one.
            # Both watch at once: each one's CPU is its own, and the run takes watch_s once.
            env = {"TOY_EVENT_TIME": str(watch_s / 100)}
            watching = b.node(100, env)
            b.mark = Path(tmp) / "unused"   # the start marks of the watch runs are not measured
            pair = [b.severus(watching), b.bare(watching, 100, env)]
            run_all(pair, watch=(watch_s * 0.2, watch_s * 0.9))
    finally:
        server.stop()
    ours["rss"].append(pair[0].peak_mb)
    bare["rss"].append(pair[1].peak_mb)
    gate.add("time from launch to payload start (software cached)", ours["start"], bare["start"],
             GOALS["start"], unit="s")
    # The largest of the runs is the peak, for both.
    gate.add("peak RSS", max(ours["rss"]), max(bare["rss"]), GOALS["rss"], unit="MB")
    gate.add(f"CPU while watching a {watch_s} s payload", pair[0].cpu_pct(), pair[1].cpu_pct(), GOALS["cpu"],
             unit="%")
    return gate.finish()


if __name__ == "__main__":
    sys.exit(main())
