"""Schema creation and upgrades: ordered migrations recorded in `schema_version`.

Each migration runs once, in order, inside one write transaction; a database
at version N gets N+1 ... latest and keeps its data. A new schema change is a
new function appended to MIGRATIONS (playhouse.migrate for column changes),
never an edit of an old one.
"""
import logging

from . import db
from . import models as m

log = logging.getLogger("sbk.db")

# An arbitrary constant: the advisory lock that serialises concurrent upgrades
# (several gunicorn workers starting at once) on PostgreSQL.
UPGRADE_LOCK_KEY = 0x5B4


def _create_v1():
    """The whole SBK4 model."""
    m.database.create_tables(m.ALL_MODELS, safe=True)


def _seed_groups():
    """The seed's groups and their privileges."""
    for name, privileges in m.GROUP_PRIVILEGES.items():
        group, _ = m.Group.get_or_create(name=name)
        for privilege in privileges:
            m.GroupPrivilege.get_or_create(group=group, privilege=privilege)


MIGRATIONS = (
    (1, _create_v1),
    (2, _seed_groups),
)
LATEST = MIGRATIONS[-1][0]


def current_version():
    """The schema version of the bound database (0 when empty)."""
    if not m.database.table_exists(m.SchemaVersion._meta.table_name):
        return 0
    row = m.SchemaVersion.select(m.SchemaVersion.version).order_by(
        m.SchemaVersion.version.desc()).first()
    return row.version if row else 0


def upgrade():
    """Bring the bound database to the latest schema; return the versions applied."""
    applied = []
    with db.connection():
        with db.write_transaction():
            db.advisory_lock(UPGRADE_LOCK_KEY)
            m.database.create_tables([m.SchemaVersion], safe=True)
            version = current_version()
            for number, migrate in MIGRATIONS:
                if number > version:
                    log.info("applying schema migration %d (%s)", number, migrate.__doc__)
                    migrate()
                    m.SchemaVersion.create(version=number)
                    applied.append(number)
    return applied
