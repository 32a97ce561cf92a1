"""Removal requests: files on SEs that no catalog entry names, deleted by the server.

Two sources file them (`file_removal`):
- a registration of a newer attempt replaced an older attempt's replica of the
  same LFN (server/catalog.py): the older file is no longer anybody's;
- a wrapper could not delete what its own attempt wrote (the SE died between two
  uploads, a stop cut its cleanup short): `POST /jobs/<id>/removals`, or the
  `removals` of its final report when the server was unreachable too.

`cleanup_once()` (`sbk cleanup`, and the cleaner thread of `sbk serve`) deletes
due requests through server/storage.py, retrying failures with a growing delay,
and never deletes a file while a replica names it (state `kept`). A path on a
worker node, which the server cannot reach, waits for a person (`manual`).

A job token is a credential shipped in sandboxes, and these are deletions made
with the server's own rights: a wrapper may only ask for files named like its
own job's (shared/outputs.py: an attempt's physical names and log) inside a
directory named like its job's output directory.
"""
import logging
import posixpath
import time
import urllib.parse

from shared import outputs
from shared import schema as s
from shared.jobdesc import NAME_RE

from . import db, storage
from . import models as m
from .errors import ApiError

log = logging.getLogger("sbk.removals")

PENDING, DONE, KEPT, MANUAL = "pending", "done", "kept", "manual"
MAX_ITEMS = 1000
RETRY_FIRST_S, RETRY_MAX_S = 60.0, 3600.0


def file_removal(job_id, attempt, site, surl, reason):
    """Ask for `surl` to be deleted (once: a file already asked for is not asked again)."""
    if m.Removal.select().where((m.Removal.surl == surl) & (m.Removal.state == PENDING)).exists():
        return None
    state = PENDING if storage.reachable(surl) else MANUAL
    return m.Removal.create(job=job_id, attempt=attempt, site=site, surl=surl, reason=reason[:255], state=state,
                            last_error="" if state == PENDING else "not a URL the server can reach: "
                                                                     "delete it on the node's file system")


def parse_items(body):
    """The [{"site", "surl"}] of a wrapper's removal request (400 on anything else)."""
    items = body if isinstance(body, list) else [body]
    if not items or len(items) > MAX_ITEMS:
        raise ApiError(400, "bad-request", f"give 1 to {MAX_ITEMS} removals")
    parsed = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(400, "bad-request", f"removal [{n}] must be an object")
        try:
            s.refuse_unknown(item, ("site", "surl", "lfn", "reason"), f"[{n}].")
            parsed.append((s.text(item, "site", f"[{n}].", pattern=NAME_RE, max_len=64),
                           s.text(item, "surl", f"[{n}].", max_len=2048),
                           s.text(item, "reason", f"[{n}].", default="", max_len=255, empty=True)))
        except s.SchemaError as exc:
            raise ApiError(400, "bad-request", str(exc)) from None
    return parsed


def check_own_file(job, surl):
    """Refuse (403) a surl that cannot be one of `job`'s own files: see the module docstring."""
    path = urllib.parse.urlsplit(surl).path
    name = posixpath.basename(path)
    attempt = outputs.attempt_of(name, job.runnum)
    if ".." in path.split("/") or attempt is None or not 1 <= attempt <= job.attempt:
        raise ApiError(403, "forbidden", f"{surl} is not named like a file of job {job.id}'s attempts")
    out_dir = posixpath.basename(job.request.output_lfn.rstrip("/"))
    if f"/{out_dir}/" not in path:
        raise ApiError(403, "forbidden", f"{surl} is not in a directory named like job {job.id}'s "
                                         f"output directory ({out_dir})")
    return attempt


def file_from_wrapper(job, token_attempt, items):
    """A wrapper's removals, parsed (parse_items): its own job's files only (403 otherwise);
    files a replica names are not filed. Returns how many were filed."""
    checked = []
    for site, surl, reason in items:   # all checked before any is filed
        attempt = check_own_file(job, surl)
        if attempt > token_attempt:
            raise ApiError(403, "forbidden", f"attempt {token_attempt} cannot ask to remove attempt {attempt}'s file")
        checked.append((attempt, site, surl, reason))
    filed = 0
    for attempt, site, surl, reason in checked:
        if m.Replica.select().where(m.Replica.surl == surl).exists():
            continue
        if file_removal(job.id, attempt, site, surl, reason or f"attempt {attempt} could not delete it"):
            filed += 1
    return filed


def file_from_report(job, token_attempt, report):
    """The `removals` of a final report (sent when the server could not be told sooner); a final
    report is never refused for them: what cannot be filed is logged."""
    try:
        return file_from_wrapper(job, token_attempt, parse_items(report["removals"]))
    except ApiError as exc:
        log.warning("job %s: removals of the final report not filed: %s", job.id, exc.message)
        return 0


def removal_dict(r):
    return {"id": r.id, "attempt": r.attempt, "site": r.site, "surl": r.surl, "reason": r.reason,
            "state": r.state, "tries": r.tries, "last_error": r.last_error,
            "created_at": m.iso(r.created_at), "done_at": m.iso(r.done_at)}


def job_removals(job_id):
    return [removal_dict(r) for r in m.Removal.select().where(m.Removal.job == job_id).order_by(m.Removal.id)]


def cleanup_once(limit=200, timeout_s=60.0, now=None):
    """Delete due removal requests; return {"done", "kept", "failed"} counts of this pass.

    Each request is claimed by moving its next try past this pass (an UPDATE that only one
    process wins), so passes of several processes never delete one file twice at once.
    """
    now = time.time() if now is None else now
    counts = {"done": 0, "kept": 0, "failed": 0}
    with db.connection():
        due = [i for (i,) in m.Removal.select(m.Removal.id).where(
            (m.Removal.state == PENDING) & (m.Removal.next_try_at <= now))
            .order_by(m.Removal.next_try_at, m.Removal.id).limit(limit).tuples()]
        for removal_id in due:
            with db.write_transaction():
                claimed = m.Removal.update(next_try_at=now + 2 * timeout_s).where(
                    (m.Removal.id == removal_id) & (m.Removal.state == PENDING)
                    & (m.Removal.next_try_at <= now)).execute()
            if claimed:
                counts[_settle(m.Removal.get_by_id(removal_id), timeout_s)] += 1
    if any(counts.values()):
        log.info("removal pass: %s", counts)
    return counts


def _settle(r, timeout_s):
    """Delete one claimed request's file; record and return the outcome."""
    r.tries += 1
    if m.Replica.select().where(m.Replica.surl == r.surl).exists():
        outcome, r.state, r.last_error = "kept", KEPT, "a catalog replica names this file: kept"
    else:
        try:
            storage.delete(r.surl, timeout_s)
            outcome, r.state, r.last_error = "done", DONE, ""
        except storage.NotFound:
            outcome, r.state, r.last_error = "done", DONE, "already gone"
        except storage.StorageError as exc:
            outcome, r.last_error = "failed", str(exc)[:1000]
            r.next_try_at = time.time() + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (r.tries - 1))
    if r.state != PENDING:
        r.done_at = m.utcnow()
    with db.write_transaction():
        r.save()
    return outcome


def cmd_cleanup(settings):
    """`sbk cleanup`: one removal pass, for a cron; prints what it did."""
    db.bind(settings.db_url)
    counts = cleanup_once(timeout_s=settings.cleanup_timeout_s)
    with db.connection():
        waiting = m.Removal.select().where(m.Removal.state.in_([PENDING, MANUAL])).count()
    print(f"removed {counts['done']} file(s), kept {counts['kept']} (registered), {counts['failed']} failed; "
          f"{waiting} waiting")
    return 0
