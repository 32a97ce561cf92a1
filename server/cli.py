"""`sbk`: serve, init-db, user add, reap, poll, cleanup, demo, completion, and the managers' client
commands (server/client).

Flags become SBK_* environment variables before anything starts, so the
server, its gunicorn workers and the reaper all read one configuration
(create_app's layers: defaults, mapping, environment).
"""
import argparse
import datetime
import logging
import os
import sys

from flask import Config

from . import auth, db, logs, metrics, migrations, reaper
from . import models as m
from .client import cli as client_commands
from .settings import layer

log = logging.getLogger("sbk")


def _settings():
    return layer(Config(os.getcwd()))


def _bound_settings():
    settings = _settings()
    db.bind(settings.db_url)
    return settings


def cmd_init_db(args):
    _bound_settings()
    applied = migrations.upgrade()
    with db.connection():
        version = migrations.current_version()
    print(f"schema at version {version}" + (f" (applied {', '.join(map(str, applied))})" if applied else
                                             " (already up to date)"))


def cmd_user_add(args):
    _bound_settings()
    migrations.upgrade()
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    if len(args.label) > 64:
        raise ValueError("--label is longer than 64 characters")
    if args.expires_days is not None and not 1 <= args.expires_days <= 3650:
        raise ValueError("--expires-days must be between 1 and 3650")
    expires_at = None if args.expires_days is None else (
        m.utcnow() + datetime.timedelta(days=args.expires_days)).replace(microsecond=0)
    with db.connection():
        token = auth.add_user(args.name, groups, args.label, expires_at)
    # The token itself is shown here once and stored nowhere.
    print(token)


def cmd_reap(args):
    settings = _bound_settings()
    reaped = reaper.reap_once(settings.heartbeat_multiple)
    print(f"timed out {len(reaped)} job(s)" + (f": {' '.join(map(str, reaped))}" if reaped else ""))
    from . import retries
    print(retries.one_shot(settings))   # the automatic retries that are due, the reaper's 100s among them


def _gunicorn_app(bind, workers, threads):
    """A gunicorn application on create_app (None when gunicorn is not installed)."""
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:
        return None

    class SbkGunicorn(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", bind)
            self.cfg.set("workers", workers)
            # Sync workers by default: with the database on the same node, threads only fight
            # over the GIL (bench_server with wrk: 2 sync workers 1,750 events/s on SQLite and
            # 1,330 on PostgreSQL, 2 x 4 threads 1,050-1,580, erratic). Threads pay off when
            # each request waits on a remote database's round trips.
            self.cfg.set("worker_class", "gthread" if threads > 1 else "sync")
            self.cfg.set("threads", threads)
            self.cfg.set("timeout", 60)
            self.cfg.set("accesslog", None)   # the app logs each request itself (server/logs.py)
            self.cfg.set("logger_class", logs.GunicornLogger)   # gunicorn's own lines in SBK_LOG_FORMAT
            self.cfg.set("child_exit", metrics.worker_exited)

        def load(self):
            # Runs in each worker after the fork: every worker binds its own database.
            from . import create_app
            return create_app({"AUTO_INIT": False})

    return SbkGunicorn()


def prepare_to_serve():
    """What a serving master does before its workers start (`sbk serve`, contrib/gunicorn.conf.py):
    its logging set up, the schema created or upgraded once, no connection left open for a worker to
    inherit, the metrics directory emptied. Returns the settings."""
    settings = _bound_settings()
    logs.configure(settings.log_format, force=True)
    migrations.upgrade()
    close_all = getattr(db.database.obj, "close_all", None)
    if close_all:
        close_all()
    metrics.prepare_multiprocess_dir()
    return settings


def start_housekeeping(settings):
    """The serving master's own threads: the reaper, and the removal requests' cleaner unless
    CLEANUP_INTERVAL_S is 0 (the batch poller runs in each worker: server/api/submissions.py)."""
    threads = [reaper.Reaper(settings.heartbeat_multiple, settings.reap_interval_s).start()]
    if settings.cleanup_interval_s > 0:
        threads.append(reaper.Cleaner(settings.cleanup_interval_s, settings.cleanup_timeout_s).start())
    return threads


def cmd_serve(args):
    settings = prepare_to_serve()
    bind = f"{args.host}:{args.port}"
    app = None if args.workers == 0 else _gunicorn_app(bind, args.workers, args.threads)
    if app is not None and args.workers > 1 and not metrics.multiprocess_dir():
        log.warning("PROMETHEUS_MULTIPROC_DIR is not set: /metrics shows the counts of whichever worker answers")
    if app is None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)   # its request lines: ours say more
    threads = start_housekeeping(settings)
    how = f"gunicorn, {args.workers} workers x {args.threads} threads" if app else "Flask development server"
    print(f"sbk serving on http://{bind} ({settings.db_url}; {how})", flush=True)
    try:
        if app is not None:
            app.run()
        else:
            from . import create_app
            create_app({"AUTO_INIT": False}).run(host=args.host, port=args.port, threaded=True)
    finally:
        for thread in threads:
            thread.stop()


def cmd_poll(args):
    from . import batch
    return batch.cmd_poll(_settings(), args.backend)


def cmd_cleanup(args):
    from . import removals
    return removals.cmd_cleanup(_settings())


def cmd_demo(args):
    from . import demo
    return demo.main(args.rest)


def build_parser():
    parser = argparse.ArgumentParser(prog="sbk", description="Severus bookkeeping server")
    parser.add_argument("--db", help="database URL (sqlite:///path or postgresql://user@host:port/db); env SBK_DB")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server (gunicorn when installed) and the reaper")
    serve.add_argument("--db", default=argparse.SUPPRESS, help="database URL; env SBK_DB")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=2,
                       help="gunicorn worker processes; 0 = Flask's threaded server (also used without gunicorn)")
    serve.add_argument("--threads", type=int, default=1,
                       help="threads per gunicorn worker (default 1: sync workers; more for a remote database)")
    serve.add_argument("--public-url", help="URL written into job descriptions; env SBK_PUBLIC_URL")
    serve.set_defaults(func=cmd_serve)
    init = sub.add_parser("init-db", help="create or upgrade the schema (keeps data)")
    init.add_argument("--db", default=argparse.SUPPRESS)
    init.set_defaults(func=cmd_init_db)
    user = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    add = user.add_parser("add", help="add a user (or a token to one) and print a new API token once")
    add.add_argument("name")
    add.add_argument("--groups", default="", help="comma list: webui, FastProdMgr, FullProdMgr, Shift, Developer")
    add.add_argument("--label", default="", help="what the token is for (shown in token lists)")
    add.add_argument("--expires-days", type=int, help="the token expires after this many days (default: never)")
    add.add_argument("--db", default=argparse.SUPPRESS)
    add.set_defaults(func=cmd_user_add)
    reap = sub.add_parser("reap", help="time out running jobs whose heartbeats stopped (code 100)")
    reap.add_argument("--db", default=argparse.SUPPRESS)
    reap.set_defaults(func=cmd_reap)
    poll = sub.add_parser("poll", help="one pass of the batch poller: jobs whose batch job ended "
                                        "without a final report become sys-failed (for a cron)")
    poll.add_argument("--db", default=argparse.SUPPRESS)
    poll.add_argument("--backend", action="append", help="only this backend (repeatable)")
    poll.set_defaults(func=cmd_poll)
    cleanup = sub.add_parser("cleanup", help="one pass over removal requests: delete from the SEs the files "
                                              "no catalog entry names (for a cron)")
    cleanup.add_argument("--db", default=argparse.SUPPRESS)
    cleanup.set_defaults(func=cmd_cleanup)
    demo = sub.add_parser("demo", help="run a small production on this machine", add_help=False)
    demo.add_argument("rest", nargs=argparse.REMAINDER)
    demo.set_defaults(func=cmd_demo)
    client_commands.add_commands(sub)   # the managers' client: me, session, ..., stats, activities
    client_commands.add_completion(sub, parser)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:   # the demo parses its own options
        from . import demo
        return demo.main(argv[1:])
    args = build_parser().parse_args(argv)
    if getattr(args, "db", None):
        os.environ["SBK_DB"] = args.db
    if getattr(args, "public_url", None):
        os.environ["SBK_PUBLIC_URL"] = args.public_url
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args) or 0
    except ValueError as exc:   # bad settings or database URL: one line, no traceback
        print(f"sbk: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
