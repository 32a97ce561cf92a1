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
