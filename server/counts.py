"""The pages' job counts, read from the counters the database keeps (models.JobCount, migration 9).

A page at 1M jobs cannot afford to read the jobs for its totals (a big site: 200-330 ms); the
counters are changed by triggers in the same transaction as the jobs, so they are never stale.
"""
from shared.states import Status

from . import models as m

C = m.JobCount


def _by_status(query):
    return {status: int(n) for status, n in query.group_by(C.status).having(m.fn.SUM(C.jobs) > 0).tuples()}


def production_jobs(production_id):
    """{status: jobs} of one production."""
    return _by_status(C.select(C.status, m.fn.SUM(C.jobs)).where(C.production_id == production_id))


def request_jobs(request_id):
    """{status: jobs} of one request."""
    return _by_status(C.select(C.status, m.fn.SUM(C.jobs)).where(C.request_id == request_id))


def site_jobs(site_id):
    """{status: jobs} at one site."""
    return _by_status(C.select(C.status, m.fn.SUM(C.jobs)).where(C.site_id == site_id))


def jobs_by_site():
    """{site name: {status: jobs}}."""
    out = {}
    for site, status, n in (C.select(m.Site.name, C.status, m.fn.SUM(C.jobs))
                            .join(m.Site, on=(m.Site.id == C.site_id))
                            .group_by(m.Site.name, C.status).having(m.fn.SUM(C.jobs) > 0).tuples()):
        out.setdefault(site, {})[status] = int(n)
    return out


def site_productions(site_id):
    """{production id: (jobs, events)} at one site."""
    return {p: (int(n), int(e or 0)) for p, n, e in (
        C.select(C.production_id, m.fn.SUM(C.jobs), m.fn.SUM(C.events)).where(C.site_id == site_id)
        .group_by(C.production_id).having(m.fn.SUM(C.jobs) > 0).tuples())}


def session_stats(user=None):
    """Per session and user (one user when named): jobs launched (all), events generated (done jobs'
    only: a prepared, running or failed job generated none) and total wct (every job's)."""
    done = m.Case(None, [(C.status == Status.DONE.value, C.events)], 0)
    query = (C.select(m.Session.name, m.User.name, m.fn.SUM(C.jobs), m.fn.SUM(done), m.fn.SUM(C.wct))
             .join(m.Production, on=(m.Production.id == C.production_id))
             .join(m.Session, on=(m.Session.id == m.Production.session))
             .join(m.User, m.JOIN.LEFT_OUTER, on=(m.User.id == C.user_id)))
    if user:
        query = query.where(m.User.name == user)
    query = (query.group_by(m.Session.name, m.User.name).having(m.fn.SUM(C.jobs) > 0)
             .order_by(m.Session.name, m.User.name))
    return [{"session": session, "user": name, "jobs": int(jobs), "events": int(events or 0),
             "wct": float(wct or 0.0)} for session, name, jobs, events, wct in query.tuples()]


def session_jobs():
    """{session name: {status: jobs}}: the home page's job graph per session."""
    out = {}
    for session, status, n in (C.select(m.Session.name, C.status, m.fn.SUM(C.jobs))
                               .join(m.Production, on=(m.Production.id == C.production_id))
                               .join(m.Session, on=(m.Session.id == m.Production.session))
                               .group_by(m.Session.name, C.status).having(m.fn.SUM(C.jobs) > 0).tuples()):
        out.setdefault(session, {})[status] = int(n)
    return out
