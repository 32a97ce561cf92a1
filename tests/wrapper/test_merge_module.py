"""The built-in `merge` module (a follow-up stage's, seed 002): its command line, run for real on files in a
work dir; the whole stage through the server is tests/test_stages_with_server.py."""
import subprocess
import tarfile

import pytest

from shared.errors import JobDescriptionError
from shared.jobdesc import PayloadStep, parse_job_description
from wrapper.modules import PayloadJob, find_module

from .test_report import make_desc


def merge_job(tmp_path, how=None, names=("-odd.root", "b.root")):
    inputs = []
    for n, name in enumerate(names):
        path = tmp_path / name
        path.write_bytes(f"file {n}\n".encode() * 100)
        inputs.append(path)
    step = PayloadStep(name="merge", module="merge", parameters={} if how is None else {"how": how})
    return PayloadJob(desc=parse_job_description(make_desc("http://localhost:1")), exe=tmp_path / "unused", software_root=tmp_path, software_workdir=tmp_path,
                      cwd=tmp_path, inputs=tuple(inputs), step=step), inputs


@pytest.mark.parametrize("how", [None, "tar"])
def test_tar_puts_every_input_into_runnum_merged_tgz(tmp_path, how):
    job, inputs = merge_job(tmp_path, how)
    argv = find_module("merge").argv(job)
    assert subprocess.run(argv, cwd=tmp_path, capture_output=True, timeout=60).returncode == 0
    out = tmp_path / f"{job.desc.job.runnum}.merged.tgz"
    with tarfile.open(out) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == {
            f"./{p.name}": p.read_bytes() for p in inputs}       # a name starting with "-" is no option


def test_cat_concatenates_in_order_keeping_the_extension(tmp_path):
    job, inputs = merge_job(tmp_path, "cat")
    assert subprocess.run(find_module("merge").argv(job), cwd=tmp_path, timeout=60).returncode == 0
    out = tmp_path / f"{job.desc.job.runnum}.merged.root"
    assert out.read_bytes() == b"".join(p.read_bytes() for p in inputs)


def test_an_unknown_way_is_a_bad_description():
    with pytest.raises(JobDescriptionError, match="how must be tar or cat"):
        find_module("merge").check(PayloadStep(name="merge", module="merge", parameters={"how": "zip"}))
