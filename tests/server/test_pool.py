"""The PostgreSQL pool: a connection idle for a while is checked before it is handed out."""
import psycopg2

from server import db


def test_an_idle_connection_is_checked_and_a_dead_one_replaced(postgres_cluster, monkeypatch):
    pool = db.connect(postgres_cluster.new_database())
    try:
        pool.connect()
        first_pid = pool.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        pool.close()
        # just given back: handed out again without a round trip
        pool.connect()
        assert pool.execute_sql("SELECT pg_backend_pid()").fetchone()[0] == first_pid
        pool.close()
        # the server ends that session; once the connection is idle past the window, the
        # pool's check notices and opens a new one instead of failing the next request
        with psycopg2.connect(postgres_cluster.url("postgres")) as admin:
            admin.cursor().execute("SELECT pg_terminate_backend(%s)", (first_pid,))
        monkeypatch.setattr(db.PostgresqlPool, "TRUSTED_FOR_S", 0.0)
        pool.connect()
        assert pool.execute_sql("SELECT pg_backend_pid()").fetchone()[0] != first_pid
        pool.close()
    finally:
        pool.close_all()
