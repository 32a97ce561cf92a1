"""Productions (prod series) and their `<name>_test` twins: how they are shown, made and changed.

The API route and the productions page both call `create_production` and `update_production` with the
same JSON-shaped body, so a form and a JSON client obey one set of rules.
"""
from shared import schema as s
from shared.jobdesc import NAME_RE

from . import counts, db
from . import models as m
from .errors import bad_request, conflict, not_found
from .sessions import get_session

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


def open_releases(session):
    """The releases a new production of `session` may use (not retired), newest first."""
    return list(m.Software.select().where((m.Software.session == session) & (m.Software.retired == False))  # noqa: E712
                .order_by(m.Software.version.desc(), m.Software.revision.desc()))


def _release(session, version, revision):
    """The release a new production uses: the given revision, else the newest revision not retired."""
    releases = m.Software.select().where((m.Software.session == session) & (m.Software.version == version))
    if revision is not None:
        releases = releases.where(m.Software.revision == revision)
    releases = list(releases.order_by(m.Software.revision.desc()))
    if not releases:
        raise not_found(f"session {session.name} has no software release {version} {revision or ''}".strip())
    usable = [sw for sw in releases if not sw.retired]
    if not usable:
        # A retired release stays for the productions that use it; no new one may start with it.
        sw = releases[0]
        raise conflict("release-retired", f"software release {sw.version} {sw.revision} of session "
                                          f"{session.name} is retired: choose another release")
    return usable[0]


def create_production(user, body):
    """Create production `body['name']` and its `_test` twin (every production has one); return the main one."""
    s.refuse_unknown(body, ("name", "session", "version", "revision", "note"))
    name = s.text(body, "name", pattern=NAME_RE, max_len=128 - len(TEST_SUFFIX))
    if name.endswith(TEST_SUFFIX):
        raise bad_request(f"a production name must not end with {TEST_SUFFIX}: the twin is made for you")
    version = s.text(body, "version", max_len=64)
    revision = s.integer(body, "revision", default=None, hi=2 ** 31 - 1)
    note = s.text(body, "note", default="", max_len=255, empty=True)
    with db.write_transaction():
        session = get_session(s.text(body, "session", max_len=64))
        sw = _release(session, version, revision)
        if m.Production.select().where(m.Production.name.in_([name, name + TEST_SUFFIX])).exists():
            raise conflict("duplicate-production", f"production {name} (or its twin) already exists")
        main = m.Production.create(name=name, session=session, software=sw, note=note, created_by=user)
        twin = m.Production.create(name=name + TEST_SUFFIX, session=session, software=sw, is_test=True,
                                   twin=main, note=note, created_by=user)
        main.twin = twin
        main.save(only=[m.Production.twin])
        m.Activity.create(user=user, kind="production-created", session=session.name,
                          info=f"Production {name} (and {twin.name}) created with {sw.version} {sw.revision}",
                          ref={"production": name})
    return main


def update_production(name, body):
    """Open or close production `name` with its twin, or change its note; return it."""
    s.refuse_unknown(body, ("status", "note"))
    with db.write_transaction():
        production = get_production(name)
        if "status" in body:
            status = s.text(body, "status")
            if status not in m.PRODUCTION_STATUSES:
                raise bad_request("'status' must be open or closed")
            if production.is_test:
                raise bad_request(f"{production.name} opens and closes with {production.twin.name}: "
                                  f"change the status of {production.twin.name}")
            # The twin follows its production: a closed production takes no bulk, test bulks included.
            m.Production.update(status=status).where(
                m.Production.id.in_([production.id, production.twin_id])).execute()
            production.status = status
        if "note" in body:
            production.note = s.text(body, "note", max_len=255, empty=True)
        production.save(only=[m.Production.note])
    return production
