"""Jobs: the job monitor query, details, descriptions, reports, logs, kill and resubmit."""
import base64
import datetime
import functools
import json
import operator

from flask import Blueprint, Response, jsonify, request

from shared import lifecycle
from shared import schema as s
from shared.events import parse_events
from shared.states import Status

from .. import auth, batch, db, jobs, metrics, removals, search_text
from .. import models as m
from ..errors import ApiError, bad_request, not_found
from ..settings import settings
from .params import json_body, query_float, query_int, query_list, query_text, query_time

bp = Blueprint("jobs", __name__)

STATUSES = tuple(s.value for s in Status)
SUBMITTERS = ("shifter-submission", "expert-submission")
SORTS = {"runnum": m.Job.runnum, "id": m.Job.id, "status": m.Job.status, "site": m.Job.site,
         "prepared_at": m.Job.prepared_at, "finished_at": m.Job.finished_at, "wct": m.Job.wct,
         "events": m.Job.events, "error_code": m.Job.error_code}
MAX_PER_PAGE = 1000


def _ids_by_name(model, names):
    """Ids of the named rows; an unknown name matches nothing (a filter, not a lookup)."""
    return [r for (r,) in model.select(model.id).where(model.name.in_(names)).tuples()] or [-1]


def _contains(field, text):
    """`field LIKE %text%` with the user's own % and _ taken literally."""
    escaped = text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return m.pw.NodeList((field, m.pw.SQL("LIKE"), f"%{escaped}%", m.pw.SQL("ESCAPE '!'")))


# FTS5's trigram index answers terms of 3+ characters; shorter ones scan with LIKE.
MIN_INDEXED_TERM = 3


def _search(text, indexed=True):
    """Jobs whose `search` text contains `text` (lower case), through the index migration 3 made.

    PostgreSQL: the LIKE itself, served by the pg_trgm GIN index (LIKE, not ILIKE: the column
    and the term are lower-cased in Python, so the results stay those of the plain LIKE).
    SQLite: the FTS5 trigram table; a quoted phrase is a plain substring there. Not `indexed`:
    the LIKE, tested row by row (a broad term, found faster along the sort's index).
    """
    if not indexed or not db.is_sqlite() or len(text) < MIN_INDEXED_TERM:
        return _contains(m.Job.search, text)
    fts = m.JOB_SEARCH_FTS
    return m.Job.id << m.pw.SQL(f"(SELECT rowid FROM {fts} WHERE {fts} MATCH ?)", [_phrase(text)])


def _phrase(text):
    """`text` as one FTS5 phrase: with the trigram tokenizer, the jobs whose text contains it."""
    return '"' + text.replace('"', '""') + '"'


class AnyOf(m.pw.Expression):
    """`parts[0] OR parts[1] OR ...` (2+ parts); job_rows pages it as the merge of each part's own page.

    `narrowed`: each part with conditions that only narrow what an index reads (the same jobs),
    for the parts queried one by one; the OR of the plain parts is what PostgreSQL's planner
    estimates (it takes a narrowing range for a selective one).
    """

    def __init__(self, parts, narrowed=None):
        *first, last = parts
        super().__init__(functools.reduce(operator.or_, first), m.pw.OP.OR, last)
        self.parts = tuple(parts)
        self.narrowed = tuple(narrowed or parts)


# A term without a space lies inside one of the parts a job's search text is made of (search_text):
# its jobs are those of the requests, users and sites whose words contain it, or of the runnums that
# do; those have indexes ending in runnum, a text LIKE has none (a broad term's page was 60-180 ms at
# 1M jobs, walking past other requests' jobs).
RUNNUM_CHARS = frozenset("0123456789-")


def _by_words(text, q):
    """The jobs whose search text contains `text` or whose status or gjid is the term, as an AnyOf
    of indexed conditions (None: a term with a space, or one that could lie in a runnum, needs the
    text itself, as does any text that may have been cut)."""
    if " " in text or set(text) <= RUNNUM_CHARS:
        return None
    users = [(i, name.lower()) for i, name in m.User.select(m.User.id, m.User.name).tuples()]
    sites = [(i, name.lower()) for i, name in m.Site.select(m.Site.id, m.Site.name).tuples()]
    requests = [(i, search_text.request_words(name, params))
                for i, name, params in m.Request.select(m.Request.id, m.Production.name, m.Request.parameters)
                .join(m.Production).tuples()]
    longest_user = max((len(w) for _, w in users), default=0)
    longest_site = max((len(w) for _, w in sites), default=0)
    if any(search_text.may_be_cut(words, longest_user, longest_site) for _, words in requests):
        return None
    matched = [i for i, words in requests if text in words]
    others = ([m.Job.user == i for i, words in users if text in words]
              + [m.Job.site == i for i, words in sites if text in words]
              + [m.Job.status == text, m.Job.gjid == q])
    return AnyOf([m.Job.request == i for i in matched] + others,
                 [(m.Job.request == i) & _runnums_of_request(i) for i in matched] + others)


def _runnums_of_request(request_id):
    """`runnum` between the request's first and last: its runnums are a few blocks, and with the
    bounds any index ending in runnum (site, status...) reads only their stretch; SQLite's average
    rows per site or status would otherwise have it walk a site's jobs of all requests (text + site:
    50 ms at 100k jobs)."""
    runnums = m.Job.select(m.Job.runnum).where(m.Job.request == request_id)
    return m.Job.runnum.between(runnums.select(m.fn.MIN(m.Job.runnum)), runnums.select(m.fn.MAX(m.Job.runnum)))


def _text_match(q, indexed_search):
    """The condition of the job monitor's free-text term `q`."""
    text = q.strip().lower()
    by_words = _by_words(text, q)
    if by_words is not None:
        return by_words
    match = _search(text, indexed_search) | (m.Job.status == text) | (m.Job.gjid == q)
    if text.isdigit() and len(text) < 16:
        match = match | (m.Job.runnum == int(text))
    return match


def _indexed_search_matches():
    """How many jobs SQLite's FTS5 table matches for `q`, counted up to COUNT_EXACT_UP_TO + 1 (None: not used)."""
    q = query_text("q", 128)
    text = q.strip().lower() if q is not None else ""
    if not db.is_sqlite() or len(text) < MIN_INDEXED_TERM:
        return None
    fts = m.JOB_SEARCH_FTS
    return m.database.execute_sql(   # FTS5 yields matches as it finds them: LIMIT stops it early
        f"SELECT count(*) FROM (SELECT rowid FROM {fts} WHERE {fts} MATCH ? LIMIT ?)",
        [_phrase(text), COUNT_EXACT_UP_TO + 1]).fetchone()[0]


def job_filters(indexed_search=True):
    """The peewee condition for the job monitor's query-string filters (None: all jobs)."""
    cond = []
    user = query_text("user", 64)
    if user is not None:
        cond.append(m.Job.user.in_(_ids_by_name(m.User, [user])))
    productions = query_list("production")
    if productions:
        cond.append(m.Job.production.in_(_ids_by_name(m.Production, productions)))
    requests = query_list("request")
    if requests:
        try:
            cond.append(m.Job.request.in_([int(r) for r in requests]))
        except ValueError:
            raise bad_request("query parameter 'request' must be a comma list of request ids") from None
    runnum_from, runnum_to = query_int("runnum_from"), query_int("runnum_to")
    if runnum_from is not None:
        cond.append(m.Job.runnum >= runnum_from)
    if runnum_to is not None:
        cond.append(m.Job.runnum <= runnum_to)
    statuses = query_list("status", STATUSES)
    if statuses:
        cond.append(m.Job.status.in_(statuses))
    error_code = query_int("error_code", hi=999)
    if error_code is not None:
        cond.append(m.Job.error_code == error_code)
    sites = query_list("site")
    if sites:
        cond.append(m.Job.site.in_(_ids_by_name(m.Site, sites)))
    older = query_float("older_than_hours", hi=1e6)
    if older is not None:
        cutoff = m.utcnow() - datetime.timedelta(hours=older)
        cond.append(m.Job.submitted_at.is_null(False) & (m.Job.submitted_at < cutoff))
    prepared_from, prepared_to = query_time("prepared_from"), query_time("prepared_to")
    if prepared_from is not None:
        cond.append(m.Job.prepared_at >= prepared_from)
    if prepared_to is not None:
        cond.append(m.Job.prepared_at <= prepared_to)
    q = query_text("q", 128)
    if q is not None:
        cond.append(_text_match(q, indexed_search))
    last = query_int("last", lo=1, hi=100_000)
    if last is not None:
        inner = m.Job.select(m.Job.id)
        if cond:
            inner = inner.where(*cond)
        cond = [m.Job.id.in_(inner.order_by(m.Job.id.desc()).limit(last))]
    return cond


def monitor_query(sort):
    """The job monitor's query from the query string, planned for speed: (cond, order, total,
    whether the total is an estimate). The API and the web page both list jobs through it."""
    field = SORTS.get(sort.lstrip("-"))
    if field is None:
        raise bad_request(f"query parameter 'sort' must be one of {', '.join(SORTS)} (prefix - for descending)")
    cond = job_filters()
    order = field.desc() if sort.startswith("-") else field.asc()
    exact_up_to = COUNT_EXACT_UP_TO if not db.is_sqlite() else SQLITE_COUNT_EXACT_UP_TO
    matches = None
    if any(isinstance(c, AnyOf) for c in cond):
        # its parts' ids are counted as a union, deduplicated in a temporary B-tree (SQLite:
        # ~7 ms for 17k ids, where an index counts 100k entries in 1-2 ms)
        exact_up_to = COUNT_EXACT_UP_TO
    else:
        matches = _indexed_search_matches()
    if matches is not None and matches > COUNT_EXACT_UP_TO:
        # FTS5 hands over all of a broad term's matches, unordered, to sort and count: walking
        # the sort's index and testing each row's text finds the page sooner (same matches).
        cond, exact_up_to = job_filters(indexed_search=False), BROAD_SEARCH_EXACT_UP_TO
    elif matches is not None:
        # A few matches: SQLite would still walk the sort's index (1M rows for 10 matches, 260 ms);
        # the unary + hides that index from the ORDER BY, so the matches are fetched and sorted.
        key = m.pw.NodeList((m.pw.SQL("+"), field))
        order = key.desc() if sort.startswith("-") else key.asc()
        exact_up_to = COUNT_EXACT_UP_TO   # the same totals (at most `matches`), with no first look
    total, estimated = job_total(cond, estimate_above=exact_up_to)
    return cond, order, total, estimated


@bp.get("/jobs")
@auth.require("monitoring")
def list_jobs():
    sort = query_text("sort", 32) or "runnum"
    cond, order, total, estimated = monitor_query(sort)
    page = query_int("page", 1, lo=1, hi=10 ** 6)
    per_page = query_int("per_page", 50, lo=1, hi=MAX_PER_PAGE)
    after = _after_cursor(sort)
    rows = job_rows(cond + ([after] if after is not None else []), order, 1 if after else page, per_page)
    following = _cursor(rows[-1], sort) if len(rows) == per_page and sort.lstrip("-") in KEYSET_SORTS else None
    return jsonify({"jobs": rows,
                    "total": total, "total_is_estimate": estimated, "page": None if after else page,
                    "per_page": per_page, "next": following})


# Sorts on NOT NULL columns page by cursor: NULLs order differently on SQLite and PostgreSQL.
KEYSET_SORTS = ("runnum", "id", "status", "site", "prepared_at", "events")
UNIQUE_SORTS = ("runnum", "id")


# sorts whose column a job summary holds as stored (site: the name, not the id; times: cut to seconds)
SUMMARY_SORTS = ("runnum", "id", "status", "events")


def _cursor(job, sort):
    """The opaque `after` cursor that continues behind `job` (a summary) in this sort."""
    key = sort.lstrip("-")
    if key in SUMMARY_SORTS:
        value = job[key]
    else:
        value = m.Job.select(SORTS[key]).where(m.Job.id == job["id"]).scalar()
    if isinstance(value, datetime.datetime):
        value = value.isoformat()
    return base64.urlsafe_b64encode(json.dumps([value, job["id"]]).encode()).decode().rstrip("=")


def _after_cursor(sort):
    """The keyset condition for `?after=<next of the previous page>` (None without one)."""
    raw = query_text("after", 512)
    if raw is None:
        return None
    key = sort.lstrip("-")
    if key not in KEYSET_SORTS:
        raise bad_request(f"query parameter 'after' works with sort {', '.join(KEYSET_SORTS)} (use page)")
    try:
        value, job_id = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if key == "prepared_at":
            value = datetime.datetime.fromisoformat(value)
        if not isinstance(job_id, int) or not isinstance(value, (int, str, datetime.datetime)) \
                or isinstance(value, bool):
            raise ValueError
    except (ValueError, TypeError):
        raise bad_request("query parameter 'after' must be the 'next' of a previous page") from None
    field = SORTS[key]
    beyond = field < value if sort.startswith("-") else field > value
    if key in UNIQUE_SORTS:
        return beyond
    return beyond | ((field == value) & (m.Job.id > job_id))


# The job monitor counts exactly up to here, then estimates (bench_server: an exact COUNT(*)
# over 100k+ rows takes 20-35 ms even index-only, a broad text term's 100+ ms; counting 10k
# index entries takes ~1-4 ms).
COUNT_EXACT_UP_TO = 10_000
# SQLite counts index entries ~10x faster than PostgreSQL (no visibility to check): 100k take ~1-2 ms.
SQLITE_COUNT_EXACT_UP_TO = 100_000
# A broad search's rows are tested one by one: counting stops sooner.
BROAD_SEARCH_EXACT_UP_TO = 1_000
SAMPLE_IDS = 2000   # SQLite's estimate: 1 in 500 of a million jobs, a +-5% error at 10% selectivity
# SQLite's first look (_sqlite_total): 500 ids take ~0.7 ms at 1M jobs; 50 matched make a +-14% estimate,
# far from the 3x that skips the count
QUICK_SAMPLE_IDS = 500
QUICK_SAMPLE_FROM = 50_000   # costs ~1 ms: worth it where it may spare counting 100k entries (~5 ms)
QUICK_MIN_HITS = 50
SAMPLED_BROAD = 3
SAMPLED_NEAR = 1.5


def job_total(cond, estimate_above=None):
    """(number of jobs matching `cond`, whether it is an estimate).

    With `estimate_above`, a count that would pass it is estimated instead (never below
    the exact part): PostgreSQL's planner estimate; on SQLite, which has none, the share
    of evenly spaced job ids that match (_sqlite_total).
    """
    if estimate_above is None:
        return _count(cond), False
    if db.is_sqlite():
        return _sqlite_total(cond, estimate_above)
    query = m.Job.select(m.pw.SQL("1"))
    planned = _planned_rows(query.where(*cond) if cond else query)
    if planned > PLANNED_BROAD * estimate_above:
        # far beyond: even a capped count would cost (a trigram bitmap is built whole first)
        return planned, True
    exact = _count(cond, estimate_above + 1)
    if exact <= estimate_above:
        return exact, False
    return max(planned, exact), True


def _sqlite_total(cond, limit):
    """job_total on SQLite: where the count may be long (a `limit` from QUICK_SAMPLE_FROM), a quick
    sample of QUICK_SAMPLE_IDS ids first says how far it goes.

    Far above `limit` (SAMPLED_BROAD times, from enough matched ids to trust it) the total is the
    full sample's estimate, with no count. Up to SAMPLED_NEAR times, the count runs to the end, not
    capped: an uncapped count(*) walks the index without the capped one's subquery (1M jobs,
    113k matches: 4.9 ms, where counting 100,001 took 5.4 ms and the sample then 3.2 ms); above
    `limit` it is still flagged as an estimate (one that happens to be exact). In between, the
    count stops at `limit` and the full sample estimates.
    """
    if limit >= QUICK_SAMPLE_FROM:
        hits, step = _sample(cond, QUICK_SAMPLE_IDS)
        quick = hits * step
        if hits >= QUICK_MIN_HITS and quick > SAMPLED_BROAD * limit:
            return max(_sampled_count(cond), limit + 1), True
        if quick <= SAMPLED_NEAR * limit:
            exact = _count(cond)
            return exact, exact > limit
    exact = _count(cond, limit + 1)
    if exact <= limit:
        return exact, False
    return max(_sampled_count(cond), exact), True


def _count(cond, up_to=None):
    """How many jobs match `cond`, counted up to `up_to` (None: all).

    An AnyOf counts the union of its parts' jobs, each part along its own index: as one OR,
    SQLite walked the index of another filter's column (a site's jobs of all requests) or
    gathered every match of each part first.
    """
    either = _merged_any_of(cond)
    if either is None:
        query = m.Job.select(m.pw.SQL("1"))
        query = query.where(*cond) if cond else query
        return (query if up_to is None else query.limit(up_to)).count()
    others = [c for c in cond if c is not either]
    parts = [m.Job.select(m.Job.id).where(*others, part) for part in either.narrowed]
    union = functools.reduce(operator.or_, parts if up_to is None else [p.limit(up_to) for p in parts])
    counted = m.Job.select(m.fn.COUNT(m.pw.SQL("*"))).from_(union.alias("matches")).scalar()
    return counted if up_to is None else min(counted, up_to)


# PostgreSQL takes its planner's word without counting above this multiple of the exact limit
# (the estimates of the bench's shapes were within 10% of the counts).
PLANNED_BROAD = 3


def _planned_rows(query):
    """PostgreSQL's estimate of the rows of `query` (EXPLAIN: planned, not run)."""
    sql, params = query.sql()
    plan = m.database.execute_sql("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def _sampled_count(cond):
    """About how many jobs match `cond` (SQLite): the matches among SAMPLE_IDS evenly spaced ids, scaled."""
    hits, step = _sample(cond, SAMPLE_IDS)
    return hits * step


def _sample(cond, size):
    """(how many of about `size` evenly spaced job ids match `cond`, the spacing) (SQLite)."""
    # two subqueries: SQLite reads one end of the rowid B-tree for a lone MIN or MAX, and scans for both
    table = m.Job._meta.table_name
    lo, hi = m.database.execute_sql(f"SELECT (SELECT MIN(id) FROM {table}), (SELECT MAX(id) FROM {table})").fetchone()
    if lo is None:
        return 0, 1
    step = (hi - lo) // size + 1
    ids = m.pw.SQL("(SELECT value FROM json_each(?))", [json.dumps(list(range(lo, hi + 1, step)))])
    # `cond` tested in a CASE, not a WHERE: the sample's ids must drive (an AnyOf in a WHERE had
    # SQLite fetch every match of each part first: 42 ms at 100k jobs)
    hits = m.pw.Case(None, [(functools.reduce(operator.and_, cond), 1)], 0) if cond else 1
    return m.Job.select(m.fn.SUM(hits)).where(m.Job.id << ids).scalar() or 0, step


def job_rows(cond, order, page, per_page):
    """One page of the jobs matching `cond`, as job summaries.

    Deferred join: the page's ids come first from an index alone (the sort runs on
    narrow index entries, not on joined rows), then only those rows are read, as tuples.
    """
    # a unique sort key needs no tie-break: PostgreSQL then reads a composite index ending in runnum
    # in order instead of walking the runnum index past other productions' jobs
    keys = (order,) if any(order.node is f for f in (m.Job.runnum, m.Job.id)) else (order, m.Job.id)
    return jobs.job_summaries([i for (i,) in _page_ids(cond, keys, page, per_page).tuples()])


# An AnyOf of more parts is queried as one OR: with that many requests, users or sites matched,
# its jobs lie close together along the runnum index anyway (and SQLite takes up to 500 SELECTs
# in a UNION).
MAX_MERGED_PARTS = 64


def _merged_any_of(cond):
    """The AnyOf of `cond` to query part by part (None: there is none, or it is queried as one OR)."""
    either = next((c for c in cond if isinstance(c, AnyOf)), None)
    return either if either is not None and len(either.parts) <= MAX_MERGED_PARTS else None


def _page_ids(cond, keys, page, per_page):
    """The query of one page's job ids.

    By runnum, an AnyOf's parts are paged one by one, each along its own index ending in runnum
    (no walk past other jobs, no sort of all the matches), and the page taken from their union:
    a job among the first N of the AnyOf is among the first N of the part it matches.
    """
    either = _merged_any_of(cond)
    if either is None or keys[0].node is not m.Job.runnum:
        ids = m.Job.select(m.Job.id)
        return (ids.where(*cond) if cond else ids).order_by(*keys).paginate(page, per_page)
    others = [c for c in cond if c is not either]
    union = functools.reduce(operator.or_, [
        m.Job.select(m.Job.id, m.Job.runnum).where(*others, part).order_by(*keys).limit(page * per_page)
        for part in either.narrowed]).alias("matches")
    runnum = union.c.runnum.desc() if keys[0].direction == "DESC" else union.c.runnum.asc()
    return m.Job.select(union.c.id).from_(union).order_by(runnum).paginate(page, per_page)


@bp.get("/jobs/<id:job_id>")
@auth.require("monitoring")
def get_job(job_id):
    return jsonify(jobs.job_details(jobs.get_job(job_id)))


def base_url():
    """Where wrappers reach this server: SBK_PUBLIC_URL, else the URL of this request."""
    return settings().public_url or request.host_url.rstrip("/")


@bp.get("/jobs/<id:job_id>/description")
@auth.require(*SUBMITTERS)
def get_description(job_id):
    """The description with its token redacted: reading never breaks a shipped copy."""
    return jsonify(jobs.job_description(jobs.get_job(job_id), base_url()))


@bp.post("/jobs/<id:job_id>/token")
@auth.require(*SUBMITTERS)
def rotate_token(job_id):
    """A new token for a prepared or submitted job (recorded); the description that carries it."""
    return jsonify(jobs.rotate_token(job_id, auth.current_principal().user, base_url()))


@bp.get("/jobs/<id:job_id>/attempt")
def get_attempt(job_id):
    """The fence: 200 while the token's attempt is current and the job runs, else 409."""
    return jsonify(jobs.attempt_state(job_id, auth.job_attempt(job_id)))


@bp.post("/jobs/<id:job_id>/removals")
def post_removals(job_id):
    """Files an attempt wrote and could not delete (any attempt of the job, superseded included)."""
    attempt = auth.job_attempt(job_id)
    items = removals.parse_items(json_body((dict, list)))
    with db.write_transaction():
        filed = removals.file_from_wrapper(jobs.get_job(job_id), attempt.number, items)
    return jsonify({"filed": filed, "asked": len(items)})


@bp.post("/jobs/<id:job_id>/events")
def post_events(job_id):
    token = auth.job_token()
    try:
        events = parse_events(json_body((dict, list)))
    except (ApiError, s.SchemaError):
        auth.job_attempt(job_id)   # a bad token hears so before a bad body does
        raise
    # The common report checks the token inside its one statement; anything else, and a
    # token it did not take, is authenticated first and goes the general way.
    reply = jobs.record_running(job_id, auth.hash_token(token), events)
    if reply is None:
        reply = jobs.record_events(job_id, auth.job_attempt(job_id), events)
    metrics.EVENTS_RECEIVED.inc(reply["accepted"])
    return jsonify(reply)


@bp.post("/jobs/<id:job_id>/kill")
@auth.require(*SUBMITTERS)
def kill(job_id):
    return jsonify(batch.kill(job_id, settings()))


def _resubmit_body():
    """The optional body of a resubmit: {"backend": NAME, "dry_run": bool}."""
    body = json_body() if request.get_data(cache=True) else {}
    s.refuse_unknown(body, ("backend", "dry_run"))
    return batch.backend_name(body.get("backend")), s.boolean(body, "dry_run", default=False)


@bp.post("/jobs/<id:job_id>/resubmit")
@auth.require(*SUBMITTERS)
def resubmit(job_id):
    backend, dry_run = _resubmit_body()
    if dry_run:
        raise bad_request("'dry_run' is for POST /jobs/resubmit (many jobs)")
    reply = batch.resubmit([job_id], backend, base_url(), settings())
    if reply["refused"]:
        refused = reply["refused"][0]
        raise ApiError(409, refused["error"], refused["message"])
    return jsonify(dict(reply["resubmitted"][0], **{k: v for k, v in reply.items()
                                                     if k not in ("resubmitted", "refused")}))


RESUBMITTABLE = lifecycle.allowed_from(lifecycle.Trigger.RESUBMIT)
MAX_RESUBMIT = 10_000


@bp.post("/jobs/resubmit")
@auth.require(*SUBMITTERS)
def resubmit_many():
    """Resubmit the failed, sys-failed and timeout jobs that match the job monitor's filters (query string)."""
    backend, dry_run = _resubmit_body()
    cond = job_filters()
    if not cond:
        raise bad_request("give at least one job monitor filter in the query string (e.g. production=...)")
    ids = [j for (j,) in m.Job.select(m.Job.id).where(*cond, m.Job.status.in_(RESUBMITTABLE))
           .order_by(m.Job.id).limit(MAX_RESUBMIT + 1).tuples()]
    if len(ids) > MAX_RESUBMIT:
        raise bad_request(f"more than {MAX_RESUBMIT} jobs match: narrow the filters")
    if dry_run:
        return jsonify({"dry_run": True, "jobs": ids, "total": len(ids)})
    reply = batch.resubmit(ids, backend, base_url(), settings())
    reply["total"] = len(reply["resubmitted"])
    return jsonify(reply)


@bp.put("/jobs/<id:job_id>/log")
def put_log(job_id):
    attempt = auth.job_attempt(job_id)
    number = query_int("attempt", attempt.number, lo=1, hi=100_000)
    if number != attempt.number:
        raise ApiError(403, "forbidden", f"this token is for attempt {attempt.number}, not {number}")
    limit = settings().max_log_bytes
    data = request.get_data(cache=False)
    if len(data) > limit:
        raise ApiError(413, "too-large", f"the log is larger than {limit} bytes")
    with db.write_transaction():
        job = jobs.get_job(job_id)
        if job.attempt != attempt.number:
            raise ApiError(409, "attempt-superseded", f"attempt {attempt.number} of job {job_id} was superseded")
        m.JobLog.insert(job=job_id, attempt=attempt.number, data=data, size=len(data),
                        created_at=m.utcnow()).on_conflict(
            conflict_target=[m.JobLog.job, m.JobLog.attempt],
            update={m.JobLog.data: data, m.JobLog.size: len(data), m.JobLog.created_at: m.utcnow()}).execute()
    return jsonify({"stored": len(data)})


@bp.get("/jobs/<id:job_id>/log")
@auth.require("monitoring")
def get_log(job_id):
    job = jobs.get_job(job_id)
    query = m.JobLog.select().where(m.JobLog.job == job.id)
    number = query_int("attempt", lo=1, hi=100_000)
    if number is not None:
        query = query.where(m.JobLog.attempt == number)
    row = query.order_by(m.JobLog.attempt.desc()).first()
    if row is None:
        raise not_found(f"job {job_id} has no log stored" + (f" for attempt {number}" if number else ""))
    return Response(bytes(row.data), mimetype="application/gzip", headers={
        "Content-Disposition": f"attachment; filename=job-{job.runnum}-{row.attempt}.tgz"})
