"""The job counters (models.JobCount, kept by triggers) equal a GROUP BY over the jobs after every kind of change."""
from server import counts, db, migrations
from server import models as m

from .conftest import event, started_job, submit


def truth():
    """What the counters must say: a GROUP BY over the jobs, zero rows left out."""
    rows = (m.Job.select(m.Job.request, m.Job.production, m.Job.site, m.fn.COALESCE(m.Job.user, 0), m.Job.status,
                         m.fn.COUNT(m.Job.id), m.fn.SUM(m.Job.events), m.fn.SUM(m.fn.COALESCE(m.Job.wct, 0)))
            .group_by(m.Job.request, m.Job.production, m.Job.site, m.fn.COALESCE(m.Job.user, 0), m.Job.status)
            .tuples())
    return {(r, p, s, u, st): (n, int(e), round(float(w), 6)) for r, p, s, u, st, n, e, w in rows}


def counted():
    C = m.JobCount
    return {(c.request_id, c.production_id, c.site_id, c.user_id, c.status): (c.jobs, c.events, round(c.wct, 6))
            for c in C.select().where(C.jobs != 0)}


def check():
    with db.connection():
        assert counted() == truth()


def test_every_change_of_a_job_moves_its_count(api, production):
    submit(api, production, runs=3)
    submit(api, production, runs=2, sites=("INFN-TORINO",), test=True)
    check()
    job_id, token = started_job(api, production)  
    job = api.as_(token)
    assert job.post(f"/jobs/{job_id}/events", json=event(1, step="RUNNING-04")).status_code == 200
    check()
    assert job.post(f"/jobs/{job_id}/events", json=event(2, "failed", code=30, metrics={"wct_s": 12.5})).status_code == 200
    check()
    assert api.post(f"/jobs/{job_id}/resubmit").status_code == 200
    check()
    other = submit(api, production, runs=1)["job_ids"][0]
    assert api.post(f"/jobs/{other}/kill").status_code == 200
    check()
    with db.connection(), db.write_transaction():          # a raw bulk change, as the reaper or an admin might
        m.Job.update(site=m.Site.get(name="INFN-TORINO").id, events=m.Job.events + 1).where(
            m.Job.status == "prepared").execute()
    check()
    with db.connection(), db.write_transaction():
        m.Job.delete().where(m.Job.status == "failed").execute()
    check()


def test_counts_read_the_counters(api, production):
    submit(api, production, runs=2)
    with db.connection():
        assert counts.production_jobs(m.Production.get(name=production["production"]).id) == {"prepared": 2}
        assert counts.jobs_by_site() == {"INFN-T1": {"prepared": 2}}
        assert counts.session_stats("dev") == [{"session": "FastSim", "user": "dev", "jobs": 2, "events": 0,
                                                "wct": 0.0}]


def test_the_upgrade_counts_the_jobs_already_there(api, production):
    submit(api, production, runs=4)
    with db.connection(), db.write_transaction():
        m.JobCount.delete().execute()
        migrations._job_counts()        # as on a database that had jobs before migration 9
    check()
