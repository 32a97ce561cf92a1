"""Server benchmarks (issue 5): event ingest under gunicorn, the job monitor over 1M jobs.

    python -m bench.bench_server [--quick] [--db sqlite,postgresql] [--only ingest|monitor]

Ingest: the sbk app plus bench/raw_app.py's raw route, served as `sbk serve
--workers 2` serves (server.cli's gunicorn application, 2 sync workers), load from wrk
(bench/wrk_events.lua, one job token per job), single events and batches of 10
to POST /jobs/<id>/events, against the raw route of the same server (one UPDATE +
one INSERT, same driver: the database's own limit). Goals (issue 17): >= 0.97 of raw
with one event a post, >= 0.9 with 10, no error. The load generator shares the machine's
cores with the server. Afterwards every acknowledged event must be in the database.

Monitor: 1,000,000 jobs (20,000 with --quick) bulk-loaded, typical filtered
pages with their total (~: an estimate) through the real route (Flask test client, JSON
included), first page and page 200 by `page` (OFFSET) and by the `after`
cursor. The reference: the same SQL the route issued for that page (captured from
peewee's log), replayed raw through the same driver and connection pool, rows fetched.
Goal: the route's time <= 1.5x the reference, every shape, page 1 and page 200 by
cursor, both databases (bench/gate.py: best of the repetitions, spread printed).
"""
import argparse
import http.client
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.gate import Gate, load_line  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"ingest": {1: (">=", 0.97), 10: (">=", 0.9)}, "monitor": ("<=", 1.5)}
# wrk: one thread (C, epoll) costs the server's 2 cores far less than Python clients would;
# a few connections more than workers keep both busy (sync workers close each connection).
WRK_THREADS = 1
CONNECTIONS = 4
BATCH = 10


def load_avg():
    return load_line()


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else float("nan")


# ---------------------------------------------------------------- setup

def make_app(url):
    from server import create_app
    app = create_app({"DB": url, "PUBLIC_URL": "http://bench.invalid"})
    app.testing = True
    return app


def close_db():
    from server import db
    close_all = getattr(db.database.obj, "close_all", None)
    close_all() if close_all else db.database.close()


def developer_api(app):
    from server import db
    from server.auth import add_user
    from tests.server.conftest import Api
    with app.app_context(), db.connection():
        token = add_user("bench", ["Developer"])
    return Api(app.test_client(), token)


def prepare_running_jobs(url, count):
    """`count` prepared jobs with fresh job tokens: [(job id, token)]."""
    from server import db, jobs
    from server import models as m
    from tests.server.conftest import make_production, submit
    app = make_app(url)
    api = developer_api(app)
    production = make_production(api)
    ids = submit(api, production, runs=count)["job_ids"]
    out = []
    with app.app_context(), db.connection(), db.write_transaction():
        for job in m.Job.select().where(m.Job.id.in_(ids)):
            out.append((job.id, jobs.mint_token(job)))   # the hand-off a backend makes
    close_db()
    return out


class Databases:
    """Fresh database URLs: SQLite files in a temp dir, a throwaway PostgreSQL cluster."""

    def __init__(self, tmp):
        self.tmp, self.cluster, self.n = Path(tmp), None, 0

    def new(self, kind):
        self.n += 1
        if kind == "sqlite":
            return f"sqlite:///{self.tmp}/bench-{self.n}.db"
        if self.cluster is None:
            from tests.infra.postgres import start_cluster
            self.cluster = start_cluster()
        return self.cluster.new_database()

    def settle(self):
        """Flush what the last benchmark wrote (PostgreSQL's CHECKPOINT), so that its writes
        (750k events) are not flushed during the next one's timings."""
        if self.cluster is None:
            return
        import psycopg2
        conn = psycopg2.connect(self.cluster.url("postgres"))
        try:
            conn.autocommit = True
            conn.cursor().execute("CHECKPOINT")
        finally:
            conn.close()

    def stop(self):
        if self.cluster is not None:
            self.cluster.stop()


# ---------------------------------------------------------------- ingest

class Server:
    """bench/raw_app.py under gunicorn (`sbk serve --workers 2`'s settings) on a free port:
    the real routes and the raw reference route in the same workers."""

    def __init__(self, url, tmp):
        from tests.infra.postgres import free_port
        self.port = free_port()
        self.log = open(Path(tmp) / f"serve-{self.port}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.raw_app", "--db", url, "--port",
                                      str(self.port), "--workers", "2", "--threads", "1"], cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench.raw_app exited with {self.proc.returncode}; see {self.log.name}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/api/v1/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)   # polling interval under a deadline
        raise SystemExit("bench.raw_app did not answer /health in 30 s")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


WRK_SCRIPT = Path(__file__).with_name("wrk_events.lua")


def run_load(port, jobs_file, raw, batch, seconds, start_seq):
    """Events/s, p50 ms, p99 ms, errors of one wrk run (round-robin over the jobs; see wrk_events.lua)."""
    argv = ["wrk", "-t", str(WRK_THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds:g}s", "--timeout", "30s",
            "-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}", "--",
            str(jobs_file), "1" if raw else "0", str(batch), str(start_seq), str(WRK_THREADS)]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 120)
    except FileNotFoundError:
        raise SystemExit("bench_server needs wrk, the HTTP load generator: run `make deps`") from None
    r = json.loads(out.stdout.strip().splitlines()[-1])   # what wrk_events.lua's done() printed
    ok = r["requests"] - r["errors"]
    return {"events_s": ok * batch / (r["duration_us"] / 1e6), "p50_ms": r["p50_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000, "errors": r["errors"], "events": ok * batch}


def stored_events(url, job_ids):
    """Events the database holds for these jobs (the bench's check that acknowledged means stored)."""
    from server import db
    from server import models as m
    make_app(url)
    with db.connection():
        count = m.Event.select().where(m.Event.job.in_(job_ids)).count()
    close_db()
    return count


def bench_ingest(gate, kind, dbs, tmp, quick):
    seconds, repeats, njobs = (2.0, 1, 200) if quick else (8.0, 3, 2000)
    url = dbs.new(kind)
    jobs = prepare_running_jobs(url, njobs)
    jobs_file = Path(tmp) / f"jobs-{kind}.txt"
    jobs_file.write_text("".join(f"{job_id} {token}\n" for job_id, token in jobs))
    server = Server(url, tmp)
    rows, acknowledged, runs, errors = [], 0, 0, {"raw": 0, "sbk": 0}
    try:
        seq = 1
        for batch in (1, BATCH):
            best, rates = {}, {"raw": [], "sbk": []}
            for _ in range(repeats):
                for raw in (True, False):   # alternate so a busy moment hits both
                    r = run_load(server.port, jobs_file, raw, batch, seconds, seq)
                    seq += 100_000   # fresh seqs per run: nothing is a duplicate
                    acknowledged += r["events"]
                    runs += 1
                    key = "raw" if raw else "sbk"
                    rates[key].append(r["events_s"])
                    errors[key] += r["errors"]
                    if key not in best or r["events_s"] > best[key]["events_s"]:
                        best[key] = r
            rows.append((batch, best, rates))
    finally:
        server.stop()
    stored = stored_events(url, [job_id for job_id, _ in jobs])
    print(f"\nEvent ingest, {kind}: gunicorn 2 sync workers, wrk ({WRK_THREADS} thread, {CONNECTIONS} "
          f"connections) on the same {os.cpu_count()} cores, {len(jobs)} jobs, {seconds:g} s per run, "
          f"best of {repeats}; {load_avg()}")
    print(f"  {'events/post':>11} {'route':>5} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}  ratio")
    for batch, best, _ in rows:
        for key in ("raw", "sbk"):
            r = best[key]
            ratio = best["sbk"]["events_s"] / best["raw"]["events_s"] if key == "sbk" else None
            print(f"  {batch:>11} {key:>5} {r['events_s']:>9.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} "
                  f"{r['errors']:>6}  " + (f"{ratio:.2f}" if ratio is not None else ""))
    # posts still in flight when wrk stopped counting may be stored too: at most one per connection
    in_flight = runs * CONNECTIONS * BATCH
    kept = acknowledged <= stored <= acknowledged + in_flight
    print(f"  events acknowledged {acknowledged:,}, stored {stored:,}: "
          f"{'none lost' if kept else 'MISMATCH'}")
    for batch, _, rates in rows:
        gate.add(f"event ingest, {batch} event{'s' if batch > 1 else ''} a post, {kind}, vs raw UPDATE+INSERT",
                 rates["sbk"], rates["raw"], GOALS["ingest"][batch], unit="ev/s")
    gate.check(f"event ingest, {kind}: no error, every acknowledged event stored",
               kept and errors["sbk"] == 0, f"{errors['sbk']} err, {acknowledged:,} acked, {stored:,} stored")


# ---------------------------------------------------------------- monitor

SITES = ["INFN-T1", "INFN-TORINO", "INFN-BARI", "INFN-NAPOLI", "INFN-PISA", "IN2P3-CC", "RAL-LCG2",
         "CYFRONET", "GRIF", "UKI-LT2-QMUL", "SLAC", "CALTECH"]
USERS = ["armando", "bianca", "carlo", "daria", "elio", "fabio", "gina", "hugo"]
STATUS_WEIGHTS = {"done": 70, "failed": 6, "sys-failed": 2, "timeout": 2, "running": 9, "submitted": 5,
                  "prepared": 6}
GENERATORS = ["B0B0bar_SL", "BpBm_generic", "ccbar", "uds", "tau_pair", "Bs_mix"]


def _job_rows(n, setup):
    """n realistic job rows as tuples in COLUMNS order."""
    rnd = random.Random(5)
    statuses = rnd.choices(list(STATUS_WEIGHTS), weights=list(STATUS_WEIGHTS.values()), k=n)
    site_weights = [30, 15, 10, 8, 8, 7, 6, 5, 4, 3, 2, 2]
    sites = rnd.choices(range(len(setup["sites"])), weights=site_weights, k=n)
    fail_codes = [11, 30, 40, 51, 60, 62, 70, 99]
    t0 = 1_600_000_000
    rows = []
    runnum = 10_000_000
    per_request = n // len(setup["requests"]) + 1
    for i in range(n):
        req = setup["requests"][i // per_request]
        st, site = statuses[i], sites[i]
        runnum += 1
        prepared = t0 + i * 30
        final = st in ("done", "failed", "sys-failed", "timeout")
        started = st not in ("prepared", "submitted")
        code = 0 if st == "done" else (rnd.choice(fail_codes) if final else None)
        user = setup["users"][i // 5000 % len(setup["users"])]
        site_name = setup["site_names"][site]
        text = " ".join([req["production"], user[1]] + req["words"] + [site_name, str(runnum)]).lower()
        rows.append((runnum, 100_000, req["id"], req["production_id"], req["session_id"], setup["sites"][site],
                     user[0], False, False, st, "RUNNING-04" if started else None,
                     "payload" if started else "", code, f"{site_name}.{1000000 + i}" if st != "prepared" else None,
                     "slurm", 1, 12 if started else 0, 300.0, float(prepared + 600) if started else None,
                     3600.0 if final else None, _ts(prepared), _ts(prepared + 60) if st != "prepared" else None,
                     _ts(prepared + 120) if started else None, _ts(prepared + 3720) if final else None, text))
    return rows


COLUMNS = ("runnum", "events", "request_id", "production_id", "session_id", "site_id", "user_id", "test",
           "log_to_db", "status", "step", "message", "error_code", "gjid", "backend", "attempt", "last_seq",
           "heartbeat_s", "heartbeat_at", "wct", "prepared_at", "submitted_at", "started_at", "finished_at",
           "search")


def _ts(sec):
    import datetime
    return datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).replace(tzinfo=None)


def _request_generating(api, production, generator):
    """The id of a request of `production` (make_production's) with this Generator."""
    made = production["request"]
    if made["parameters"]["Generator"] == generator:
        return made["id"]
    r = api.post("/requests", json={"production": production["production"], "from": made["id"],
                                    "parameters": {**made["parameters"], "Generator": generator}})
    if r.status_code != 201:
        raise SystemExit(f"POST /requests: {r.status_code} {r.json}")
    return r.json["id"]


def _monitor_setup(app):
    """Productions, requests, sites and users made through the API; their ids."""
    from server import db
    from server import models as m
    from server.auth import add_user
    from tests.server.conftest import make_production
    api = developer_api(app)
    for site in SITES:
        api.post("/sites", json={"name": site})
    made = [make_production(api, name=f"2010_Prod{k}") for k in range(6)]
    with app.app_context(), db.connection():
        for u in USERS:
            add_user(u, ["Shift"])
        users = [(u.id, u.name) for u in m.User.select().where(m.User.name.in_(USERS))]
        site_rows = {s.name: s.id for s in m.Site.select().where(m.Site.name.in_(SITES))}
        requests = []
        for k, p in enumerate(made):
            req = m.Request.get_by_id(_request_generating(api, p, GENERATORS[k]))
            # the words of submissions._create_jobs: the job monitor's search relies on them
            requests.append({"id": req.id, "production_id": req.production_id,
                             "session_id": req.production.session_id, "production": p["production"],
                             "words": [str(v) for v in req.parameters.values()]})
    return {"users": users, "sites": [site_rows[s] for s in SITES], "site_names": SITES, "requests": requests}


def bulk_load(url, n):
    """A database with n jobs; return (app, seconds to load)."""
    from server import db
    from server import models as m
    app = make_app(url)
    setup = _monitor_setup(app)
    # the model's other NOT NULL columns at their defaults (a column added later needs no edit here)
    extra = [(f.column_name, f.default) for f in m.Job._meta.sorted_fields if f.column_name not in COLUMNS
             and not f.null and f.default is not None and not callable(f.default)]
    columns = COLUMNS + tuple(name for name, _ in extra)
    rows = [r + tuple(value for _, value in extra) for r in _job_rows(n, setup)]
    began = time.monotonic()
    table = m.Job._meta.table_name
    with app.app_context(), db.connection():
        if db.is_sqlite():
            conn = db.database.connection()
            with db.write_transaction():
                conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                                 f"({', '.join('?' * len(columns))})", rows)
            db.database.execute_sql("ANALYZE")
        else:
            buf = io.StringIO()
            for r in rows:
                buf.write("\t".join("\\N" if v is None else str(v) for v in r) + "\n")
            buf.seek(0)
            with db.database.atomic():
                db.database.cursor().copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buf)
            # what autovacuum does to a settled table: statistics, and the visibility map
            # that lets COUNT(*) use index-only scans
            conn = db.database.connection()
            conn.autocommit = True
            try:
                conn.cursor().execute(f"VACUUM ANALYZE {table}")
            finally:
                conn.autocommit = False
    return app, time.monotonic() - began, setup


def monitor_shapes(setup, n):
    """(name, query string) of typical job monitor pages."""
    s = setup["site_names"]
    mid = 10_000_000 + n // 2
    return [
        ("3 statuses x 3 sites", f"status=failed,sys-failed,timeout&site={s[0]},{s[2]},{s[5]}"),
        ("2 statuses x 2 sites", f"status=running,submitted&site={s[1]},{s[3]}"),
        ("runnum range + status", f"runnum_from={mid}&runnum_to={mid + n // 10}&status=done"),
        ("production + status", f"production={setup['requests'][2]['production']}&status=done"),
        ("text search", "q=bpbm_generic"),
        ("text + site", f"q=ccbar&site={s[0]}"),
        ("text: runnum part", f"q={mid // 10}"),    # a selective term: the trigram index's case
        ("user + error code", f"user={USERS[1]}&error_code=30"),
        ("no filter", ""),
    ]


class CapturedSql:
    """The SQL statements a block issues through peewee (its DEBUG log of (sql, params))."""

    def __init__(self):
        import logging
        self.statements, self.logger = [], logging.getLogger("peewee")

    def emit(self, record):
        if isinstance(record.msg, tuple) and len(record.msg) == 2:   # not the pool's own messages
            self.statements.append(record.msg)

    def __enter__(self):
        import logging
        self.handler = type("Capture", (logging.Handler,), {"emit": lambda _, rec: self.emit(rec)})()
        self.saved = self.logger.level, self.logger.propagate
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.saved[0])   # setLevel, not .level: the logger caches what it enables
        self.logger.propagate = self.saved[1]


def _timed_get(client, headers, path):
    began = time.perf_counter()
    r = client.get(path, headers=headers)
    elapsed = time.perf_counter() - began
    if r.status_code != 200:
        raise SystemExit(f"GET {path}: {r.status_code} {r.get_data(as_text=True)[:300]}")
    return elapsed, r.json


def _job_statements(client, headers, path):
    """The statements GET path issues that read the job table (the page, its total or the
    planner's estimate of it), not the token lookup: the job monitor's own queries."""
    from server import models as m
    table = m.Job._meta.table_name
    with CapturedSql() as captured:
        _timed_get(client, headers, path)
    found = [(sql, params) for sql, params in captured.statements
             if f'"{table}"' in sql and sql.lstrip().upper().startswith(("SELECT", "WITH", "EXPLAIN"))]
    if not found:
        raise SystemExit(f"GET {path} issued no query on {table}: nothing to compare with")
    return found


def _timed_raw(app, statements):
    """The same statements issued raw through the same driver and pool, every row fetched."""
    from server import db
    with app.app_context(), db.connection():
        began = time.perf_counter()
        for sql, params in statements:
            db.database.execute_sql(sql, params).fetchall()
        return time.perf_counter() - began


def bench_monitor(gate, kind, dbs, quick):
    n = 20_000 if quick else 1_000_000
    reps = 10 if quick else 30
    url = dbs.new(kind)
    app, load_s, setup = bulk_load(url, n)
    api = developer_api(app)
    client, headers = api.client, {"Authorization": f"Bearer {api.token}"}
    base = "/api/v1/jobs?per_page=50&"
    print(f"\nJob monitor, {kind}: {n:,} jobs bulk-loaded in {load_s:.1f} s, 50 per page, "
          f"{reps} repetitions, p50/p95 ms through GET /api/v1/jobs (Flask test client, JSON included) "
          f"and of the same SQL raw; {load_avg()}")
    print(f"  {'query':<24} {'total':>8} {'page 1':>13} {'raw p1':>13} {'page 200':>13} {'after: p200':>13} "
          f"{'raw p200':>13}")
    # per page kind: (ratio of the bests, shape, route times, raw times) of the worst shape
    worst = {"p1": None, "k200": None}
    for name, qs in monitor_shapes(setup, n):
        times = {"p1": [], "p200": [], "k200": [], "raw p1": [], "raw k200": []}
        _, first = _timed_get(client, headers, base + qs)
        total = first["total"]
        shown = f"~{total}" if first.get("total_is_estimate") else str(total)
        # walk to page 199 once through `next`; page 200 is then timed by its cursor
        reply, page = first, 1
        while page < 199 and reply.get("next"):
            _, reply = _timed_get(client, headers, base + qs + f"&after={reply['next']}")
            page += 1
        cursor = reply.get("next") if page == 199 else None
        paths = {"p1": base + qs, "k200": base + qs + f"&after={cursor}" if cursor else None}
        sql = {key: _job_statements(client, headers, path) for key, path in paths.items() if path}
        for _ in range(reps):   # route and raw alternate, so a busy moment hits both
            times["p1"].append(_timed_get(client, headers, paths["p1"])[0])
            times["raw p1"].append(_timed_raw(app, sql["p1"]))
            if total > 200 * 50:
                times["p200"].append(_timed_get(client, headers, base + qs + "&page=200")[0])
            if cursor:
                times["k200"].append(_timed_get(client, headers, paths["k200"])[0])
                times["raw k200"].append(_timed_raw(app, sql["k200"]))

        def fmt(values):
            if not values:
                return f"{'-':>13}"
            return f"{1000 * percentile(values, 50):>6.1f}/{1000 * percentile(values, 95):<6.1f}"
        for key in ("p1", "k200"):
            if times[key]:
                ratio = min(times[key]) / min(times["raw " + key])
                if worst[key] is None or ratio > worst[key][0]:
                    worst[key] = (ratio, name, times[key], times["raw " + key])
        print(f"  {name:<24} {shown:>8} {fmt(times['p1'])} {fmt(times['raw p1'])} {fmt(times['p200'])} "
              f"{fmt(times['k200'])} {fmt(times['raw k200'])}")
    close_db()
    for key, label in (("p1", "page 1"), ("k200", "page 200 by cursor")):
        if worst[key]:
            _, shape, ours, raw = worst[key]
            gate.add(f"job monitor at {n:,} jobs, {label}, {kind}, worst shape ({shape}) vs its raw SQL",
                     [1000 * t for t in ours], [1000 * t for t in raw], GOALS["monitor"], unit="ms")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k jobs, 2 s load runs, goals at half")
    parser.add_argument("--db", default="sqlite,postgresql", help="comma list: sqlite, postgresql")
    parser.add_argument("--only", choices=("ingest", "monitor"), help="run one half")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.db.split(",") if k.strip()]
    tmp = tempfile.mkdtemp(prefix="bench-server-")   # on disk: SQLite fsyncs count
    dbs = Databases(tmp)
    gate = Gate("bench_server", args.quick)
    gate.start()
    try:
        for kind in kinds:
            if args.only in (None, "ingest"):
                bench_ingest(gate, kind, dbs, tmp, args.quick)
                dbs.settle()
            if args.only in (None, "monitor"):
                bench_monitor(gate, kind, dbs, args.quick)
    finally:
        dbs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return gate.finish()


if __name__ == "__main__":
    sys.exit(main())
