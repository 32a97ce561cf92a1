"""The job monitor (seed 000's JOB MONITOR): its filters, sorts, cursors, pages and actions.

GET /api/v1/jobs and the /jobs page are siblings over these functions: both read the
same query-string filters (`job_filters`), plan the same query (`monitor_query`), and
page by the same cursor (`after`: the sort key of the row before the page). The page
pages by keys only (`keyset_page`, never OFFSET); the API keeps its `page` number too.
Kill and resubmit go through server/batch.py for both. Totals: server/monitor_totals.py.
"""
import base64
import datetime
import functools
import json
import operator
from dataclasses import dataclass

from flask import request

from shared import lifecycle
from shared import schema as s
from shared.states import Status

from . import batch, db, jobs, search_text
from . import models as m
from . import monitor_totals as totals
from .api.params import query_float, query_int, query_list, query_text, query_time
from .errors import ApiError, bad_request
from .monitor_totals import AnyOf
from .settings import base_url, settings

STATUSES = tuple(s.value for s in Status)
# The privileges of a job's actions (kill, resubmit, token, description), API and page alike.
SUBMITTERS = ("shifter-submission", "expert-submission")
SORTS = {"runnum": m.Job.runnum, "id": m.Job.id, "status": m.Job.status, "site": m.Job.site,
         "prepared_at": m.Job.prepared_at, "finished_at": m.Job.finished_at, "wct": m.Job.wct,
         "events": m.Job.events, "error_code": m.Job.error_code}
# Sorts on NOT NULL columns page by cursor: NULLs order differently on SQLite and PostgreSQL.
KEYSET_SORTS = ("runnum", "id", "status", "site", "prepared_at", "events")
UNIQUE_SORTS = ("runnum", "id")
# Ties of the other sorts are broken by a unique column in the sort's direction, one an index holds
# after the sort's column: (status, runnum) and (site, runnum) serve status and site pages in both
# directions; SQLite's index on prepared_at ends in the rowid. (Ties by id ascending whatever the
# direction, as before, sorted a status's or a site's jobs: 1M jobs, 40-60 ms a page.)
TIES = {"status": m.Job.runnum, "site": m.Job.runnum, "prepared_at": m.Job.id, "events": m.Job.id,
        "finished_at": m.Job.id, "wct": m.Job.id, "error_code": m.Job.id}
# sorts whose column a job summary holds as stored (site: the name, not the id; times: cut to seconds)
SUMMARY_SORTS = ("runnum", "id", "status", "events")
PARAM_PREFIX = "param."
RETRIED = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
MAX_PARAM_VALUE = 256


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


def indexed_search_matches():
    """How many jobs SQLite's FTS5 table matches for `q`, counted up to COUNT_EXACT_UP_TO + 1 (None: not used)."""
    q = query_text("q", 128)
    text = q.strip().lower() if q is not None else ""
    if not db.is_sqlite() or len(text) < MIN_INDEXED_TERM:
        return None
    fts = m.JOB_SEARCH_FTS
    return m.database.execute_sql(   # FTS5 yields matches as it finds them: LIMIT stops it early
        f"SELECT count(*) FROM (SELECT rowid FROM {fts} WHERE {fts} MATCH ? LIMIT ?)",
        [_phrase(text), totals.COUNT_EXACT_UP_TO + 1]).fetchone()[0]


def chosen_parameters():
    """The `param.<Name>=value` filters of the query string: {name: [values]} (repeatable; empty values ignored)."""
    chosen = {}
    for key in request.args:
        if not key.startswith(PARAM_PREFIX):
            continue
        values = [v for v in request.args.getlist(key) if v != ""]
        if any(len(v) > MAX_PARAM_VALUE or "\x00" in v for v in values):
            raise bad_request(f"query parameter '{key[:80]}': a value is longer than {MAX_PARAM_VALUE} characters")
        if values:
            chosen[key[len(PARAM_PREFIX):]] = values
    return chosen


def parameter_requests(chosen):
    """The ids of the requests whose job parameters match `chosen` ({name: [values]}): one of the
    values for each name. Resolved in Python over the requests (Request.parameters is JSON, and
    the table is small next to the jobs); the jobs are then found by their indexed request."""
    known = {name for (name,) in m.JobParameter.select(m.JobParameter.name).distinct().tuples()}
    unknown = sorted(set(chosen) - known)
    if unknown:
        raise bad_request(f"query parameter '{PARAM_PREFIX}{unknown[0][:64]}': no session has a job parameter "
                          f"{unknown[0][:64]!r}")
    wanted = {name: set(values) for name, values in chosen.items()}
    return [i for i, params in m.Request.select(m.Request.id, m.Request.parameters).tuples()
            if all((params or {}).get(name) in values for name, values in wanted.items())]


# Above this many requests the IN: an AnyOf's total is the union of its parts' first 10k ids each
# (PostgreSQL, 1M jobs, 22 parts: 380 ms); many requests' jobs lie close along runnum anyway.
MAX_REQUEST_PARTS = 8


def _of_requests(ids):
    """The jobs of these requests, along the (request, runnum) index: a few requests as an AnyOf, each
    paged on its own (as one `request IN (...)` SQLite gathered and sorted all their jobs: 1M jobs, one
    request and its test twin, 150 ms), more as the IN. Each part is narrowed to its request's runnums:
    with a status too, SQLite walked every failed job along (status, runnum) for a twin with none (66 ms)."""
    if len(ids) == 1:
        return (m.Job.request == ids[0]) & _runnums_of_request(ids[0])
    if 1 < len(ids) <= min(MAX_REQUEST_PARTS, totals.MAX_MERGED_PARTS):
        return AnyOf([m.Job.request == i for i in ids],
                     [(m.Job.request == i) & _runnums_of_request(i) for i in ids])
    return m.Job.request.in_(ids or [-1])


def parameter_choices():
    """[(parameter name, [values])] for the filter form, in the sessions' order: each session's
    allowed values, or, where a parameter allows any value, the values its requests use."""
    used = {}
    for session, params in (m.Request.select(m.Production.session, m.Request.parameters)
                            .join(m.Production).tuples()):
        for name, value in (params or {}).items():
            used.setdefault((session, name), set()).add(str(value))
    choices = {}
    for session, name, allowed in (m.JobParameter.select(m.JobParameter.session, m.JobParameter.name,
                                                         m.JobParameter.allowed)
                                   .order_by(m.JobParameter.position, m.JobParameter.id).tuples()):
        values = choices.setdefault(name, [])
        for value in (allowed or sorted(used.get((session, name), ()))):
            if value not in values:
                values.append(value)
    return [(name, values) for name, values in choices.items()]


def job_filters(indexed_search=True):
    """The peewee conditions for the job monitor's query-string filters ([]: all jobs)."""
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
    chosen = chosen_parameters()
    if chosen:
        matched = parameter_requests(chosen)
        if len(matched) < m.Request.select().count():   # every request: no condition (all the jobs)
            cond.append(_of_requests(matched))
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
    retried = query_text("retried", 8)   # server/retries.py: jobs the server retried on its own (or not)
    if retried is not None:
        if retried.lower() not in RETRIED:
            raise bad_request("query parameter 'retried' must be true or false")
        cond.append(m.Job.retries > 0 if RETRIED[retried.lower()] else m.Job.retries == 0)
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


@dataclass(frozen=True)
class Plan:
    """The job monitor's query: its conditions, sort and total."""
    cond: tuple
    sort: str            # the query string's sort (a SORTS key, - for descending)
    key: object          # what ORDER BY names: the column, or `+column` to hide its index (see monitor_query)
    total: int
    estimated: bool

    @property
    def field(self):
        return SORTS[self.sort.lstrip("-")]

    @property
    def descending(self):
        return self.sort.startswith("-")

    @property
    def tie(self):
        """The column that breaks ties (None: the sort's column is unique)."""
        return TIES.get(self.sort.lstrip("-"))

    @property
    def columns(self):
        """What a page's key read selects: the job id, the sort's column and the tie's."""
        return (m.Job.id, self.field) + ((self.tie,) if self.tie is not None else ())

    def order(self, reverse=False):
        """The ORDER BY terms (reversed: the same rows from the other end). A unique sort key needs
        no tie-break: PostgreSQL then reads a composite index ending in runnum in order instead of
        walking the runnum index past other productions' jobs."""
        down = self.descending != reverse
        first = self.key.desc() if down else self.key.asc()
        if self.tie is None:
            return (first,)
        return (first, self.tie.desc() if down else self.tie.asc())


def monitor_query(sort):
    """The job monitor's query from the query string, planned for speed (a Plan). The API and the
    web page both list jobs through it."""
    field = SORTS.get(sort.lstrip("-"))
    if field is None:
        raise bad_request(f"query parameter 'sort' must be one of {', '.join(SORTS)} (prefix - for descending)")
    cond, key = job_filters(), field
    exact_up_to = totals.COUNT_EXACT_UP_TO if not db.is_sqlite() else totals.SQLITE_COUNT_EXACT_UP_TO
    matches = None
    if any(isinstance(c, AnyOf) for c in cond):
        # its parts' ids are counted as a union, deduplicated in a temporary B-tree (SQLite:
        # ~7 ms for 17k ids, where an index counts 100k entries in 1-2 ms)
        exact_up_to = totals.COUNT_EXACT_UP_TO
    else:
        matches = indexed_search_matches()
    if matches is not None and matches > totals.COUNT_EXACT_UP_TO:
        # FTS5 hands over all of a broad term's matches, unordered, to sort and count: walking
        # the sort's index and testing each row's text finds the page sooner (same matches).
        cond, exact_up_to = job_filters(indexed_search=False), totals.BROAD_SEARCH_EXACT_UP_TO
    elif matches is not None:
        # A few matches: SQLite would still walk the sort's index (1M rows for 10 matches, 260 ms);
        # the unary + hides that index from the ORDER BY, so the matches are fetched and sorted.
        key = m.pw.NodeList((m.pw.SQL("+"), field))
        exact_up_to = totals.COUNT_EXACT_UP_TO   # the same totals (at most `matches`), with no first look
    total, estimated = totals.job_total(cond, estimate_above=exact_up_to)
    return Plan(tuple(cond), sort, key, total, estimated)


def encode_cursor(value, job_id):
    """The opaque cursor of a row: its sort key and tie (the job id, or the runnum where TIES says
    so) (the API's `after`, the page's links)."""
    if isinstance(value, datetime.datetime):
        value = value.isoformat()
    return base64.urlsafe_b64encode(json.dumps([value, job_id]).encode()).decode().rstrip("=")


def summary_cursor(job, sort):
    """The cursor that continues behind `job` (a job summary) in this sort."""
    key = sort.lstrip("-")
    if key in SUMMARY_SORTS:
        value = job[key]
    else:
        value = m.Job.select(SORTS[key]).where(m.Job.id == job["id"]).scalar()
    return encode_cursor(value, job["runnum"] if TIES.get(key) is m.Job.runnum else job["id"])


def row_cursor(row):
    """The cursor of a key read's row (id, sort value[, tie value])."""
    return encode_cursor(row[1], row[2] if len(row) > 2 else row[0])


def decode_cursor(raw, sort):
    """(sort value, job id) of a cursor; 400 when it is not one this sort made."""
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
    return value, job_id


def keyset(sort, value, tie, reverse=False):
    """The rows after (reverse: before) the row with this sort value and tie value, in this sort's
    order (Plan.order)."""
    key = sort.lstrip("-")
    field = SORTS[key]
    ahead = sort.startswith("-") == reverse   # ascending in the column
    if key in UNIQUE_SORTS:
        return field > value if ahead else field < value
    # a row value, not `beyond OR (field = value AND tie > ...)`: both databases seek an index on
    # (field, tie) to it (the OR walked the index from one end: 1M jobs, SQLite, a page back by
    # status 25-60 ms; the row value 0.1 ms). The tie runs in the sort's direction (Plan.order).
    row, bound = m.pw.Tuple(field, TIES[key]), m.pw.Tuple(value, tie)
    return row > bound if ahead else row < bound


def after_cursor(sort):
    """The keyset condition for `?after=<next of the previous page>` (None without one)."""
    raw = query_text("after", 512)
    if raw is None:
        return None
    return keyset(sort, *decode_cursor(raw, sort))


def job_rows(cond, order, page, per_page):
    """One numbered page (the API's `page`, with OFFSET) of the jobs matching `cond`, as job summaries.

    Deferred join: the page's ids come first from an index alone (the sort runs on
    narrow index entries, not on joined rows), then only those rows are read, as tuples.
    """
    keys = _keys(cond, order, per_page, (m.Job.id,), offset=(page - 1) * per_page)
    return jobs.job_summaries([row[0] for row in keys])


def _keys(cond, order, limit, columns, offset=0):
    """[`columns` (the job id first)] of the first `limit` jobs (after `offset`) matching `cond` in `order`,
    from index keys alone.

    By runnum, an AnyOf's parts are read one by one, each along its own index ending in runnum
    (no walk past other jobs, no sort of all the matches), and the rows taken from their union:
    a job among the first N of the AnyOf is among the first N of the part it matches.
    """
    either = totals.merged_any_of(cond)
    if either is None or order[0].node is not m.Job.runnum:
        query = m.Job.select(*columns)
        query = (query.where(*cond) if cond else query).order_by(*order).limit(limit)
        return list((query.offset(offset) if offset else query).tuples())
    others = [c for c in cond if c is not either]
    union = functools.reduce(operator.or_, [
        m.Job.select(m.Job.id, m.Job.runnum).where(*others, part).order_by(*order).limit(offset + limit)
        for part in either.narrowed]).alias("matches")
    runnum = union.c.runnum.desc() if order[0].direction == "DESC" else union.c.runnum.asc()
    query = m.Job.select(union.c.id, union.c.runnum).from_(union).order_by(runnum).limit(limit)
    return list((query.offset(offset) if offset else query).tuples())


@dataclass(frozen=True)
class KeysetPage:
    """One page of the monitor read by keys, and where its neighbours start.

    previous / following: ((page number, cursor), ...) nearest first; a cursor of None is the
    first page (no cursor). Numbers are labels: the query behind each is its cursor.
    """
    rows: list
    number: int
    first: int           # the position of the page's first row (1-based), for "Showing x to y"
    previous: tuple
    following: tuple
    at_end: bool         # the last page (read from the other end)


def keyset_page(plan, per_page, after=None, at_end=False, label=1, around=2):
    """The page after the cursor `after` (None: the first page; `at_end`: the last page, the same
    query in reverse order), with the cursors of up to `around` pages on each side.

    No OFFSET: the rows and the cursors of the pages ahead come from one read of index keys
    (LIMIT per_page * (1 + around)), those behind from one read in reverse order from the first
    row (LIMIT around * per_page + 1): each page's cursor is the key of the row before it.
    """
    sort = plan.sort
    if at_end:
        rows, ahead = _keys(plan.cond, plan.order(reverse=True), per_page, plan.columns)[::-1], []
    else:
        cond = plan.cond + ((keyset(sort, *decode_cursor(after, sort)),) if after else ())
        read = _keys(cond, plan.order(), per_page * (1 + around), plan.columns)
        rows, ahead = read[:per_page], read[per_page:]
    back = []
    if rows and (after or at_end):
        top = rows[0]
        back = _keys(plan.cond + (keyset(sort, top[1], top[2] if len(top) > 2 else top[0], reverse=True),),
                     plan.order(reverse=True), around * per_page + 1, plan.columns)
    previous = []
    for j in range(1, around + 1):
        if len(back) < (j - 1) * per_page + 1:
            break
        if len(back) > j * per_page:
            previous.append(back[j * per_page])
        else:
            previous.append(None)   # fewer rows than a page's before it: that page is the first
            break
    if not back:
        number = 1
    elif previous[-1] is None:
        number = len(previous) + 1
    else:
        pages = -(-plan.total // per_page) if at_end else label
        number = max(pages, len(previous) + 2)
    following = []
    if ahead:
        following.append(rows[-1])
        following += [ahead[j * per_page - 1] for j in range(1, around) if len(ahead) > j * per_page]
    first = (number - 1) * per_page + 1
    if at_end and not plan.estimated:
        first = max(plan.total - len(rows) + 1, 1)
    return KeysetPage(
        rows=jobs.job_summaries([row[0] for row in rows]), number=number, first=first,
        previous=tuple((number - j, None if key is None else row_cursor(key)) for j, key in enumerate(previous, 1)),
        following=tuple((number + j, row_cursor(key)) for j, key in enumerate(following, 1)),
        at_end=at_end)


def may(status, action):
    """Whether the life-cycle table lets `action` (kill, resubmit) start from `status` (for buttons)."""
    return lifecycle.may(status, action)


def kill(job_id):
    """A manager's kill (409 from the life-cycle when the job is final): jobs.kill_job, then the batch job cancelled."""
    return batch.kill(job_id, settings())


def _resubmit_options(body):
    """The optional body of a resubmit: {"backend": NAME, "dry_run": bool}."""
    s.refuse_unknown(body, ("backend", "dry_run"))
    return batch.backend_name(body.get("backend")), s.boolean(body, "dry_run", default=False)


def resubmit(job_id, body):
    """A new attempt of one failed, sys-failed or timed-out job (409 with the life-cycle's reason
    otherwise); with a backend, submitted to it."""
    backend, dry_run = _resubmit_options(body)
    if dry_run:
        raise bad_request("'dry_run' is for POST /jobs/resubmit (many jobs)")
    reply = batch.resubmit([job_id], backend, base_url(), settings())
    if reply["refused"]:
        refused = reply["refused"][0]
        raise ApiError(409, refused["error"], refused["message"])
    return dict(reply["resubmitted"][0], **{k: v for k, v in reply.items() if k not in ("resubmitted", "refused")})


RESUBMITTABLE = lifecycle.allowed_from(lifecycle.Trigger.RESUBMIT)
MAX_RESUBMIT = 10_000


def resubmit_matching(body):
    """Resubmit the failed, sys-failed and timeout jobs that match the monitor's filters (the query
    string; at least one, so that no slip resubmits everything)."""
    backend, dry_run = _resubmit_options(body)
    cond = job_filters()
    if not cond:
        raise bad_request("give at least one job monitor filter in the query string (e.g. production=...)")
    ids = [j for (j,) in m.Job.select(m.Job.id).where(*cond, m.Job.status.in_(RESUBMITTABLE))
           .order_by(m.Job.id).limit(MAX_RESUBMIT + 1).tuples()]
    if len(ids) > MAX_RESUBMIT:
        raise bad_request(f"more than {MAX_RESUBMIT} jobs match: narrow the filters")
    if dry_run:
        return {"dry_run": True, "jobs": ids, "total": len(ids)}
    reply = batch.resubmit(ids, backend, base_url(), settings())
    reply["total"] = len(reply["resubmitted"])
    return reply
