"""The server side of batch backends: submit prepared jobs, poll the batch system, cancel.

- `submit_jobs(job_ids, backend_name, base_url, settings)`: the jobs of each
  site are cut into bunches of the site's bunch size; each bunch gets fresh
  job descriptions (tokens minted at this hand-off), goes to the backend in one call, and its jobs
  become `submitted` with their gjid.
- `poll_once(settings)`: asks the backends about every submitted/running job
  they hold; a batch job that ended without the wrapper's final report
  (cancelled, node failure, out of memory, batch time limit, vanished) makes
  the job `sys-failed` with the batch system's reason. Jobs the wrapper itself
  ended with 060 (signalled by the batch system) get the batch reason added.
  A submitted job whose batch job started becomes `running` (batch-start) before
  its wrapper's first report.
- `Poller`: a daemon thread doing poll_once, one per server process: the
  local backend's processes are known only to the process that started them.
  After each pass it starts the automatic retries that are due (server/retries.py),
  through the backend of each job's last attempt.

Backends are built once per process from the `BACKEND_*` settings.
"""
import datetime
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from flask import has_request_context, request

from shared.errors import CODES
from shared.states import Status

from . import db, jobs, reaper, retries, stages
from . import models as m
from .backends import BACKENDS, FINAL_BATCH_STATES, BackendError, Bunch, JobSpec, create_backend, split_bunches
from .backends.base import COMPLETED, FAILED, LOST, RUNNING, UNKNOWN
from .errors import ApiError, bad_request

log = logging.getLogger("sbk.batch")

SITE_CONFIGS = Path(__file__).resolve().parent.parent / "site_configs"
ACTIVE = (Status.SUBMITTED.value, Status.RUNNING.value)
SIGNALLED, KILLED, UNEXPECTED = 60, 62, 99
SIGNAL_CODES = (31, SIGNALLED)   # payload killed by a signal, wrapper stopped by one
ENRICH_WINDOW_S = 3600.0   # how long after a wrapper's 060 the batch reason is still looked up
STATUS_CHUNK = 500         # gjids per backend.status() call
# Backends whose `running` means the batch job started on a node. ARC's is A-REX's INLRMS, which
# covers waiting in the CE's own batch queue too: an ARC job becomes running by its wrapper's report.
START_SEEN = frozenset({"local", "slurm", "htcondor"})

_lock = threading.Lock()
_backends = {}
_poller = None


def backend_name(value):
    """Validate a `backend` value of a request body (None stays None)."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in BACKENDS:
        raise bad_request(f"'backend' must be one of {', '.join(sorted(BACKENDS))}")
    return value


def backend_options(name, settings):
    """Keyword arguments of backend `name`'s class from the BACKEND_* settings."""
    wrapper = settings.backend_wrapper or None
    if name == "local":
        return {"max_parallel": settings.backend_local_max_parallel, "wrapper": wrapper,
                "python": settings.backend_python}
    if name == "slurm":
        return {"wrapper": wrapper, "python": settings.backend_python,
                "slurm_conf": settings.backend_slurm_conf or None,
                "partition": settings.backend_slurm_partition or None,
                "sbatch_args": settings.backend_slurm_sbatch_args}
    if name == "arc":
        return {"wrapper": wrapper, "python": settings.backend_python,
                "cert": settings.backend_arc_cert or None, "key": settings.backend_arc_key or None,
                "ca": settings.backend_arc_ca or None, "timeout": settings.backend_arc_timeout_s,
                "clean_after_s": settings.backend_arc_clean_after_s, "workdir": str(sandbox_dir(settings))}
    return {"wrapper": wrapper, "schedd": settings.backend_htcondor_schedd or None}


def get_backend(name, settings):
    """This process's instance of backend `name` (built on first use); ApiError 400/503 when it cannot be."""
    options = backend_options(name, settings)
    key = (name, repr(sorted(options.items())))
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            try:
                backend = create_backend(name, **options)
            except BackendError as exc:
                raise ApiError(503, "backend-unavailable", str(exc)) from None
            _backends[key] = backend
    return backend


def start_poller(settings):
    """Start this process's batch poller once (not when BATCH_POLL_INTERVAL_S is 0)."""
    global _poller
    with _lock:
        if _poller is None and settings.batch_poll_interval_s > 0:
            # the URL its automatic retries write into descriptions: SBK_PUBLIC_URL, else the one the
            # first request came in on (as for a manager's resubmit)
            url = settings.public_url or (request.host_url.rstrip("/") if has_request_context() else "")
            _poller = Poller(settings, url).start()
    return _poller


def sandbox_dir(settings):
    return Path(settings.backend_sandbox_dir or Path.cwd() / "sbk-data" / "sandboxes")


def site_config_text(site, settings):
    """The TOML text of the site's configuration: BACKEND_SITE_CONFIGS, $SEVERUS_SITE_CONFIGS, site_configs/."""
    dirs = [d for d in settings.backend_site_configs.split(":") if d]
    dirs += [d for d in os.environ.get("SEVERUS_SITE_CONFIGS", "").split(":") if d]
    dirs.append(str(SITE_CONFIGS))
    for directory in dirs:
        path = Path(directory) / f"{site}.toml"
        if path.is_file():
            return path.read_text()
    raise BackendError(f"no site configuration {site}.toml in {', '.join(dirs)}")


def submit_jobs(job_ids, name, base_url, settings):
    """Submit prepared jobs through backend `name`, one backend call per bunch.

    Returns {"backend", "submitted": {job_id: gjid}, "bunches": [{"site", "jobs", "gjids"}],
    "errors": [{"site", "jobs", "error"}]}; jobs of a failed bunch stay prepared.
    """
    backend = get_backend(name, settings)
    reply = {"backend": name, "submitted": {}, "bunches": [], "errors": []}
    for site, size, ids in _site_groups(job_ids):
        try:
            config = site_config_text(site, settings)
        except BackendError as exc:
            reply["errors"].append({"site": site, "jobs": ids, "error": str(exc)})
            continue
        for chunk in split_bunches(ids, size):
            chunk = list(chunk)
            try:
                with db.write_transaction():
                    specs = tuple(_spec(job_id, base_url) for job_id in chunk)
                gjids = backend.submit(Bunch(site=site, jobs=specs, site_config=config,
                                             workdir=str(sandbox_dir(settings))))
            except (BackendError, ApiError) as exc:
                message = exc.message if isinstance(exc, ApiError) else str(exc)
                log.warning("bunch of %d job(s) for %s not submitted: %s", len(chunk), site, message)
                reply["errors"].append({"site": site, "jobs": chunk, "error": message})
                continue
            _record(gjids, {s.job_id: s.description["job"]["attempt"] for s in specs}, name)
            reply["submitted"].update(gjids)
            reply["bunches"].append({"site": site, "jobs": chunk, "gjids": [gjids[j] for j in chunk]})
    return reply


def _site_groups(job_ids):
    """(site name, bunch size, prepared job ids in the given order) per site."""
    groups = OrderedDict()
    for i in range(0, len(job_ids), 1000):
        rows = m.Job.select(m.Job.id, m.Site.name, m.Site.bunch_size).join(m.Site).where(
            m.Job.id.in_(job_ids[i:i + 1000]) & (m.Job.status == Status.PREPARED.value)).tuples()
        found = {job_id: (site, size) for job_id, site, size in rows}
        for job_id in job_ids[i:i + 1000]:
            if job_id in found:
                site, size = found[job_id]
                groups.setdefault((site, max(size or 1, 1)), []).append(job_id)
    return [(site, size, ids) for (site, size), ids in groups.items()]


def _spec(job_id, base_url):
    """The job as handed to a backend: its description with a token minted now (the only
    copy that reports; any earlier one is void)."""
    job = jobs.get_job(job_id)
    return JobSpec(job_id=job.id, runnum=job.runnum,
                   description=jobs.job_description(job, base_url, jobs.mint_token(job)))


def _record(gjids, attempts, name):
    """Store each job's gjid; prepared -> submitted unless its wrapper already reported."""
    now = m.utcnow()
    with db.write_transaction():
        for job_id, gjid in gjids.items():
            same = (m.Job.id == job_id) & (m.Job.attempt == attempts[job_id])
            # retry_at: a claimed retry's submission lease (server/retries.py) ends here
            moved = m.Job.update(status=Status.SUBMITTED.value, gjid=gjid, backend=name, submitted_at=now,
                                 retry_at=None).where(same & (m.Job.status == Status.PREPARED.value)).execute()
            if not moved:   # a fast wrapper reported before this: keep its status
                m.Job.update(gjid=gjid, backend=name, submitted_at=now).where(same).execute()
                # the lease ends (an ended attempt's retry_at is its own: its next retry)
                m.Job.update(retry_at=None).where(same & (m.Job.status == Status.RUNNING.value)).execute()
                retries.judge_late_hand_off(job_id, attempts[job_id])   # it may even have ended


def cancel(backend, gjids, settings):
    """Cancel gjids on their backend; an unreachable batch system is logged, not raised (the kill is recorded)."""
    if not backend or not gjids:
        return None
    try:
        get_backend(backend, settings).cancel(gjids)
    except (BackendError, ApiError) as exc:
        message = exc.message if isinstance(exc, ApiError) else str(exc)
        log.warning("cancel of %s on %s failed: %s", gjids, backend, message)
        return message
    return None


def kill(job_id, settings):
    """jobs.kill_job, then cancel the job's batch job (its wrapper gets SIGTERM, or never starts)."""
    job = jobs.get_job(job_id)
    reply = jobs.kill_job(job_id)
    if reply.get("command") == "kill" and job.backend and job.gjid:
        error = cancel(job.backend, [job.gjid], settings)
        reply["cancelled"] = None if error else job.gjid
        if error:
            reply["cancel_error"] = error
    return reply


def resubmit(job_ids, name, base_url, settings):
    """New attempts for these jobs (old batch jobs cancelled); with a backend, submit them again."""
    reply = {"resubmitted": [], "refused": []}
    old = {}
    for job_id in job_ids:
        job = jobs.get_job(job_id)
        try:
            reply["resubmitted"].append(jobs.resubmit_job(job_id))
        except ApiError as exc:
            reply["refused"].append({"id": job_id, "error": exc.error, "message": exc.message})
            continue
        if job.backend and job.gjid:
            # A timed-out attempt's batch job may still run (its heartbeats lost, not its node):
            # stop it; a batch job that ended is left alone by every backend's cancel.
            old.setdefault(job.backend, []).append(job.gjid)
    for backend, gjids in old.items():
        cancel(backend, gjids, settings)
    if name:
        reply.update(submit_jobs([r["id"] for r in reply["resubmitted"]], name, base_url, settings))
    return reply


def poll_once(settings, backends=None):
    """One pass over active batch jobs; returns the ids of the jobs marked sys-failed."""
    ended, begun = [], []
    now = time.time()
    with db.connection():
        active = list(m.Job.select(m.Job.id, m.Job.attempt, m.Job.gjid, m.Job.backend, m.Job.status).where(
            m.Job.status.in_(ACTIVE) & m.Job.gjid.is_null(False) & m.Job.backend.is_null(False)).tuples())
        by_backend, started = {}, set()
        for job_id, attempt, gjid, backend, status in active:
            by_backend.setdefault(backend, []).append((job_id, attempt, gjid))
            if status != Status.SUBMITTED.value:
                started.add(job_id)
        for name, rows in by_backend.items():
            if (backends is not None and name not in backends) or name not in BACKENDS:
                continue
            states = _states(name, [gjid for _, _, gjid in rows], settings)
            for job_id, attempt, gjid in rows:
                state = states.get(gjid)
                if state is None or (state.state == LOST and job_id in started):
                    continue   # its wrapper reports for itself, and the reaper watches it
                if state.state == RUNNING and job_id not in started and name in START_SEEN \
                        and jobs.start_batch_job(job_id, attempt, gjid):
                    begun.append(job_id)
                if not _ended(name, gjid, state, now, settings.batch_grace_s):
                    continue
                code, message = _verdict(job_id, attempt, state)
                if jobs.end_batch_job(job_id, attempt, gjid, code, message):
                    ended.append(job_id)
        _add_batch_reasons(settings, backends)
    if begun:
        log.info("%d job(s) started in the batch system before their wrapper reported: %s", len(begun), begun[:20])
    if ended:
        log.info("%d job(s) ended in the batch system without a final report: %s", len(ended), ended[:20])
    return ended


def _states(name, gjids, settings):
    states = {}
    try:
        backend = get_backend(name, settings)
        for i in range(0, len(gjids), STATUS_CHUNK):
            states.update(backend.status(gjids[i:i + STATUS_CHUNK]))
    except (BackendError, ApiError) as exc:
        log.warning("cannot ask the %s backend about %d job(s): %s", name, len(gjids),
                    exc.message if isinstance(exc, ApiError) else exc)
    return states


_final_since = {}   # gjid -> when this process first saw its batch job ended


def _ended(name, gjid, state, now, grace_s):
    """True once `gjid` has been seen ended for at least `grace_s` (its final report may be in flight)."""
    if not state.final:
        _final_since.pop(gjid, None)
        return False
    if state.state == UNKNOWN and name == "local":
        return False   # started by another server process: only that one can tell
    first = _final_since.setdefault(gjid, now)
    if now - first < grace_s:
        return False
    _final_since.pop(gjid, None)
    return True


def _verdict(job_id, attempt, state):
    """The code and message for a job whose batch job ended without its final report."""
    reason = state.reason or state.state
    command = m.Attempt.select(m.Attempt.command).where(
        (m.Attempt.job == job_id) & (m.Attempt.number == attempt)).scalar()
    if command == "kill":
        return KILLED, f"killed on a manager's request; batch job ended: {reason}"
    if state.state in (COMPLETED, FAILED) and state.exit_code is not None:
        code = state.exit_code if state.exit_code in CODES and CODES[state.exit_code].status == "sys-failed" \
            else UNEXPECTED
        return code, f"the wrapper exited ({state.exit_code}) without a final report; batch: {reason}"
    if state.state == UNKNOWN:
        return UNEXPECTED, f"the batch job vanished without a final report: {reason}"
    if state.state == LOST:
        return UNEXPECTED, f"the batch job never started: {reason}"
    return SIGNALLED, f"batch job ended before the wrapper reported: {reason}"


def _add_batch_reasons(settings, backends):
    """Jobs the wrapper ended as signalled (060, or 031 when the batch signal reached the payload first)
    get the batch system's reason in their message, once; their status stays the wrapper's."""
    since = m.utcnow() - datetime.timedelta(seconds=ENRICH_WINDOW_S)
    rows = list(m.Job.select(m.Job.id, m.Job.gjid, m.Job.backend, m.Job.message).where(
        m.Job.error_code.in_(SIGNAL_CODES)
        & m.Job.gjid.is_null(False) & (m.Job.finished_at >= since)
        & ~(m.Job.message.contains("; batch: "))).tuples())
    by_backend = {}
    for job_id, gjid, backend, message in rows:
        if backend in BACKENDS and (backends is None or backend in backends):
            by_backend.setdefault(backend, []).append((job_id, gjid, message))
    for name, items in by_backend.items():
        states = _states(name, [gjid for _, gjid, _ in items], settings)
        for job_id, gjid, message in items:
            state = states.get(gjid)
            if state is None or state.state not in FINAL_BATCH_STATES - {UNKNOWN, COMPLETED}:
                continue
            with db.write_transaction():
                m.Job.update(message=f"{message}; batch: {state.reason or state.state}"[:4096]).where(
                    (m.Job.id == job_id) & (m.Job.gjid == gjid)).execute()


class Poller(reaper.Reaper):
    """The reaper's thread, calling poll_once every BATCH_POLL_INTERVAL_S instead."""
    thread_name = "sbk-batch-poller"

    def __init__(self, settings, base_url=""):
        super().__init__(None, settings.batch_poll_interval_s)
        self.settings = settings
        self.base_url = base_url or settings.public_url

    def run_once(self):
        poll_once(self.settings)
        with db.connection():   # then the due automatic retries (server/retries.py), this process's backends
            retries.run_due(self.settings, self.base_url)
        # then the follow-up stages whose condition the server's own ends made true, and their submission
        stages.run_due(self.settings, self.base_url)


def cmd_poll(settings, backends=None):
    """`sbk poll [--backend NAME]`: one poller pass, for a cron; prints what it ended."""
    db.bind(settings.db_url)
    ended = poll_once(settings, set(backends) if backends else None)
    print(f"sys-failed {len(ended)} job(s)" + (f": {' '.join(map(str, ended))}" if ended else ""))
    print(retries.one_shot(settings, backends))
    # a local backend's processes would belong to this short-lived command: left to the serving processes
    staged = stages.run_due(settings, settings.public_url,
                            [b for b in (backends or BACKENDS) if b != "local"])
    print(f"submitted {len(staged)} follow-up stage job(s)" + (f": {' '.join(map(str, staged))}" if staged else ""))
    return 0
