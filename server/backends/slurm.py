"""`slurm`: one `sbatch --array` per bunch; states from `scontrol show job -o`, then the job completion log.

gjid = `<arrayjobid>_<index>`, index = the job's position in the bunch, so the
batch script picks `job-$SLURM_ARRAY_TASK_ID.json` from the sandbox.
"""
import os
import re
import shlex
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

from .base import (CANCELLED, COMPLETED, FAILED, NODE_FAIL, OUT_OF_MEMORY, PENDING, RUNNING, TIMEOUT, UNKNOWN,
                   Backend, BackendError, BackendUnavailable, BatchState, Wrapper, make_sandbox, run_args,
                   sandbox_wrapper, shell_join)
from .resources import bunch_resources, slurm_options

# Slurm's JobState (first word: sacct writes "CANCELLED by 0") -> our batch state.
SLURM_STATES = {
    "PENDING": PENDING, "CONFIGURING": PENDING, "REQUEUED": PENDING, "REQUEUE_HOLD": PENDING,
    "REQUEUE_FED": PENDING, "RESV_DEL_HOLD": PENDING,
    "RUNNING": RUNNING, "COMPLETING": RUNNING, "SUSPENDED": RUNNING, "STOPPED": RUNNING,
    "SIGNALING": RUNNING, "STAGE_OUT": RUNNING, "RESIZING": RUNNING,
    "COMPLETED": COMPLETED,
    "FAILED": FAILED, "BOOT_FAIL": FAILED, "SPECIAL_EXIT": FAILED,
    "CANCELLED": CANCELLED, "REVOKED": CANCELLED, "PREEMPTED": CANCELLED,
    "NODE_FAIL": NODE_FAIL, "OUT_OF_MEMORY": OUT_OF_MEMORY,
    "TIMEOUT": TIMEOUT, "DEADLINE": TIMEOUT,
}
_FIELD = re.compile(r"(\w+)=(\S*)")
_GJID = re.compile(r"(\d+)_(\d+)")

BATCH_SCRIPT = """#!/bin/bash
# Written by Severus: array task $SLURM_ARRAY_TASK_ID runs job-<task>.json of this sandbox.
cd {sandbox} || exit 99   # 099: unexpected wrapper error (CONTRACT §5)
exec {command}
"""


class SlurmBackend(Backend):
    """Submits through the Slurm client commands found on PATH; `slurm_conf` sets SLURM_CONF."""
    name = "slurm"

    def __init__(self, wrapper: Wrapper = None, python: str = "python3", slurm_conf: Optional[str] = None,
                 partition: Optional[str] = None, sbatch_args: Sequence[str] = (), timeout: float = 60.0):
        self.wrapper = wrapper
        self.python = python
        self.slurm_conf = slurm_conf
        self.partition = partition
        self.sbatch_args = tuple(sbatch_args)
        self.timeout = timeout

    def submit(self, bunch):
        """One sbatch call for the whole bunch; returns job_id -> `<arrayjobid>_<index>`."""
        sandbox = make_sandbox(bunch, self.wrapper)
        command = sandbox_wrapper(sandbox, self.wrapper, self.python) + run_args("$SLURM_ARRAY_TASK_ID")
        script = sandbox / "batch.sh"
        script.write_text(BATCH_SCRIPT.format(sandbox=shlex.quote(str(sandbox)), command=shell_join(command)))
        args = ["sbatch", "--parsable", f"--array=0-{len(bunch.jobs) - 1}", f"--job-name=severus-{bunch.site}",
                f"--chdir={sandbox}", f"--output={sandbox}/job-%a.out"]
        if self.partition:
            args.append(f"--partition={self.partition}")
        # The bunch's cores, memory and time; the site's own sbatch_args come later and win.
        args += slurm_options(bunch_resources(bunch))
        out = self._run(args + list(self.sbatch_args) + [str(script)])
        # --parsable prints "<jobid>" or "<jobid>;<cluster>".
        array_id = out.strip().split(";")[0]
        if not array_id.isdigit():
            raise BackendError(f"sbatch gave no job id (output: {out.strip()!r})")
        return {job.job_id: f"{array_id}_{index}" for index, job in enumerate(bunch.jobs)}

    def status(self, gjids):
        """scontrol for jobs the controller still holds; the completion log (as `sacct -c`) for the rest."""
        gjids = list(gjids)
        by_array = defaultdict(list)
        for gjid in gjids:
            match = _GJID.fullmatch(gjid)
            if not match:
                raise BackendError(f"not a Slurm array gjid: {gjid!r} (expected <arrayjobid>_<index>)")
            by_array[match.group(1)].append(gjid)
        records = {}
        for array_id in by_array:
            records.update(_task_records(self._run(["scontrol", "show", "job", "-o", array_id], missing_ok=True)))
        missing = [g for g in gjids if g not in records]
        if missing:
            records.update(self._completion_records())
        return {g: _batch_state(records[g]) if g in records else BatchState(
            UNKNOWN, "Slurm knows no such job (cancelled while pending, or purged)") for g in gjids}

    def cancel(self, gjids):
        """scancel the tasks; a task that already ended is not an error."""
        gjids = list(gjids)
        if gjids:
            self._run(["scancel"] + gjids, missing_ok=True)

    def _completion_records(self):
        """Records of the jobcomp/filetxt log that `sacct -c` reads.

        Read directly because `sacct -c` drops ArrayJobId/ArrayTaskId ("Unknown
        type"), and without them a record cannot be matched to its gjid.
        """
        config = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", self._run(["scontrol", "show", "config"]), re.M))
        path = config.get("JobCompLoc", "")
        if config.get("JobCompType") != "jobcomp/filetxt" or not os.path.isfile(path):
            return {}
        try:
            return _task_records(Path(path).read_text(errors="replace"))
        except OSError:
            return {}

    def _run(self, args, missing_ok=False):
        env = dict(os.environ)
        if self.slurm_conf:
            # Slurm's clients wait 60 s for a missing config file to appear: say it at once.
            if not os.path.isfile(self.slurm_conf):
                raise BackendUnavailable(f"Slurm config {self.slurm_conf} does not exist")
            env["SLURM_CONF"] = str(self.slurm_conf)
        try:
            proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=self.timeout)
        except FileNotFoundError as exc:
            raise BackendUnavailable(f"{args[0]} not found: install the Slurm client (slurm-client)") from exc
        except subprocess.TimeoutExpired as exc:
            raise BackendUnavailable(f"{args[0]} did not answer in {self.timeout:.0f}s") from exc
        if proc.returncode != 0:
            message = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            text = message[-1] if message else f"exit {proc.returncode}"
            # Finished or unknown ids are an answer for status/cancel, not a failure.
            if missing_ok and re.search(r"Invalid job id|not found|already completed", text, re.I):
                return proc.stdout
            unreachable = re.search(r"Unable to contact slurm controller|Socket timed out|Connection refused", text)
            raise (BackendUnavailable if unreachable else BackendError)(f"{args[0]} failed: {text}")
        return proc.stdout


def _task_records(text):
    """gjid -> fields for each array task in `key=value` lines; pending ranges ("2-4", "1,3%2") are expanded."""
    records = {}
    for line in text.splitlines():
        fields = dict(_FIELD.findall(line))
        array_id, tasks = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
        if not array_id or not tasks or tasks in ("N/A", "4294967294"):
            continue
        for index in _expand(tasks.split("%")[0]):
            records[f"{array_id}_{index}"] = fields
    return records


def _expand(spec):
    for part in spec.split(","):
        low, _, high = part.partition("-")
        if low.isdigit():
            yield from range(int(low), int(high if high.isdigit() else low) + 1)


def _batch_state(fields):
    """Map one Slurm record to a BatchState: the reason names the Slurm state, its Reason and any signal."""
    slurm_state = fields.get("JobState", "").split()[0] if fields.get("JobState") else "UNKNOWN"
    state = SLURM_STATES.get(slurm_state, UNKNOWN)
    reason = f"Slurm {slurm_state}"
    if fields.get("Reason") not in (None, "", "None"):
        reason += f": {fields['Reason']}"
    exit_code = None
    code, _, sig = fields.get("ExitCode", "").partition(":")
    if state not in (PENDING, RUNNING) and code.isdigit():
        # "0:15" = killed by signal 15: there is no exit code to report, the signal goes in the reason.
        if sig.isdigit() and int(sig):
            reason += f" (signal {sig})"
        else:
            exit_code = int(code)
    return BatchState(state, reason, exit_code)
