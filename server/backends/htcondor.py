"""`htcondor`: one submit description (one cluster) per bunch, through the `htcondor2` bindings.

Untested against a live pool: no HTCondor daemons can run on the development
machines (INFRA.md); the tests check the generated description only.
gjid = `<cluster>.<proc>`; proc = the job's position in the bunch (queue order).
"""
from pathlib import Path
from typing import Optional, Sequence

from .base import (CANCELLED, COMPLETED, FAILED, PENDING, PYZ_NAME, RUNNING, SITE_CONFIG_NAME, UNKNOWN, Backend,
                   BackendError, BackendUnavailable, BatchState, make_sandbox, run_args)
from .resources import Resources, bunch_resources, htcondor_lines

# JobStatus codes of the job ClassAd; 4 (completed) is split by ExitCode below.
CONDOR_STATES = {1: PENDING, 2: RUNNING, 3: CANCELLED, 5: PENDING, 6: RUNNING, 7: RUNNING}
CONDOR_NAMES = {1: "idle", 2: "running", 3: "removed", 4: "completed", 5: "held", 6: "transferring output",
                7: "suspended"}


def submit_description(sandbox: Path, count: int, site: str, requirements: Optional[str] = None,
                       extra: Sequence[str] = (), resources: Resources = Resources()) -> str:
    """The submit description text: the .pyz as executable, one queued job per job-<i>.json."""
    lines = [
        f"# Severus bunch for site {site}: {count} job(s)",
        "universe = vanilla",
        f"initialdir = {sandbox}",
        # The .pyz carries a python3 shebang, so it is the executable and is transferred as such.
        f"executable = {sandbox / PYZ_NAME}",
        "arguments = \"" + " ".join(run_args("$(index)")) + "\"",
        f"transfer_input_files = $(jobfile), {SITE_CONFIG_NAME}",
        "should_transfer_files = YES",
        "when_to_transfer_output = ON_EXIT",
        "output = job-$(index).out",
        "error = job-$(index).err",
        "log = bunch.log",
        f"batch_name = severus-{site}",
        "+SeverusSite = \"" + site.replace('"', "") + "\"",
    ]
    lines.extend(htcondor_lines(resources))
    if requirements:
        lines.append(f"requirements = {requirements}")
    lines.extend(extra)   # the site's lines last: they may override the resource requests
    lines.append("queue index, jobfile from (")
    lines.extend(f"{i}, job-{i}.json" for i in range(count))
    lines.append(")")
    return "\n".join(lines) + "\n"


class HTCondorBackend(Backend):
    """Needs a packed wrapper (`severus pack`): a job on a pool node has nothing else of ours."""
    name = "htcondor"

    def __init__(self, wrapper: Optional[str] = None, schedd: Optional[str] = None,
                 requirements: Optional[str] = None, submit_lines: Sequence[str] = ()):
        self.wrapper = wrapper
        self.schedd_name = schedd
        self.requirements = requirements
        self.submit_lines = tuple(submit_lines)

    def prepare(self, bunch):
        """Write the sandbox and its `bunch.sub`; returns (sandbox, description text)."""
        if not self.wrapper or not Path(self.wrapper).is_file():
            raise BackendError(f"htcondor backend needs `wrapper` = a severus.pyz file, got {self.wrapper!r}")
        sandbox = make_sandbox(bunch, self.wrapper)
        text = submit_description(sandbox, len(bunch.jobs), bunch.site, self.requirements, self.submit_lines,
                                  bunch_resources(bunch))
        (sandbox / "bunch.sub").write_text(text)
        return sandbox, text

    def submit(self, bunch):
        """One cluster per bunch; returns job_id -> `<cluster>.<proc>`."""
        htcondor2 = _bindings()
        schedd = self._schedd(htcondor2)
        _, text = self.prepare(bunch)
        try:
            cluster = schedd.submit(htcondor2.Submit(text)).cluster()
        except Exception as exc:   # the bindings raise their own HTCondor errors; translate here only
            raise BackendError(f"HTCondor refused the bunch for {bunch.site}: {exc}") from exc
        return {job.job_id: f"{cluster}.{index}" for index, job in enumerate(bunch.jobs)}

    def status(self, gjids):
        """The queue first, then the history for jobs that left it."""
        gjids = list(gjids)
        htcondor2 = _bindings()
        schedd = self._schedd(htcondor2)
        constraint = " || ".join(_ad_match(g) for g in gjids) or "false"
        projection = ["ClusterId", "ProcId", "JobStatus", "ExitCode", "HoldReason", "RemoveReason"]
        ads = {}
        try:
            for ad in list(schedd.history(constraint, projection)) + list(schedd.query(constraint, projection)):
                ads[f"{ad['ClusterId']}.{ad['ProcId']}"] = ad   # queue entries, read last, win
        except Exception as exc:
            raise BackendUnavailable(f"HTCondor schedd query failed: {exc}") from exc
        return {g: _batch_state(ads[g]) if g in ads else BatchState(UNKNOWN, "HTCondor knows no such job")
                for g in gjids}

    def cancel(self, gjids):
        """condor_rm the jobs."""
        gjids = list(gjids)
        if not gjids:
            return
        htcondor2 = _bindings()
        try:
            self._schedd(htcondor2).act(htcondor2.JobAction.Remove, " || ".join(_ad_match(g) for g in gjids))
        except Exception as exc:
            raise BackendError(f"HTCondor could not remove {', '.join(gjids)}: {exc}") from exc

    def _schedd(self, htcondor2):
        try:
            if self.schedd_name:
                return htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, self.schedd_name))
            return htcondor2.Schedd()
        except Exception as exc:
            raise BackendUnavailable(f"no HTCondor schedd reachable: {exc}") from exc


def _bindings():
    try:
        import htcondor2   # optional: only servers that submit to HTCondor install it
    except ImportError as exc:
        raise BackendUnavailable("the htcondor2 Python bindings are not installed (pip install htcondor)") from exc
    return htcondor2


def _ad_match(gjid):
    cluster, _, proc = gjid.partition(".")
    if not (cluster.isdigit() and proc.isdigit()):
        raise BackendError(f"not an HTCondor gjid: {gjid!r} (expected <cluster>.<proc>)")
    return f"(ClusterId == {cluster} && ProcId == {proc})"


def _batch_state(ad):
    code = ad.get("JobStatus")
    reason = f"HTCondor {CONDOR_NAMES.get(code, code)}"
    detail = ad.get("HoldReason") or ad.get("RemoveReason")
    if detail:
        reason += f": {detail}"
    if code == 4:
        exit_code = ad.get("ExitCode")
        return BatchState(COMPLETED if exit_code == 0 else FAILED, reason, exit_code)
    return BatchState(CONDOR_STATES.get(code, UNKNOWN), reason)
