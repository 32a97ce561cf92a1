"""A toy "FastSim" release for the demo and the tests: a tarball whose exe
writes a file of N events, like PacProduction wrote its ROOT files.

The exe reads the job from its command line (`--events N --runnum R`, what the
fastsim/generic modules pass) or from SEVERUS_EVENTS/SEVERUS_RUNNUM, writes
`<runnum>.root` in the current directory and counts its progress into
$SEVERUS_PROGRESS_FILE, so the watchdog sees events, not just time passing.
TOY_EVENT_TIME slows it down, TOY_EXIT_CODE makes it fail, TOY_OUTPUTS and
TOY_OUTPUT_BYTES make it write more output files (`<runnum>_<k>.root`),
TOY_LINE_BYTES makes it print 5 stdout lines that long per event.
"""
import io
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

WORKDIR = "FastSim/V0.2.5"
EXE = "bin/PacProduction"

EXE_SOURCE = r'''#!/usr/bin/env python3
"""Toy PacProduction: writes N fake events to <runnum>.root."""
import argparse, os, sys, time
p = argparse.ArgumentParser()
p.add_argument("--events", type=int, default=int(os.environ.get("SEVERUS_EVENTS", "10")))
p.add_argument("--runnum", type=int, default=int(os.environ.get("SEVERUS_RUNNUM", "0")))
p.add_argument("--event-time", type=float, default=float(os.environ.get("TOY_EVENT_TIME", "0")))
p.add_argument("--exit-code", type=int, default=int(os.environ.get("TOY_EXIT_CODE", "0")))
args, _ = p.parse_known_args()
progress = os.environ.get("SEVERUS_PROGRESS_FILE")
line_bytes = int(os.environ.get("TOY_LINE_BYTES", "0"))
line_count = 5 if line_bytes else 0
print("PacProduction toy: run %d, %d events" % (args.runnum, args.events), flush=True)
with open("%d.root" % args.runnum, "wb") as out:
    # Like real outputs (timestamps, seeds), each attempt's bytes differ: an overwrite shows.
    out.write(b"TOYROOT attempt %s\n" % os.environ.get("SEVERUS_ATTEMPT", "0").encode())
    for n in range(1, args.events + 1):
        out.write(("event %d of run %d\n" % (n, args.runnum)).encode() * 4)
        for k in range(line_count):   # a chatty payload: long stdout lines, big heartbeat tails
            print(("event %05d line %d " % (n, k)).ljust(line_bytes, "x"), flush=True)
        if args.event_time:
            time.sleep(args.event_time)
        if progress and (n % 100 == 0 or n == args.events):
            with open(progress + ".tmp", "w") as fh:
                fh.write(str(n))
            os.replace(progress + ".tmp", progress)
# More output files, as multi-stream productions write (TOY_OUTPUTS of TOY_OUTPUT_BYTES each).
for k in range(1, int(os.environ.get("TOY_OUTPUTS", "0")) + 1):
    with open("%d_%d.root" % (args.runnum, k), "wb") as out:
        out.write(os.urandom(int(os.environ.get("TOY_OUTPUT_BYTES", "1000"))))
print("done: %d events" % args.events, flush=True)
sys.exit(args.exit_code)
'''


@dataclass(frozen=True)
class ToyRelease:
    path: Path       # the tarball on local disk
    adler32: str
    size: int
    workdir: str = WORKDIR
    exe: str = EXE


def build_toy_release(directory, name="V0.2.5_SL-5.3_x86_64_rev311.tjz"):
    """Write the toy tarball into `directory`; return where it is and its adler32."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        # CONTRACT §1: workdir and exe are both relative to the unpack root.
        for dirname in ("FastSim", WORKDIR, "bin"):
            info = tarfile.TarInfo(dirname)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = EXE_SOURCE.encode()
        info = tarfile.TarInfo(EXE)
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    path = Path(directory) / name
    path.write_bytes(blob)
    return ToyRelease(path=path, adler32=f"{zlib.adler32(blob) & 0xffffffff:08x}", size=len(blob))
