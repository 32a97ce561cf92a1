"""The private Slurm fixture: isolated, usable by plain clients, and gone after stop()."""
import os
import subprocess
import time

from tests.infra.slurm import start_slurm


def test_private_slurm_runs_a_job_and_stops_by_pid(tmp_path):
    cluster = start_slurm(tmp_path / "slurm")
    try:
        pids = [proc.pid for proc in cluster.procs.values()]
        assert set(cluster.procs) == {"munged", "slurmctld", "slurmd"}
        conf = cluster.conf.read_text()
        assert f"SlurmctldHost={cluster.node}(127.0.0.1)" in conf
        assert f"AuthInfo=socket={tmp_path / 'slurm' / 'munge' / 'munge.socket.2'}" in conf
        assert oct((tmp_path / "slurm" / "munge" / "munge.key").stat().st_mode & 0o777) == "0o400"
        done = cluster.run("srun", "-N1", "hostname", timeout=30)
        assert done.returncode == 0, done.stderr
        assert cluster.run("sinfo", "-h", "-o", "%P %a").stdout.split() == ["debug*", "up"]
        left = cluster.run("sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 300")
        assert left.returncode == 0, left.stderr
        deadline = time.monotonic() + 15
        while cluster.run("squeue", "-h", "-j", left.stdout.strip(), "-o", "%T").stdout.strip() != "RUNNING":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
    finally:
        cluster.stop()
    assert cluster.procs == {}
    for pid in pids:
        # Reaped children: the PIDs are gone, not zombies of ours.
        assert not os.path.exists(f"/proc/{pid}")
    # The job left running was cancelled, not orphaned under a dead slurmd: its sleep ends within
    # seconds (the queue empties while slurmstepd is still killing it, CI saw it a moment after
    # stop), where an orphan would stay its 300 s.
    deadline = time.monotonic() + 20
    while subprocess.run(["pgrep", "-f", "^sleep 300$"], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, "the job's sleep outlived the cluster: orphaned, not cancelled"
        time.sleep(0.2)
