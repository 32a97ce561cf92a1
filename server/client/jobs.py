"""`sbk jobs`, `sbk job`, `sbk kill`, `sbk resubmit`: the job monitor and its actions."""
import gzip
import io
import math
import tarfile
import time

from .arguments import add_command, positive
from .library import BadInput, Refused

BACKENDS = ("local", "slurm", "htcondor", "arc")   # server/backends registry names (no server import here)
JOB_FILTERS = (  # (flag, Client.jobs keyword, argparse type, help)
    ("user", "user", str, "jobs of this user"),
    ("production", "production", str, "comma list of productions"),
    ("request", "request", str, "comma list of request ids"),
    ("runnum-from", "runnum_from", int, "lowest runnum"),
    ("runnum-to", "runnum_to", int, "highest runnum"),
    ("status", "status", str, "comma list of statuses, or all, pending, notdone"),
    ("error-code", "error_code", int, "error code (e.g. 7 or 007)"),
    ("site", "site", str, "comma list of sites"),
    ("last", "last", positive, "only the last N jobs"),
    ("older-than-hours", "older_than_hours", float, "submitted more than H hours ago"),
    ("prepared-from", "prepared_from", str, "prepared at or after (ISO time)"),
    ("prepared-to", "prepared_to", str, "prepared at or before (ISO time)"),
)


def add_job_filters(p):
    group = p.add_argument_group("job monitor filters")
    for flag, _, kind, text in JOB_FILTERS:
        group.add_argument(f"--{flag}", type=kind, help=text)
    group.add_argument("-q", "--search", help="text search (runnum, gjid, parameters, site, user)")
    group.add_argument("--retried", action="store_true", help="only jobs the server retried automatically")


def job_filters(args):
    """The filter flags given, as Client.jobs keywords."""
    given = {key: getattr(args, flag.replace("-", "_")) for flag, key, _, _ in JOB_FILTERS}
    given.update(q=args.search, retried=getattr(args, "retried", False) or None)
    return {k: v for k, v in given.items() if v is not None}   # (--error-code 0 is a filter)


def parameter_order(client):
    """Job parameter names in their sessions' order (the API's JSON objects come sorted)."""
    return [p["name"] for s in client.sessions() for p in s["parameters"]]


def ordered(order, names):
    names = list(dict.fromkeys(names))
    return [n for n in dict.fromkeys(order) if n in names] + [n for n in names if n not in order]


def status_with_code(job):
    code = job.get("error_code")
    return (job["status"] + ("" if code in (None, 0) else f" {code:03d}")
            + (f", retry at {job['retry_at']}" if job.get("retry_at") else ""))   # server/retries.py


def job_columns(jobs, order=()):
    names = ordered(order, (k for j in jobs for k in (j.get("parameters") or {})))
    return [("id", "id"), ("runnum", "runnum"), ("events", "events"),
            *[(n, lambda j, n=n: (j.get("parameters") or {}).get(n)) for n in names],
            ("status", status_with_code), ("step", "step"), ("gjid", "gjid"), ("site", "site"),
            ("wct (s)", "wct")]


def wait_handed_over(client, out, job_ids, timeout):
    """Poll until no job of `job_ids` is still `prepared` (the backend took them), a progress bar on a
    terminal; the number still prepared at the deadline."""
    deadline = time.monotonic() + timeout
    ids = set(job_ids)
    with out.progress_bar("handed to the backend", len(ids)) as update:
        while True:
            waiting = sum(1 for page in client.jobs(status="prepared") for j in page if j["id"] in ids)
            update(len(ids) - waiting)
            if not waiting or time.monotonic() > deadline:
                return waiting
            time.sleep(1.0)


def cmd_jobs(client, out, args):
    reply = client.jobs_page(sort=args.sort, page=args.page, per_page=args.per_page, after=args.after,
                             **job_filters(args))
    if out.as_json:
        return out.json(reply)
    jobs = reply["jobs"]
    out.table(job_columns(jobs, parameter_order(client) if jobs else ()), jobs, empty="")
    about = "about " if reply.get("total_is_estimate") else ""
    shown = ""
    if jobs and reply["page"] is not None:
        pages = max(1, math.ceil(reply["total"] / reply["per_page"]))
        first = (reply["page"] - 1) * reply["per_page"] + 1
        shown = f"; showing {first} to {first + len(jobs) - 1}, page {reply['page']} of {about}{pages}"
    out.line(f"{about}{reply['total']} jobs found matching the search criteria{shown}")
    if reply.get("next"):
        # deep pages cost the same as the first one through the cursor
        out.line(f"next page: --after {reply['next']}")


def cmd_job(client, out, args):
    job = client.job(args.id)
    log_text = _log_text(client.job_log(args.id)) if args.log else None
    if out.as_json:
        if log_text is not None:
            job["log_text"] = log_text
        return out.json(job)
    error = job.get("error") if job.get("error_code") else None
    out.pairs([("job", job["id"]), ("runnum", job["runnum"]), ("events", job["events"]),
               ("production", f"{job['production']} (request {job['request']}, session {job['session']})"),
               ("parameters", job["parameters"]), ("user", job["user"]),
               ("status", status_with_code(job) + (f" ({error['message']}, blame {error['blame']})" if error else "")),
               ("step", f"{job['step'] or '-'} {job['message'] or ''}".strip()), ("site", job["site"]),
               ("gjid", job["gjid"]), ("backend", job["backend"]), ("attempt", _attempt_text(job)),
               ("wct (s)", job["wct"]), ("prepared", job["prepared_at"]), ("submitted", job["submitted_at"]),
               ("started", job["started_at"]), ("finished", job["finished_at"]),
               ("queue time", duration(job.get("queue_s"))), ("run time", duration(job.get("run_s"))),
               ("last heartbeat", job["last_heartbeat"]), ("transferring", transfer_text(job.get("transfer_progress"))),
               ("log", job["log"]), ("inputs", _job_inputs(job))])
    if (job.get("input") or {}).get("split"):   # a split request's job: the slice it was given
        out.line("\nINPUT SLICE")
        for lfn in job["input"]["paths"]:
            out.line(f"  {lfn}")
    out.line("\nHISTORY")
    out.table([("attempt", "attempt"), ("seq", "seq"), ("time", "time"), ("status", "status"),
               ("kind", "kind"), ("step", "step"), ("code", "code"), ("message", "message")],
              job["history"], empty="no events yet")
    if args.outputs:
        out.line("\nOUTPUTS")
        out.table([("lfn", "lfn"), ("site", "site"), ("surl", "surl"), ("size", "size"), ("adler32", "adler32"),
                   ("attempt", "attempt")], job["outputs"], empty="no outputs registered")
        out.line("\nTRANSFER ATTEMPTS (final report)")
        out.table([("direction", "direction"), ("tool", "tool"), ("source", "source"),
                   ("destination", "destination"), ("size", "size"), ("seconds", "seconds"),
                   ("error", "error")], (job.get("report") or {}).get("transfers", []),
                  empty="no transfer attempts reported")
    if job.get("removals"):   # shown whenever there are some: files on SEs waiting to be deleted
        out.line("\nREMOVAL REQUESTS")
        out.table([("attempt", "attempt"), ("site", "site"), ("surl", "surl"), ("state", "state"),
                   ("tries", "tries"), ("last error", "last_error")], job["removals"])
    if log_text is not None:
        out.line("\nLOG")
        out.line(log_text.rstrip())


def transfer_text(progress):
    """A staging job's copies as its last heartbeat told them: '52,428,800 of 209,715,200 bytes (25.0%)
    at 48.2 MB/s (RUNNING-03, as of <time>)'; '-' when none runs."""
    if not progress:
        return "-"
    moved, total = progress["bytes"], progress.get("total_bytes")
    text = f"{moved:,} of {total:,} bytes ({100 * moved / total:.1f}%)" if total else f"{moved:,} bytes"
    return f"{text} at {progress.get('rate_mb_s')} MB/s ({progress.get('step')}, as of {progress.get('at')})"


def _job_inputs(job):
    """A job's inputs in one line: its slice, or its request's input."""
    given = job.get("input") or {}
    if given.get("split"):
        return f"slice of {len(given['paths'])} file(s) (LIST)"
    if not given or given.get("mode") == "NONE":
        return "-"
    paths = given.get("paths") or []
    return f"{given['mode']} {paths[0]}" + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")


def duration(seconds):
    """Seconds and their human form, '3723.0 s (1h 2m 3s)'; None (not queued or not started) stays None."""
    if seconds is None:
        return None
    whole = int(round(seconds))
    units = ((whole // 86400, "d"), (whole // 3600 % 24, "h"), (whole // 60 % 60, "m"), (whole % 60, "s"))
    return f"{seconds:.1f} s ({' '.join(f'{n}{u}' for n, u in units if n) or '0s'})"


def _attempt_text(job):
    """`2 of 3 (1 automatic retry: 2)`: the attempt, the request's max_attempts, the automatic attempts."""
    text = str(job["attempt"]) + (f" of {job['max_attempts']}" if job.get("max_attempts") else "")
    automatic = [a["number"] for a in job.get("attempts", []) if a.get("automatic")]
    if automatic:
        text += f" ({len(automatic)} automatic {'retry' if len(automatic) == 1 else 'retries'}: " \
                f"{', '.join(map(str, automatic))})"
    return text


def _log_text(data):
    """The text files of a log tarball, each under a header line."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            parts = []
            for member in tar.getmembers():
                if member.isfile():
                    text = tar.extractfile(member).read().decode("utf-8", "replace")
                    parts.append(f"==> {member.name} <==\n{text.rstrip()}")
            return "\n\n".join(parts)
    except tarfile.TarError:
        try:
            return gzip.decompress(data).decode("utf-8", "replace")
        except OSError:
            return data.decode("utf-8", "replace")


def cmd_kill(client, out, args):
    results = [client.kill(job_id) for job_id in args.ids]
    if out.as_json:
        return out.json(results)
    for r in results:
        out.line(f"job {r['id']}: {r['status']}" + (" (kill sent with its next replies until the wrapper acts on it)"
                                                   if r.get("command") else "")
                 + (" (its automatic retry cancelled)" if r.get("retry_cancelled") else ""))


def cmd_resubmit(client, out, args):
    """By ids (POST /jobs/ID/resubmit each), or by filters (POST /jobs/resubmit: the failed ones that match)."""
    filters = job_filters(args)
    if args.ids and filters:
        raise BadInput("give job ids or filters, not both")
    if not args.ids and not filters:
        raise BadInput("give job ids, or filters such as --production P --status failed,sys-failed")
    if args.wait and not args.backend:
        raise BadInput("--wait waits for a backend: give --backend as well")
    if filters:
        reply = client.resubmit_matching(backend=args.backend, dry_run=args.dry_run, **filters)
        if args.dry_run:
            return out.json(reply) if out.as_json else out.line(
                f"would resubmit {reply['total']} job(s): {' '.join(map(str, reply['jobs'])) or '-'}")
        results, refused = reply["resubmitted"], reply["refused"]
    else:
        if args.dry_run:
            raise BadInput("--dry-run lists the jobs that filters match; with ids there is nothing to list")
        results, refused = [], []
        with out.progress_bar("resubmitted", len(args.ids)) as update:
            for n, job_id in enumerate(args.ids, start=1):
                try:
                    results.append(client.resubmit(job_id, args.backend))
                except Refused as exc:   # this job only; unreachable or the token refused stop at once
                    refused.append({"id": job_id, "message": str(exc)})
                update(n)
        reply = {"resubmitted": results, "refused": refused}
    if args.wait and results:
        wait_handed_over(client, out, [r["id"] for r in results], args.wait)
    if out.as_json:
        out.json(reply)
    else:
        for r in results:
            out.line(f"job {r['id']}: attempt {r['attempt']}, {r['status']}")
        for r in refused:
            out.line(f"job {r['id']}: not resubmitted: {r['message']}")
        out.line(f"{len(results)} job(s) resubmitted" + (f", {len(refused)} refused" if refused else ""))
    if refused:
        raise Refused(f"{len(refused)} of {len(results) + len(refused)} job(s) not resubmitted")


def add_commands(sub):
    c = add_command(sub, "jobs", "the job monitor", cmd_jobs)
    add_job_filters(c)
    c.add_argument("--sort", default="runnum", help="runnum, id, status, site, prepared_at, finished_at, wct, "
                                                    "events, error_code; --sort=-wct for descending")
    c.add_argument("--page", type=positive, default=1)
    c.add_argument("--after", metavar="CURSOR", help="the page after the one that printed this cursor "
                                                     "(as fast deep down as on page 1)")
    c.add_argument("--per-page", type=positive, default=50)

    c = add_command(sub, "job", "one job: history, outputs, transfer attempts, log", cmd_job)
    c.add_argument("id", type=positive)
    c.add_argument("--log", action="store_true", help="print the stored log")
    c.add_argument("--outputs", action="store_true", help="outputs and the transfer attempts")

    c = add_command(sub, "kill", "kill jobs (prepared: at once; running: with their next report)", cmd_kill)
    c.add_argument("ids", nargs="+", type=positive, metavar="ID")

    c = add_command(sub, "resubmit", "new attempts for jobs by id, or for the failed, sys-failed and timeout jobs "
                                     "the job monitor filters match", cmd_resubmit)
    c.add_argument("ids", nargs="*", type=positive, metavar="ID")
    add_job_filters(c)
    c.add_argument("--backend", choices=BACKENDS, help="batch backend that starts the new attempts")
    c.add_argument("--dry-run", action="store_true", help="list the jobs the filters match, resubmit nothing")
    c.add_argument("--wait", type=float, default=0, metavar="S",
                   help="with --backend: wait up to S seconds until the backend took every new attempt")
