"""The job monitor's `q`: the LIKE's results over each job's search text, faster.

A term without a space is answered from the words the text is made of (requests, users, sites:
indexes ending in runnum); a term with a space, or one that could lie in a runnum, through
migration 3's indexes of the text (pg_trgm, FTS5 trigram). The text is derived data: an edit of
it alone shows only through the second kind of term.
"""
import os
import subprocess
import sys

import pytest

from server import create_app, db, migrations
from server import frozen_tables as f
from server import models as m
from server import monitor_totals

from .conftest import Api, new_token, submit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# runnum substrings, parameter values in any case, site, user, short terms, LIKE's and FTS5's own syntax
QUERIES = ["10000003", "0000", "000", "00", "B0B0bar_SL", "b0b0BAR", "hadrecoil", "MixSuperbBkg_NoPair.tcl",
           "infn-t", "torino", "INFN-T1", "dev", "t1", "d", "_", "%", "100%_\\", '"', 'bar" OR "t', "dg_4 m",
           "2010_july", "nothing-like-this", "NEAR(a b)", "*", "prepared", "  torino  ", "é"]


def reference(jobs, q):
    """The ids the plain LIKE search gives for `q` (jobs: (id, runnum, status, gjid, search))."""
    text = q.strip().lower()
    return sorted(i for i, runnum, status, gjid, search in jobs
                  if text in search or status == text or gjid == q or (text.isdigit() and runnum == int(text)))


def found(api, q, **extra):
    r = api.get("/jobs", query_string={"q": q, "per_page": 1000, **extra})
    assert r.status_code == 200, r.json
    assert r.json["total"] == len(r.json["jobs"]) and r.json["total_is_estimate"] is False
    return sorted(j["id"] for j in r.json["jobs"])


def all_jobs():
    with db.connection():
        return list(m.Job.select(m.Job.id, m.Job.runnum, m.Job.status, m.Job.gjid, m.Job.search)
                    .order_by(m.Job.id).tuples())


def other_request(api, production, **parameters):
    """A valid request of `production` with these parameters changed; the production dict for submit()."""
    r = api.post("/requests", json={"production": production["production"], "from": production["request"]["id"],
                                    "parameters": {**production["request"]["parameters"], **parameters}})
    assert r.status_code == 201, r.json
    assert api.patch(f"/requests/{r.json['id']}", json={"status": "valid"}).status_code == 200
    return {**production, "request": r.json}


@pytest.fixture()
def jobs(api, production):
    """Six jobs on two sites, one with a gjid; the three at INFN-TORINO of a request with a non-ASCII word."""
    submit(api, production, runs=3)
    ids = submit(api, other_request(api, production, Background="Café_Mix"), runs=3,
                 sites=("INFN-TORINO",))["job_ids"]
    with db.connection():
        m.Job.update(gjid="slurm.4711").where(m.Job.id == ids[0]).execute()
    return all_jobs()


def test_search_gives_the_like_results(api, jobs):
    assert len(jobs) == 6
    for q in QUERIES + ["slurm.4711", "SLURM.4711", "10000005", "CAFÉ_mix infn-torino 1000"]:
        assert found(api, q) == reference(jobs, q), q
    assert len(found(api, "torino")) == 3 and found(api, "slurm.4711") == [jobs[3][0]]
    assert found(api, "CAFÉ") == [j[0] for j in jobs[3:]] and found(api, "10000005") == [jobs[2][0]]


def test_search_combines_with_the_other_filters_and_pages(api, jobs):
    torino = [j[0] for j in jobs if "torino" in j[4]]
    assert found(api, "b0b0bar", site="INFN-TORINO") == sorted(torino)
    assert found(api, "b0b0bar", runnum_from=10000004, runnum_to=10000006) == [j[0] for j in jobs[1:4]]
    r = api.get("/jobs", query_string={"q": "b0b0bar", "per_page": 4})
    assert r.json["total"] == 6 and len(r.json["jobs"]) == 4
    rest = api.get("/jobs", query_string={"q": "b0b0bar", "per_page": 4, "after": r.json["next"]})
    assert [j["id"] for j in r.json["jobs"] + rest.json["jobs"]] == [j[0] for j in jobs]


def test_updates_and_deletes_of_searched_text_are_reflected(api, jobs):
    """Terms with a space read the text through its index, which follows its updates and deletes."""
    first, second = jobs[0][0], jobs[1][0]
    with db.connection():
        m.Job.update(search="renamed zeppelin infn-t1").where(m.Job.id == first).execute()
        job = m.Job.get_by_id(second)
        job.message = "saved without a change of its text"
        job.save()
    assert found(api, "renamed zeppelin") == [first] and first not in found(api, "b0b0bar_sl dg_4")
    assert second in found(api, "b0b0bar_sl dg_4")
    with db.connection():
        m.Job.delete().where(m.Job.id == first).execute()
    assert found(api, "renamed zeppelin") == [] and found(api, "infn-t1 1000") == [j[0] for j in jobs[1:3]]
    assert found(api, "infn-t1") == [j[0] for j in jobs[1:3]]
    assert found(api, "b0b0bar") == reference(all_jobs(), "b0b0bar")


def sbk(*args):
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def version_2_jobs():
    """Five jobs written the way a version-2 server wrote them: through its tables (frozen_tables)."""
    session = f.Session.create(name="FastSim")
    software = f.Software.create(session=session, name="App", version="V1", lfn="lfn:/a.tjz", adler32="1a2b3c4d",
                                 workdir="w", exe="e")
    production = f.Production.create(name="2010_July", session=session, software=software)
    request = f.Request.create(production=production, parameters='{"Generator":"B0B0bar_SL"}', params_key="k",
                               output_lfn="lfn:/out")
    user = f.User.create(name="dev")
    for k, site in enumerate(["INFN-T1"] * 3 + ["INFN-TORINO"] * 2):
        site_row, _ = f.Site.get_or_create(name=site)
        runnum = 10000003 + k
        f.Job.create(runnum=runnum, events=100, request=request, production=production, session=session,
                     site=site_row, user=user, search=f"2010_july dev b0b0bar_sl {site.lower()} {runnum}")


def test_migration_3_indexes_the_jobs_of_a_version_2_database(db_url, monkeypatch):
    db.bind(db_url)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
    assert migrations.upgrade() == [1, 2]
    with db.connection(), db.write_transaction():
        version_2_jobs()
    before = all_jobs()
    monkeypatch.undo()
    assert migrations.upgrade()[0] == 3
    assert all_jobs() == before
    app = create_app({"DB": db_url, "PUBLIC_URL": "http://sbk.test:8080"})
    app.testing = True
    try:
        api = Api(app.test_client(), new_token("reader", ["webui"]))
        for q in ("torino", "b0b0bar_sl", "10000004", "t1", "DEV", "2010_JULY dev"):
            assert found(api, q) == reference(before, q), q
        assert len(found(api, "torino")) == 2 and len(found(api, "infn-t1")) == 3
        with db.connection():
            m.Job.update(search="moved to infn-torino").where(m.Job.runnum == 10000003).execute()
        assert len(found(api, "moved to infn-torino")) == 1
    finally:
        close_all = getattr(db.database.obj, "close_all", None)
        close_all() if close_all else db.database.close()
    for _ in range(2):
        again = sbk("init-db", "--db", db_url)
        assert again.returncode == 0 and "already up to date" in again.stdout, again.stderr
    db.bind(db_url)
    with db.connection():
        assert all_jobs()[1:] == before[1:]
        assert m.SchemaVersion.select().where(m.SchemaVersion.version == 3).count() == 1
    db.database.obj.close_all()


def test_a_broad_total_is_an_estimate_and_says_so(api, jobs, monkeypatch):
    from server import monitor_totals
    monkeypatch.setattr(monitor_totals, "COUNT_EXACT_UP_TO", 2)
    monkeypatch.setattr(monitor_totals, "SQLITE_COUNT_EXACT_UP_TO", 2)
    monkeypatch.setattr(monitor_totals, "BROAD_SEARCH_EXACT_UP_TO", 2)
    for q in ("b0b0bar", "10000"):   # broad terms: SQLite walks the runnum index, testing each row
        r = api.get("/jobs", query_string={"q": q, "per_page": 4})
        assert r.status_code == 200 and r.json["total_is_estimate"] is True and r.json["total"] >= 3
        rest = api.get("/jobs", query_string={"q": q, "per_page": 4, "after": r.json["next"]}).json
        assert [j["id"] for j in r.json["jobs"] + rest["jobs"]] == reference(jobs, q)
    small = api.get("/jobs", query_string={"q": "slurm.4711"}).json
    assert small["total"] == 1 and small["total_is_estimate"] is False
    everything = api.get("/jobs").json
    assert everything["total_is_estimate"] is True and everything["total"] >= 3


@pytest.fixture()
def varied_jobs(api, production):
    """Jobs of two requests (one with odd and non-ASCII words), two users and three sites."""
    other = other_request(api, production, Generator="Ünïcode_Gen", Geometry="100%_DG\\4")
    assert api.post("/sites", json={"name": "IN2P3-CC", "bunch_size": 5}).status_code == 201
    zoe = Api(api.client, new_token("Zoë", ["Developer"]))
    submit(api, production, runs=2, sites=("INFN-T1", "IN2P3-CC"))
    submit(zoe, production, runs=2, sites=("INFN-TORINO",))
    submit(zoe, other, runs=2, sites=("INFN-T1", "INFN-TORINO"))
    submit(api, other, runs=1, sites=("IN2P3-CC",))
    with db.connection():
        m.Job.update(gjid="In2p3.17").where(m.Job.runnum == 10000004).execute()
    return all_jobs()


def substrings(texts, lengths=(1, 3, 7)):
    """Every substring of these lengths of the texts, as typed (some in upper case)."""
    terms = {t[i:i + n] for t in texts for n in lengths for i in range(len(t) - n + 1)}
    return sorted(terms) + [t.upper() for t in sorted(terms) if len(t) == 3]


def test_words_find_what_the_text_finds(api, varied_jobs, monkeypatch):
    """Every substring of the jobs' texts, with and without a space, finds the LIKE's jobs: paged
    as the merge of the words' parts, and as one OR (the path past MAX_MERGED_PARTS)."""
    terms = substrings({j[4] for j in varied_jobs}) + ["in2p3.17", "In2p3.17", "done", "prepared", "zzz"]
    assert len(terms) > 300 and any(" " in t for t in terms)
    for q in terms:
        assert found(api, q) == reference(varied_jobs, q), q
    monkeypatch.setattr(monitor_totals, "MAX_MERGED_PARTS", 0)
    for q in terms[::7]:
        assert found(api, q) == reference(varied_jobs, q), q


def runnum_order(jobs, ids, descending=False):
    runnums = {j[0]: j[1] for j in jobs}
    return sorted(ids, key=runnums.get, reverse=descending)


@pytest.mark.parametrize("sort", ["runnum", "-runnum"])
def test_pages_of_a_term_in_several_words_follow_the_sort(api, varied_jobs, sort):
    """`t` is in sites, users and requests: the merged parts page like one sorted list, by cursor and by page."""
    for q in ("t", "zo", "infn", "gen"):
        want = runnum_order(varied_jobs, reference(varied_jobs, q), sort.startswith("-"))
        assert len(want) >= 4, q
        got, after = [], None
        while True:
            r = api.get("/jobs", query_string={"q": q, "per_page": 3, "sort": sort,
                                               **({"after": after} if after else {})}).json
            got += [j["id"] for j in r["jobs"]]
            after = r["next"]
            if not after:
                break
        assert got == want, q
        second = api.get("/jobs", query_string={"q": q, "per_page": 3, "page": 2, "sort": sort}).json
        assert [j["id"] for j in second["jobs"]] == want[3:6] and second["total"] == len(want), q
        by_id = api.get("/jobs", query_string={"q": q, "per_page": 1000, "sort": "-id"}).json
        assert [j["id"] for j in by_id["jobs"]] == sorted(want, reverse=True), q


def test_a_cut_text_is_searched_as_cut(api, production):
    """A text longer than 1024 characters loses its site and runnum: the words may not find it there."""
    submit(api, other_request(api, production, Background="x" * 1000), runs=2, sites=("INFN-TORINO",))
    submit(api, production, runs=2, sites=("INFN-TORINO",))
    jobs = all_jobs()
    assert sum(len(j[4]) == 1024 for j in jobs) == 2
    for q in ("torino", "infn", "xxx", "b0b0bar", "dev", "10000003"):
        assert found(api, q) == reference(jobs, q), q
    assert len(found(api, "torino")) == 2 and len(found(api, "xxx")) == 2


def test_migration_6_adds_the_summary_indexes_and_keeps_the_jobs(db_url, monkeypatch):
    db.bind(db_url)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:5])
    assert migrations.upgrade() == [1, 2, 3, 4, 5]
    table = m.Job._meta.table_name
    wanted = {f"{table}_request_id_status", f"{table}_site_id_production_id_events",
              f"{table}_status_finished_at_events"}
    with db.connection():
        for name in wanted:   # as a version-5 database had them: not there
            m.database.execute_sql(f"DROP INDEX IF EXISTS {name}")
        with db.write_transaction():
            version_2_jobs()
        before = all_jobs()
    monkeypatch.undo()
    assert migrations.upgrade()[0] == 6
    with db.connection():
        assert all_jobs() == before
        if db.is_sqlite():
            listed = {r[0] for r in m.database.execute_sql("SELECT name FROM sqlite_master WHERE type = 'index'")}
        else:
            listed = {r[0] for r in m.database.execute_sql("SELECT indexname FROM pg_indexes WHERE tablename = %s",
                                                           [table])}
        assert wanted <= listed


def test_migration_5_gives_the_page_indexes_the_job_id(db_url, monkeypatch):
    """PostgreSQL: the job monitor's indexes ending in runnum hold the job id (same names); the jobs stay."""
    db.bind(db_url)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:4])
    assert migrations.upgrade() == [1, 2, 3, 4]
    with db.connection(), db.write_transaction():
        version_2_jobs()
    before = all_jobs()
    monkeypatch.undo()
    assert migrations.upgrade() == list(range(5, migrations.LATEST + 1))
    table = m.Job._meta.table_name
    names = [f"{table}_{'_'.join(columns)}" for columns in migrations.MONITOR_PAGE_INDEXES]
    with db.connection():
        assert all_jobs() == before
        if db.is_sqlite():
            listed = {r[0] for r in m.database.execute_sql("SELECT name FROM sqlite_master WHERE type = 'index'")}
            assert set(names) <= listed
        else:
            defs = dict(m.database.execute_sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s",
                                               [table]).fetchall())
            assert all(defs[name].endswith("INCLUDE (id)") for name in names), defs
    db.database.obj.close_all()


def test_sqlite_totals_take_a_first_look_before_counting(api, jobs, db_url, monkeypatch):
    """SQLite (no planner estimate): a quick sample first; far above the limit no count, near it the
    count runs to the end (the exact number, flagged as above the limit), under it exact."""
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL takes its planner's estimate")
    counts = []
    count = monitor_totals._count
    monkeypatch.setattr(monitor_totals, "_count", lambda cond, up_to=None: counts.append(up_to) or count(cond, up_to))
    monkeypatch.setattr(monitor_totals, "QUICK_SAMPLE_FROM", 1)
    monkeypatch.setattr(monitor_totals, "QUICK_MIN_HITS", 1)

    def total(limit, **query):
        monkeypatch.setattr(monitor_totals, "SQLITE_COUNT_EXACT_UP_TO", limit)
        counts.clear()
        r = api.get("/jobs", query_string={"per_page": 1, **query}).json
        return r["total"], r["total_is_estimate"], list(counts)

    assert total(1) == (6, True, [])                              # 6 > 3 x 1: the sample alone
    assert total(2, site="INFN-TORINO") == (3, True, [None])      # 3 <= 1.5 x 2: counted to the end
    assert total(4, site="INFN-TORINO") == (3, False, [None])     # under the limit: exact
    monkeypatch.setattr(monitor_totals, "QUICK_MIN_HITS", 100)          # too few matched ids to trust
    assert total(1) == (6, True, [2])                             # capped count, then the full sample


def test_the_text_is_made_of_the_parts_search_text_names(api, production):
    """What a submission stores is search_text.job_text; may_be_cut bounds it with the longest runnum."""
    from server import search_text
    ids = submit(api, production, runs=1)["job_ids"]
    with db.connection():
        job = m.Job.get_by_id(ids[0])
        assert job.search == search_text.job_text(job.production.name, job.user.name, job.request.parameters,
                                                  job.site.name, job.runnum)
        words = search_text.request_words(job.production.name, job.request.parameters)
    assert all(part.lower() in words for part in [job.production.name] + list(job.request.parameters.values()))
    longest = search_text.job_text("p" * 500, "u" * 10, {"a": "w" * 480}, "s" * 10, -2 ** 63)   # a BIGINT's longest
    assert len(longest) == search_text.SEARCH_TEXT_MAX and longest.endswith(" " + str(-2 ** 63))
    assert not search_text.may_be_cut(search_text.request_words("p" * 500, {"a": "w" * 480}), 10, 10)
    assert search_text.may_be_cut(search_text.request_words("p" * 501, {"a": "w" * 480}), 10, 10)
