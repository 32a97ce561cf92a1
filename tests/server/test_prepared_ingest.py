"""On PostgreSQL the common report's statement runs prepared, once per session (server/jobs.py
_execute_prepared): it must store the same whatever the session and the process's record of it say."""
import pytest

from server import auth, db, jobs
from server import models as m
from shared.events import parse_events

from .conftest import event, started_job


def report(job_id, token, seq):
    return jobs.record_running(job_id, auth.hash_token(token), parse_events(event(seq, kind="heartbeat")))


def prepared_here():
    """The names of the statements this session holds (PostgreSQL's own list)."""
    return {name for (name,) in db.database.execute_sql("SELECT name FROM pg_prepared_statements").fetchall()}


def test_the_report_is_prepared_once_and_survives_a_session_that_lost_it(app, api, production, db_url):
    if db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's prepared statements")
    job_id, token = started_job(api, production)
    with app.app_context(), db.connection():
        conn = db.database.connection()
        assert prepared_here() == set()
        assert report(job_id, token, 1)["accepted"] == 1
        names = prepared_here()
        assert len(names) == 1 and names == jobs._PREPARED[(id(conn), conn.info.backend_pid)]
        assert report(job_id, token, 2)["accepted"] == 1     # EXECUTEd: nothing more prepared
        assert prepared_here() == names
        # the session lost it while the record says it has it: prepared again on the spot
        db.database.execute_sql("DEALLOCATE ALL")
        assert report(job_id, token, 3)["accepted"] == 1
        assert prepared_here() == names
        # the record forgot what the session holds: taken at the session's word
        jobs._PREPARED.clear()
        assert report(job_id, token, 4)["accepted"] == 1
        # inside a transaction (where a failed EXECUTE would abort it) the statement runs as it is
        db.database.execute_sql("DEALLOCATE ALL")
        with db.database.atomic():
            assert report(job_id, token, 5)["accepted"] == 1
        assert prepared_here() == set()
        # a token it does not take still matches nothing, prepared or not
        assert report(job_id, "sbkj_not-the-token", 6) is None
        assert [e.seq for e in m.Event.select().where(m.Event.job == job_id).order_by(m.Event.seq)] == \
            [1, 2, 3, 4, 5]
        assert m.Job.get_by_id(job_id).last_seq == 5
