"""Payload modules and the watchdog, on real processes (shell and python scripts)."""
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from shared.errors import (JobDescriptionError, KilledByManager, PayloadFailed, PayloadMemory,
                           PayloadSignalled, PayloadStalled, PayloadWallclock)
from shared.jobdesc import parse_job_description
import wrapper.payload as payload
from wrapper.modules import MODULES, PayloadJob, find_module
from wrapper.payload import PayloadSpec, PayloadWatch, WatchConfig
from wrapper.runner import Stop

from ..startup import interpreter_startup_s
from ..waiting import poll
from .test_report import make_desc

PY = sys.executable


def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def spec_for(tmp_path, script, progress=True, patterns=("*.root",)):
    """A payload running a python script in tmp_path/run."""
    cwd = tmp_path / "run"
    cwd.mkdir(exist_ok=True)
    progress_file = cwd / "progress"
    env = dict(os.environ, SEVERUS_PROGRESS_FILE=str(progress_file))
    return PayloadSpec(argv=(PY, "-c", textwrap.dedent(script)), env=env, cwd=cwd,
                       progress_file=progress_file if progress else None,
                       output_patterns=patterns)


def run(tmp_path, script, stop=None, **config):
    config.setdefault("sample_s", 0.1)
    config.setdefault("grace_s", 1.0)
    watch = PayloadWatch(spec_for(tmp_path, script), WatchConfig(**config), tmp_path, stop)
    began = time.monotonic()
    try:
        result = watch.run()
        return watch, result, None, time.monotonic() - began
    except Exception as exc:
        return watch, None, exc, time.monotonic() - began


# A payload with a tree: two grandchildren (one leaves the group with setsid), all sleeping.
FAMILY = """
    import subprocess, sys, time, os
    kids = [subprocess.Popen(["sleep", "300"]),
            subprocess.Popen(["sleep", "301"], start_new_session=True),
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])]
    print("pids", os.getpid(), *[k.pid for k in kids], flush=True)
    time.sleep(300)
"""


def family_pids(tmp_path):
    line = (tmp_path / "payload.stdout").read_text().split()
    return [int(p) for p in line[1:]]


def test_wallclock_limit_kills_the_whole_tree(tmp_path):
    watch, result, exc, took = run(tmp_path, FAMILY, max_wct_s=2)
    assert isinstance(exc, PayloadWallclock) and exc.code == 32
    assert exc.data["signal"] == 15
    pids = family_pids(tmp_path)
    assert len(pids) == 4 and set(pids) <= set(watch.pids)
    assert not [p for p in pids if alive(p)], "a payload process survived"
    assert took < 5 + 2 * interpreter_startup_s()     # 2 s + the grace, not the payload's 300 s


def test_a_payload_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    script = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(300)
    """
    watch, _, exc, took = run(tmp_path, script, max_wct_s=1, grace_s=0.5)
    assert isinstance(exc, PayloadWallclock)
    assert exc.data["signal"] == 9
    assert not [p for p in watch.pids if alive(p)]
    assert took < 4 + interpreter_startup_s()


def test_memory_limit_counts_the_whole_process_tree(tmp_path):
    # Two processes of ~80 MB each: neither alone passes 120 MB, together they do.
    script = """
        import subprocess, sys, time
        hog = "b = bytearray(80 * 2**20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(300)"
        kid = subprocess.Popen([sys.executable, "-c", hog])
        exec(hog)
    """
    watch, _, exc, took = run(tmp_path, script, max_rss_mb=120)
    assert isinstance(exc, PayloadMemory) and exc.code == 33
    assert exc.data["rss_mb"] > 120
    assert len(watch.pids) >= 2
    assert not [p for p in watch.pids if alive(p)]
    assert took < 10 + 2 * interpreter_startup_s()


def test_the_jobs_memory_request_is_its_limit_unless_it_sets_one(tmp_path):
    """limits.memory_mb (what the batch system was asked for) stops the payload's tree at that PSS,
    with 033 before the batch system's OOM killer; an explicit max_rss_mb wins."""
    from shared.jobdesc import Limits
    assert WatchConfig.from_limits(Limits(memory_mb=120)).max_rss_mb == 120
    assert WatchConfig.from_limits(Limits(memory_mb=120, max_rss_mb=500)).max_rss_mb == 500
    assert WatchConfig.from_limits(Limits()).max_rss_mb == 0          # no limit
    script = "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(300)"
    config = WatchConfig.from_limits(Limits(memory_mb=120, max_wct_s=120), sample_s=0.1, grace_s=1.0)
    watch = PayloadWatch(spec_for(tmp_path, script), config, tmp_path, None)
    with pytest.raises(PayloadMemory) as info:
        watch.run()
    assert info.value.code == 33 and info.value.data["pss_mb"] > 120
    assert not [p for p in watch.pids if alive(p)]


def test_a_payload_without_progress_is_stalled(tmp_path):
    script = "while True: pass"  # spins: CPU alone is not progress
    watch, _, exc, took = run(tmp_path, script, stall_s=1)
    assert isinstance(exc, PayloadStalled) and exc.code == 34
    assert not [p for p in watch.pids if alive(p)]
    assert took < 5 + interpreter_startup_s()


def test_progress_file_events_keep_a_slow_payload_alive(tmp_path):
    script = """
        import os, time
        path = os.environ["SEVERUS_PROGRESS_FILE"]
        for n in range(1, 13):
            time.sleep(0.2)
            with open(path + ".tmp", "w") as fh:
                fh.write(str(n * 10))
            os.replace(path + ".tmp", path)
    """
    _, result, exc, took = run(tmp_path, script, stall_s=0.8)
    assert exc is None, exc
    assert result.exit_code == 0 and took > 2
    assert result.metrics["events"] == 120


def test_growing_output_counts_as_progress(tmp_path):
    script = """
        import time
        with open("1.root", "ab") as fh:
            for n in range(12):
                time.sleep(0.2)
                fh.write(b"x" * 1000); fh.flush()
    """
    _, result, exc, _ = run(tmp_path, script, stall_s=0.8)
    assert exc is None, exc
    assert result.metrics["output_mb"] > 0


def test_non_zero_exit_is_030_with_the_exit_code(tmp_path):
    _, _, exc, _ = run(tmp_path, "import sys; print('bad', file=sys.stderr); sys.exit(3)")
    assert isinstance(exc, PayloadFailed) and exc.code == 30
    assert exc.data == {"exit_code": 3, "signal": None}


def test_death_by_signal_is_031_with_the_signal(tmp_path):
    watch, _, exc, _ = run(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert isinstance(exc, PayloadSignalled) and exc.code == 31
    assert exc.data["signal"] == 11 and "SIGSEGV" in str(exc)


def test_success_reports_metrics_and_tails(tmp_path):
    script = """
        import sys
        for n in range(100): print("out", n)
        print("err line", file=sys.stderr)
    """
    watch, result, exc, _ = run(tmp_path, script)
    assert exc is None
    assert result.exit_code == 0 and result.signal is None
    assert watch.stdout_tail(2) == ["out 98", "out 99"]
    assert watch.stderr_tail() == ["err line"]
    assert result.metrics["wct_s"] > 0 and "cpu_s" in result.metrics


def test_stop_request_ends_the_payload_at_once(tmp_path):
    stop = Stop()
    stop.request(KilledByManager("kill command from the server"))
    try:
        watch, _, exc, took = run(tmp_path, FAMILY, stop=stop, max_wct_s=60)
    finally:
        stop.close()
    assert isinstance(exc, KilledByManager)
    assert not [p for p in watch.pids if alive(p)]
    assert took < 3 + 2 * interpreter_startup_s()


def test_output_files_are_capped_keeping_the_tail(tmp_path):
    script = """
        for n in range(40000): print("line %06d" % n)
    """
    cap = 64 * 1024
    _, result, exc, _ = run(tmp_path, script, max_log_bytes=cap)
    assert exc is None
    data = result.stdout.read_bytes()
    assert len(data) <= cap + 1024
    assert data.rstrip().endswith(b"line 039999")
    assert b"earlier output dropped" in data


# ---------------------------------------------------------------------- memory: PSS

def watch_for(tmp_path, script, **config):
    config.setdefault("sample_s", 0.1)
    config.setdefault("grace_s", 1.0)
    return PayloadWatch(spec_for(tmp_path, script), WatchConfig(**config), tmp_path)


class Background:
    """`watch.run()` in a thread, so that the test can act while the payload runs."""

    def __init__(self, watch):
        self.watch, self.result, self.exc = watch, None, None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.result = self.watch.run()
        except Exception as exc:  # the test looks at it
            self.exc = exc

    def done(self):
        return not self.thread.is_alive()

    def join(self, timeout=90):
        self.thread.join(timeout)
        assert self.done(), "the watchdog did not return"


# The payload's processes wait for a file `go` (with a deadline of their own) instead of
# sleeping, so that the test decides when they end.
WAIT_FOR_GO = """
    import os, time
    def wait_for_go():
        deadline = time.monotonic() + 60
        while not os.path.exists("go") and time.monotonic() < deadline:
            time.sleep(0.02)
"""

# 200 MB touched, then 4 forks: with OWN_MB = 0 the children only share the parent's pages
# copy-on-write (RSS sums to ~1000 MB, PSS to ~200 MB); otherwise each touches OWN_MB of its own.
FORKED = WAIT_FOR_GO + """
    def touched(mb):
        b = bytearray(mb * 2**20)
        b[::4096] = b"x" * len(b[::4096])
        return b
    shared = touched(200)
    kids = []
    for n in range(4):
        pid = os.fork()
        if pid == 0:
            own = touched(OWN_MB)
            wait_for_go()
            os._exit(0)
        kids.append(pid)
    for pid in kids:
        os.waitpid(pid, 0)
"""


def test_a_forked_payload_is_charged_its_shared_pages_once(tmp_path):
    bg = Background(watch_for(tmp_path, FORKED.replace("OWN_MB", "0"), max_rss_mb=600))
    poll(lambda: bg.done() or bg.watch.snapshot().get("processes", 0) >= 5, timeout=60,
         what="a sample of the parent and its 4 children")
    (tmp_path / "run" / "go").touch()
    bg.join()
    assert bg.exc is None, f"a forked payload sharing 200 MB was ended: {bg.exc!r}"
    m = bg.result.metrics
    assert bg.result.exit_code == 0
    assert m["max_rss_mb"] > 900, m          # every process's copy of the shared pages
    assert 190 < m["max_pss_mb"] < 400, m    # the shared pages once
    assert m["max_pss_mb"] < m["max_rss_mb"] / 2


def test_a_payload_really_using_more_than_the_limit_is_still_033(tmp_path):
    script = FORKED.replace("OWN_MB", "200")     # ~1000 MB of distinct pages in all
    watch = watch_for(tmp_path, script, max_rss_mb=600, max_wct_s=120)
    began = time.monotonic()
    with pytest.raises(PayloadMemory) as info:
        watch.run()
    exc = info.value
    assert exc.code == 33
    assert "PSS" in str(exc) and exc.data["memory_measure"] == "PSS"
    assert exc.data["pss_mb"] > 600 and exc.data["rss_mb"] >= exc.data["pss_mb"]
    assert len(watch.pids) >= 3
    assert not [p for p in watch.pids if alive(p)]
    assert time.monotonic() - began < 60


def test_memory_metrics_report_rss_and_pss(tmp_path):
    script = WAIT_FOR_GO + """
    b = bytearray(100 * 2**20)
    b[::4096] = b"x" * len(b[::4096])
    wait_for_go()
    """
    bg = Background(watch_for(tmp_path, script))
    poll(lambda: bg.done() or bg.watch.snapshot().get("pss_mb", 0) >= 100, timeout=60,
         what="a sample of the 100 MB")
    live = bg.watch.snapshot()
    (tmp_path / "run" / "go").touch()
    bg.join()
    assert bg.exc is None, bg.exc
    m = bg.result.metrics
    # One process with private pages: its PSS is its RSS less its share of the libraries.
    assert 100 <= live["pss_mb"] <= live["rss_mb"] < 200, live
    assert 100 <= m["max_pss_mb"] <= m["max_rss_mb"] < 200, m
    assert {"rss_mb", "pss_mb"} <= set(m)


def test_without_smaps_rollup_the_limit_falls_back_to_rss(tmp_path, monkeypatch):
    # As on a kernel without smaps_rollup (< 4.14): the sum of RSS, and the message says so.
    monkeypatch.setattr(payload, "SMAPS_ROLLUP", str(tmp_path / "no-proc" / "{pid}"))
    script = """
        import subprocess, sys, time
        hog = "b = bytearray(80 * 2**20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(300)"
        kid = subprocess.Popen([sys.executable, "-c", hog])
        exec(hog)
    """
    watch, _, exc, _ = run(tmp_path, script, max_rss_mb=120)
    assert isinstance(exc, PayloadMemory) and exc.code == 33
    assert exc.data["memory_measure"] == "RSS" and "tree RSS" in str(exc)
    assert not [p for p in watch.pids if alive(p)]


# ---------------------------------------------------------------------- leftovers

def test_a_background_child_of_a_successful_payload_is_ended_and_counted(tmp_path, caplog):
    # the payload ends once its child is `sleep` (exec'd): before that it is a forked `sh`, and the
    # watchdog's report would name that
    script = 'sleep 1000 & pid=$!; until [ "$(cat /proc/$pid/comm)" = sleep ]; do :; done; echo $pid > bg.pid'
    spec = PayloadSpec(argv=("sh", "-c", script), env=dict(os.environ), cwd=tmp_path)
    began = time.monotonic()
    with caplog.at_level("WARNING", logger="severus.payload"):
        result = PayloadWatch(spec, WatchConfig(sample_s=0.1, grace_s=60), tmp_path).run()
    took = time.monotonic() - began
    child = int((tmp_path / "bg.pid").read_text())
    assert result.exit_code == 0                # leftovers do not change the status
    assert not alive(child), "the payload's background child survived it"
    assert result.metrics["leftover_processes"] == 1
    assert "left 1 process" in caplog.text and "sleep" in caplog.text
    assert took < 8 + interpreter_startup_s()   # sleep ends on SIGTERM: the 60 s grace is not waited


LEAVES_TWO = WAIT_FOR_GO + """
    import subprocess
    stay = subprocess.Popen(["sleep", "1000"])                           # in the group
    away = subprocess.Popen(["sleep", "1001"], start_new_session=True)   # left group and session
    with open("pids.tmp", "w") as fh:
        fh.write("%d %d" % (stay.pid, away.pid))
    os.replace("pids.tmp", "pids")
    wait_for_go()
"""


def read_pids(path):
    try:
        return [int(p) for p in path.read_text().split()]
    except FileNotFoundError:
        return None


@pytest.mark.parametrize("reader", ["proc", "psutil"])
def test_children_left_in_and_out_of_the_session_are_ended_and_counted(tmp_path, monkeypatch,
                                                                       reader):
    if reader == "psutil":
        monkeypatch.setattr(payload, "READER", payload.PsutilReader())
    bystander = subprocess.Popen(["sleep", "1002"])   # the wrapper's own child, not the payload's
    try:
        bg = Background(watch_for(tmp_path, LEAVES_TWO))
        pids = poll(lambda: read_pids(tmp_path / "run" / "pids"), timeout=30, what="the pids")
        poll(lambda: set(pids) <= set(bg.watch.pids), timeout=30,
             what="the watchdog seeing both children")
        (tmp_path / "run" / "go").touch()
        bg.join()
        assert bg.exc is None, bg.exc
        assert bg.result.exit_code == 0
        assert not [p for p in pids if alive(p)], "a child survived the payload"
        assert bg.result.metrics["leftover_processes"] == 2
        assert bystander.poll() is None, "a process that is not the payload's was ended"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_leftover_ignoring_sigterm_is_killed_after_the_grace(tmp_path, caplog):
    script = """
        import os, subprocess, sys, time
        stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                    "open('ready', 'w').close(); time.sleep(1000)")
        kid = subprocess.Popen([sys.executable, "-c", stubborn])
        deadline = time.monotonic() + 60
        while not os.path.exists("ready") and time.monotonic() < deadline:
            time.sleep(0.02)
        print(kid.pid, flush=True)
    """
    with caplog.at_level("WARNING", logger="severus.payload"):
        watch, result, exc, took = run(tmp_path, script, grace_s=0.5)
    assert exc is None, exc
    kid = int(result.stdout.read_text().split()[0])
    assert not alive(kid)
    assert result.metrics["leftover_processes"] == 1
    assert "1 of them with SIGKILL after the 0.5 s grace" in caplog.text
    assert took < 15


def test_a_payload_leaving_nothing_behind_counts_zero(tmp_path):
    _, result, exc, _ = run(tmp_path, "print('done')")
    assert exc is None
    assert result.metrics["leftover_processes"] == 0


def test_the_tree_keeps_recorded_pids_only_while_their_start_time_matches():
    P = payload.ProcInfo
    # Root 100 (group and session 100) has exited. 150 is still in its group; 300 left with
    # setsid and was recorded with its start time, 301 is its child; 200 was recorded but
    # its PID now belongs to a process started later; 400 is someone else's.
    procs = {150: P(ppid=1, pgrp=100, sid=100, start=11.0, name="a"),
             200: P(ppid=1, pgrp=200, sid=200, start=99.0, name="reused"),
             201: P(ppid=200, pgrp=200, sid=200, start=99.5, name="reused-child"),
             300: P(ppid=1, pgrp=300, sid=300, start=12.0, name="away"),
             301: P(ppid=300, pgrp=300, sid=300, start=13.0, name="away-child"),
             400: P(ppid=1, pgrp=400, sid=400, start=5.0, name="other")}
    known = {100: 10.0, 200: 11.5, 300: 12.0}
    assert set(payload.payload_tree(procs, 100, known)) == {150, 300, 301}
    # Once PID 100 itself is reused, its group and session are no longer the payload's.
    procs[100] = P(ppid=1, pgrp=100, sid=100, start=98.0, name="new-leader")
    assert set(payload.payload_tree(procs, 100, known)) == {300, 301}


# ---------------------------------------------------------------------- modules

def payload_job(tmp_path, **payload):
    d = make_desc("http://127.0.0.1:1", payload=dict({"module": "generic"}, **payload))
    desc = parse_job_description(d)
    return PayloadJob(desc=desc, exe=tmp_path / "bin/exe", software_root=tmp_path,
                      software_workdir=tmp_path, cwd=tmp_path, inputs=(tmp_path / "in.root",))


PARAMS = {"Analysis": "HadRecoilCocktail", "Generator": "B0B0bar_SL", "Geometry": "DG_4",
          "Background": "MixSuperbBkg_NoPair.tcl"}


def test_registry_holds_the_built_in_modules():
    assert sorted(MODULES) == ["dq", "fastsim", "fullsim", "generic", "merge"]


def test_generic_passes_args_and_the_job_in_the_environment(tmp_path):
    job = payload_job(tmp_path, args=["-x", "1"], env={"BFROOT": "/opt/superb"})
    spec = find_module("generic").build(job)
    assert spec.argv == (str(tmp_path / "bin/exe"), "-x", "1")
    assert spec.env["SEVERUS_EVENTS"] == "50" and spec.env["SEVERUS_RUNNUM"] == "10000003"
    assert spec.env["SEVERUS_INPUTS"] == str(tmp_path / "in.root")
    assert spec.env["BFROOT"] == "/opt/superb"
    assert spec.progress_file == Path(spec.env["SEVERUS_PROGRESS_FILE"])


@pytest.mark.parametrize("name", ["fastsim", "fullsim"])
def test_simulations_turn_the_seed_parameters_into_options(tmp_path, name):
    spec = find_module(name).build(payload_job(tmp_path, module=name, parameters=PARAMS))
    argv = list(spec.argv)
    for flag, key in (("--analysis", "Analysis"), ("--generator", "Generator"),
                      ("--geometry", "Geometry"), ("--background", "Background")):
        assert argv[argv.index(flag) + 1] == PARAMS[key]
    assert argv[argv.index("--events") + 1] == "50"


def test_missing_simulation_parameter_is_a_bad_description(tmp_path):
    params = dict(PARAMS)
    del params["Geometry"]
    with pytest.raises(JobDescriptionError, match="Geometry") as info:
        find_module("fastsim").build(payload_job(tmp_path, module="fastsim", parameters=params))
    assert info.value.code == 1


def test_unknown_module_is_a_bad_description():
    with pytest.raises(JobDescriptionError, match="unknown payload module 'nosuch'"):
        find_module("nosuch")


def test_a_site_adds_a_module_through_an_entry_point(tmp_path, monkeypatch):
    pkg = tmp_path / "sitemods"
    pkg.mkdir()
    (pkg / "sitemod.py").write_text(textwrap.dedent("""
        from wrapper.modules import PayloadModule
        class EchoModule(PayloadModule):
            name = "echo"
            def argv(self, job):
                return ("echo", job.desc.job.session)
    """))
    dist = pkg / "sitemod-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sitemod\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[severus.payload_modules]\necho = sitemod:EchoModule\n")
    monkeypatch.syspath_prepend(str(pkg))
    spec = find_module("echo").build(payload_job(tmp_path))
    assert spec.argv == ("echo", "FastSim")
