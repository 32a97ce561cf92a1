"""A million jobs on one 2-core server (issue 17): `make bench-scale`, a soak of ~15 minutes.

    python -m bench.bench_scale [--jobs 1000000] [--running 300000] [--seconds 600] [--heartbeat-s 1800]
                                [--job-hours 6] [--managers 20] [--think-s 5] [--workers 2]

PostgreSQL (durable: fsync on) holding `--jobs` jobs, `--running` of them running, bulk-loaded in
SQL (INSERT ... SELECT generate_series; the counters' triggers fire as for any insert). The server is
the production recipe: gunicorn with contrib/gunicorn.conf.py (the reaper in the master, a batch
poller per worker, every setting at its default), 2 workers of 4 threads (gthread). Not the file's
sync workers: a sync worker waits on each connection a client opened until it writes, and wrk's
paced connections (as wrappers on slow links) open before they write, so pages queued behind them
(p50 840 ms in a small run; `--worker-class sync` shows it). For `--seconds`, wrk
(bench/wrk_scale.lua, C, not Python threads) posts what the running jobs' wrappers send at PanDA's
rate: a heartbeat every `--heartbeat-s` each (1,800 s: ~170/s for 300,000 jobs), and for jobs
lasting `--job-hours` on average, their ends (a final event each) and as many starts (a submitted
job's first report) and four step events a job. Meanwhile `--managers` people page the job monitor
(GET /api/v1/jobs, page 1 then on by cursor) and the web pages, each thinking ~`--think-s` between two.

Reported: events/s, p50/p99 of event posts and of pages, the server's and PostgreSQL's CPU and
memory, the database's growth per hour, and that every acknowledged event is stored (rows counted
after). Goals: p99 of event posts <= 50 ms, p99 of pages <= 300 ms, no error, the wanted rate
reached, and CPU left: gunicorn + PostgreSQL below 75% of the machine's cores. Exit 1 on a miss.
"""
import argparse
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

from bench.bench_server import Server, _monitor_setup, close_db, load_avg, make_app, monitor_shapes, percentile
from tests.server.test_concurrency import wait_for_health

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
WRK_SCRIPT = Path(__file__).with_name("wrk_scale.lua")
GOALS = {"event_p99_ms": 50.0, "page_p99_ms": 300.0, "cpu_share": 0.75, "rate_share": 0.9}
STEPS_PER_JOB = 4
LAST_SEQ = 12            # what the loaded running jobs have reported so far
CONNECTIONS = 8          # wrk's: a few more than the server's workers, each pausing between its posts
FINISHED = ["done"] * 90 + ["failed"] * 5 + ["sys-failed"] * 3 + ["timeout"] * 2


@dataclass(frozen=True)
class Load:
    """The run's sizes and rates."""
    jobs: int
    running: int
    seconds: float
    heartbeat_s: float
    job_hours: float
    managers: int
    think_s: float
    workers: int
    worker_class: str
    threads: int

    @property
    def rates(self):
        """Posts per second: heartbeats, steps, finals, starts."""
        ends = self.running / (self.job_hours * 3600)
        return {"heartbeat": self.running / self.heartbeat_s, "step": STEPS_PER_JOB * ends,
                "final": ends, "start": ends}

    @property
    def starting(self):
        """Submitted jobs loaded to start during the run (with room)."""
        return int(self.rates["start"] * self.seconds * 1.5) + 100


# ---------------------------------------------------------------- the database

def start_postgres():
    """A throwaway cluster (tests/infra/postgres.py), made durable as a deployment's is."""
    import psycopg2
    from tests.infra.postgres import start_cluster
    cluster = start_cluster()
    conn = psycopg2.connect(cluster.url("postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ALTER SYSTEM SET fsync = on")   # the test recipe turns it off; a server keeps it
        cur.execute("SELECT pg_reload_conf()")
    conn.close()
    return cluster


def bulk_load(url, load):
    """`load.jobs` jobs in SQL, `load.running` running (reported LAST_SEQ events, heartbeats spread
    over the last interval), `load.starting` submitted, the rest mostly finished; each running and
    submitted job's attempt has the token sbkj_bench<id>. Returns (setup, seconds)."""
    from server import db
    from server import models as m
    app = make_app(url)
    logging.getLogger("sbk").setLevel(logging.WARNING)   # the set-up's own requests: not the report's
    setup = _monitor_setup(app)
    began = time.monotonic()
    reqs, n = setup["requests"], load.jobs
    now = time.time()
    users = setup["users"]
    params = {"req": [r["id"] for r in reqs], "prod": [r["production_id"] for r in reqs],
              "sess": [r["session_id"] for r in reqs],
              "words": [" ".join([r["production"]] + r["words"]).lower() for r in reqs],
              "site": setup["sites"], "sname": [s.lower() for s in setup["site_names"]],
              "uid": [u[0] for u in users], "uname": [u[1] for u in users], "fin": FINISHED,
              "n": n, "running": load.running, "starting": load.running + load.starting,
              "prepared": load.running + load.starting + n // 50, "now": now, "hb": load.heartbeat_s,
              "last_seq": LAST_SEQ}
    # r: the job's place in a permutation of 0..n-1 (7919 is prime), so each status spreads over
    # every request, site and user; the request by runnum blocks, as submissions make them
    job_sql = f"""
        INSERT INTO {m.Job._meta.table_name} (runnum, events, request_id, production_id, session_id, site_id,
            user_id, test, log_to_db, status, step, message, error_code, gjid, backend, attempt, last_seq,
            heartbeat_s, heartbeat_at, wct, prepared_at, submitted_at, started_at, finished_at, search, stage, retries)
        SELECT 10000000 + g, 100000, (%(req)s::int[])[q], (%(prod)s::int[])[q], (%(sess)s::int[])[q],
            (%(site)s::int[])[1 + (g * 7) %% array_length(%(site)s::int[], 1)],
            (%(uid)s::int[])[1 + g / 5000 %% array_length(%(uid)s::int[], 1)], false, false, st,
            CASE WHEN st IN ('prepared', 'submitted') THEN NULL ELSE 'RUNNING-04' END,
            CASE WHEN st IN ('prepared', 'submitted') THEN '' ELSE 'payload' END,
            CASE WHEN st = 'done' THEN 0 WHEN st IN ('failed', 'sys-failed', 'timeout') THEN 30 END,
            CASE WHEN st = 'prepared' THEN NULL ELSE 'bench.' || g END, NULL, 1,
            CASE WHEN st = 'running' THEN %(last_seq)s WHEN st IN ('prepared', 'submitted') THEN 0 ELSE 20 END,
            %(hb)s, CASE WHEN st = 'running' THEN %(now)s - (g %% %(hb)s::int) END,
            CASE WHEN st IN ('running', 'prepared', 'submitted') THEN NULL ELSE 21000.0 END,
            to_timestamp(%(now)s - 86400 * 30 + g) AT TIME ZONE 'UTC',
            CASE WHEN st <> 'prepared' THEN to_timestamp(%(now)s - 86400 * 30 + g + 60) AT TIME ZONE 'UTC' END,
            CASE WHEN st NOT IN ('prepared', 'submitted')
                 THEN to_timestamp(%(now)s - 86400 + (g %% 80000)) AT TIME ZONE 'UTC' END,
            CASE WHEN st NOT IN ('prepared', 'submitted', 'running')
                 THEN to_timestamp(%(now)s - 3600 + (g %% 3000)) AT TIME ZONE 'UTC' END,
            (%(words)s::text[])[q] || ' ' || (%(uname)s::text[])[1 + g / 5000 %% array_length(%(uid)s::int[], 1)]
                || ' ' || (%(sname)s::text[])[1 + (g * 7) %% array_length(%(site)s::int[], 1)] || ' ' || (10000000 + g),
            '', 0
        FROM (SELECT g, 1 + (g - 1) * array_length(%(req)s::int[], 1) / %(n)s AS q,
                     CASE WHEN r < %(running)s THEN 'running' WHEN r < %(starting)s THEN 'submitted'
                          WHEN r < %(prepared)s THEN 'prepared'
                          ELSE (%(fin)s::text[])[1 + g %% array_length(%(fin)s::text[], 1)] END AS st
              FROM (SELECT g, (g::bigint * 7919) %% %(n)s AS r FROM generate_series(1, %(n)s) AS g) AS p) AS s
        ORDER BY g"""
    attempt_sql = f"""
        INSERT INTO {m.Attempt._meta.table_name} (job_id, number, token_hash, automatic, created_at)
        SELECT id, 1, CASE WHEN status IN ('running', 'submitted')
                           THEN encode(sha256(convert_to('sbkj_bench' || id, 'UTF8')), 'hex') END,
               false, prepared_at
        FROM {m.Job._meta.table_name}"""
    with app.app_context(), db.connection():
        with db.database.atomic():
            cur = db.database.cursor()
            cur.execute(job_sql, params)
            cur.execute(attempt_sql)
        conn = db.database.connection()
        conn.autocommit = True   # what autovacuum does to a settled table: statistics, the visibility map
        try:
            conn.cursor().execute("VACUUM ANALYZE")
        finally:
            conn.autocommit = False
        rows = list(m.Job.select(m.Job.id, m.Job.status).where(
            m.Job.status.in_(("running", "submitted"))).tuples())
    close_db()
    return setup, rows, time.monotonic() - began


def db_figures(url):
    """(database bytes, events stored, jobs by status) now."""
    import psycopg2
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database())")
            size = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM event")
            events = cur.fetchone()[0]
            cur.execute("SELECT status, count(*) FROM job GROUP BY status")
            statuses = dict(cur.fetchall())
    finally:
        conn.close()
    return size, events, statuses


# ---------------------------------------------------------------- the server

class Gunicorn(Server):
    """`gunicorn -c contrib/gunicorn.conf.py` on a free port, its own process group (stopped as a Server)."""

    def __init__(self, url, tmp, workers, worker_class, threads):
        from tests.infra.postgres import free_port
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SBK_")}
        env.update(SBK_DB=url, SBK_PUBLIC_URL=self.base, SBK_DATA_DIR=str(Path(tmp) / "sbk-data"),
                   PROMETHEUS_MULTIPROC_DIR=str(Path(tmp) / "metrics"))
        self.log = open(Path(tmp) / "gunicorn.log", "w")
        self.proc = subprocess.Popen([str(GUNICORN), "-c", str(ROOT / "contrib" / "gunicorn.conf.py"),
                                      "-b", f"127.0.0.1:{self.port}", "-w", str(workers), "-k", worker_class,
                                      "--threads", str(threads), "server:create_app()"],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            wait_for_health(self.base, self.proc, deadline_s=120)
        except AssertionError as exc:
            raise SystemExit(f"{exc}; see {self.log.name}") from None

    def errors(self):
        text = Path(self.log.name).read_text()
        return [line for line in text.splitlines() if "Traceback" in line or " 500 " in line][:5]


class Usage:
    """CPU seconds and peak RSS of process trees (gunicorn's, PostgreSQL's), sampled every second;
    the machine's CPU alongside (other users of the machine included)."""

    def __init__(self, roots):
        self.roots = roots   # {name: pid}
        self.cpu = {name: {} for name in roots}   # name -> {pid: (first cpu s, last cpu s)}
        self.rss = {name: 0 for name in roots}
        self._stop = threading.Event()
        self.machine = psutil.cpu_times()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self, pid):
        try:
            root = psutil.Process(pid)
            return [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def sample(self):
        for name, pid in self.roots.items():
            rss = 0
            for p in self._tree(pid):
                try:
                    t = p.cpu_times()
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                seen = self.cpu[name].get(p.pid)
                self.cpu[name][p.pid] = (seen[0] if seen else t.user + t.system, t.user + t.system)
            self.rss[name] = max(self.rss[name], rss)

    def _run(self):
        while not self._stop.wait(1.0):
            self.sample()

    def start(self):
        self.sample()
        self.began = time.monotonic()
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.sample()
        elapsed = time.monotonic() - self.began
        after = psutil.cpu_times()
        busy = sum(after) - after.idle - (sum(self.machine) - self.machine.idle)
        total = sum(after) - sum(self.machine)
        # a process born during the run counts from its first sample: its first second is missed
        return ({name: sum(last - first for first, last in pids.values()) / elapsed
                 for name, pids in self.cpu.items()}, dict(self.rss), busy / total if total else 0.0)


# ---------------------------------------------------------------- the managers

def manager_pages(setup, n):
    """(kind, path) of what a manager looks at: the job monitor's API shapes, the web pages."""
    api = [("monitor", "/api/v1/jobs?per_page=50&" + qs) for _, qs in monitor_shapes(setup, n)]
    production = setup["requests"][0]["production"]
    web = [("page", p) for p in ("/", "/productions", f"/productions/{production}", "/sites",
                                 f"/sites/{setup['site_names'][0]}", "/jobs", f"/jobs?status=running&site="
                                 f"{setup['site_names'][1]}", f"/requests/{setup['requests'][0]['id']}")]
    return api + web


def signed_in(base, token):
    session = requests.Session()
    page = session.get(base + "/signin", timeout=60).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = session.post(base + "/signin", data={"csrf": csrf, "token": token, "next": "/"}, allow_redirects=False,
                     timeout=60)
    if r.status_code != 302:
        raise SystemExit(f"sign-in failed: {r.status_code}")
    session.headers["Authorization"] = f"Bearer {token}"   # the API's; the pages use the session cookie
    return session


def manager(k, base, token, pages, think_s, until, out):
    """One person paging until `until`: each look a page 1, a job monitor's next page by cursor half
    the time; (kind, seconds, status) appended to `out`."""
    rnd = random.Random(k)
    session = signed_in(base, token)
    i = k
    while time.monotonic() < until:
        kind, path = pages[i % len(pages)]
        i += 1
        began = time.perf_counter()
        r = session.get(base + path, timeout=60)
        out.append((kind, time.perf_counter() - began, r.status_code))
        if kind == "monitor" and r.status_code == 200 and r.json().get("next") and rnd.random() < 0.5:
            began = time.perf_counter()
            r = session.get(base + path + f"&after={r.json()['next']}", timeout=60)
            out.append((kind, time.perf_counter() - began, r.status_code))
        pause = think_s * rnd.uniform(0.5, 1.5)
        if time.monotonic() + pause >= until:
            break
        time.sleep(pause)   # a person's think time (load shaping, not synchronisation)


# ---------------------------------------------------------------- the run

def run(load, tmp):
    """Load, serve, soak; print the report; return {"ok", ...figures}."""
    from server import db
    from server.auth import add_user
    print(f"bench_scale: {load.jobs:,} jobs, {load.running:,} running, {load.seconds:g} s, heartbeat every "
          f"{load.heartbeat_s:g} s, jobs of {load.job_hours:g} h, {load.managers} managers; "
          f"{os.cpu_count()} cores; {load_avg()}")   # load_avg says when the machine is busy
    cluster = start_postgres()
    server = None
    try:
        url = cluster.new_database()
        setup, active, load_s = bulk_load(url, load)
        jobs_file = Path(tmp) / "jobs.txt"
        with open(jobs_file, "w") as f:
            for job_id, status in active:
                f.write(f"{'R' if status == 'running' else 'S'} {job_id}\n")
        app = make_app(url)
        with app.app_context(), db.connection():
            token = add_user("bench-manager", ["Developer"])
        close_db()
        size0, events0, _ = db_figures(url)
        print(f"  loaded in {load_s:.0f} s; database {size0 / 2**20:,.0f} MiB")
        server = Gunicorn(url, tmp, load.workers, load.worker_class, load.threads)
        pages = manager_pages(setup, load.jobs)
        postmaster = int(Path(cluster.directory, "data", "postmaster.pid").read_text().split()[0])
        usage = Usage({"gunicorn": server.proc.pid, "postgres": postmaster}).start()
        seen, managers = [], []
        until = time.monotonic() + load.seconds
        for k in range(load.managers):
            t = threading.Thread(target=manager, args=(k, server.base, token, pages, load.think_s, until, seen),
                                 daemon=True)
            t.start()
            managers.append(t)
        rates = load.rates
        argv = ["wrk", "-t", "1", "-c", str(CONNECTIONS), "-d", f"{load.seconds:g}s", "--timeout", "30s",
                "-s", str(WRK_SCRIPT), server.base, "--", str(jobs_file), "1",
                *(f"{rates[k]:.4f}" for k in ("heartbeat", "step", "final", "start")),
                str(CONNECTIONS), f"{load.seconds:g}", str(LAST_SEQ + 1)]
        began = time.monotonic()
        out = subprocess.run(argv, capture_output=True, text=True, timeout=load.seconds + 120)
        if out.returncode != 0:
            raise SystemExit(f"wrk failed: {out.stderr[-2000:]}")
        wrk = json.loads(out.stdout.strip().splitlines()[-1])
        for t in managers:
            t.join(timeout=120)
        cpu, rss, machine = usage.stop()
        elapsed = time.monotonic() - began
        server_errors = server.errors()
        server.stop()
        server = None
        size1, events1, statuses = db_figures(url)
    finally:
        if server is not None:
            server.stop()
        cluster.stop()
    return report(load, wrk, seen, cpu, rss, machine, elapsed, size1 - size0, events1 - events0, statuses,
                  server_errors)


def report(load, wrk, seen, cpu, rss, machine, elapsed, grown, stored, statuses, server_errors):
    acked = wrk["requests"] - wrk["errors"]
    wanted = sum(load.rates.values())
    rate = acked / (wrk["duration_us"] / 1e6)
    pages = [s for kind, s, _ in seen]
    page_errors = sum(1 for _, _, status in seen if status != 200)
    by_kind = {k: [s for kind, s, _ in seen if kind == k] for k in ("monitor", "page")}
    cores = os.cpu_count()
    used = cpu["gunicorn"] + cpu["postgres"]
    figures = {
        "events_s": rate, "wanted_s": wanted, "event_p50_ms": wrk["p50_us"] / 1000,
        "event_p99_ms": wrk["p99_us"] / 1000, "event_errors": wrk["errors"], "acked": acked, "stored": stored,
        "pages": len(pages), "page_p50_ms": 1000 * percentile(pages, 50), "page_p99_ms": 1000 * percentile(pages, 99),
        "page_errors": page_errors, "cpu": cpu, "rss_mib": {k: v / 2**20 for k, v in rss.items()},
        "machine_busy": machine, "growth_mib_h": grown / 2**20 * 3600 / elapsed, "server_errors": server_errors}
    # a post wrk stopped waiting for may be stored too: at most one per connection
    kept = acked <= stored <= acked + CONNECTIONS
    checks = [
        ("p99 of event posts", f"{figures['event_p99_ms']:.1f} ms", f"<= {GOALS['event_p99_ms']:g} ms",
         figures["event_p99_ms"] <= GOALS["event_p99_ms"]),
        ("p99 of pages", f"{figures['page_p99_ms']:.0f} ms", f"<= {GOALS['page_p99_ms']:g} ms",
         figures["page_p99_ms"] <= GOALS["page_p99_ms"]),
        ("errors (posts, pages, server log)", f"{wrk['errors']}, {page_errors}, {len(server_errors)}", "0",
         wrk["errors"] == 0 and page_errors == 0 and not server_errors and bool(pages)),
        ("events/s", f"{rate:.0f}", f">= {GOALS['rate_share']:.0%} of {wanted:.0f}",
         rate >= GOALS["rate_share"] * wanted),
        ("gunicorn + PostgreSQL CPU", f"{used:.2f} cores", f"<= {GOALS['cpu_share'] * cores:.2f} of {cores}",
         used <= GOALS["cpu_share"] * cores),
        ("acknowledged events stored", f"{acked:,} acked, {stored:,} stored", "all", kept),
    ]
    print(f"\n  events posted by wrk: {wrk['sent']} (heartbeat/step/final/start), {rate:.1f}/s acknowledged "
          f"({wanted:.1f}/s wanted), p50 {figures['event_p50_ms']:.1f} ms, p99 {figures['event_p99_ms']:.1f} ms, "
          f"max {wrk['max_us'] / 1000:.0f} ms")
    for kind, values in by_kind.items():
        if values:
            print(f"  {kind:<8} {len(values):>5} pages, p50 {1000 * percentile(values, 50):.0f} ms, "
                  f"p99 {1000 * percentile(values, 99):.0f} ms")
    print(f"  CPU (cores): gunicorn {cpu['gunicorn']:.2f}, PostgreSQL {cpu['postgres']:.2f}; the machine "
          f"{machine:.0%} busy (others included); peak RSS MiB summed over processes (shared pages in "
          f"each): gunicorn {figures['rss_mib']['gunicorn']:.0f}, "
          f"PostgreSQL {figures['rss_mib']['postgres']:.0f}")
    print(f"  database growth: {figures['growth_mib_h']:.0f} MiB/hour; jobs now {statuses}")
    if server_errors:
        print("  server log: " + " | ".join(server_errors))
    print(f"\n  {'measure':<36} {'ours':>26} {'goal':>22}  met")
    for name, ours, goal, met in checks:
        print(f"  {name:<36} {ours:>26} {goal:>22}  {'yes' if met else 'NO'}")
    figures["ok"] = all(met for *_, met in checks)
    print(f"\nbench_scale: {'all goals met' if figures['ok'] else 'some goals NOT met'}; {load_avg()}")
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--running", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--heartbeat-s", type=float, default=1800.0, help="each running job's heartbeat interval")
    parser.add_argument("--job-hours", type=float, default=6.0, help="mean run time: sets the ends and starts a second")
    parser.add_argument("--managers", type=int, default=20)
    parser.add_argument("--think-s", type=float, default=5.0, help="a manager's mean pause between two pages")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--worker-class", default="gthread", choices=("gthread", "sync"),
                        help="gunicorn's; sync workers wait on each open connection (see the module doc)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    args = parser.parse_args(argv)
    load = Load(args.jobs, args.running, args.seconds, args.heartbeat_s, args.job_hours, args.managers,
                args.think_s, args.workers, args.worker_class, args.threads)
    if load.running + load.starting > load.jobs:
        parser.error("--running plus the jobs starting during the run exceed --jobs")
    tmp = tempfile.mkdtemp(prefix="bench-scale-")
    try:
        figures = run(load, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
