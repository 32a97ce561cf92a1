"""`sbk init-db`: creates the schema, upgrades it, keeps the data."""
import os
import subprocess
import sys

from server import db, migrations
from server import models as m

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sbk(*args, env=None):
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_init_db_twice_keeps_the_data(db_url):
    first = sbk("init-db", "--db", db_url)
    assert first.returncode == 0, first.stderr
    assert f"schema at version {migrations.LATEST}" in first.stdout
    token = sbk("user", "add", "alice", "--groups", "webui,FastProdMgr", env={"SBK_DB": db_url})
    assert token.returncode == 0 and token.stdout.startswith("sbku_"), token.stderr
    again = sbk("init-db", "--db", db_url)
    assert again.returncode == 0 and "already up to date" in again.stdout
    db.bind(db_url)
    with db.connection():
        user = m.User.get(m.User.name == "alice")
        assert sorted(g.name for g in m.Group.select().join(m.UserGroup).where(m.UserGroup.user == user)) == \
            ["FastProdMgr", "webui"]
        assert m.SchemaVersion.select().count() == migrations.LATEST
    db.database.close()
    if hasattr(db.database.obj, "close_all"):
        db.database.obj.close_all()


def test_an_old_database_is_upgraded_in_order(db_url, monkeypatch):
    db.bind(db_url)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
    assert migrations.upgrade() == [1]
    monkeypatch.undo()
    with db.connection():
        assert m.Group.select().count() == 0
    assert migrations.upgrade() == list(range(2, migrations.LATEST + 1))
    with db.connection():
        assert m.Group.get(m.Group.name == "Developer")
    assert migrations.upgrade() == []
    if hasattr(db.database.obj, "close_all"):
        db.database.obj.close_all()


def test_bad_database_url_is_one_line(tmp_path):
    r = sbk("init-db", "--db", "mysql://nope")
    assert r.returncode == 2 and r.stderr.strip().startswith("sbk: database URL") and "Traceback" not in r.stderr


def test_unknown_group_is_refused(db_url):
    r = sbk("user", "add", "bob", "--groups", "Wizards", "--db", db_url)
    assert r.returncode == 2 and "unknown group 'Wizards'" in r.stderr


def test_a_migration_that_landed_late_is_still_applied(db_url, monkeypatch):
    """A database that has 1, 2 and 4 (3 came later in the history) gets 3 on the next upgrade."""
    db.bind(db_url)
    without_3 = tuple(mig for mig in migrations.MIGRATIONS if mig[0] != 3)
    monkeypatch.setattr(migrations, "MIGRATIONS", without_3)
    assert 3 not in migrations.upgrade()
    monkeypatch.undo()
    assert migrations.upgrade() == [3]
    with db.connection():
        assert {row.version for row in m.SchemaVersion.select()} == set(range(1, migrations.LATEST + 1))
    if hasattr(db.database.obj, "close_all"):
        db.database.obj.close_all()


# The NOT NULL columns later migrations add, by the migration that adds them (a database made before it
# has none of them).
ADDED = {10: ((m.Request, "cores"), (m.Request, "memory_mb")),
         12: ((m.Request, "max_attempts"), (m.Request, "retry_backoff_s"), (m.Job, "retries"), (m.Attempt, "automatic")),
         14: ((m.Request, "steps"),),
         15: ((m.Request, "followup"), (m.Job, "stage"))}


def test_columns_are_added_to_a_database_whose_requests_have_jobs(api, production, db_url):
    """A database from before migrations 10, 12, 14 and 15, holding a request with jobs: `sbk init-db`
    adds their NOT NULL columns with their defaults (on SQLite without rebuilding the tables, which
    the jobs' references forbid) and keeps every row."""
    from .conftest import submit
    jobs = submit(api, production, runs=2)["job_ids"]
    with db.connection():
        for number, columns in ADDED.items():
            for model, name in columns:
                m.database.execute_sql(f'ALTER TABLE "{model._meta.table_name}" DROP COLUMN "{name}"')
            m.SchemaVersion.delete().where(m.SchemaVersion.version == number).execute()
    db.database.close()
    upgraded = sbk("init-db", "--db", db_url)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert "10, 12, 14, 15" in upgraded.stdout or all(str(n) in upgraded.stdout for n in ADDED), upgraded.stdout
    req = api.get(f"/requests/{production['request']['id']}").json
    assert (req["cores"], req["memory_mb"], req["max_attempts"], req["steps"], req["followup"]) == (1, 0.0, 3, [], {})
    assert [api.get(f"/jobs/{j}").json["status"] for j in jobs] == ["prepared", "prepared"]
    with db.connection():
        nullable = {c.name: c.null for c in m.database.get_columns(m.Job._meta.table_name)}
    assert nullable["stage"] is False and nullable["retries"] is False
