"""Schema creation and upgrades: ordered migrations recorded in `schema_version`.

Each migration runs once, in order, inside one write transaction; a database
at version N gets N+1 ... latest and keeps its data. A new schema change is a
new function appended to MIGRATIONS, never an edit of an old one. Each names
its tables, columns and indexes as they were when it was written
(server/frozen_tables.py, explicit SQL), never through today's models: a new
database then gets the same schema as an old one upgraded
(tests/server/test_migrations.py compares both with today's models).
"""
import logging

import peewee as pw
from playhouse.migrate import SchemaMigrator

from . import db
from . import frozen_tables as frozen
from . import models as m

log = logging.getLogger("sbk.db")

# An arbitrary constant: the advisory lock that serialises concurrent upgrades
# (several gunicorn workers starting at once) on PostgreSQL.
UPGRADE_LOCK_KEY = 0x5B4


def _create_v1():
    """The whole SBK4 model."""
    m.database.create_tables(frozen.V1, safe=True)


def _create_indexes(table, *indexes):
    """Plain indexes on `table`, each a tuple of column names, named as peewee names the models' ones."""
    for columns in indexes:
        m.database.execute_sql(f'CREATE INDEX IF NOT EXISTS "{table}_{"_".join(columns)}" ON "{table}" '
                               f'({", ".join(columns)})')


def _seed_groups():
    """The seed's groups and their privileges."""
    for name, privileges in m.GROUP_PRIVILEGES.items():
        group, _ = frozen.Group.get_or_create(name=name)
        for privilege in privileges:
            frozen.GroupPrivilege.get_or_create(group=group, privilege=privilege)


def _search_indexes():
    """Job monitor indexes: substring search of Job.search, user + error code, gjid."""
    _create_indexes("job", ("user_id", "error_code", "runnum"), ("gjid",))
    table, fts = m.Job._meta.table_name, m.JOB_SEARCH_FTS
    if not db.is_sqlite():
        # `search LIKE '%term%'` is served by a trigram GIN index (the test clusters are superuser;
        # elsewhere an administrator runs the CREATE EXTENSION once).
        m.database.execute_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        m.database.execute_sql(f"CREATE INDEX IF NOT EXISTS {table}_search_trgm ON {table} "
                               "USING gin (search gin_trgm_ops)")
        return
    # External content: the text stays in the job table only; the triggers give FTS5 the old
    # values it needs to delete. Updates that leave `search` alone (every job.save()) skip it.
    m.database.execute_sql(f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5("
                           f"search, content='{table}', content_rowid='id', tokenize='trigram')")
    m.database.execute_sql(f"CREATE TRIGGER IF NOT EXISTS {fts}_insert AFTER INSERT ON {table} BEGIN "
                           f"INSERT INTO {fts}(rowid, search) VALUES (new.id, new.search); END")
    m.database.execute_sql(f"CREATE TRIGGER IF NOT EXISTS {fts}_delete AFTER DELETE ON {table} BEGIN "
                           f"INSERT INTO {fts}({fts}, rowid, search) VALUES ('delete', old.id, old.search); END")
    m.database.execute_sql(f"CREATE TRIGGER IF NOT EXISTS {fts}_update AFTER UPDATE OF search ON {table} "
                           "WHEN old.search IS NOT new.search BEGIN "
                           f"INSERT INTO {fts}({fts}, rowid, search) VALUES ('delete', old.id, old.search); "
                           f"INSERT INTO {fts}(rowid, search) VALUES (new.id, new.search); END")
    m.database.execute_sql(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")


def _create_site_checks():
    """Node check results reported by `severus check --report`."""
    m.database.create_tables([frozen.SiteCheck], safe=True)


# The job monitor's indexes ending in runnum (models.Job.Meta) as of migration 5.
MONITOR_PAGE_INDEXES = (("status", "runnum"), ("site_id", "runnum"), ("site_id", "status", "runnum"),
                        ("production_id", "status", "runnum"), ("request_id", "runnum"), ("user_id", "runnum"),
                        ("error_code", "runnum"), ("user_id", "error_code", "runnum"))


def _covering_page_indexes():
    """PostgreSQL: the job monitor's indexes ending in runnum also hold the job id."""
    if db.is_sqlite():
        return   # an SQLite index entry holds the rowid, the job id, already
    # A page's ids then come from the index alone. Without them, PostgreSQL's planner found the
    # composite index dearer than walking the runnum index past other productions' jobs, which it
    # takes to be spread evenly (production + status at 1M jobs: 70-120 ms, now < 1 ms). Same
    # names: the models' index declarations stay satisfied.
    table = m.Job._meta.table_name
    for columns in MONITOR_PAGE_INDEXES:
        name = f"{table}_{'_'.join(columns)}"
        m.database.execute_sql(f"DROP INDEX IF EXISTS {name}")
        m.database.execute_sql(f"CREATE INDEX {name} ON {table} ({', '.join(columns)}) INCLUDE (id)")


def _summary_indexes():
    """Indexes that answer the detail pages' counts and sums without reading jobs (models.Job.Meta)."""
    _create_indexes("job", ("request_id", "status"), ("site_id", "production_id", "events"),
                    ("status", "finished_at", "events"))


def _removals():
    """Removal requests: files on SEs no catalog entry names, for the server to delete."""
    m.database.create_tables([frozen.Removal], safe=True)
    # Both are looked up by surl: a removal waits while a replica names its file, and one
    # file is asked for once. PostgreSQL: a hash index (a long multibyte surl can pass btree's row limit).
    for model in (m.Replica, m.Removal):
        table = model._meta.table_name
        using = "" if db.is_sqlite() else "USING hash "
        m.database.execute_sql(f"CREATE INDEX IF NOT EXISTS {table}_surl ON {table} {using}(surl)")


def _site_session_activity():
    """A site's last activity per session (SiteSession.last_activity), and a start for both."""
    _add_missing_columns("site_session", last_activity=pw.DateTimeField(null=True))
    # the table as this migration leaves it (rows are written through it, not today's model)
    site_session = frozen.columns("site_session", site=pw.IntegerField(column_name="site_id"),
                                  session=pw.IntegerField(column_name="session_id"),
                                  enabled=pw.BooleanField(default=True), supported=pw.BooleanField(default=True),
                                  last_activity=pw.DateTimeField(null=True))
    # Until now nothing wrote a last activity. The newest job prepared at a site for a session stands
    # in for its last submission; a site's own last submission was recorded all along.
    job = frozen.Job
    newest = job.select(job.site, job.session, m.fn.MAX(job.prepared_at)).group_by(job.site, job.session).tuples()
    for site_id, session_id, when in newest:
        if isinstance(when, str):   # SQLite gives an aggregate's text as it is stored
            when = job.prepared_at.python_value(when)
        site_session.insert(site=site_id, session=session_id, last_activity=when).on_conflict(
            conflict_target=[site_session.site, site_session.session],
            update={site_session.last_activity: when}, where=site_session.last_activity.is_null()).execute()
    site = frozen.Site
    site.update(last_activity=site.last_submission).where(site.last_activity.is_null()).execute()


def _add_missing_columns(table, **fields):
    """Add `fields` (name: a peewee field, as the migration adding them defines it) to `table` where
    missing (a database made by the migration 1 of a version before it was frozen has them already).

    A NOT NULL column with a default is added with its default in the ALTER TABLE itself (both
    databases take it): playhouse would add it on SQLite by rebuilding the table, and dropping the
    old table cascades to the rows that refer to it (SQLite refuses, "database table is locked",
    as soon as a request has jobs)."""
    model = frozen.columns(table, **fields)
    present = {c.name for c in m.database.get_columns(table)}
    migrator = SchemaMigrator.from_database(m.database.obj)
    for name in fields:
        field = model._meta.fields[name]
        if field.column_name in present:
            continue
        if field.null or field.default is None:
            migrator.add_column(table, field.column_name, field).run()
            continue
        ctx = m.database.obj.get_sql_context()
        column, _ = ctx.sql(field.ddl(ctx)).query()
        m.database.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN {column} DEFAULT {_literal(field)}')


def _literal(field):
    """The field's default as an SQL literal."""
    value = field.db_value(field.default() if callable(field.default) else field.default)
    if isinstance(value, bool):
        return ("1" if value else "0") if db.is_sqlite() else ("TRUE" if value else "FALSE")
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


# The job counters' triggers (models.JobCount). A row moves only when a counted column changes: the
# hot path (heartbeats: step, message, last_seq) fires none of them.
COUNTED = ("status", "request_id", "production_id", "site_id", "user_id", "events", "wct")
SQLITE_COUNT = ("INSERT INTO {c} (request_id, production_id, site_id, user_id, status, jobs, events, wct) "
                "VALUES ({r}.request_id, {r}.production_id, {r}.site_id, COALESCE({r}.user_id, 0), {r}.status, {n}, "
                "{n} * {r}.events, {n} * COALESCE({r}.wct, 0)) "
                "ON CONFLICT (request_id, site_id, user_id, status) DO UPDATE SET jobs = jobs + excluded.jobs, "
                "events = events + excluded.events, wct = wct + excluded.wct;")
PG_COUNT_FUNCTION = """
CREATE OR REPLACE FUNCTION {c}_add(r integer, p integer, s integer, u integer, st varchar, n integer, ev bigint,
                                   w double precision) RETURNS void AS $$
BEGIN
  INSERT INTO {c} (request_id, production_id, site_id, user_id, status, jobs, events, wct)
  VALUES (r, p, s, COALESCE(u, 0), st, n, n * ev, n * COALESCE(w, 0))
  ON CONFLICT (request_id, site_id, user_id, status) DO UPDATE SET jobs = {c}.jobs + EXCLUDED.jobs,
    events = {c}.events + EXCLUDED.events, wct = {c}.wct + EXCLUDED.wct;
END $$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION {c}_row() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM {c}_add(OLD.request_id, OLD.production_id, OLD.site_id, OLD.user_id, OLD.status, -1, OLD.events, OLD.wct);
  -- two rows in one fixed order (by status), so two jobs moving between the same two rows in
  -- opposite directions cannot deadlock each other
  ELSIF OLD.status <= NEW.status THEN
    PERFORM {c}_add(OLD.request_id, OLD.production_id, OLD.site_id, OLD.user_id, OLD.status, -1, OLD.events, OLD.wct);
    PERFORM {c}_add(NEW.request_id, NEW.production_id, NEW.site_id, NEW.user_id, NEW.status, 1, NEW.events, NEW.wct);
  ELSE
    PERFORM {c}_add(NEW.request_id, NEW.production_id, NEW.site_id, NEW.user_id, NEW.status, 1, NEW.events, NEW.wct);
    PERFORM {c}_add(OLD.request_id, OLD.production_id, OLD.site_id, OLD.user_id, OLD.status, -1, OLD.events, OLD.wct);
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql;
-- a submission inserts thousands of jobs in a few statements: one upsert per statement and key
CREATE OR REPLACE FUNCTION {c}_inserted() RETURNS trigger AS $$
BEGIN
  INSERT INTO {c} (request_id, production_id, site_id, user_id, status, jobs, events, wct)
  SELECT request_id, MIN(production_id), site_id, COALESCE(user_id, 0), status, COUNT(*), SUM(events),
         SUM(COALESCE(wct, 0))
  FROM new_jobs GROUP BY request_id, site_id, COALESCE(user_id, 0), status ORDER BY 1, 3, 4, 5
  ON CONFLICT (request_id, site_id, user_id, status) DO UPDATE SET jobs = {c}.jobs + EXCLUDED.jobs,
    events = {c}.events + EXCLUDED.events, wct = {c}.wct + EXCLUDED.wct;
  RETURN NULL;
END $$ LANGUAGE plpgsql;
"""


def _job_counts():
    """Sessions' user settings, token labels and expiry, retired releases, site resets, and the job counters."""
    _add_missing_columns("user", auto_sub=pw.BooleanField(default=True))
    _add_missing_columns("api_token", label=pw.CharField(max_length=64, default=""),
                         expires_at=pw.DateTimeField(null=True))
    _add_missing_columns("software", retired=pw.BooleanField(default=False))
    _add_missing_columns("site", failed_reset_at=pw.DateTimeField(null=True))
    m.database.create_tables([frozen.JobCount], safe=True)
    job, c = m.Job._meta.table_name, m.JobCount._meta.table_name
    changed = " OR ".join(f"old.{col} IS {'NOT' if db.is_sqlite() else 'DISTINCT FROM'} new.{col}"
                          for col in COUNTED)
    if db.is_sqlite():
        m.database.execute_sql(f"CREATE TRIGGER IF NOT EXISTS {c}_insert AFTER INSERT ON {job} BEGIN "
                               + SQLITE_COUNT.format(c=c, r="new", n=1) + " END")
        m.database.execute_sql(f"CREATE TRIGGER IF NOT EXISTS {c}_delete AFTER DELETE ON {job} BEGIN "
                               + SQLITE_COUNT.format(c=c, r="old", n=-1) + " END")
        m.database.execute_sql(f"CREATE TRIGGER IF NOT EXISTS {c}_update AFTER UPDATE OF {', '.join(COUNTED)} "
                               f"ON {job} WHEN {changed} BEGIN " + SQLITE_COUNT.format(c=c, r="old", n=-1)
                               + " " + SQLITE_COUNT.format(c=c, r="new", n=1) + " END")
    else:
        m.database.execute_sql(PG_COUNT_FUNCTION.format(c=c))
        m.database.execute_sql(f"DROP TRIGGER IF EXISTS {c}_insert ON {job}")
        m.database.execute_sql(f"CREATE TRIGGER {c}_insert AFTER INSERT ON {job} REFERENCING NEW TABLE AS new_jobs "
                               f"FOR EACH STATEMENT EXECUTE FUNCTION {c}_inserted()")
        m.database.execute_sql(f"DROP TRIGGER IF EXISTS {c}_change ON {job}")
        m.database.execute_sql(f"CREATE TRIGGER {c}_change AFTER UPDATE OF {', '.join(COUNTED)} ON {job} "
                               f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION {c}_row()")
        m.database.execute_sql(f"DROP TRIGGER IF EXISTS {c}_delete ON {job}")
        m.database.execute_sql(f"CREATE TRIGGER {c}_delete AFTER DELETE ON {job} "
                               f"FOR EACH ROW EXECUTE FUNCTION {c}_row()")
    # the jobs already there, counted once (the table is rebuilt: the upgrade runs in one transaction)
    frozen.JobCount.delete().execute()
    m.database.execute_sql(
        f"INSERT INTO {c} (request_id, production_id, site_id, user_id, status, jobs, events, wct) "
        f"SELECT request_id, MIN(production_id), site_id, COALESCE(user_id, 0), status, COUNT(*), SUM(events), "
        f"SUM(COALESCE(wct, 0)) FROM {job} GROUP BY request_id, site_id, COALESCE(user_id, 0), status")


def _request_resources():
    """Requests' cores and memory per job, for the batch system's request."""
    _add_missing_columns("request", cores=pw.IntegerField(default=1), memory_mb=pw.DoubleField(default=0.0))


def _shared_areas_and_images():
    """A release in a read-only shared area (Software.path) and a session's container image."""
    _add_missing_columns("software", path=pw.CharField(max_length=1024, default=""))
    _add_missing_columns("session", container_image=pw.CharField(max_length=1024, default=""))


def _retries():
    """Requests' retry policy, a job's scheduled retry and automatic retries, an attempt's origin (issue 15)."""
    _add_missing_columns("request", max_attempts=pw.IntegerField(default=3),
                         retry_backoff_s=pw.DoubleField(default=600.0))
    _add_missing_columns("job", retry_at=pw.DoubleField(null=True), retries=pw.IntegerField(default=0))
    _add_missing_columns("attempt", automatic=pw.BooleanField(default=False))
    _create_indexes("job", ("retry_at",))


def _splitting():
    """A request's split (files per job) and each job's own input slice (issue 15)."""
    _add_missing_columns("request", files_per_job=pw.IntegerField(default=0))
    _add_missing_columns("job", input_paths=pw.TextField(null=True))   # JSON; nullable: a plain ADD COLUMN


def _step_templates():
    """Sessions' step templates and the steps a request chooses (issue 15)."""
    m.database.create_tables([frozen.StepTemplate], safe=True)
    _add_missing_columns("request", steps=pw.TextField(default="[]"))   # JSON


def _followup_stages():
    """Requests' follow-up stages and the stage a job runs for (issue 15)."""
    _add_missing_columns("request", followup=pw.TextField(default="{}"))   # JSON
    _add_missing_columns("job", stage=pw.CharField(max_length=64, default=""))


MIGRATIONS = (
    (1, _create_v1),
    (2, _seed_groups),
    (3, _search_indexes),
    (4, _create_site_checks),
    (5, _covering_page_indexes),
    (6, _summary_indexes),
    (7, _removals),
    (8, _site_session_activity),
    (9, _job_counts),
    (10, _request_resources),
    (11, _shared_areas_and_images),
    (12, _retries),
    (13, _splitting),
    (14, _step_templates),
    (15, _followup_stages),
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
    """Bring the bound database to the latest schema; return the versions applied.

    Every migration not yet recorded is applied, in order: one that landed
    with a lower number than one already applied is not skipped.
    """
    applied = []
    with db.connection():
        with db.write_transaction():
            db.advisory_lock(UPGRADE_LOCK_KEY)
            m.database.create_tables([frozen.SchemaVersion], safe=True)
            done = {row.version for row in frozen.SchemaVersion.select(frozen.SchemaVersion.version)}
            for number, migrate in MIGRATIONS:
                if number not in done:
                    log.info("applying schema migration %d (%s)", number, migrate.__doc__)
                    migrate()
                    frozen.SchemaVersion.create(version=number)
                    applied.append(number)
    return applied