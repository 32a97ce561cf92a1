"""The fast paths of the benchmarks: event ingest shortcuts, bench/raw_app.py's raw route, keyset paging."""
from server import create_app, db
from server import models as m

from .conftest import API, Api, event, make_production, new_token, started_job, submit


def test_running_events_move_the_job_like_the_general_path(api, production):
    job_id, token = started_job(api, production)
    wrapper = api.as_(token)
    r = wrapper.post(f"/jobs/{job_id}/events", json=[event(1, step="RUNNING-01"), event(2, kind="heartbeat")])
    assert r.json == {"accepted": 2, "duplicates": 0, "status": "running", "command": None}
    job = api.get(f"/jobs/{job_id}").json
    assert (job["step"], job["started_at"] is not None, job["last_heartbeat"] is not None) == \
        ("RUNNING-01", True, True)
    assert [(h["seq"], h["kind"]) for h in job["history"]] == [(1, "step"), (2, "heartbeat")]
    # a later report keeps the start time the first one set
    wrapper.post(f"/jobs/{job_id}/events", json=event(3, kind="heartbeat"))
    assert api.get(f"/jobs/{job_id}").json["started_at"] == job["started_at"]
    # a replay below last_seq, mixed with a new event, goes the general way: nothing stored twice
    r = wrapper.post(f"/jobs/{job_id}/events", json=[event(3, kind="heartbeat"), event(4, step="RUNNING-04")])
    assert (r.json["accepted"], r.json["duplicates"]) == (1, 1)
    assert api.get(f"/jobs/{job_id}").json["step"] == "RUNNING-04"
    # a running event after the final is stored but changes nothing
    wrapper.post(f"/jobs/{job_id}/events", json=event(5, "done", code=0))
    r = wrapper.post(f"/jobs/{job_id}/events", json=event(6, step="RUNNING-05"))
    assert (r.json["accepted"], r.json["status"]) == (1, "done")
    with db.connection():
        assert m.Job.get_by_id(job_id).last_seq == 5


def test_a_fast_path_report_is_committed_with_every_column(api, production, db_url):
    """What another connection reads at once: committed, each value in its column's type."""
    job_id, token = started_job(api, production)
    r = api.as_(token).post(f"/jobs/{job_id}/events", json=[
        event(1, step="RUNNING-02", message="stage-in: 3 files", metrics={"rss_mb": 812.5}),
        event(2, kind="heartbeat", tail=["line 1", "line 2"])])
    assert r.json["accepted"] == 2
    if db_url.startswith("sqlite"):
        import sqlite3
        other = sqlite3.connect(db_url[len("sqlite:///"):])
    else:
        import psycopg2
        other = psycopg2.connect(db_url)
    try:
        cur = other.cursor()
        cur.execute(f"SELECT seq, time, status, kind, step, message, code, metrics, tail FROM event "
                    f"WHERE job_id = {int(job_id)} ORDER BY seq")
        assert cur.fetchall() == [
            (1, 1700000001.0, "running", "step", "RUNNING-02", "stage-in: 3 files", None, '{"rss_mb":812.5}', None),
            (2, 1700000002.0, "running", "heartbeat", None, "", None, None, '["line 1","line 2"]')]
        cur.execute(f"SELECT status, step, last_seq FROM job WHERE id = {int(job_id)}")
        assert cur.fetchone() == ("running", "RUNNING-02", 2)
    finally:
        other.close()


def test_duplicate_seqs_in_one_batch_are_stored_once(api, production):
    job_id, token = started_job(api, production)
    r = api.as_(token).post(f"/jobs/{job_id}/events", json=[event(1), event(1)])
    assert (r.json["accepted"], r.json["duplicates"]) == (1, 1)


def test_the_raw_bench_route_exists_only_in_the_bench_app(db_url, monkeypatch):
    from bench.raw_app import create_raw_app
    monkeypatch.setenv("SBK_BENCH_RAW", "1")   # the old switch: the shipped app ignores it
    normal = create_app({"DB": db_url}).test_client()
    assert normal.post(f"{API}/bench/raw/1/events", json=event(1)).status_code == 404
    bench = create_raw_app({"DB": db_url})
    rules = {r.rule for r in bench.url_map.iter_rules()}
    assert f"{API}/bench/raw/<id:job_id>/events" in rules
    assert f"{API}/jobs/<id:job_id>/events" in rules   # the real route, in the same app


def test_the_raw_reference_writes_what_the_real_route_writes(db_url):
    """One UPDATE (running, last_seq, heartbeat) and one INSERT of the events, no token."""
    from bench.raw_app import create_raw_app
    app = create_raw_app({"DB": db_url, "PUBLIC_URL": "http://sbk.test:8080"})
    app.testing = True
    api = Api(app.test_client(), new_token("dev", ["Developer"]))
    job_id, _ = started_job(api, make_production(api))
    r = app.test_client().post(f"{API}/bench/raw/{job_id}/events",
                               json=[event(1, kind="heartbeat"), event(2, kind="heartbeat")])
    assert (r.status_code, r.json) == (200, {"accepted": 2})
    with db.connection():
        job = m.Job.get_by_id(job_id)
        assert (job.status, job.last_seq, job.heartbeat_at is not None) == ("running", 2, True)
        assert [e.seq for e in m.Event.select().where(m.Event.job == job_id).order_by(m.Event.seq)] == [1, 2]
    close_all = getattr(db.database.obj, "close_all", None)
    close_all() if close_all else db.database.close()


def test_the_bench_server_runs_with_sbk_serves_gunicorn_settings(db_url, monkeypatch):
    from bench.raw_app import gunicorn_app
    from server import cli
    bench, sbk = gunicorn_app("127.0.0.1:0", 2, 1), cli._gunicorn_app("127.0.0.1:0", 2, 1)
    # server.cli's class itself (made per call), with its load_config: only load() differs
    assert type(bench).__mro__[1].__qualname__ == type(sbk).__qualname__
    assert type(bench).load_config.__code__ is type(sbk).load_config.__code__
    for name in ("bind", "workers", "worker_class_str", "threads", "timeout", "accesslog"):
        assert getattr(bench.cfg, name) == getattr(sbk.cfg, name), name
    monkeypatch.setenv("SBK_DB", db_url)
    app = bench.load()   # what each worker serves
    assert f"{API}/bench/raw/<id:job_id>/events" in {r.rule for r in app.url_map.iter_rules()}


def _walk(api, query):
    """Every page of `query` through `next`: the runnums, page by page."""
    pages, after = [], None
    while True:
        r = api.get(f"/jobs?{query}" + (f"&after={after}" if after else ""))
        assert r.status_code == 200, r.json
        pages.append([j["runnum"] for j in r.json["jobs"]])
        after = r.json["next"]
        if after is None:
            return pages, r.json["total"]


def test_keyset_pages_match_offset_pages_in_every_keyset_sort(api, production):
    submit(api, production, runs=7, sites=("INFN-T1", "INFN-TORINO"))
    for sort in ("runnum", "-runnum", "status", "-site", "prepared_at", "events", "-id"):
        query = f"per_page=5&sort={sort}"
        by_page = [[j["runnum"] for j in api.get(f"/jobs?{query}&page={n}").json["jobs"]] for n in (1, 2, 3)]
        pages, total = _walk(api, query)
        assert total == 14
        assert [r for p in pages for r in p] == [r for p in by_page for r in p], sort


def test_keyset_paging_keeps_the_filters_and_refuses_bad_cursors(api, production):
    submit(api, production, runs=6, sites=("INFN-T1", "INFN-TORINO"))
    pages, total = _walk(api, "per_page=4&site=INFN-TORINO")
    assert total == 6 and [len(p) for p in pages] == [4, 2]
    first = api.get("/jobs?per_page=4").json
    assert first["page"] == 1 and first["next"]
    assert api.get(f"/jobs?per_page=4&after={first['next']}").json["page"] is None
    for bad in ("nonsense", "bnVsbA", first["next"] + "&sort=wct"):
        r = api.get(f"/jobs?after={bad}")
        assert r.status_code == 400 and r.json["error"] == "bad-request", (bad, r.json)
