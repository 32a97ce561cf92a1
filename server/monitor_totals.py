"""The job monitor's totals: exact up to a limit, then estimated (PostgreSQL's planner, SQLite's sample).

Moved out of the API route module with the rest of the job monitor's planner (server/monitor.py):
a page must never count 1M jobs, and the API's `total_is_estimate` says when it did not.
"""
import functools
import json
import operator

from . import db
from . import models as m


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


# An AnyOf of more parts is queried as one OR: with that many requests, users or sites matched,
# its jobs lie close together along the runnum index anyway (and SQLite takes up to 500 SELECTs
# in a UNION).
MAX_MERGED_PARTS = 64


def merged_any_of(cond):
    """The AnyOf of `cond` to query part by part (None: there is none, or it is queried as one OR)."""
    either = next((c for c in cond if isinstance(c, AnyOf)), None)
    return either if either is not None and len(either.parts) <= MAX_MERGED_PARTS else None


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
    either = merged_any_of(cond)
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
