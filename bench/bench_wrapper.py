"""Wrapper benchmarks (issue 4): overhead of a no-op job, peak RSS, CPU while watching.

    python -m bench.bench_wrapper [--quick]

A real `severus run` subprocess, real stages on a direct-access SE in a temp
dir, and the stdlib events/catalog server of the wrapper tests. Goals:
overhead < 1 s, wrapper peak RSS < 50 MB, wrapper CPU < 1 % of a core while
it watches a 60 s payload (6 s with --quick).
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tests.wrapper.test_cli import PARAMS, ROOT, Node
from tests.wrapper.test_report import EventServer

GOALS = {"overhead_s": 1.0, "peak_rss_mb": 50.0, "watch_cpu_pct": 1.0}


def run_job(tmp, payload_env, events, watch=None):
    """Run one job; return (wall seconds, payload seconds, peak wrapper RSS MB, CPU % watching)."""
    server = EventServer().start()
    try:
        over = {"payload": {"module": "fastsim", "parameters": PARAMS, "env": payload_env},
                "job": {"id": 42, "runnum": 10000003, "attempt": 1, "session": "FastSim",
                        "production": "2010_July", "request": 7, "events": events},
                "limits": {"max_wct_s": 3600}}
        node = Node(Path(tmp), server, **over)
        began = time.monotonic()
        proc = subprocess.Popen(node.argv("--sample-s", "2"), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        me = psutil.Process(proc.pid)
        peak, cpu_marks = 0.0, []
        while proc.poll() is None:
            try:
                peak = max(peak, me.memory_info().rss / 2 ** 20)
                elapsed = time.monotonic() - began
                if watch and len(cpu_marks) < len(watch) and elapsed >= watch[len(cpu_marks)]:
                    t = me.cpu_times()
                    cpu_marks.append((time.monotonic(), t.user + t.system))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        wall = time.monotonic() - began
        err = proc.stderr.read().decode()
        if proc.returncode != 0:
            raise SystemExit(f"the benchmark job failed ({proc.returncode}): {err.strip()}")
        report = server.finals()[0]["report"]
        payload_s = report["metrics"]["wct_s"]
        cpu_pct = None
        if len(cpu_marks) == 2:
            (t0, c0), (t1, c1) = cpu_marks
            cpu_pct = 100.0 * (c1 - c0) / (t1 - t0)
        return wall, payload_s, peak, cpu_pct
    finally:
        server.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 6 s payload instead of 60 s")
    args = parser.parse_args(argv)
    watch_s = 6 if args.quick else 60
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-wrapper-") as tmp:
        wall, payload_s, peak, _ = run_job(Path(tmp) / "noop", {}, 0)
        results["overhead_s"] = round(wall - payload_s, 3)
        results["peak_rss_mb"] = round(peak, 1)
        # 100 events at watch_s/100 s each: progress every 100 events, so the stall check sees one.
        env = {"TOY_EVENT_TIME": str(watch_s / 100)}
        marks = (watch_s * 0.2, watch_s * 0.9)
        wall, payload_s, peak, cpu = run_job(Path(tmp) / "watch", env, 100, watch=marks)
        results["peak_rss_mb"] = round(max(results["peak_rss_mb"], peak), 1)
        results["watch_cpu_pct"] = round(cpu, 3) if cpu is not None else None
        results["watched_payload_s"] = round(payload_s, 1)
    failed = []
    for key, goal in GOALS.items():
        value = results[key]
        ok = value is not None and value < goal
        failed += [] if ok else [key]
        print(f"{key:18} {value!s:>10}   goal < {goal:g}   {'ok' if ok else 'MISSED'}")
    print(json.dumps(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
