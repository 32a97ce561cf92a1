"""Payload modules and the watchdog, on real processes (shell and python scripts)."""
import os
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from shared.errors import (JobDescriptionError, KilledByManager, PayloadFailed, PayloadMemory,
                           PayloadSignalled, PayloadStalled, PayloadWallclock)
from shared.jobdesc import parse_job_description
from wrapper.payload import (MODULES, PayloadJob, PayloadSpec, PayloadWatch, WatchConfig,
                             find_module)
from wrapper.runner import Stop

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
    assert took < 5


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
    assert took < 4


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
    assert took < 10


def test_a_payload_without_progress_is_stalled(tmp_path):
    script = "while True: pass"  # spins: CPU alone is not progress
    watch, _, exc, took = run(tmp_path, script, stall_s=1)
    assert isinstance(exc, PayloadStalled) and exc.code == 34
    assert not [p for p in watch.pids if alive(p)]
    assert took < 5


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
    assert took < 3


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


# ---------------------------------------------------------------------- modules

def payload_job(tmp_path, **payload):
    d = make_desc("http://127.0.0.1:1", payload=dict({"module": "generic"}, **payload))
    desc = parse_job_description(d)
    return PayloadJob(desc=desc, exe=tmp_path / "bin/exe", software_root=tmp_path,
                      software_workdir=tmp_path, cwd=tmp_path, inputs=(tmp_path / "in.root",))


PARAMS = {"Analysis": "HadRecoilCocktail", "Generator": "B0B0bar_SL", "Geometry": "DG_4",
          "Background": "MixSuperbBkg_NoPair.tcl"}


def test_registry_holds_the_three_modules():
    assert sorted(MODULES) == ["fastsim", "fullsim", "generic"]


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
        from wrapper.payload import PayloadModule
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
