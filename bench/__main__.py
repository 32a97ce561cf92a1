"""Run every benchmark module (bench/bench_*.py) in turn: `python -m bench [--quick] [NAME ...]`.

Each module is run as its own process (`python -m bench.<name> [--quick]`) so
one benchmark's memory or threads never colour another's figures. Their goal rows
(bench/gate.py) are gathered into one summary table printed at the end; the exit
status is 1 when a goal is missed or a benchmark failed.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import gate

# Not part of `make bench`: its own target (`make bench-scale`, ~15 minutes).
SEPARATE = {"bench_scale"}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat, goals at half")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all but bench_scale)")
    args = parser.parse_args(argv)
    found = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    names = args.names or [n for n in found if n not in SEPARATE]
    unknown = sorted(set(names) - set(found))
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]}; have: {', '.join(found)}")
    print(f"python -m bench{' --quick' if args.quick else ''}: {', '.join(names)}; {gate.load_line()}", flush=True)
    failed = []
    with tempfile.TemporaryDirectory(prefix="bench-results-") as tmp:
        results = os.path.join(tmp, "rows.jsonl")
        env = dict(os.environ, **{gate.RESULTS_ENV: results})
        began = time.monotonic()
        for name in names:
            print(f"\n=== {name} ===", flush=True)
            start = time.monotonic()
            cmd = [sys.executable, "-m", f"bench.{name}"] + (["--quick"] if args.quick else [])
            if subprocess.call(cmd, env=env) != 0:
                failed.append(name)
            print(f"--- {name}: {time.monotonic() - start:.1f} s", flush=True)
        rows = gate.read_rows(results)
    missed = [r for r in rows if not r.met]
    print(f"\n=== summary{' (quick: every goal at half)' if args.quick else ''}, "
          f"{time.monotonic() - began:.0f} s; {gate.load_line()} ===")
    print(gate.table(rows))
    print(f"\n{len(rows) - len(missed)} of {len(rows)} goals met"
          + (f"; benchmarks failing: {', '.join(failed)}" if failed else ""))
    return 1 if failed or missed else 0


if __name__ == "__main__":
    sys.exit(main())
