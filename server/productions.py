"""Productions (prod series) and their `<name>_test` twins."""
from . import counts
from . import models as m

TEST_SUFFIX = "_test"


def get_production(name):
    return m.get_or_404(m.Production, m.Production.name == name, f"production {name!r}")


def production_dict(p):
    requests = {status: 0 for status in m.REQUEST_STATUSES}
    for status, count in (m.Request.select(m.Request.status, m.fn.COUNT(m.Request.id))
                          .where(m.Request.production == p).group_by(m.Request.status).tuples()):
        requests[status] = count
    jobs = counts.production_jobs(p.id)
    sw = p.software
    return {"name": p.name, "session": p.session.name, "status": p.status, "test": p.is_test,
            "twin": p.twin.name if p.twin_id else None,
            "software": {"id": sw.id, "name": sw.name, "version": sw.version, "revision": sw.revision},
            "note": p.note, "requests": requests, "jobs": jobs,
            "created_by": p.created_by.name if p.created_by_id else None,
            "created_at": m.iso(p.created_at)}
