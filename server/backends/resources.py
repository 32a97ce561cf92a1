"""What a bunch asks of the batch system: cores, memory and wall time, from its job descriptions.

One batch submission (a Slurm array, an HTCondor cluster, an ARC job) carries one request, so a
bunch asks for the largest of its jobs' needs. The numbers come from the description's `limits`
(CONTRACT §1), the same the wrapper enforces:

- cores: `limits.cores` (default 1);
- memory: `limits.memory_mb`, else the watchdog's `limits.max_rss_mb` (a job the wrapper lets grow
  to N MB must be given N MB), else none: the batch system's default;
- wall time: `limits.max_wct_s` is the payload's own limit; the wrapper also stages software and
  inputs in, outputs and the log out, so the batch limit adds STAGING_MARGIN_S. A batch system
  that kills first leaves no log and no final report.
"""
import math
from dataclasses import dataclass

from shared.jobdesc import Limits

STAGING_MARGIN_S = 1800.0


@dataclass(frozen=True)
class Resources:
    cores: int = 1
    memory_mb: int = 0            # 0: ask for nothing, the batch system's default applies
    wall_s: int = int(Limits().max_wct_s + STAGING_MARGIN_S)

    @property
    def wall_minutes(self):
        return max(1, math.ceil(self.wall_s / 60))


def job_resources(description) -> Resources:
    """The request for one job description (a dict as the server writes it)."""
    limits = description.get("limits") or {}
    default = Limits()
    memory = limits.get("memory_mb") or limits.get("max_rss_mb") or 0
    wct = limits.get("max_wct_s") or default.max_wct_s
    return Resources(cores=int(limits.get("cores") or default.cores), memory_mb=int(math.ceil(memory)),
                     wall_s=int(math.ceil(wct + STAGING_MARGIN_S)))


def bunch_resources(bunch) -> Resources:
    """The largest need of each kind over the bunch's jobs."""
    each = [job_resources(job.description) for job in bunch.jobs]
    return Resources(cores=max(r.cores for r in each), memory_mb=max(r.memory_mb for r in each),
                     wall_s=max(r.wall_s for r in each))


def slurm_options(res: Resources) -> list:
    """sbatch options: one task per job, its cores, its memory (per node: the job's one node), its time."""
    options = [f"--cpus-per-task={res.cores}", f"--time={res.wall_minutes}"]
    if res.memory_mb:
        options.append(f"--mem={res.memory_mb}M")
    return options


def htcondor_lines(res: Resources) -> list:
    """Submit description lines; +MaxWallTimeMins is what HTCondor-CE and many pools' policies read."""
    lines = [f"request_cpus = {res.cores}", f"+MaxWallTimeMins = {res.wall_minutes}"]
    if res.memory_mb:
        lines.append(f"request_memory = {res.memory_mb}")
    return lines
