"""The small batch backend interface: submit a bunch of jobs, ask their state, cancel them.

    BackendError             one clear message for the caller (submission refused, tool failed)
    └── BackendUnavailable   the batch system cannot be reached or used from here

A backend turns a `Bunch` (jobs of one site) into grid job ids (`gjid`) and
reports each gjid's `BatchState`. What a state means for the job's bookkeeping
status is the server's business: a backend only says what the batch system says.
"""
import abc
import json
import re
import shlex
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

PENDING, RUNNING, COMPLETED, FAILED = "pending", "running", "completed", "failed"
CANCELLED, NODE_FAIL, OUT_OF_MEMORY, TIMEOUT = "cancelled", "node_fail", "out_of_memory", "timeout"
UNKNOWN = "unknown"   # the batch system no longer knows the job (purged, or cancelled while queued)
# The batch system that held the job is gone with it (the `local` backend's server process died):
# a job still waiting to start never will; one that started reports for itself.
LOST = "lost"
BATCH_STATES = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, NODE_FAIL, OUT_OF_MEMORY, TIMEOUT, UNKNOWN, LOST)
FINAL_BATCH_STATES = frozenset(BATCH_STATES) - {PENDING, RUNNING}

PYZ_NAME = "severus.pyz"
SITE_CONFIG_NAME = "site.toml"


class BackendError(RuntimeError):
    """A backend operation failed; the message is one line for the manager."""


class BackendUnavailable(BackendError):
    """The batch system cannot be used from this machine."""


@dataclass(frozen=True)
class JobSpec:
    """One prepared job: its id, runnum and job description (CONTRACT §1)."""
    job_id: int
    runnum: int
    description: dict


@dataclass(frozen=True)
class Bunch:
    """Jobs of one site submitted together; `site_config` is TOML text, `workdir` where sandboxes go."""
    site: str
    jobs: Tuple[JobSpec, ...]
    site_config: str
    workdir: str


@dataclass(frozen=True)
class BatchState:
    """What the batch system says about one gjid; `exit_code` only once it is known."""
    state: str
    reason: str = ""
    exit_code: Optional[int] = None

    @property
    def final(self):
        return self.state in FINAL_BATCH_STATES


class Backend(abc.ABC):
    """Submit bunches, report states, cancel; one instance per server process."""
    name = ""

    @abc.abstractmethod
    def submit(self, bunch: Bunch) -> Dict[int, str]:
        """Start every job of the bunch; returns job_id -> gjid."""

    @abc.abstractmethod
    def status(self, gjids: Iterable[str]) -> Dict[str, BatchState]:
        """The state of each gjid asked for (every one gets an answer, `unknown` at worst)."""

    @abc.abstractmethod
    def cancel(self, gjids: Iterable[str]) -> None:
        """Stop these jobs; jobs already finished are left alone."""


def split_bunches(jobs: Sequence[JobSpec], size: int) -> list:
    """Cut jobs into tuples of at most `size` (a site's bunch size), order kept."""
    if size < 1:
        raise BackendError(f"bunch size must be at least 1, got {size}")
    jobs = tuple(jobs)
    return [jobs[i:i + size] for i in range(0, len(jobs), size)]


Wrapper = Union[None, str, Sequence[str]]


def wrapper_argv(wrapper: Wrapper, python: str = "python3") -> list:
    """The command that starts `severus`: None = this interpreter's module, a .pyz path, or an argv."""
    if wrapper is None:
        return [sys.executable, "-m", "wrapper"]
    if isinstance(wrapper, (str, Path)):
        path = Path(wrapper)
        if not path.is_file():
            raise BackendError(f"wrapper {path} does not exist (build it with `severus pack`)")
        return [python, str(path.resolve())]
    return [str(part) for part in wrapper]


def make_sandbox(bunch: Bunch, wrapper: Wrapper = None) -> Path:
    """A fresh directory under `bunch.workdir` with job-<i>.json, site.toml and a copy of a .pyz wrapper."""
    if not bunch.jobs:
        raise BackendError(f"bunch for site {bunch.site} has no jobs")
    root = Path(bunch.workdir).resolve()
    sandbox = root / f"{_safe(bunch.site)}-{uuid.uuid4().hex[:12]}"
    try:
        sandbox.mkdir(parents=True)
        (sandbox / SITE_CONFIG_NAME).write_text(bunch.site_config)
        for index, job in enumerate(bunch.jobs):
            (sandbox / f"job-{index}.json").write_text(json.dumps(job.description, indent=1))
        # A copy, so a later `severus pack` cannot change what queued jobs will run.
        if isinstance(wrapper, (str, Path)):
            shutil.copy2(wrapper, sandbox / PYZ_NAME)
    except OSError as exc:
        raise BackendError(f"cannot write the sandbox under {root}: {exc}") from exc
    return sandbox


def sandbox_wrapper(sandbox: Path, wrapper: Wrapper, python: str = "python3") -> list:
    """The wrapper argv as jobs of this sandbox run it (the sandbox's own .pyz copy if there is one)."""
    if isinstance(wrapper, (str, Path)):
        return wrapper_argv(sandbox / PYZ_NAME, python)
    return wrapper_argv(wrapper, python)


def run_args(index) -> list:
    """`severus run` arguments for job `index` (a number or a shell word such as "$i"), relative to the sandbox."""
    return ["run", f"job-{index}.json", "--site-config", SITE_CONFIG_NAME, "--workdir", f"work-{index}"]


def shell_join(argv) -> str:
    """Quote an argv for a shell script; words made only of safe characters and `$VAR` stay expandable."""
    return " ".join(a if re.fullmatch(r"[\w./$-]+", a) else shlex.quote(a) for a in argv)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "site"
