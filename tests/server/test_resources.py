"""Cores, memory and wall time: from the request to the job description to the batch system's request.

The Slurm request is read back with `scontrol show job` from the tests' real private Slurm; HTCondor
by its submit description (no daemons here, see test_backends).
"""
import json
import re
import sys
from pathlib import Path

import pytest

from server.backends import Bunch, HTCondorBackend, JobSpec, SlurmBackend
from server.backends.base import PYZ_NAME
from server.backends.resources import STAGING_MARGIN_S, bunch_resources, job_resources
from shared.jobdesc import parse_job_description
from tests.infra.slurm import slurm_cluster  # noqa: F401 (session fixture)
from tests.waiting import poll

from .conftest import submit
from .test_requests import new_request

# Stand-in for `severus run` under Slurm: writes what the batch system gave it where the test reads it.
ECHO_WRAPPER = '''
import json, os, sys
desc = json.load(open(sys.argv[2]))
with open(desc["test"]["out"], "w") as out:
    json.dump({k: os.environ.get(k) for k in ("SLURM_CPUS_PER_TASK", "SLURM_MEM_PER_NODE")}, out)
'''


def bunch_of(tmp_path, limits_list, out=None):
    jobs = tuple(JobSpec(job_id=100 + i, runnum=1 + i,
                         description={"schema": 1, "job": {"id": 100 + i}, "limits": limits,
                                      "test": {"out": str(out or tmp_path / f"seen-{i}.json")}})
                 for i, limits in enumerate(limits_list))
    return Bunch(site="TEST-SITE", jobs=jobs, site_config='name = "TEST-SITE"\n', workdir=str(tmp_path / "sb"))


# ---------------------------------------------------------------- the request and the description

def test_a_request_carries_cores_and_memory_into_the_job_description(api, production):
    params = dict(production["request"]["parameters"], Generator="multicore")
    r = new_request(api, production, parameters=params, cores=8, memory_mb=16000)
    assert r.status_code == 201, r.json
    assert (r.json["cores"], r.json["memory_mb"]) == (8, 16000)
    twin = api.get(f"/requests/{r.json['test_request']}").json
    assert (twin["cores"], twin["memory_mb"]) == (8, 16000)     # the test request's jobs ask the same
    rid = r.json["id"]
    assert api.patch(f"/requests/{rid}", json={"status": "valid"}).status_code == 200
    job_id = submit(api, {"production": production["production"], "request": r.json}, runs=1)["job_ids"][0]
    desc = api.get(f"/jobs/{job_id}/description").json
    assert desc["limits"]["cores"] == 8 and desc["limits"]["memory_mb"] == 16000
    parsed = parse_job_description(desc)
    assert (parsed.limits.cores, parsed.limits.memory_mb) == (8, 16000)


def test_requests_default_to_one_core_and_the_batch_systems_memory(api, production):
    req = api.get(f"/requests/{production['request']['id']}").json
    assert (req["cores"], req["memory_mb"]) == (1, 0)
    job_id = submit(api, production, runs=1)["job_ids"][0]
    assert api.get(f"/jobs/{job_id}/description").json["limits"]["cores"] == 1


@pytest.mark.parametrize("body, field", [({"cores": 0}, "cores"), ({"cores": 2000}, "cores"),
                                         ({"cores": "4"}, "cores"), ({"memory_mb": -1}, "memory_mb")])
def test_bad_cores_or_memory_is_a_400_naming_the_field(api, production, body, field):
    params = dict(production["request"]["parameters"], Generator=f"bad-{field}")
    r = new_request(api, production, parameters=params, **body)
    assert r.status_code == 400 and field in r.json["message"]


def test_cores_and_memory_are_frozen_once_the_request_left_open(api, production):
    rid = production["request"]["id"]      # valid already
    r = api.patch(f"/requests/{rid}", json={"cores": 4})
    assert r.status_code == 409 and "cores" in r.json["message"]


def test_the_job_description_parser_defaults_and_bounds_cores():
    from tests.factories import job_description_dict
    base = job_description_dict()
    assert parse_job_description(base).limits.cores == 1
    for bad in (0, 1025, 1.5, True):
        with pytest.raises(Exception, match="limits.cores"):
            parse_job_description(dict(base, limits={"cores": bad}))


# ---------------------------------------------------------------- what the batch system is asked

def test_a_bunch_asks_for_its_largest_job():
    res = bunch_resources(bunch_of(Path("/nonexistent"), [
        {"cores": 2, "memory_mb": 1000, "max_wct_s": 600}, {"cores": 4, "max_rss_mb": 3000.5, "max_wct_s": 60}]))
    assert (res.cores, res.memory_mb, res.wall_s) == (4, 3001, 600 + STAGING_MARGIN_S)
    bare = job_resources({"schema": 1})
    assert (bare.cores, bare.memory_mb) == (1, 0)      # nothing asked: the batch system's defaults


def test_slurm_gets_cpus_memory_and_time_from_the_descriptions(tmp_path, slurm_cluster):
    wrapper = tmp_path / "echo_wrapper.py"
    wrapper.write_text(ECHO_WRAPPER)
    backend = SlurmBackend(wrapper=[sys.executable, str(wrapper)], slurm_conf=str(slurm_cluster.conf))
    cores = min(2, slurm_cluster.cpus)
    gjids = backend.submit(bunch_of(tmp_path, [{"cores": cores, "memory_mb": 300, "max_wct_s": 600}]))
    array_id = gjids[100].split("_")[0]
    shown = slurm_cluster.run("scontrol", "show", "job", "-o", array_id).stdout
    fields = dict(re.findall(r"([\w/]+)=(\S*)", shown))
    assert fields["NumCPUs"] == str(cores) and fields["CPUs/Task"] == str(cores)
    assert fields["MinMemoryNode"] == "300M"
    minutes = int((600 + STAGING_MARGIN_S) // 60)
    assert fields["TimeLimit"] == f"{minutes // 60:02d}:{minutes % 60:02d}:00"
    # and the job itself ran with them
    seen = poll(lambda: _read_json(tmp_path / "seen-0.json"), timeout=60, what="the Slurm job's report")
    assert seen == {"SLURM_CPUS_PER_TASK": str(cores), "SLURM_MEM_PER_NODE": "300"}


def test_slurm_sites_own_sbatch_args_override_the_request(tmp_path, slurm_cluster):
    wrapper = tmp_path / "echo_wrapper.py"
    wrapper.write_text(ECHO_WRAPPER)
    backend = SlurmBackend(wrapper=[sys.executable, str(wrapper)], slurm_conf=str(slurm_cluster.conf),
                           sbatch_args=["--time=5"])
    gjids = backend.submit(bunch_of(tmp_path, [{"max_wct_s": 86400}]))
    shown = slurm_cluster.run("scontrol", "show", "job", "-o", gjids[100].split("_")[0]).stdout
    assert "TimeLimit=00:05:00" in shown


def test_htcondor_description_requests_cpus_memory_and_wall_time(tmp_path):
    pyz = tmp_path / PYZ_NAME
    pyz.write_bytes(b"#!/usr/bin/env python3\n")
    _, text = HTCondorBackend(wrapper=str(pyz)).prepare(
        bunch_of(tmp_path, [{"cores": 8, "memory_mb": 16000, "max_wct_s": 7200}, {"cores": 1}]))
    lines = text.splitlines()
    assert "request_cpus = 8" in lines and "request_memory = 16000" in lines
    # the second job has the default 86400 s: the bunch asks for the longest
    assert f"+MaxWallTimeMins = {int((86400 + STAGING_MARGIN_S) // 60)}" in lines
    assert lines.index("request_cpus = 8") < lines.index("queue index, jobfile from (")


def _read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_sbk_request_create_takes_cores_and_memory():
    from server.cli import build_parser
    args = build_parser().parse_args(["request", "create", "--production", "2010_July", "--from", "1",
                                      "--cores", "8", "--memory-mb", "16000"])
    assert (args.cores, args.memory_mb) == (8, 16000.0)
