"""Batch backends against real processes and a real private Slurm; HTCondor by its submit description."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server.backends import (BACKENDS, BackendError, BackendUnavailable, BatchState, Bunch, HTCondorBackend, JobSpec,
                             LocalBackend, SlurmBackend, create_backend, split_bunches)
from server.backends.base import PYZ_NAME, wrapper_argv
from server.backends.local import process_identity
from server.backends.slurm import _batch_state, _task_records
from tests.infra.slurm import slurm_cluster  # noqa: F401 (session fixture)

# Stand-in for `severus run`: records when it ran and where, then exits with the code the job asks for.
# With "rendezvous": N (the bunch's size), it first waits until it sees another job running, and then
# until that one has seen a partner too (or every other job has ended): two jobs the pool starts
# together run at once, whatever the interpreters' start-up takes.
FAKE_WRAPPER = '''
import json, os, sys, time
args = sys.argv[1:]
assert args[0] == "run", args
desc = json.load(open(args[1]))
test, me = desc["test"], desc["job"]["id"]
start = time.time()
time.sleep(test.get("sleep", 0))
met, runs = None, os.path.join(test["markers"], "running")
touch = lambda name: open(os.path.join(runs, name), "w").close()
if test.get("rendezvous"):
    os.makedirs(runs, exist_ok=True)
    touch("%d.start" % me)
    partner, deadline = None, time.monotonic() + 60
    while time.monotonic() < deadline:
        names = set(os.listdir(runs))
        if partner is None:
            others = [n[:-6] for n in names if n.endswith(".start") and n[:-6] + ".end" not in names
                      and n != "%d.start" % me]
            if others:
                partner = others[0]
                touch("%d.saw" % me)
        if partner is not None and partner + ".saw" in names:
            met = True
            break
        if partner is None and sum(n.endswith(".end") for n in names) == test["rendezvous"] - 1:
            met = False   # the last one, alone
            break
        time.sleep(0.02)
os.makedirs(test["markers"], exist_ok=True)
with open(os.path.join(test["markers"], "%d.json" % me), "w") as out:
    json.dump({"start": start, "end": time.time(), "met": met, "cwd": os.getcwd(), "args": args,
               "site_config": open(args[args.index("--site-config") + 1]).read()}, out)
if test.get("rendezvous"):
    touch("%d.end" % me)
sys.exit(test.get("exit", 0))
'''
SITE_TOML = 'name = "TEST-SITE"\n'


@pytest.fixture(scope="session")
def fake_wrapper(tmp_path_factory):
    path = tmp_path_factory.mktemp("wrapper") / "fake_severus.py"
    path.write_text(FAKE_WRAPPER)
    return [sys.executable, str(path)]


def make_bunch(tmp_path, specs, first_id=1):
    """A bunch whose job i sleeps/exits as `specs[i]` says and leaves a marker in tmp_path/markers."""
    jobs = tuple(JobSpec(job_id=first_id + i, runnum=10000000 + first_id + i,
                         description={"schema": 1, "job": {"id": first_id + i},
                                      "test": dict(spec, markers=str(tmp_path / "markers"))})
                 for i, spec in enumerate(specs))
    return Bunch(site="TEST-SITE", jobs=jobs, site_config=SITE_TOML, workdir=str(tmp_path / "sandboxes"))


def wait_states(backend, gjids, done, timeout=30.0):
    """Poll status until `done(state)` holds for every gjid; fail with the last states after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        states = backend.status(gjids)
        if all(done(s) for s in states.values()):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"states not reached in {timeout}s: {states}")
        time.sleep(0.1)


def final(state):
    return state.final


def marker(tmp_path, job_id):
    return json.loads((tmp_path / "markers" / f"{job_id}.json").read_text())


# --- interface -----------------------------------------------------------------------------------

def test_registry_names_each_backend_class():
    from server.backends import ArcBackend
    assert BACKENDS == {"local": LocalBackend, "slurm": SlurmBackend, "htcondor": HTCondorBackend,
                        "arc": ArcBackend}
    assert all(cls.name == name for name, cls in BACKENDS.items())


def test_create_backend_refuses_unknown_names_and_options():
    with pytest.raises(BackendError, match="unknown backend 'pbs'; known: arc, htcondor, local, slurm"):
        create_backend("pbs")
    with pytest.raises(BackendError, match="bad options for backend 'slurm'"):
        create_backend("slurm", colour="red")
    assert create_backend("slurm", partition="short").partition == "short"


def test_split_bunches_keeps_order_and_size(tmp_path):
    jobs = make_bunch(tmp_path, [{}] * 5).jobs
    bunches = split_bunches(jobs, 2)
    assert [len(b) for b in bunches] == [2, 2, 1]
    assert sum(bunches, ()) == jobs
    with pytest.raises(BackendError, match="at least 1"):
        split_bunches(jobs, 0)


def test_wrapper_argv_forms(tmp_path):
    assert wrapper_argv(None) == [sys.executable, "-m", "wrapper"]
    pyz = tmp_path / PYZ_NAME
    pyz.write_bytes(b"#!/usr/bin/env python3\n")
    assert wrapper_argv(str(pyz), python="python3.9") == ["python3.9", str(pyz)]
    with pytest.raises(BackendError, match="does not exist"):
        wrapper_argv(str(tmp_path / "missing.pyz"))


# --- local ---------------------------------------------------------------------------------------

def test_local_pool_never_runs_more_than_max_parallel(tmp_path, fake_wrapper):
    backend = LocalBackend(max_parallel=2, wrapper=fake_wrapper)
    bunch = make_bunch(tmp_path, [{"rendezvous": 5}] * 5)
    gjids = backend.submit(bunch)
    assert sorted(gjids) == [1, 2, 3, 4, 5] and all(g.startswith("local:") for g in gjids.values())
    states = wait_states(backend, list(gjids.values()), final)
    assert {s.state for s in states.values()} == {"completed"}
    stamps = sorted((edge, kind) for j in gjids for edge, kind in
                    ((marker(tmp_path, j)["start"], 1), (marker(tmp_path, j)["end"], -1)))
    running, most = 0, 0
    for _, kind in sorted(stamps, key=lambda e: (e[0], e[1])):   # an end before a start at the same instant
        running += kind
        most = max(most, running)
    # the first two met each other (the pool started both), and no third ever ran beside them
    assert marker(tmp_path, 1)["met"] and marker(tmp_path, 2)["met"]
    assert most == 2
    backend.close()


def test_local_job_runs_in_its_sandbox_and_reports_exit_code(tmp_path, fake_wrapper):
    backend = LocalBackend(wrapper=fake_wrapper)
    gjids = backend.submit(make_bunch(tmp_path, [{"exit": 0}, {"exit": 3}]))
    states = wait_states(backend, list(gjids.values()), final)
    assert states[gjids[1]].state == "completed" and states[gjids[1]].exit_code == 0
    assert states[gjids[2]].state == "failed" and states[gjids[2]].exit_code == 3
    assert "exited with 3" in states[gjids[2]].reason
    seen = marker(tmp_path, 2)
    assert seen["args"] == ["run", "job-1.json", "--site-config", "site.toml", "--workdir", "work-1"]
    assert seen["site_config"] == SITE_TOML
    assert Path(seen["cwd"]).parent == tmp_path / "sandboxes"
    backend.close()


def test_local_cancel_stops_running_and_queued_jobs(tmp_path, fake_wrapper):
    backend = LocalBackend(max_parallel=1, wrapper=fake_wrapper)
    gjids = backend.submit(make_bunch(tmp_path, [{"sleep": 60}, {"sleep": 60}]))
    first, second = gjids[1], gjids[2]
    wait_states(backend, [first], lambda s: s.state == "running")
    pid = backend._jobs[first].proc.pid
    backend.cancel([first, second])
    states = wait_states(backend, [first, second], final, timeout=10)
    assert states[first].state == "cancelled" and "SIGTERM" in states[first].reason
    assert states[second].state == "cancelled" and "before it started" in states[second].reason
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    backend.close()
    assert not (tmp_path / "markers").exists()


def test_local_status_of_a_foreign_gjid_is_unknown_while_its_process_lives_and_lost_after():
    state = LocalBackend().status(["local:nope"])["local:nope"]
    assert state.state == "unknown" and state.final
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gjid = f"local:{process_identity(other.pid)}:abc"
        assert LocalBackend().status([gjid])[gjid].state == "unknown"   # that process may still start it
    finally:
        other.kill()
        other.wait()
    state = LocalBackend().status([gjid])[gjid]
    assert state.state == "lost" and state.final and str(other.pid) in state.reason
    reused = f"local:{os.getpid()}.1:abc"   # this pid, another start time: not the same process
    assert LocalBackend().status([reused])[reused].state == "lost"


# --- slurm ---------------------------------------------------------------------------------------

def test_slurm_bunch_is_one_array_with_states_and_exit_codes(tmp_path, fake_wrapper, slurm_cluster):
    backend = SlurmBackend(wrapper=fake_wrapper, slurm_conf=str(slurm_cluster.conf))
    gjids = backend.submit(make_bunch(tmp_path, [{"exit": 0}, {"exit": 3}, {"exit": 0}], first_id=11))
    array_id = gjids[11].split("_")[0]
    assert gjids == {11: f"{array_id}_0", 12: f"{array_id}_1", 13: f"{array_id}_2"}
    states = wait_states(backend, list(gjids.values()), final)
    assert [states[gjids[j]].state for j in (11, 12, 13)] == ["completed", "failed", "completed"]
    assert states[gjids[12]].exit_code == 3 and "NonZeroExitCode" in states[gjids[12]].reason
    seen = marker(tmp_path, 13)
    assert seen["args"][1] == "job-2.json" and seen["site_config"] == SITE_TOML
    assert (Path(seen["cwd"]) / "batch.sh").is_file()
    # The completion log (what `sacct -c` reads) serves jobs the controller has forgotten.
    logged = backend._completion_records()
    assert _batch_state(logged[gjids[12]]).exit_code == 3
    assert _batch_state(logged[gjids[11]]).state == "completed"


def test_slurm_cancel_one_task_leaves_the_others(tmp_path, fake_wrapper, slurm_cluster):
    backend = SlurmBackend(wrapper=fake_wrapper, slurm_conf=str(slurm_cluster.conf))
    gjids = backend.submit(make_bunch(tmp_path, [{"sleep": 60}, {"sleep": 0}], first_id=21))
    wait_states(backend, [gjids[21]], lambda s: s.state == "running")
    backend.cancel([gjids[21]])
    states = wait_states(backend, list(gjids.values()), final)
    assert states[gjids[21]].state == "cancelled"
    assert states[gjids[21]].reason.startswith("Slurm CANCELLED") and states[gjids[21]].exit_code is None
    assert states[gjids[22]].state == "completed"
    backend.cancel([gjids[21]])   # cancelling a finished task is not an error


def test_slurm_split_bunches_is_one_sbatch_per_bunch(tmp_path, fake_wrapper, slurm_cluster):
    backend = SlurmBackend(wrapper=fake_wrapper, slurm_conf=str(slurm_cluster.conf))
    bunch = make_bunch(tmp_path, [{}] * 5, first_id=31)
    gjids = {}
    for jobs in split_bunches(bunch.jobs, 2):
        gjids.update(backend.submit(Bunch(bunch.site, jobs, bunch.site_config, bunch.workdir)))
    arrays = sorted({g.split("_")[0] for g in gjids.values()}, key=int)
    assert len(arrays) == 3
    assert [gjids[j] for j in range(31, 36)] == [f"{arrays[0]}_0", f"{arrays[0]}_1", f"{arrays[1]}_0",
                                                 f"{arrays[1]}_1", f"{arrays[2]}_0"]
    states = wait_states(backend, list(gjids.values()), final)
    assert {s.state for s in states.values()} == {"completed"}
    assert len(list((tmp_path / "sandboxes").iterdir())) == 3


def test_slurm_unknown_and_malformed_gjids(slurm_cluster):
    backend = SlurmBackend(slurm_conf=str(slurm_cluster.conf))
    assert backend.status(["999999_0"])["999999_0"].state == "unknown"
    with pytest.raises(BackendError, match="not a Slurm array gjid"):
        backend.status(["local:1"])


def test_slurm_without_a_controller_is_one_clear_error(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=none\nSlurmctldHost=nowhere(127.0.0.1)\nSlurmctldPort=9\nMessageTimeout=1\n")
    with pytest.raises(BackendUnavailable, match=r"^scontrol failed: .*Unable to contact slurm controller") as caught:
        SlurmBackend(slurm_conf=str(conf)).status(["1_0"])
    assert "\n" not in str(caught.value)
    with pytest.raises(BackendUnavailable, match="Slurm config .* does not exist"):
        SlurmBackend(slurm_conf=str(tmp_path / "missing.conf")).cancel(["1_0"])


# --- htcondor ------------------------------------------------------------------------------------

def test_htcondor_description_queues_each_job_file(tmp_path):
    pyz = tmp_path / PYZ_NAME
    pyz.write_bytes(b"#!/usr/bin/env python3\n")
    backend = HTCondorBackend(wrapper=str(pyz), requirements='(OpSys == "LINUX")')
    sandbox, text = backend.prepare(make_bunch(tmp_path, [{}] * 3))
    lines = text.splitlines()
    assert f"executable = {sandbox / PYZ_NAME}" in lines and (sandbox / PYZ_NAME).is_file()
    assert f"initialdir = {sandbox}" in lines
    assert "transfer_input_files = $(jobfile), site.toml" in lines
    assert 'arguments = "run job-$(index).json --site-config site.toml --workdir work-$(index)"' in lines
    assert {"output = job-$(index).out", "error = job-$(index).err", "log = bunch.log"} <= set(lines)
    assert 'requirements = (OpSys == "LINUX")' in lines
    assert lines[-5:] == ["queue index, jobfile from (", "0, job-0.json", "1, job-1.json", "2, job-2.json", ")"]
    assert all((sandbox / f"job-{i}.json").is_file() for i in range(3))
    assert (sandbox / "bunch.sub").read_text() == text


def test_htcondor_without_bindings_or_schedd_is_unavailable(tmp_path):
    pyz = tmp_path / PYZ_NAME
    pyz.write_bytes(b"")
    with pytest.raises(BackendUnavailable, match="htcondor2|schedd"):
        HTCondorBackend(wrapper=str(pyz)).submit(make_bunch(tmp_path, [{}]))


def test_htcondor_needs_a_packed_wrapper(tmp_path):
    with pytest.raises(BackendError, match="needs `wrapper` = a severus.pyz"):
        HTCondorBackend().prepare(make_bunch(tmp_path, [{}]))


def test_slurm_pending_task_ranges_expand_to_each_gjid():
    line = ("JobId=7 ArrayJobId=7 ArrayTaskId=2-4,6%2 JobName=severus-X JobState=PENDING Reason=Resources "
            "ExitCode=0:0")
    records = _task_records(line)
    assert sorted(records) == ["7_2", "7_3", "7_4", "7_6"]
    assert _batch_state(records["7_3"]) == BatchState("pending", "Slurm PENDING: Resources", None)
