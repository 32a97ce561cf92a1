"""The web desk's pages over 1M jobs (issue 13): server time per page, against a bare route.

    python -m bench.bench_pages [--quick] [--db sqlite,postgresql]

1,000,000 jobs (20,000 with --quick) bulk-loaded as bench_server's job monitor
benchmark loads them (6 productions, 12 sites, 8 users), then each page fetched
through the real app by a signed-in Developer (Flask test client: routing, the
session cookie, the queries, Jinja), p50/p95 over repetitions. The reference,
in the same process, is a bare Flask route returning the same page's bytes: what
any page of that size costs here before our queries and templates.

Goal (issue 17): the productions list, the biggest site and home <= 1.5x the bare
route serving their bytes, on both databases (best of the repetitions, spread
printed: bench/gate.py). Every other page's figures are printed for the record.
"""
import argparse
import os
import re
import shutil
import sys
import tempfile
import time

from flask import Flask

from bench.bench_server import Databases, bulk_load, close_db, load_avg, percentile
from bench.gate import Gate

GOAL = ("<=", 1.5)
GATED = ("home", "productions", "big site")


def pages(setup):
    """(name, path[, form]) of the desk's pages, the biggest objects of the loaded data; with a form the
    page is that form's POST (the expert summary: a dry run over the biggest site)."""
    production = setup["requests"][0]["production"]
    return [
        ("home", "/"),
        ("productions", "/productions"),
        ("production", f"/productions/{production}"),
        ("requests", f"/requests?production={production}"),
        ("request", f"/requests/{setup['requests'][0]['id']}"),
        ("sites", "/sites"),
        ("big site", f"/sites/{setup['site_names'][0]}"),
        ("sessions", "/sessions"),
        ("session", "/sessions/FastSim"),
        ("expert init", "/submit/expert"),
        ("shift init", "/submit/shift"),
        ("expert summary", "/submit/expert", {
            "production": production, "bulk": "1", "b1.request": str(setup["requests"][0]["id"]),
            "b1.sites": setup["site_names"][0], "b1.runs": "10", "b1.events": "100", "do": "summary"}),
        ("job monitor", "/jobs"),
        ("job monitor, filtered", f"/jobs?status=failed&site={setup['site_names'][0]}"),
        ("error codes", "/error-codes"),
        ("people", "/people"),
        ("charts", "/charts"),
    ]


def signed_in_client(app, token):
    client = app.test_client()
    page = client.get("/signin").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = client.post("/signin", data={"csrf": csrf, "token": token, "next": "/"})
    if r.status_code != 302:
        raise SystemExit(f"sign-in failed: {r.status_code}")
    return client


def timed(client, path, reps, form=None):
    times, body = [], b""
    for _ in range(reps):
        began = time.perf_counter()
        r = client.get(path) if form is None else client.post(path, data=form)
        times.append(time.perf_counter() - began)
        if r.status_code != 200:
            raise SystemExit(f"GET {path}: {r.status_code} {r.get_data(as_text=True)[:300]}")
        body = r.get_data()
    return times, body


def bare_reference(body, reps):
    """The same bytes from a bare Flask route: the floor for a page of that size."""
    app = Flask("bare")
    app.add_url_rule("/page", "page", lambda: body)
    return timed(app.test_client(), "/page", reps)[0]


def bench(gate, kind, dbs, quick):
    from server import db
    from server.auth import add_user
    n = 20_000 if quick else 1_000_000
    reps = 5 if quick else 20
    app, load_s, setup = bulk_load(dbs.new(kind), n)
    with app.app_context(), db.connection():
        token = add_user("bench-pages", ["Developer"])
    client = signed_in_client(app, token)
    print(f"\nPages, {kind}: {n:,} jobs bulk-loaded in {load_s:.1f} s; {reps} repetitions; "
          f"server time p50/p95 ms (Flask test client); {load_avg()}")
    print(f"  {'page':<24} {'bytes':>8} {'ours':>15} {'bare route':>15} {'ratio p50':>9}")
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/").get_data(as_text=True)).group(1)
    for name, path, *form in pages(setup):
        form = dict(form[0], csrf=csrf) if form else None
        timed(client, path, 1, form)   # the first of a kind warms templates and plans
        ours, body = timed(client, path, reps, form)
        bare = bare_reference(body, reps)
        print(f"  {name:<24} {len(body):>8} {1000 * percentile(ours, 50):>6.1f}/{1000 * percentile(ours, 95):<7.1f} "
              f"{1000 * percentile(bare, 50):>6.2f}/{1000 * percentile(bare, 95):<7.2f} "
              f"{percentile(ours, 50) / max(percentile(bare, 50), 1e-9):>9.0f}")
        if name in GATED:
            gate.add(f"page {name} at {n:,} jobs, {kind}, vs a bare route serving its bytes",
                     [1000 * t for t in ours], [1000 * t for t in bare], GOAL, unit="ms")
    close_db()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k jobs, 5 repetitions, goals at half")
    parser.add_argument("--db", default="sqlite,postgresql", help="comma list: sqlite, postgresql")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-pages-")
    dbs = Databases(tmp)
    gate = Gate("bench_pages", args.quick)
    gate.start()
    try:
        for kind in [k.strip() for k in args.db.split(",") if k.strip()]:
            bench(gate, kind, dbs, args.quick)
    finally:
        dbs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return gate.finish()


if __name__ == "__main__":
    sys.exit(main())
