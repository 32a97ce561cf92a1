"""bench_server's raw reference: the real sbk app plus one tokenless route, never shipped.

    python -m bench.raw_app --db URL [--host H] [--port N] [--workers N] [--threads N]

`create_raw_app()` builds the app `sbk serve` serves (server.create_app, every
route, hook and error handler included) and adds POST
/api/v1/bench/raw/<id>/events: one UPDATE of the job and one INSERT of the
events per request, through the same Flask machinery, connection handling and
database driver as POST /api/v1/jobs/<id>/events, writing the same two tables.
So the ratio of the two routes' rates, served by one process, measures what the
real route adds on top of the database's own limit.

The raw route checks no token: it exists only in this module, which the
shipped server (server/) never imports; nothing in sbk's settings enables it.

`main()` serves that app the way `sbk serve` does: the same gunicorn
application class (server.cli's, only its app factory swapped), the same
defaults for workers and threads, the schema upgraded and every connection
closed before the fork. It starts no reaper (bench_server never ran one long
enough for it to act).
"""
import argparse
import os
import sys
import time

from flask import Blueprint, jsonify, request

from server import create_app, db
from server import models as m
from server.api import PREFIX

RAW_RULE = "/bench/raw/<id:job_id>/events"
bp = Blueprint("bench_raw", __name__)


@bp.post(RAW_RULE)
def raw_events(job_id):
    body = request.get_json(force=True)
    items = body if isinstance(body, list) else [body]
    now = m.utcnow()
    rows = [(job_id, e["attempt"], e["seq"], e["time"], now, e["status"], e.get("kind", "step"),
             e.get("step"), e.get("message", "")) for e in items]
    table = m.Event._meta.table_name
    values = ", ".join(["(%s)" % ", ".join([db.database.param] * 9)] * len(rows))
    with db.write_transaction():
        db.database.execute_sql(
            f"UPDATE {m.Job._meta.table_name} SET status = 'running', last_seq = {db.database.param}, "
            f"heartbeat_at = {db.database.param} WHERE id = {db.database.param}",
            (max(r[2] for r in rows), time.time(), job_id))
        db.database.execute_sql(
            f"INSERT INTO {table} (job_id, attempt, seq, time, received_at, status, kind, step, message) "
            f"VALUES {values}", [v for r in rows for v in r])
    return jsonify({"accepted": len(rows)})


def create_raw_app(config=None):
    """server.create_app(config) with the raw route registered under /api/v1."""
    app = create_app(config)
    app.register_blueprint(bp, url_prefix=PREFIX)
    return app


def gunicorn_app(bind, workers, threads):
    """server.cli's gunicorn application (its worker settings) loading create_raw_app in each worker."""
    from server import cli
    sbk = cli._gunicorn_app(bind, workers, threads)
    if sbk is None:
        raise SystemExit("bench.raw_app needs gunicorn (it is in setup.py's install_requires)")

    class RawGunicorn(type(sbk)):
        def load(self):
            # Runs in each worker after the fork, like `sbk serve`'s.
            return create_raw_app({"AUTO_INIT": False})

    return RawGunicorn()


def main(argv=None):
    from server import cli, migrations
    serve = cli.build_parser().parse_args(["serve"])   # `sbk serve`'s defaults
    parser = argparse.ArgumentParser(prog="python -m bench.raw_app", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="database URL (becomes SBK_DB, as with sbk serve)")
    parser.add_argument("--host", default=serve.host)
    parser.add_argument("--port", type=int, default=serve.port)
    parser.add_argument("--workers", type=int, default=serve.workers)
    parser.add_argument("--threads", type=int, default=serve.threads)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1: the reference is measured under gunicorn")
    os.environ["SBK_DB"] = args.db
    settings = cli._bound_settings()
    migrations.upgrade()
    # Nothing opened here may leak into forked workers.
    close_all = getattr(db.database.obj, "close_all", None)
    if close_all:
        close_all()
    bind = f"{args.host}:{args.port}"
    print(f"bench raw app serving on http://{bind} ({settings.db_url}; gunicorn, {args.workers} workers x "
          f"{args.threads} threads)", flush=True)
    gunicorn_app(bind, args.workers, args.threads).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
