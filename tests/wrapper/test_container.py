"""The payload in a container, on real runtimes: bubblewrap and Apptainer on the busybox image."""
import os
import time
from pathlib import Path

import psutil
import pytest

from shared.errors import (ContainerError, PayloadFailed, PayloadMemory, PayloadSignalled, PayloadStalled,
                           PayloadWallclock, SiteConfigError)
from shared.jobdesc import parse_job_description
from wrapper import container as ct
from wrapper.container import ContainerConfig, plan_container
from wrapper.modules import PayloadJob, find_module
from wrapper.payload import PayloadSpec, PayloadWatch, WatchConfig
from wrapper.siteconfig import parse_site_config
from tests.infra import images

from ..factories import job_description_dict
from ..waiting import poll

RUNTIMES = ["bwrap", "apptainer"]
# The fixtures of tests/infra/images.py, here by name.
busybox_image, bwrap_path, apptainer_path = images.busybox_image, images.bwrap_path, images.apptainer_path
busybox_sif = images.busybox_sif


@pytest.fixture(params=RUNTIMES)
def runtime(request, bwrap_path):
    """Each test below once per runtime: the site config that picks it."""
    if request.param == "apptainer":
        return ContainerConfig(runtimes=("apptainer",), apptainer=request.getfixturevalue("apptainer_path"))
    return ContainerConfig(runtimes=("bwrap",), bwrap=bwrap_path)


def watch_in(tmp_path, image, config, script, ro_paths=(), **limits):
    """A PayloadWatch running `/bin/sh -c script` in `image` with the work dir tmp_path/run."""
    cwd = tmp_path / "run"
    cwd.mkdir(exist_ok=True)
    container = plan_container(str(image), config, cwd, ro_paths=ro_paths)
    progress = cwd / "progress"
    env = dict(os.environ, SEVERUS_PROGRESS_FILE=str(progress))
    spec = PayloadSpec(argv=("/bin/sh", "-c", script), env=env, cwd=cwd, progress_file=progress,
                       container=container)
    limits.setdefault("sample_s", 0.1)
    limits.setdefault("grace_s", 1.0)
    return PayloadWatch(spec, WatchConfig(**limits), tmp_path / "logs")


def run_in(*args, **kwargs):
    watch = watch_in(*args, **kwargs)
    began = time.monotonic()
    try:
        return watch, watch.run(), None, time.monotonic() - began
    except Exception as exc:
        return watch, None, exc, time.monotonic() - began


def test_the_payload_sees_the_image_and_writes_into_the_bound_workdir(tmp_path, busybox_image, runtime):
    assert Path("/etc/debian_version").exists()    # the host is Debian; the image is not
    software = tmp_path / "cache" / "release"      # a node cache outside the work dir
    software.mkdir(parents=True)
    (software / "run.sh").write_text("echo from the software area\n")
    script = (f"test -e /etc/debian_version && exit 90; test -x /bin/busybox || exit 91; "
              f"sh {software}/run.sh; touch {software}/written 2>/dev/null && exit 92; "
              "echo 7 > $SEVERUS_PROGRESS_FILE; pwd; echo payload > out.root")
    watch, result, error, _ = run_in(tmp_path, busybox_image, runtime, script, ro_paths=(software,))
    assert error is None, (error, watch.stderr_tail())
    assert (tmp_path / "run" / "out.root").read_text() == "payload\n"     # seen on the host
    assert watch.stdout_tail() == ["from the software area", str(tmp_path / "run")]
    assert not (software / "written").exists()                          # read-only inside
    assert result.metrics["events"] == 7 and result.metrics["wct_s"] > 0
    assert result.container.startswith(runtime.runtimes[0])
    assert not (tmp_path / "run" / ct.MARKER).exists()


def test_exit_codes_and_signals_are_the_same_as_on_the_host(tmp_path, busybox_image, runtime):
    _, _, error, _ = run_in(tmp_path, busybox_image, runtime, "echo failing >&2; exit 3")
    assert isinstance(error, PayloadFailed) and error.code == 30
    assert error.data["exit_code"] == 3 and "exit code 3" in str(error)
    _, _, error, _ = run_in(tmp_path, busybox_image, runtime, "kill -SEGV $$")
    assert isinstance(error, PayloadSignalled) and error.code == 31
    assert error.data["signal"] == 11 and "SIGSEGV" in str(error)


def _strays(token):
    """Processes anywhere on the node whose command line holds `token`."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and token in " ".join(p.info["cmdline"] or ()):
            found.append(p.pid)
    return found


def test_the_watchdog_kill_leaves_nothing_behind(tmp_path, busybox_image, runtime):
    """A background grandchild and one that left with setsid: both gone after the wallclock kill."""
    token = str(tmp_path / "run")       # every runtime process names the work dir; sleeps the number
    script = "sleep 3171 & setsid sleep 3172 & sleep 3173"
    watch = watch_in(tmp_path, busybox_image, runtime, script, max_wct_s=1.5)
    began = time.monotonic()
    with pytest.raises(PayloadWallclock) as caught:
        watch.run()
    assert time.monotonic() - began < 15
    assert caught.value.code == 32
    assert len(watch.pids) >= 4          # the runtime and the payload's three processes
    poll(lambda: not _strays("sleep 317") and not _strays(token), timeout=10, what="no process left")
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in watch.pids)


def test_a_stalled_payload_inside_is_034(tmp_path, busybox_image, runtime):
    watch = watch_in(tmp_path, busybox_image, runtime, "sleep 300", stall_s=1.0)
    with pytest.raises(PayloadStalled):
        watch.run()
    assert watch.metrics["processes"] >= 2 and "pss_mb" in watch.metrics


def test_the_memory_limit_holds_inside(tmp_path, busybox_image, runtime):
    """dd's 200 MB buffer, filled from /dev/zero: the tree's PSS passes 100 MB, 033."""
    watch = watch_in(tmp_path, busybox_image, runtime,
                     "dd if=/dev/zero of=/dev/null bs=200M count=100000", max_rss_mb=100)
    with pytest.raises(PayloadMemory) as caught:
        watch.run()
    assert caught.value.code == 33 and caught.value.data["pss_mb"] > 100
    poll(lambda: not _strays(str(tmp_path / "run")), timeout=10, what="the runtime gone")


def test_a_missing_image_or_runtime_is_007_at_once(tmp_path, bwrap_path):
    began = time.monotonic()
    with pytest.raises(ContainerError, match="image /nonexistent/image is missing") as caught:
        plan_container("/nonexistent/image", ContainerConfig(runtimes=("bwrap",)), tmp_path)
    assert caught.value.code == 7 and caught.value.entry.blame == "site"
    with pytest.raises(ContainerError, match="no container runtime on this node"):
        plan_container(str(tmp_path), ContainerConfig(runtimes=("apptainer", "bwrap"),
                                                       apptainer="/nonexistent/apptainer",
                                                       bwrap="/nonexistent/bwrap"), tmp_path)
    with pytest.raises(SiteConfigError, match="allows no runtime"):
        plan_container(str(tmp_path), ContainerConfig(runtimes=()), tmp_path)
    sif = tmp_path / "image.sif"
    sif.write_bytes(b"not a directory")
    with pytest.raises(ContainerError, match="directory images only"):
        plan_container(str(sif), ContainerConfig(runtimes=("bwrap",)), tmp_path)
    assert time.monotonic() - began < 1.0


def test_an_image_the_runtime_cannot_start_is_007_not_030(tmp_path, runtime):
    """An image without /bin/sh: the runtime fails, the payload never ran: one line, 007."""
    image = tmp_path / "broken"
    (image / "etc").mkdir(parents=True)
    _, _, error, seconds = run_in(tmp_path, image, runtime, "exit 0")
    assert isinstance(error, ContainerError) and error.code == 7, error
    assert "\n" not in error.one_line() and error.one_line().startswith("E007 ")
    assert seconds < 5


def test_a_sif_image_runs_with_apptainer_and_is_007_for_bubblewrap(tmp_path, busybox_sif, apptainer_path,
                                                                    bwrap_path):
    """A SIF file (as a VO ships its images) with Apptainer (squashfuse, no setuid); bubblewrap runs
    directory images only, and says so before the payload starts."""
    config = ContainerConfig(runtimes=("apptainer",), apptainer=apptainer_path)
    watch, result, error, _ = run_in(tmp_path, busybox_sif, config,
                                     "test -e /etc/debian_version && exit 90; echo in sif > out.root; exit 3")
    assert isinstance(error, PayloadFailed) and error.data["exit_code"] == 3, (error, watch.stderr_tail())
    assert (tmp_path / "run" / "out.root").read_text() == "in sif\n"
    with pytest.raises(ContainerError, match="SIF image needs Apptainer") as exc:
        plan_container(str(busybox_sif), ContainerConfig(runtimes=("bwrap",), bwrap=bwrap_path), tmp_path)
    assert exc.value.code == 7


def test_site_binds_are_seen_read_only_inside(tmp_path, busybox_image, runtime):
    """The site's `binds` (its CVMFS, say): the payload reads them and cannot write them."""
    area = tmp_path / "cvmfs" / "vo.example.org"
    area.mkdir(parents=True)
    (area / "setup.sh").write_text("echo vo setup\n")
    config = ContainerConfig(runtimes=runtime.runtimes, bwrap=runtime.bwrap, apptainer=runtime.apptainer,
                             binds=(str(tmp_path / "cvmfs"),))
    script = f"sh {area}/setup.sh; touch {area}/x 2>/dev/null && exit 92; exit 0"
    watch, _, error, _ = run_in(tmp_path, busybox_image, config, script)
    assert error is None, (error, watch.stderr_tail())
    assert watch.stdout_tail() == ["vo setup"] and not (area / "x").exists()


def test_apptainer_command_line(tmp_path):
    """What the wrapper asks Apptainer for (run for real in the tests above)."""
    runtime = ct.Runtime("apptainer", "/usr/bin/apptainer", "1.4.5")
    c = ct.Container(runtime, "/cvmfs/img", "/scratch/job", ro_binds=("/cvmfs", "/cache/sw"))
    argv = c.command(["/sw/exe", "--events", "5"])
    head = ["/usr/bin/apptainer", "exec", "--contain", "--pid"]
    head += ["--userns"] if os.geteuid() == 0 else []
    head += ["--bind", "/scratch/job", "--bind", "/cvmfs:/cvmfs:ro", "--bind", "/cache/sw:/cache/sw:ro",
             "--pwd", "/scratch/job", "/cvmfs/img", "/bin/sh", "-c", ct.START_SCRIPT,
             "/scratch/job/" + ct.MARKER, "/sw/exe", "--events", "5"]
    assert list(argv) == head


def test_site_config_container_table_and_precedence(tmp_path):
    base = {"name": "S", "se": {"lfn_prefix": "/g", "urls": ["root://h//x"]}}
    site = parse_site_config(dict(base, container={"runtimes": ["bwrap"], "image": "/cvmfs/default",
                                                   "required": True, "binds": ["/cvmfs"]}))
    assert site.container.runtimes == ("bwrap",) and site.container.binds == ("/cvmfs",)
    assert parse_site_config(base).container == ContainerConfig()
    # The job's image wins; the site's default only when the site requires a container.
    assert ct.wanted_image("/cvmfs/job", site.container) == "/cvmfs/job"
    assert ct.wanted_image(None, site.container) == "/cvmfs/default"
    assert ct.wanted_image(None, ContainerConfig(image="/cvmfs/default")) is None
    for bad, why in [({"runtimes": ["docker"]}, "runtimes"), ({"image": "rel/img"}, "absolute"),
                     ({"required": True}, "'container.image' is not"), ({"runtime": "x"}, "unknown key"),
                     ({"runtimes": "none", "image": "/i"}, "no runtime is allowed")]:
        with pytest.raises(SiteConfigError, match=why):
            parse_site_config(dict(base, container=bad))


def test_the_job_description_and_the_module_choose_the_image(tmp_path, busybox_image, bwrap_path):
    with pytest.raises(Exception, match="absolute path"):
        parse_job_description(job_description_dict(container={"image": "busybox"}))
    desc = parse_job_description(job_description_dict(container={"image": str(busybox_image)}))
    assert desc.container.image == str(busybox_image)
    assert parse_job_description(job_description_dict()).container is None
    cwd = tmp_path / "work"
    cwd.mkdir()
    site = parse_site_config({"name": "S", "se": {"lfn_prefix": "/g", "urls": ["root://h//x"]},
                              "container": {"runtimes": ["bwrap"], "bwrap": bwrap_path}})
    job = PayloadJob(desc=desc, exe=cwd / "sw/exe", software_root=cwd / "sw", software_workdir=cwd / "sw",
                     cwd=cwd, site=site)
    spec = find_module("generic").build(job)
    assert spec.container.runtime.name == "bwrap" and spec.container.image == str(busybox_image)
    assert spec.container.ro_binds == ()        # the software area is inside the bound work dir


def _site_file(tmp_path, container_lines):
    path = tmp_path / "site.toml"
    path.write_text(f'name = "CT-SITE"\n[se]\nlfn_prefix = "/grid/t"\nlocal_path = "{tmp_path}"\n'
                    f'[scratch]\nmin_free_gb = 0\n[container]\n{container_lines}\n')
    return path


def test_severus_check_reports_the_runtime_and_starts_the_default_image(tmp_path, busybox_image,
                                                                         bwrap_path, apptainer_path):
    from wrapper import check
    site = _site_file(tmp_path, f'runtimes = ["apptainer", "bwrap"]\napptainer = "{apptainer_path}"\n'
                                f'image = "{busybox_image}"')
    results = check.run_checks(check.CheckOptions(site_config=str(site), workdir=str(tmp_path)))
    (result,) = [r for r in results if r.name == "container"]
    assert result.state == check.OK, result.reason
    assert "apptainer 1.4" in result.reason and "bwrap 0." in result.reason
    assert f"apptainer started {busybox_image}" in result.reason
    assert [p.label for p in result.perf] == ["container_start"]
    assert "container_start=" in check.nagios_line(results)


def test_severus_check_is_critical_007_when_the_default_image_does_not_start(tmp_path, bwrap_path):
    from wrapper import check
    broken = tmp_path / "broken"
    (broken / "etc").mkdir(parents=True)
    site = _site_file(tmp_path, f'runtimes = ["bwrap"]\nimage = "{broken}"')
    results = check.run_checks(check.CheckOptions(site_config=str(site), workdir=str(tmp_path)))
    (result,) = [r for r in results if r.name == "container"]
    assert (result.state, result.code) == (check.CRITICAL, 7), result.reason
    assert "E007" in result.reason and "bwrap" in result.reason
    site = _site_file(tmp_path, "")      # no default image: the runtimes are in "modules" only
    results = {r.name: r for r in check.run_checks(check.CheckOptions(site_config=str(site),
                                                                       workdir=str(tmp_path)))}
    assert "container" not in results
    assert "container runtimes: " in results["modules"].reason and "bwrap 0." in results["modules"].reason
