"""Issue 3's transfer benchmarks against xrdcp on the same real XRootD SE, in one process.

    python -m bench.bench_transfers [--quick] [--size-mb N] [--files N] [--file-kb K] [--repeat R]

1. stage-in of one big file (verified .part + rename) vs the best xrdcp download
   (its default and with XRD_CPUSEPGWRTRD=0); goal >= 1.0
2. LIST mode with many small files, checksums verified, vs one
   `xrdcp --parallel 4 SRC... DIR/`; goal >= 1.2
3. stage-out of one big file (temporary name, SE size+adler32, rename) vs the
   best xrdcp upload; goal >= 1.5

A ratio is our rate over xrdcp's (xrdcp's time over ours: 1.0 = as fast as xrdcp).
Each figure is the best of `--repeat` runs, so page-cache warm-up does not decide
the result; the spread of the runs is printed (bench/gate.py's summary).
"""
import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gate import Gate  # noqa: E402
from server.xrootd_se import start_se  # noqa: E402
from shared.jobdesc import parse_job_description  # noqa: E402
from wrapper.catalog import FileEntry, Replica  # noqa: E402
from wrapper.checksum import adler32_file  # noqa: E402
from wrapper.client import ServerClient  # noqa: E402
from wrapper.context import JobContext  # noqa: E402
from wrapper.inputs import stage_inputs  # noqa: E402
from wrapper.siteconfig import load_site_config  # noqa: E402
from wrapper.stageout import stage_outputs  # noqa: E402

PREFIX = "/grid/bench.vo"
GOALS = {"stage-in": 1.0, "list": 1.2, "stage-out": 1.5}
MEASURES = {"stage-in": "stage-in of {size}, verified, vs the best xrdcp",
            "list": "LIST stage-in of {files}, verified, vs xrdcp --parallel 4",
            "stage-out": "stage-out of {size}, verified by the SE, vs the best xrdcp upload"}


class DictCatalog:
    """What stage_inputs reads (replicas) and stage_outputs asks (the fence: always current here)."""

    def __init__(self):
        self.entries = {}

    def replicas(self, lfn):
        return self.entries.get(lfn)

    def fence(self, job, wait_s, cancel=None, kill_stops=True):
        return {"attempt": job.attempt}


def best_of(repeat, fn, before=None):
    """The times of `repeat` runs of fn() (before() runs untimed ahead of each)."""
    times = []
    for _ in range(repeat):
        if before:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def clean(workdirs):
    """An untimed step that removes the previous runs' work dirs, as xrdcp's runs get theirs."""
    def remove():
        while workdirs:
            shutil.rmtree(workdirs.pop(), ignore_errors=True)
    return remove


def xrdcp(args, page_checksums):
    env = dict(os.environ, XRD_CONNECTIONRETRY="1")
    if page_checksums:
        env.pop("XRD_CPUSEPGWRTRD", None)
    else:
        env["XRD_CPUSEPGWRTRD"] = "0"
    subprocess.run(["xrdcp", "-f", "-s"] + args, check=True, env=env)


def write_file(path, size):
    """Random data in 1 MiB blocks (incompressible, like real event files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n
            block = block[1:] + block[:1]   # every MiB differs, still cheap to make


class Bench:
    """An SE, a site that reaches it over root://, and job contexts on scratch."""

    def __init__(self, base, parallel):
        self.base = base
        self.se = start_se(base / "se", name="bench")
        self.area = self.se.export / "bench"
        self.area.mkdir()
        if os.geteuid() == 0:
            import pwd
            user = pwd.getpwnam("xrootd")
            os.chown(self.area, user.pw_uid, user.pw_gid)
        self.root = f"{self.se.root_url}/bench"
        cfg = base / "BENCH.toml"
        cfg.write_text(f'name = "BENCH"\n[se]\nlfn_prefix = "{PREFIX}"\nurls = ["{self.root}"]\n'
                       f'access = "protocol"\n[scratch]\nmin_free_gb = 0\n'
                       f"[transfer]\nparallel = {parallel}\nretries = 0\n")
        self.site = load_site_config(cfg)
        self.catalog = DictCatalog()
        self.n = 0

    def publish(self, rel, path):
        """A file on the SE (written directly under the export) and in the catalog."""
        target = self.area / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        lfn = f"lfn:{PREFIX}/{rel}"
        self.catalog.entries[lfn] = FileEntry(lfn, path.stat().st_size, adler32_file(path),
                                              (Replica("BENCH", f"{self.root}/{rel}"),))
        return lfn

    def context(self, input_spec=None):
        self.n += 1
        workdir = self.base / f"job{self.n}"
        workdir.mkdir()
        desc = parse_job_description({
            "schema": 1,
            "job": {"id": self.n, "runnum": self.n, "attempt": 1, "session": "Bench",
                    "production": "bench", "request": 1, "events": 1},
            "server": {"url": "http://127.0.0.1:9", "token": "t"},
            "software": {"name": "B", "version": "V1", "revision": 1, "lfn": f"lfn:{PREFIX}/sw.tgz",
                         "adler32": "00000001", "workdir": ".", "exe": "x"},
            "payload": {"module": "generic"},
            "input": input_spec or {"mode": "NONE"},
            "output": {"lfn_dir": f"lfn:{PREFIX}/out/{self.n}", "patterns": ["*.root"]},
        })
        return JobContext(desc=desc, site=self.site, workdir=workdir,
                          server=ServerClient(desc.server.url, desc.server.token))

    def stop(self):
        self.se.stop()


def report(gate, name, xrdcp_s, ours_s, nbytes, nfiles, label):
    """One goal row: rates (MB/s) of every run, so the ratio is xrdcp's time over ours."""
    mb = nbytes / 1e6
    print(f"{name:10s} xrdcp {min(xrdcp_s):7.3f} s {mb / min(xrdcp_s):8.0f} MB/s {nfiles / min(xrdcp_s):7.0f} files/s | "
          f"severus {min(ours_s):7.3f} s {mb / min(ours_s):8.0f} MB/s {nfiles / min(ours_s):7.0f} files/s | "
          f"ratio {min(xrdcp_s) / min(ours_s):5.2f}", flush=True)
    return gate.add(MEASURES[name].format(**label), [mb / t for t in ours_s], [mb / t for t in xrdcp_s],
                    (">=", GOALS[name]), unit="MB/s")


def _fastest(times):
    """xrdcp's better setting: the runs of the one with the shortest run."""
    return min(times.values(), key=min)


def bench_stage_in(gate, b, size, repeat):
    src = b.base / "big.root"
    write_file(src, size)
    lfn = b.publish("in/big.root", src)
    url = f"{b.root}/in/big.root"
    dest = b.base / "xrdcp-big.root"

    def no_dest():
        if dest.exists():
            dest.unlink()   # each run writes a new file, as ours does

    times = {pc: best_of(repeat, lambda pc=pc: xrdcp([url, str(dest)], pc), no_dest) for pc in (True, False)}
    print(f"stage-in   xrdcp default {min(times[True]):.3f} s, XRD_CPUSEPGWRTRD=0 {min(times[False]):.3f} s")
    dest.unlink()

    workdirs = []

    def ours():
        ctx = b.context({"mode": "FILE", "paths": [lfn]})
        workdirs.append(ctx.workdir)
        stage_inputs(ctx, catalog=b.catalog)

    return report(gate, "stage-in", _fastest(times), best_of(repeat, ours, clean(workdirs)), size, 1,
                  {"size": f"{size >> 20} MiB"})


def bench_list(gate, b, files, file_kb, repeat):
    lfns, urls = [], []
    for i in range(files):
        src = b.base / "small" / f"f{i:04d}.root"
        write_file(src, file_kb * 1024)
        lfns.append(b.publish(f"many/f{i:04d}.root", src))
        urls.append(f"{b.root}/many/f{i:04d}.root")
    shutil.rmtree(b.base / "small")
    out = b.base / "xrdcp-many"

    def fresh_out():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()

    t_xrdcp = best_of(repeat, lambda: xrdcp(["--parallel", "4"] + urls + [str(out) + "/"], False), fresh_out)
    shutil.rmtree(out)

    workdirs = []

    def ours():
        ctx = b.context({"mode": "LIST", "paths": lfns})
        workdirs.append(ctx.workdir)
        assert len(stage_inputs(ctx, catalog=b.catalog)) == files

    return report(gate, "list", t_xrdcp, best_of(repeat, ours, clean(workdirs)), files * file_kb * 1024, files,
                  {"files": f"{files} x {file_kb} KiB"})


def bench_stage_out(gate, b, size, repeat):
    src = b.base / "up.root"
    write_file(src, size)
    n = [0]

    def xrdcp_up(pc):
        n[0] += 1
        xrdcp(["--path", str(src), f"{b.root}/xrdcp-out/{n[0]}/up.root"], pc)

    times = {pc: best_of(repeat, lambda pc=pc: xrdcp_up(pc)) for pc in (True, False)}
    print(f"stage-out  xrdcp default {min(times[True]):.3f} s, XRD_CPUSEPGWRTRD=0 {min(times[False]):.3f} s")
    shutil.rmtree(b.area / "xrdcp-out")

    def ours():
        ctx = b.context()
        os.link(src, ctx.workdir / "up.root")   # the payload's output, without a copy
        stage_outputs(ctx, [ctx.workdir / "up.root"], catalog=b.catalog)

    return report(gate, "stage-out", _fastest(times), best_of(repeat, ours), size, 1,
                  {"size": f"{size >> 20} MiB"})


def memory_dir(size):
    """/dev/shm when it holds five copies of the big file, else the default temp dir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 5 * size:
        return str(shm)
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.bench_transfers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 x 100 KiB, two runs each, goals at half (the"
                        " big file stays 1 GiB: xrdcp's fixed costs dominate a small one, so its ratios differ)")
    parser.add_argument("--size-mb", type=int, default=1024, help="big file size in MiB (default 1024)")
    parser.add_argument("--files", type=int, default=500, help="small files for LIST (default 500)")
    parser.add_argument("--file-kb", type=int, default=100, help="small file size in KiB (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, best kept (default 3)")
    parser.add_argument("--parallel", type=int, default=4, help="site transfer.parallel (default 4)")
    parser.add_argument("--dir", help="where the SE and scratch live (default: /dev/shm when it has"
                                      " room, so disk write-back does not decide the figures)")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.repeat = 100, 2   # two: one xrdcp upload alone swung 0.72-2.45
    logging.basicConfig(level=logging.WARNING)
    gate = Gate("bench_transfers", args.quick)
    gate.start()
    base = Path(tempfile.mkdtemp(prefix="severus-bench-", dir=args.dir or memory_dir(args.size_mb << 20)))
    b = Bench(base, args.parallel)
    try:
        print(f"in {base}; SE {b.se.root_url}; big file {args.size_mb} MiB; {args.files} x {args.file_kb} KiB; "
              f"best of {args.repeat}", flush=True)
        bench_stage_in(gate, b, args.size_mb << 20, args.repeat)
        bench_list(gate, b, args.files, args.file_kb, args.repeat)
        bench_stage_out(gate, b, args.size_mb << 20, args.repeat)
    finally:
        b.stop()
        shutil.rmtree(base, ignore_errors=True)
    # Ratios to xrdcp run in the same process and moment: the gate holds on a busy machine too.
    return gate.finish()


if __name__ == "__main__":
    sys.exit(main())
