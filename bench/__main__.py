"""Run every benchmark module (bench/bench_*.py) in turn: `python -m bench [--quick] [NAME ...]`.

Each module is run as its own process (`python -m bench.<name> [--quick]`) so
one benchmark's memory or threads never colour another's figures.
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    found = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    names = args.names or found
    unknown = sorted(set(names) - set(found))
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]}; have: {', '.join(found)}")
    failed = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        start = time.monotonic()
        cmd = [sys.executable, "-m", f"bench.{name}"] + (["--quick"] if args.quick else [])
        if subprocess.call(cmd) != 0:
            failed.append(name)
        print(f"--- {name}: {time.monotonic() - start:.1f} s", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
