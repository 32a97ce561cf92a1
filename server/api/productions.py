"""Productions (prod series) and their `<name>_test` twins."""
from flask import Blueprint, jsonify

from shared import schema as s
from shared.jobdesc import NAME_RE

from .. import auth, db
from .. import models as m
from ..errors import bad_request, conflict, not_found
from ..productions import TEST_SUFFIX, get_production, production_dict
from ..sessions import get_session
from .params import json_body, query_text

bp = Blueprint("productions", __name__)

MANAGER = "create-productions"


@bp.get("/productions")
@auth.require("monitoring")
def list_productions():
    query = m.Production.select().order_by(m.Production.name)
    session = query_text("session", 64)
    if session:
        query = query.join(m.Session).where(m.Session.name == session)
    status = query_text("status", 16)
    if status:
        query = query.where(m.Production.status == status)
    return jsonify({"productions": [production_dict(p) for p in query]})


@bp.get("/productions/<name>")
@auth.require("monitoring")
def show_production(name):
    return jsonify(production_dict(get_production(name)))


@bp.post("/productions")
@auth.require(MANAGER)
def create_production():
    body = json_body()
    s.refuse_unknown(body, ("name", "session", "version", "revision", "note"))
    name = s.text(body, "name", pattern=NAME_RE, max_len=128 - len(TEST_SUFFIX))
    if name.endswith(TEST_SUFFIX):
        raise bad_request(f"a production name must not end with {TEST_SUFFIX}: the twin is made for you")
    version = s.text(body, "version", max_len=64)
    revision = s.integer(body, "revision", default=None, hi=2 ** 31 - 1)
    note = s.text(body, "note", default="", max_len=255, empty=True)
    user = auth.current_principal().user
    with db.write_transaction():
        session = get_session(s.text(body, "session", max_len=64))
        releases = m.Software.select().where((m.Software.session == session) & (m.Software.version == version))
        if revision is not None:
            releases = releases.where(m.Software.revision == revision)
        sw = releases.order_by(m.Software.revision.desc()).first()
        if sw is None:
            raise not_found(f"session {session.name} has no software release {version} {revision or ''}".strip())
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
    return jsonify(production_dict(main)), 201


@bp.patch("/productions/<name>")
@auth.require(MANAGER)
def update_production(name):
    body = json_body()
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
    return jsonify(production_dict(production))
