"""The database: one proxy the models bind to, URL parsing, writes, schema upgrades.

SQLite (the default) runs in WAL mode with a busy timeout, and every write
transaction starts with BEGIN IMMEDIATE: a deferred transaction that reads and
then writes can fail at once with "database is locked" when another writer
got there first, whatever the busy timeout says. PostgreSQL uses a small
connection pool and row locks (SELECT ... FOR UPDATE).
"""
import contextlib
import logging
import os
import time
import urllib.parse
from dataclasses import dataclass

import peewee
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

log = logging.getLogger("sbk.db")

database = peewee.DatabaseProxy()

DEFAULT_DB_URL = "sqlite:///sbk-data/sbk.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed `sqlite:///path` or `postgresql://user@host:port/db` URL."""
    kind: str          # sqlite | postgresql
    path: str = ""     # sqlite file (or ":memory:")
    name: str = ""
    user: str = ""
    password: str = ""
    host: str = ""
    port: int = 5432

    @classmethod
    def parse(cls, url):
        """Parse a database URL; raise ValueError with one clear sentence."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "sqlite":
            # sqlite:///rel/path and sqlite:////abs/path, as SQLAlchemy spells them
            path = parts.path[1:] if parts.path.startswith("/") else parts.path
            if not path:
                raise ValueError(f"database URL {url!r} names no SQLite file")
            return cls("sqlite", path=path)
        if parts.scheme in ("postgresql", "postgres"):
            name = parts.path.lstrip("/")
            if not name:
                raise ValueError(f"database URL {url!r} names no database")
            return cls("postgresql", name=name, user=urllib.parse.unquote(parts.username or ""),
                       password=urllib.parse.unquote(parts.password or ""),
                       host=parts.hostname or "127.0.0.1", port=parts.port or 5432)
        raise ValueError(f"database URL {url!r} must start with sqlite:/// or postgresql://")


class PostgresqlPool(PooledPostgresqlDatabase):
    """The pool, checking a connection with a round trip (SELECT 1) only when it has been idle.

    peewee pings every connection it hands out: one round trip per request, ~7% of an event
    post's cost (bench_server). A connection given back moments ago is alive unless the
    server died within that moment, the window HikariCP also trusts (aliveBypassWindowMs).
    """
    TRUSTED_FOR_S = 0.5

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._returned_at = {}   # connection key -> when it was last given back

    def _is_closed(self, conn):
        if conn.closed:
            return True
        if time.monotonic() - self._returned_at.get(self.conn_key(conn), float("-inf")) < self.TRUSTED_FOR_S:
            return False
        return super()._is_closed(conn)

    def _close(self, conn, close_conn=False):
        if not close_conn:
            self._returned_at[self.conn_key(conn)] = time.monotonic()
        super()._close(conn, close_conn)

    def _close_raw(self, conn):
        self._returned_at.pop(self.conn_key(conn), None)
        super()._close_raw(conn)


def connect(url):
    """A peewee database for `url` (not yet connected)."""
    u = DatabaseUrl.parse(url)
    if u.kind == "sqlite":
        if u.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(u.path)), exist_ok=True)
        # Pooled: closing the last connection to a WAL database checkpoints and fsyncs it,
        # which with a connection per request cost ~15 ms a write (bench_server: 160 -> ~1,500 req/s).
        return PooledSqliteDatabase(u.path, max_connections=32, stale_timeout=300, check_same_thread=False,
                                    timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, pragmas={
            "journal_mode": "wal",
            "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
            # NORMAL in WAL mode loses nothing on a process crash, only on power loss
            # of the host; INFRA.md measured it ~1.7x faster than FULL.
            "synchronous": "normal",
            "foreign_keys": 1,
        })
    kwargs = {"user": u.user or None, "host": u.host, "port": u.port}
    if u.password:
        kwargs["password"] = u.password
    return PostgresqlPool(u.name, max_connections=32, stale_timeout=300, timeout=30, **kwargs)


def bind(url):
    """Point the proxy at the database for `url`; return it."""
    db = connect(url)
    old = database.obj
    if old is not None and not old.is_closed():
        old.close()
    database.initialize(db)
    return db


def is_sqlite():
    return isinstance(database.obj, peewee.SqliteDatabase)


def write_transaction():
    """A transaction that writes: BEGIN IMMEDIATE on SQLite (see module doc)."""
    if is_sqlite():
        return database.atomic(lock_type="IMMEDIATE")
    return database.atomic()


def for_update(query):
    """`query` with FOR UPDATE where the database has row locks (SQLite locks it all)."""
    return query if is_sqlite() else query.for_update()


def advisory_lock(key):
    """Serialise a critical section across PostgreSQL sessions (a no-op on SQLite)."""
    if not is_sqlite():
        database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (key,))


@contextlib.contextmanager
def connection():
    """Open a connection for a block outside a request (CLI, reaper thread)."""
    opened = database.connect(reuse_if_open=True)
    try:
        yield database
    finally:
        if opened:
            database.close()
