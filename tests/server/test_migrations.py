"""`sbk init-db`: creates the schema, upgrades it, keeps the data."""
import datetime
import os
import re
import subprocess
import sys

import pytest

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


def _v1_rows():
    """A little of everything a version-1 database held, written through the frozen v1 tables."""
    from server import frozen_tables as f
    now = datetime.datetime(2026, 11, 21, 6, 30)
    user = f.User.insert(name="alice", created_at=now).execute()
    session = f.Session.insert(name="FastSim", description="", payload_module="fastsim", created_at=now).execute()
    software = f.Software.insert(session=session, name="FastSim", version="V1", revision=0, lfn="/sw/fs.tgz",
                                 adler32="0badcafe", workdir="fs", exe="run.sh", env="{}", created_at=now).execute()
    production = f.Production.insert(name="prod-v1", session=session, software=software, status="open",
                                     is_test=False, note="", created_by=user, created_at=now).execute()
    request = f.Request.insert(
        production=production, parameters='{"Generator":"B0"}', params_key='{"Generator":"B0"}', priority=0,
        min_runnum=1, required_events=100, events_per_job=50, num_jobs=2, event_time_s=1.5, max_wct_s=3600.0,
        max_rss_mb=0.0, stall_s=0.0, input_mode="NONE", input_paths="[]", output_lfn="/prod-v1", output_abs="",
        output_sites="[]", output_patterns='["*.root"]', note="", status="running", created_at=now).execute()
    site = f.Site.insert(name="INFN-T1", description="", threshold_prepared=0, threshold_running=0,
                         threshold_failed=0, bunch_size=50, se="{}", last_submission=now, created_at=now).execute()
    for runnum, status, wct in ((1, "done", 40.5), (2, "running", None)):
        job = f.Job.insert(runnum=runnum, events=50, request=request, production=production, session=session,
                           site=site, user=user, test=False, log_to_db=False, status=status, message="",
                           attempt=1, last_seq=3, heartbeat_s=300.0, wct=wct, search=f"prod-v1 {runnum}",
                           prepared_at=now).execute()
        f.Attempt.insert(job=job, number=1, token_hash=f"{runnum:064d}", created_at=now).execute()
        f.Event.insert(job=job, attempt=1, seq=1, time=1.7e9, received_at=now, status="running", kind="start",
                       message="").execute()
    lfn = f.CatalogFile.insert(lfn="/prod-v1/1.root", size=10, adler32="00000001", created_at=now).execute()
    f.Replica.insert(file=lfn, site="INFN-T1", surl="root://se//prod-v1/1.root", job=1, attempt=1,
                     created_at=now).execute()


def _schema(tables):
    """Columns (type, nullability, default, primary key) and indexes (columns, unique) of `tables`."""
    columns, indexes = {}, {}
    for table in tables:
        for c in m.database.get_columns(table):
            columns[table, c.name] = (c.data_type.lower(), c.null, c.default, c.primary_key)
        for i in m.database.get_indexes(table):
            indexes[i.name] = (table, tuple(i.columns), i.unique)
    return columns, indexes


def _default(text):
    """A column's default as the database reports it, as plain text ('x'::character varying -> x)."""
    text = re.sub(r"::[a-z ]+$", "", str(text).lower()).strip("'")
    return {"true": "1", "false": "0"}.get(text, text)


@pytest.fixture()
def second_db_url(db_url, request, tmp_path):
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/fresh.db"
    return request.getfixturevalue("postgres_cluster").new_database()


def test_the_oldest_database_with_data_upgrades_to_the_schema_of_todays_models(db_url, second_db_url, monkeypatch):
    """Migration 1 makes the v1 tables (frozen), which hold data; the upgrade to the latest keeps it, and the
    schema then is the one today's models make in an empty database: the same columns with the same types,
    nullability and indexes. Only what the models cannot declare differs: the upgrade's indexes on surl and
    the search index, and the defaults ALTER TABLE wrote for the NOT NULL columns it added (the models')."""
    db.bind(db_url)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
    assert migrations.upgrade() == [1]
    monkeypatch.undo()
    with db.connection():
        assert "cores" not in {c.name for c in m.database.get_columns("request")}   # the v1 table, not today's
        _v1_rows()
    assert migrations.upgrade() == list(range(2, migrations.LATEST + 1))
    tables = [model._meta.table_name for model in m.ALL_MODELS]
    with db.connection():
        upgraded = _schema(tables)
        req = m.Request.get()
        assert (req.cores, req.memory_mb, req.max_attempts, req.retry_backoff_s, req.files_per_job, req.steps,
                req.followup, req.parameters) == (1, 0.0, 3, 600.0, 0, [], {}, {"Generator": "B0"})
        jobs = list(m.Job.select().order_by(m.Job.runnum))
        assert [(j.status, j.wct, j.retries, j.stage, j.input_paths, j.retry_at) for j in jobs] == \
            [("done", 40.5, 0, "", None, None), ("running", None, 0, "", None, None)]
        assert sorted((c.status, c.jobs, c.events) for c in m.JobCount.select()) == [("done", 1, 50), ("running", 1, 50)]
        assert m.SiteSession.get().last_activity == datetime.datetime(2026, 11, 21, 6, 30)
        assert m.User.get().auto_sub is True and m.Attempt.select().where(m.Attempt.automatic).count() == 0
        assert m.Replica.get().surl == "root://se//prod-v1/1.root" and m.Event.select().count() == 2
        assert m.Group.get(m.Group.name == "Developer")
    db.database.close()

    db.bind(second_db_url)
    with db.connection():
        m.database.create_tables(m.ALL_MODELS)
        fresh = _schema(tables)
    db.database.close()

    up_columns, up_indexes = upgraded
    fresh_columns, fresh_indexes = fresh
    assert sorted(up_columns) == sorted(fresh_columns)
    for key, (kind, null, default, pk) in up_columns.items():
        assert (kind, null, pk) == fresh_columns[key][:2] + fresh_columns[key][3:], key
        assert fresh_columns[key][2] is None or pk, key      # the models write no DEFAULT
        if default is not None and not pk:                   # one an ALTER TABLE wrote: the model's
            table, name = key
            field = next(mod for mod in m.ALL_MODELS if mod._meta.table_name == table)._meta.columns[name]
            assert not field.null and _default(default) == _default(migrations._literal(field)), (key, default)
    extra = {"replica_surl", "removal_surl"} | (set() if db_url.startswith("sqlite") else {"job_search_trgm"})
    assert set(up_indexes) == set(fresh_indexes) | extra
    for name, (table, columns, unique) in fresh_indexes.items():
        assert up_indexes[name][0] == table and up_indexes[name][2] == unique, name
        # PostgreSQL: migration 5's page indexes hold the job id too (INCLUDE)
        assert up_indexes[name][1] in (columns, columns + ("id",)), (name, up_indexes[name], columns)
    if hasattr(db.database.obj, "close_all"):
        db.database.obj.close_all()
