"""A throwaway PostgreSQL 15 cluster on a free loopback port (INFRA.md recipe).

initdb refuses root, so the cluster runs as `postgres`; its directory lives
directly under /tmp (pytest's own temp dirs are 0700 root and postgres could
not enter them). Stopped with `pg_ctl stop`.
"""
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field

PG_BIN = "/usr/lib/postgresql/15/bin"


def postgres_available():
    return os.path.exists(os.path.join(PG_BIN, "initdb"))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(*argv):
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(prefix + list(argv), check=True, capture_output=True, text=True, timeout=120)


@dataclass
class PostgresCluster:
    """A running cluster; new_database() hands out fresh empty databases."""
    directory: str
    port: int
    _names: itertools.count = field(default_factory=lambda: itertools.count(1))

    def url(self, name):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def new_database(self):
        """A fresh database; return its URL."""
        import psycopg2
        name = f"sbk_test_{next(self._names)}"
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def stop(self):
        _as_postgres(f"{PG_BIN}/pg_ctl", "-D", os.path.join(self.directory, "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster():
    """initdb + pg_ctl start; return the PostgresCluster."""
    directory = tempfile.mkdtemp(prefix="sbk-pg-", dir="/tmp")
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    data = os.path.join(directory, "data")
    _as_postgres(f"{PG_BIN}/initdb", "-D", data, "-A", "trust", "-U", "postgres")
    port = free_port()
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
    _as_postgres(f"{PG_BIN}/pg_ctl", "-D", data, "-o", options, "-l", os.path.join(directory, "log"),
                 "-w", "start")
    return PostgresCluster(directory, port)
