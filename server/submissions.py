"""Submissions: turn bulks into a plan (the seed's summary) and prepare its jobs.

A bulk is `{request, test, sites, runs, events, log_to_db}`: `runs` jobs of
`events` events on each site, for a request of the production, or (test) for
that request's test twin in `<production>_test`. Runnums are allocated per
request, contiguous and above both the request's minimum and every runnum
already used at or above it, so they stay unique without a retry loop.
"""
import datetime
import math
from dataclasses import dataclass

from shared import schema as s
from shared.states import Status

from . import db
from . import models as m
from .errors import bad_request, conflict, not_found

# Serialises runnum allocation across PostgreSQL sessions (SQLite: BEGIN IMMEDIATE does it).
SUBMIT_LOCK_KEY = 0x5B5
MAX_JOBS_PER_SUBMISSION = 100_000
FAILED_WINDOW = datetime.timedelta(hours=24)


@dataclass(frozen=True)
class Bulk:
    request_id: int
    test: bool
    sites: tuple
    runs: int
    events: int
    log_to_db: bool


def parse_submission(body):
    """Validate a POST /submissions body; return (production name, bulks, dry_run, override)."""
    s.refuse_unknown(body, ("production", "bulks", "dry_run", "override_thresholds", "backend"))
    production = s.text(body, "production", max_len=128)
    raw = body.get("bulks")
    if not isinstance(raw, list) or not raw or len(raw) > 100:
        raise s.SchemaError("'bulks' must be a list of 1 to 100 objects")
    bulks = []
    for n, b in enumerate(raw):
        where = f"bulks[{n}]."
        if not isinstance(b, dict):
            raise s.SchemaError(f"'{where[:-1]}' must be an object")
        s.refuse_unknown(b, ("request", "test", "sites", "runs", "events", "log_to_db"), where)
        bulks.append(Bulk(
            request_id=s.integer(b, "request", where, lo=1),
            test=s.boolean(b, "test", where, default=False),
            sites=s.text_list(b, "sites", where, max_items=200, max_len=64),
            runs=s.integer(b, "runs", where, lo=1, hi=MAX_JOBS_PER_SUBMISSION),
            events=s.integer(b, "events", where, lo=1, hi=10 ** 12),
            log_to_db=s.boolean(b, "log_to_db", where, default=False),
        ))
    dry_run = s.boolean(body, "dry_run", default=False)
    override = s.boolean(body, "override_thresholds", default=False)
    return production, bulks, dry_run, override


def prepare_jobs(user, production, bulks, dry_run=False, override_thresholds=False,
                 heartbeat_s=300.0):
    """Plan `bulks` on `production` (a name) and, unless `dry_run`, create the jobs.

    Returns the plan: {production, software, software_lfn, sets: [...],
    total_jobs, total_events, refusals, dry_run, job_ids}. Raises ApiError 409
    when a site's threshold refuses jobs and `override_thresholds` is false.
    """
    with db.write_transaction():
        db.advisory_lock(SUBMIT_LOCK_KEY)
        main = m.Production.get_or_none(m.Production.name == production)
        if main is None:
            raise not_found(f"production {production!r} does not exist")
        plan = _plan(main, bulks)
        if plan["refusals"] and not dry_run and not override_thresholds:
            raise conflict("site-threshold", "; ".join(plan["refusals"]))
        plan["dry_run"] = dry_run
        plan["job_ids"] = [] if dry_run else _create_jobs(user, plan, heartbeat_s)
    for st in plan["sets"]:   # drop the rows the plan carried for _create_jobs
        del st["_req"]
        for row in st["rows"]:
            del row["site_id"]
    return plan


def _plan(main, bulks):
    if main.is_test:
        raise bad_request(f"submit to the main production, not {main.name}: a bulk's 'test' picks the twin")
    sw = main.software
    sets, refusals, next_runnum = [], [], {}
    planned_at_site = {}
    for number, bulk in enumerate(bulks, start=1):
        req = _request_for(main, bulk)
        prod = req.production
        if prod.status != "open":
            raise conflict("production-closed", f"production {prod.name} is closed")
        rows = []
        for site_name in bulk.sites:
            site = _eligible_site(site_name, prod)
            first = next_runnum.get(req.id) or _first_free_runnum(req.min_runnum, next_runnum)
            last = first + bulk.runs - 1
            next_runnum[req.id] = last + 1
            planned_at_site[site.name] = planned_at_site.get(site.name, 0) + bulk.runs
            refusals.extend(_threshold_refusals(site, planned_at_site[site.name]))
            rows.append({"site": site.name, "site_id": site.id, "jobs": bulk.runs,
                         "first_runnum": first, "last_runnum": last,
                         "events": bulk.runs * bulk.events, "events_per_job": bulk.events,
                         "bunches": math.ceil(bulk.runs / max(site.bunch_size, 1))})
        sets.append({
            "set": number, "request": req.id, "production": prod.name, "test": bulk.test,
            "parameters": req.parameters, "input_mode": req.input_mode, "input_paths": req.input_paths,
            "output_lfn": req.output_lfn, "output_sites": req.output_sites,
            "log_to_db": bulk.log_to_db, "rows": rows,
            "jobs": sum(r["jobs"] for r in rows), "events": sum(r["events"] for r in rows),
            "_req": req,
        })
    return {"production": main.name, "software": f"{sw.version} {sw.revision}",
            "software_lfn": sw.lfn, "sets": sets, "refusals": sorted(set(refusals)),
            "total_jobs": sum(x["jobs"] for x in sets),
            "total_events": sum(x["events"] for x in sets)}


def _request_for(main, bulk):
    req = m.Request.get_or_none(m.Request.id == bulk.request_id)
    if req is None or req.production_id != main.id:
        raise not_found(f"request {bulk.request_id} is not a request of production {main.name}")
    if bulk.test:
        if req.test_request_id is None:
            raise conflict("no-test-request", f"request {req.id} has no test request")
        return req.test_request
    if req.status not in ("valid", "running"):
        raise conflict("request-not-valid",
                       f"request {req.id} is {req.status}: only valid or running requests take jobs "
                       "(test jobs go to its test request)")
    return req


def _eligible_site(name, production):
    site = m.Site.get_or_none(m.Site.name == name)
    if site is None:
        raise not_found(f"site {name!r} does not exist")
    per_session = m.SiteSession.get_or_none(site=site, session=production.session_id)
    if per_session is not None and not per_session.enabled:
        raise conflict("site-disabled", f"site {name} is disabled for session {production.session.name}")
    # The test twin inherits the main production's permission.
    main_id = production.twin_id if production.is_test else production.id
    per_production = m.SiteProduction.get_or_none(site=site, production=main_id)
    if per_production is not None and not per_production.allowed:
        raise conflict("site-not-allowed", f"site {name} is not allowed for production {production.name}")
    return site


def _first_free_runnum(min_runnum, planned):
    used = m.Job.select(m.fn.MAX(m.Job.runnum)).where(m.Job.runnum >= min_runnum).scalar()
    candidates = [min_runnum, (used or 0) + 1]
    candidates += [nxt for nxt in planned.values() if nxt > min_runnum]
    return max(candidates)


def _threshold_refusals(site, planned):
    refusals = []
    if site.threshold_prepared:
        prepared = m.Job.select().where((m.Job.site == site) & (m.Job.status == "prepared")).count()
        if prepared + planned > site.threshold_prepared:
            refusals.append(f"site {site.name}: {prepared} prepared + {planned} new jobs "
                            f"exceed its prepared threshold {site.threshold_prepared}")
    if site.threshold_failed:
        since = m.utcnow() - FAILED_WINDOW
        failed = m.Job.select().where(
            (m.Job.site == site) & m.Job.status.in_(("failed", "sys-failed"))
            & (m.Job.finished_at >= since)).count()
        if failed >= site.threshold_failed:
            refusals.append(f"site {site.name}: {failed} failed jobs in 24 h reach its failed "
                            f"threshold {site.threshold_failed}")
    return refusals


def _create_jobs(user, plan, heartbeat_s):
    now = m.utcnow()
    ids = []
    for st in plan["sets"]:
        req = st["_req"]
        prod = req.production
        words = [prod.name, user.name if user else ""] + [str(v) for v in req.parameters.values()]
        for row in st["rows"]:
            site_id = row["site_id"]
            runnums = range(row["first_runnum"], row["last_runnum"] + 1)
            jobs = [{"runnum": r, "events": row["events_per_job"], "request": req.id,
                     "production": prod.id, "session": prod.session_id, "site": site_id,
                     "user": user.id if user else None, "test": st["test"],
                     "log_to_db": st["log_to_db"], "status": Status.PREPARED.value,
                     "heartbeat_s": heartbeat_s, "prepared_at": now,
                     "search": " ".join(words + [row["site"], str(r)]).lower()[:1024]}
                    for r in runnums]
            for i in range(0, len(jobs), 200):
                m.Job.insert_many(jobs[i:i + 200]).execute()
            created = [j for (j,) in m.Job.select(m.Job.id).where(
                m.Job.runnum.between(row["first_runnum"], row["last_runnum"])).order_by(m.Job.runnum).tuples()]
            for i in range(0, len(created), 500):
                m.Attempt.insert_many([{"job": j, "number": 1} for j in created[i:i + 500]]).execute()
            ids.extend(created)
            m.Site.update(last_submission=now).where(m.Site.id == site_id).execute()
            m.SiteProduction.insert(site=site_id, production=prod.twin_id if prod.is_test else prod.id,
                                    allowed=True, last_submission=now, last_submitted_by=user).on_conflict(
                conflict_target=[m.SiteProduction.site, m.SiteProduction.production],
                update={m.SiteProduction.last_submission: now,
                        m.SiteProduction.last_submitted_by: user}).execute()
        if not st["test"] and req.status == "valid":
            req.status = "running"
            req.save(only=[m.Request.status])
        m.Activity.create(user=user, kind="job-submission", session=prod.session.name,
                          info=f"Job submitted: {st['jobs']} (events: {st['events']}) on {prod.name}",
                          ref={"production": prod.name, "request": req.id,
                               "runnums": [[r["first_runnum"], r["last_runnum"]] for r in st["rows"]]})
    return ids
