"""Submissions: turn bulks into a plan (the seed's summary) and prepare its jobs.

A bulk is `{request, test, sites, runs, events, log_to_db}`: `runs` jobs of
`events` events on each site, for a request of the production, or (test) for
that request's test twin in `<production>_test`. A main bulk's `events` may
not exceed its request's `events_per_job` (400; fewer is fine: the last jobs
of a request complete its required events; a request without one, 0, sets no
limit); a test bulk may differ, that is what trying a setting is for.

Runnums. A runnum names one job everywhere (its output files, the job
monitor, the seed's summary): it is unique across all jobs, every session and
production (the unique index on Job.runnum; the seed asks it of a session).
Each site of a bulk gets a contiguous block, and a request's blocks are
allocated above the request's own minimum: a request continues after its own
highest runnum (at its `min_runnum` at first), so requests with distant
minimums keep their own ranges whatever the others use (the seed's 10000003
beside 1007212524). A block that would overlap runnums taken by another
request's jobs, or planned earlier in the same submission, moves up past them
to the first free stretch; after MAX_HOPS such moves it goes above every
runnum used from there on. Requests that share a minimum (a test request
keeps its template's) thus interleave block by block and never collide. One
submission at a time allocates (SUBMIT_LOCK_KEY on PostgreSQL, BEGIN
IMMEDIATE on SQLite), so no retry loop is needed.

Sites. A bulk's site must exist and be, for the production's session, enabled
(disabled: it takes nothing, 409 site-disabled) and supported (the session's
jobs are known to run there, the seed's ✓; an unsupported site takes test
bulks only, the way a site is checked, and refuses a main bulk with 409
site-unsupported), and allowed for the production (its test twin follows it;
409 site-not-allowed). No SiteSession or SiteProduction row: enabled,
supported, allowed. Thresholds (0: none) refuse a submission with 409
site-threshold, listed in a dry run's `refusals`, unless an expert overrides
them: prepared (the site's prepared jobs + the new ones), running (its
submitted and running jobs + the new ones, which are prepared to be submitted
at once or soon; prepared jobs already waiting are the prepared threshold's
business) and failed (failed or sys-failed jobs that ended in the last 24 h, or since
the site was reset if that is later, see below).
A submission is activity of each of its sites and of the session there
(Site/SiteSession.last_activity, see jobs.note_site_activity).

A test bulk may name its request by `parameters` (the session's job
parameter values) instead: the test request of `<production>_test` with those
values, created in the submission's transaction when there is none (seed:
"the request will be created before submit"). It takes its settings from a
template, the main request with the same values or else the production's
newest request: the template's output directories moved under the twin with
its parameter-valued segments replaced (`.../2010_July_test/output/<Analysis>/
<Geometry>/<Generator>` for the seed's layout), its runnum minimum and limits;
events per job from the bulk, input NONE and the template's output sites
unless the bulk gives them. Main requests are only made by a manager.

Resetting a site (the seed's SHIFT INIT "reset sites"; `reset_site`, POST
/sites/<name>/reset, shifter-submission or expert-submission). A site over its
failed threshold refuses every bulk for up to 24 h after its last failures,
even once a shifter has found and fixed the cause. A reset sets
Site.failed_reset_at = now: the failed threshold then counts only the failed
and sys-failed jobs that ended after max(now - 24 h, failed_reset_at), so the
site takes jobs again at once and is refused again only by new failures. The
jobs themselves are untouched (their status, codes and the job monitor stay
as they were; resubmitting them is a separate decision), the other thresholds
are not affected, and the reset is recorded as an Activity of kind
'site-reset'.

Splitting (server/splitting.py has the rules). A bulk on a request split by files per job, or
giving an explicit `split` list, makes one job per pending slice, each job holding its slice
(Job.input_paths); `runs`, optional there, caps the jobs per site; `repeat_slices` makes slices
already given to jobs again. The plan's set says `split` (null: not split): slices made, left,
files already given, the first slices.

`submit` is the one path from a request body to prepared (and, with a
backend, submitted) jobs: the API's POST /submissions and the web desk's
expert and shift pages call it with the same body.
"""
import datetime
import math
from dataclasses import dataclass

from shared import schema as s
from shared.jobdesc import INPUT_MODES, NAME_RE
from shared.states import Status

from . import batch, counts, db, search_text, splitting
from . import models as m
from .errors import ApiError, bad_request, conflict, not_found
from .request_rules import (check_input, check_output_sites, check_parameters, insert_test_request, params_key,
                            under_twin)

# Serialises runnum allocation across PostgreSQL sessions (SQLite: BEGIN IMMEDIATE does it).
SUBMIT_LOCK_KEY = 0x5B5
# Moves of a block past taken runnums before it goes above them all: each move is one indexed
# query, and a request whose own range others filled since could need many.
MAX_HOPS = 20
MAX_JOBS_PER_SUBMISSION = 100_000
FAILED_WINDOW = datetime.timedelta(hours=24)
BULK_FIELDS = ("request", "test", "sites", "runs", "events", "log_to_db", "split", "repeat_slices")
# Only with `parameters`: settings of the test request that may have to be created.
NEW_REQUEST_FIELDS = ("parameters", "input_mode", "input_paths", "output_sites")
# A created test request keeps these of its template (see the module doc).
INHERITED = ("min_runnum", "event_time_s", "max_wct_s", "max_rss_mb", "stall_s", "output_patterns", "cores",
             "memory_mb")


@dataclass(frozen=True)
class Bulk:
    request_id: int
    test: bool
    sites: tuple
    runs: int                    # None: a split request's bulk, one job per pending slice
    events: int
    log_to_db: bool
    parameters: dict = None      # a test bulk's job parameters, instead of request_id
    input_mode: str = "NONE"
    input_paths: tuple = ()
    output_sites: tuple = ()
    split: tuple = None          # an explicit split: one tuple of LFNs per job
    repeat_slices: bool = False  # make slices already given to jobs again


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
        s.refuse_unknown(b, BULK_FIELDS + NEW_REQUEST_FIELDS, where)
        bulks.append(Bulk(
            request_id=s.integer(b, "request", where, default=None, lo=1),
            test=s.boolean(b, "test", where, default=False),
            sites=s.text_list(b, "sites", where, max_items=200, max_len=64),
            runs=s.integer(b, "runs", where, default=None, lo=1, hi=MAX_JOBS_PER_SUBMISSION),
            events=s.integer(b, "events", where, lo=1, hi=10 ** 12),
            log_to_db=s.boolean(b, "log_to_db", where, default=False),
            split=splitting.read_split(b, "split", where) if "split" in b else None,
            repeat_slices=s.boolean(b, "repeat_slices", where, default=False),
            **_new_request_fields(b, where),
        ))
    dry_run = s.boolean(body, "dry_run", default=False)
    override = s.boolean(body, "override_thresholds", default=False)
    return production, bulks, dry_run, override


def _new_request_fields(b, where):
    """A bulk's `parameters` and the settings that go with them; a test bulk has a request or parameters."""
    given = [k for k in NEW_REQUEST_FIELDS if k in b]
    if "parameters" not in b:
        if given:
            raise s.SchemaError(f"'{where}{given[0]}' goes with 'parameters'")
        if "request" not in b:
            raise s.SchemaError(f"missing field '{where}request' (or, for a test bulk, '{where}parameters')")
        return {}
    if "request" in b:
        raise s.SchemaError(f"'{where}request' and '{where}parameters' exclude each other")
    if not b.get("test"):
        raise bad_request(f"'{where}parameters' is for test bulks only: a main request is created and "
                          "validated by a manager (POST /requests)")
    parameters = s.text_map(b, "parameters", where, max_items=50)
    for name in parameters:
        s.text(parameters, name, f"{where}parameters.", max_len=256)
    fields = {"parameters": parameters,
              "input_mode": s.text(b, "input_mode", where, default="NONE", pattern="|".join(INPUT_MODES)),
              "input_paths": tuple(s.check_lfn(p, f"{where}input_paths[{n}]") for n, p in enumerate(
                  s.text_list(b, "input_paths", where, default=(), max_items=10000, max_len=1024))),
              "output_sites": s.text_list(b, "output_sites", where, default=(), max_items=100, pattern=NAME_RE,
                                          max_len=64)}
    check_input(fields)
    return fields


def submit(principal, body, base_url, settings):
    """POST /submissions' body -> the plan (dry run) or the prepared jobs, plus with `backend` the
    backend's reply (submitted, bunches, errors: a bunch the batch system refuses stays prepared)."""
    production, bulks, dry_run, override = parse_submission(body)
    backend = batch.backend_name(body.get("backend"))
    if backend and not dry_run:
        batch.get_backend(backend, settings)   # refuse an unusable backend before writing anything
    if override and not principal.can("expert-submission"):
        raise ApiError(403, "forbidden", "overriding site thresholds needs the expert-submission privilege")
    plan = prepare_jobs(principal.user, production, bulks, dry_run=dry_run, override_thresholds=override,
                        heartbeat_s=settings.heartbeat_s)
    if backend and not dry_run:
        plan.update(batch.submit_jobs(plan["job_ids"], backend, base_url, settings))
    return plan


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
            row.pop("_slices", None)
    return plan


def _plan(main, bulks):
    if main.is_test:
        raise bad_request(f"submit to the main production, not {main.name}: a bulk's 'test' picks the twin")
    sw = main.software
    sets, refusals, runnums = [], [], _Runnums()
    planned_at_site, to_create = {}, {}
    given = {}   # per request: its input files already in a job's slice (splitting.given_files)
    for number, bulk in enumerate(bulks, start=1):
        where = f"bulks[{number - 1}]."
        if bulk.parameters is None:
            req = _request_for(main, bulk)
        else:
            req = _test_request_by_parameters(main, bulk, where, to_create)
        if not bulk.test and req.events_per_job and bulk.events > req.events_per_job:
            raise bad_request(f"'bulks[{number - 1}].events' is {bulk.events} events per job, more than "
                              f"request {req.id}'s events_per_job {req.events_per_job}: only a test bulk "
                              "may go beyond its request's setting")
        prod = req.production
        if prod.status != "open":
            raise conflict("production-closed", f"production {prod.name} is closed")
        split, key = None, req.id or req.params_key
        if bulk.split is not None or req.files_per_job:
            if key not in given:
                given[key] = splitting.given_files(req)
            split = splitting.plan_split(req, bulk.split, bulk.repeat_slices, where, given[key])
        if split is None:
            splitting.check_unsplit_names(req, where)
            if bulk.runs is None:
                raise s.SchemaError(f"missing field '{where}runs' (only a split request's bulk may leave it "
                                    "out: one job per slice)")
            shares = [bulk.runs] * len(bulk.sites)
        else:
            if bulk.runs is None and len(split.slices) > MAX_JOBS_PER_SUBMISSION:
                raise bad_request(f"'{where}': {len(split.slices)} slices are more than {MAX_JOBS_PER_SUBMISSION} "
                                  f"jobs in one submission: give '{where}runs' to take them in portions")
            shares = splitting.deal(len(split.slices), len(bulk.sites), bulk.runs)
        rows, dealt = [], 0
        for site_name, jobs in zip(bulk.sites, shares):
            site = _eligible_site(site_name, prod, bulk.test)
            if not jobs:   # a split with fewer slices than sites
                continue
            first, last = runnums.block(req, jobs)
            planned_at_site[site.name] = planned_at_site.get(site.name, 0) + jobs
            refusals.extend(_threshold_refusals(site, planned_at_site[site.name]))
            row = {"site": site.name, "site_id": site.id, "jobs": jobs,
                   "first_runnum": first, "last_runnum": last,
                   "events": jobs * bulk.events, "events_per_job": bulk.events,
                   "bunches": math.ceil(jobs / max(site.bunch_size, 1))}
            if split is not None:
                row["_slices"] = split.slices[dealt:dealt + jobs]
                dealt += jobs
            rows.append(row)
        if split is not None:
            splitting.note_given(given[key], split.slices[:dealt])
        sets.append({
            "set": number, "request": req.id, "production": prod.name, "test": bulk.test,
            "request_state": "exists" if req.id else "would be created",
            "parameters": req.parameters, "input_mode": req.input_mode, "input_paths": req.input_paths,
            "output_lfn": req.output_lfn, "output_abs": req.output_abs, "output_sites": req.output_sites,
            "log_to_db": bulk.log_to_db, "rows": rows,
            "split": None if split is None else split.summary(dealt),
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


def _test_request_by_parameters(main, bulk, where, to_create):
    """The twin's test request with the bulk's parameters, or an unsaved one (kept in `to_create` by key)."""
    check_parameters(main.session, bulk.parameters, where + "parameters.")
    key = params_key(bulk.parameters)
    twin = main.twin
    if key in to_create:
        return to_create[key]
    found = m.Request.get_or_none(production=twin, params_key=key)
    if found is not None:
        return found
    template = m.Request.get_or_none(production=main, params_key=key)
    if template is None:   # a main request: a test request's directories may be shared or chosen by hand
        template = m.Request.select().where(m.Request.production == main.id).order_by(m.Request.id.desc()).first()
    if template is None:
        raise conflict("no-template-request", f"production {main.name} has no request to take the output "
                                              "directories and settings of a new test request from: "
                                              "a manager creates the first one (POST /requests)")
    renamed = {value: bulk.parameters.get(name, value) for name, value in template.parameters.items()}
    output_lfn = under_twin(template.output_lfn, main, renamed)
    if output_lfn is None:
        raise conflict("no-template-request", f"request {template.id}'s output directory {template.output_lfn} "
                                              f"is not under {template.production.name}: no test directory follows")
    try:
        s.check_lfn(output_lfn, "output_lfn")
    except s.SchemaError:
        raise bad_request(f"'{where}parameters' make the output directory {output_lfn[:300]!r}, "
                          "not a valid LFN") from None
    if len(output_lfn) > 1024:
        raise bad_request(f"'{where}parameters' make an output directory longer than 1024 characters")
    settings = {name: getattr(template, name) for name in INHERITED}
    num_jobs = bulk.runs * len(bulk.sites) if bulk.runs else len(bulk.split or ())   # (no runs: one a slice)
    settings.update(
        events_per_job=bulk.events, num_jobs=num_jobs, required_events=num_jobs * bulk.events,
        input_mode=bulk.input_mode, input_paths=list(bulk.input_paths), output_lfn=output_lfn,
        output_abs=(under_twin(template.output_abs, main, renamed) or "")[:1024],
        output_sites=list(bulk.output_sites or template.output_sites),
        note=f"made by a test submission from the settings of request {template.id}")
    check_output_sites(settings["output_sites"])
    to_create[key] = m.Request(production=twin, parameters=bulk.parameters, params_key=key, **settings)
    return to_create[key]


def _eligible_site(name, production, test):
    """The site `name` if it takes this bulk (see the module doc), else ApiError 404 / 409 saying why."""
    site = m.Site.get_or_none(m.Site.name == name)
    if site is None:
        raise not_found(f"site {name!r} does not exist")
    per_session = m.SiteSession.get_or_none(site=site, session=production.session_id)
    if per_session is not None and not per_session.enabled:
        raise conflict("site-disabled", f"site {name} is disabled for session {production.session.name}")
    if per_session is not None and not per_session.supported and not test:
        raise conflict("site-unsupported", f"site {name} does not support session {production.session.name}: "
                                           "only test bulks go there, to check it, until it is marked supported")
    # The test twin inherits the main production's permission.
    main_id = production.twin_id if production.is_test else production.id
    per_production = m.SiteProduction.get_or_none(site=site, production=main_id)
    if per_production is not None and not per_production.allowed:
        raise conflict("site-not-allowed", f"site {name} is not allowed for production {production.name}")
    return site


class _Runnums:
    """The runnum blocks of one plan (the rule is the module doc's)."""

    def __init__(self):
        self.planned = []   # (first, last) of the blocks given so far
        self.after = {}     # request (its id, or its parameters while it is still to be created) -> its next runnum

    def block(self, req, runs):
        """(first, last): `runs` free runnums for `req`, after its own highest, at or above its minimum."""
        key = req.id or req.params_key
        start = self.after.get(key)
        if start is None:
            own = None if req.id is None else (
                m.Job.select(m.fn.MAX(m.Job.runnum)).where(m.Job.request == req.id).scalar())
            start = req.min_runnum if own is None else max(req.min_runnum, own + 1)
        first = self._free_from(start, runs)
        self.planned.append((first, first + runs - 1))
        self.after[key] = first + runs
        return first, first + runs - 1

    def _taken(self, first, last):
        """None when [first, last] is free, else a runnum it must move past: the highest a job uses
        in it, or the end of a block of this plan that overlaps it (taken all the way)."""
        used = m.Job.select(m.fn.MAX(m.Job.runnum)).where(m.Job.runnum.between(first, last)).scalar()
        ends = [b for a, b in self.planned if a <= last and b >= first]
        return max(ends + ([] if used is None else [used]), default=None)

    def _free_from(self, start, runs):
        for _ in range(MAX_HOPS):
            taken = self._taken(start, start + runs - 1)
            if taken is None:
                return start
            start = taken + 1
        top = m.Job.select(m.fn.MAX(m.Job.runnum)).where(m.Job.runnum >= start).scalar()
        return max([start, (top or 0) + 1] + [b + 1 for _, b in self.planned if b >= start])


def _threshold_refusals(site, planned):
    """Why `planned` new jobs would put `site` over a threshold (the module doc's rules): [] when they do not."""
    at_site = counts.site_jobs(site.id)     # the counters: a big site's jobs are not read
    refusals = []
    if site.threshold_prepared:
        prepared = at_site.get(Status.PREPARED.value, 0)
        if prepared + planned > site.threshold_prepared:
            refusals.append(f"site {site.name}: {prepared} prepared + {planned} new jobs "
                            f"exceed its prepared threshold {site.threshold_prepared}")
    if site.threshold_running:
        active = at_site.get(Status.SUBMITTED.value, 0) + at_site.get(Status.RUNNING.value, 0)
        if active + planned > site.threshold_running:
            refusals.append(f"site {site.name}: {active} submitted or running + {planned} new jobs "
                            f"exceed its running threshold {site.threshold_running}")
    if site.threshold_failed:
        failed = recent_failures(site)
        if failed >= site.threshold_failed:
            since = "since its reset" if site.failed_reset_at and site.failed_reset_at > m.utcnow() - FAILED_WINDOW \
                else "in 24 h"
            refusals.append(f"site {site.name}: {failed} failed jobs {since} reach its failed "
                            f"threshold {site.threshold_failed}")
    return refusals


def failures_since(site, now=None):
    """Where the failed threshold starts counting for `site`: 24 h ago, or its reset if later."""
    start = (now or m.utcnow()) - FAILED_WINDOW
    return max(start, site.failed_reset_at) if site.failed_reset_at else start


FAILED = ("failed", "sys-failed")


def _failures_in_window(now=None):
    """(site id, finished_at) of every failed or sys-failed job that ended in the last 24 h.

    Read along the (status, finished_at) index alone and counted here: a site's own index would walk
    all its failed jobs ever (a big site at 1M jobs: ~110 ms on SQLite). What ends in a day is what
    a production fails in a day: thousands on a bad one.
    """
    since = (now or m.utcnow()) - FAILED_WINDOW
    return m.Job.select(m.Job.site, m.Job.finished_at).where(
        m.Job.status.in_(FAILED) & (m.Job.finished_at >= since)).tuples()


def recent_failures(site):
    """The failed and sys-failed jobs of `site` that count against its failed threshold."""
    since = failures_since(site)
    return sum(1 for site_id, finished in _failures_in_window() if site_id == site.id and finished >= since)


def site_failures():
    """Every site with its counted failures and failed threshold (the shift page's "reset sites")."""
    sites = list(m.Site.select().order_by(m.Site.name))
    since = {site.id: failures_since(site) for site in sites}
    counted = {}
    for site_id, finished in _failures_in_window():
        if finished >= since.get(site_id, finished):
            counted[site_id] = counted.get(site_id, 0) + 1
    return [{"site": site.name, "failed": counted.get(site.id, 0), "threshold_failed": site.threshold_failed,
             "over": bool(site.threshold_failed) and counted.get(site.id, 0) >= site.threshold_failed,
             "failed_reset_at": m.iso(site.failed_reset_at)} for site in sites]


def reset_site(user, name):
    """The module doc's reset: the site's failed threshold counts from now; recorded as 'site-reset'."""
    with db.write_transaction():
        site = m.get_or_404(m.Site, m.Site.name == name, f"site {name!r}")
        before = recent_failures(site)
        site.failed_reset_at = m.utcnow()
        site.save(only=[m.Site.failed_reset_at])
        m.Activity.create(user=user, kind="site-reset",
                          info=f"Site {site.name} reset: {before} failed job(s) no longer count against its "
                               f"failed threshold {site.threshold_failed}",
                          ref={"site": site.name, "failed": before})
    return {"site": site.name, "failed_reset_at": m.iso(site.failed_reset_at), "failed_before": before,
            "failed": 0, "threshold_failed": site.threshold_failed}


def site_marks(production):
    """Every site with the seed's marks for `production` (a main production): enabled and supported
    for its session, allowed for it (no row: yes), and `ok` when all three hold (the seed's ✓)."""
    switches = {r.site_id: r for r in m.SiteSession.select().where(m.SiteSession.session == production.session_id)}
    allowed = {r.site_id: r.allowed for r in m.SiteProduction.select().where(
        m.SiteProduction.production == production.id)}
    out = []
    for site in m.Site.select(m.Site.id, m.Site.name).order_by(m.Site.name):
        row = switches.get(site.id)
        marks = {"site": site.name, "enabled": row.enabled if row else True,
                 "supported": row.supported if row else True, "allowed": allowed.get(site.id, True)}
        marks["ok"] = marks["enabled"] and marks["supported"] and marks["allowed"]
        out.append(marks)
    return out


def _create_jobs(user, plan, heartbeat_s):
    now = m.utcnow()
    ids, new_requests = [], {}
    for st in plan["sets"]:
        req = st["_req"]
        if req.id is None:
            if req.params_key not in new_requests:
                new_requests[req.params_key] = _create_test_request(user, req)
            req, state = new_requests[req.params_key]
            st.update(_req=req, request=req.id, request_state=state)
        prod = req.production
        for row in st["rows"]:
            site_id = row["site_id"]
            runnums = range(row["first_runnum"], row["last_runnum"] + 1)
            slices = row.get("_slices") or [None] * len(runnums)   # a split's: each job's own inputs
            jobs = [{"runnum": r, "events": row["events_per_job"], "request": req.id,
                     "production": prod.id, "session": prod.session_id, "site": site_id,
                     "user": user.id if user else None, "test": st["test"],
                     "log_to_db": st["log_to_db"], "status": Status.PREPARED.value,
                     "heartbeat_s": heartbeat_s, "prepared_at": now,
                     "search": search_text.job_text(prod.name, user.name if user else None, req.parameters,
                                                    row["site"], r),
                     "input_paths": None if piece is None else list(piece)}
                    for r, piece in zip(runnums, slices)]
            for i in range(0, len(jobs), 200):
                m.Job.insert_many(jobs[i:i + 200]).execute()
            created = [j for (j,) in m.Job.select(m.Job.id).where(
                m.Job.runnum.between(row["first_runnum"], row["last_runnum"])).order_by(m.Job.runnum).tuples()]
            for i in range(0, len(created), 500):
                m.Attempt.insert_many([{"job": j, "number": 1} for j in created[i:i + 500]]).execute()
            ids.extend(created)
            # a submission is activity of the site and of the session there (jobs.note_site_activity)
            m.Site.update(last_submission=now, last_activity=now).where(m.Site.id == site_id).execute()
            m.SiteSession.insert(site=site_id, session=prod.session_id, last_activity=now).on_conflict(
                conflict_target=[m.SiteSession.site, m.SiteSession.session],
                update={m.SiteSession.last_activity: now}).execute()
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


def _create_test_request(user, new):
    """Insert the planned test request `new`, record it, link the main request with its parameters: (row, state)."""
    new.created_by = user
    req, inserted = insert_test_request(new)
    if not inserted:   # POST /requests made it since the plan (it does not take the submission lock)
        return req, "exists"
    twin = req.production
    m.Request.update(test_request=req.id).where(
        (m.Request.production == twin.twin_id) & (m.Request.params_key == req.params_key)
        & m.Request.test_request.is_null()).execute()
    m.Activity.create(user=user, kind="request-created", session=twin.session.name,
                      info=f"Request {req.id} created on {twin.name} for a test submission: "
                           + ", ".join(f"{k}={v}" for k, v in req.parameters.items()),
                      ref={"production": twin.name, "request": req.id})
    return req, "created"
