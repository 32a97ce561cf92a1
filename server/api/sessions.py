"""Sessions (FastSim, FullSim, ...), their job-parameter definitions and software releases."""
from flask import Blueprint, jsonify

from shared import schema as s
from shared.jobdesc import ADLER32_RE, NAME_RE

from .. import auth, db
from .. import models as m
from ..errors import conflict
from ..sessions import get_session, session_dict, software_dict
from .params import json_body

bp = Blueprint("sessions", __name__)

MANAGER = "create-productions"


def _parameter_defs(body, where="parameters"):
    raw = body.get("parameters", [])
    if not isinstance(raw, list) or len(raw) > 50:
        raise s.SchemaError(f"'{where}' must be a list of at most 50 objects")
    defs = []
    for n, p in enumerate(raw):
        if not isinstance(p, dict):
            raise s.SchemaError(f"'{where}[{n}]' must be an object")
        s.refuse_unknown(p, ("name", "allowed"), f"{where}[{n}].")
        defs.append((s.text(p, "name", f"{where}[{n}].", pattern=NAME_RE, max_len=64),
                     list(s.text_list(p, "allowed", f"{where}[{n}].", default=(), max_items=1000,
                                      max_len=256))))
    if len({name for name, _ in defs}) != len(defs):
        raise s.SchemaError(f"'{where}' names a parameter twice")
    return defs


@bp.get("/sessions")
@auth.require("monitoring")
def list_sessions():
    return jsonify({"sessions": [session_dict(x, full=True) for x in m.Session.select().order_by(m.Session.name)]})


@bp.get("/sessions/<name>")
@auth.require("monitoring")
def show_session(name):
    return jsonify(session_dict(get_session(name), full=True))


@bp.post("/sessions")
@auth.require(MANAGER)
def create_session():
    body = json_body()
    s.refuse_unknown(body, ("name", "description", "payload_module", "parameters"))
    name = s.text(body, "name", pattern=NAME_RE, max_len=64)
    description = s.text(body, "description", default="", max_len=4096, empty=True)
    module = s.text(body, "payload_module", default=name.lower(), pattern=NAME_RE, max_len=64)
    defs = _parameter_defs(body)
    with db.write_transaction():
        if m.Session.select().where(m.Session.name == name).exists():
            raise conflict("duplicate-session", f"session {name} already exists")
        session = m.Session.create(name=name, description=description, payload_module=module)
        for position, (pname, allowed) in enumerate(defs):
            m.JobParameter.create(session=session, name=pname, allowed=allowed, position=position)
    return jsonify(session_dict(session, full=True)), 201


@bp.post("/sessions/<name>/parameters")
@auth.require(MANAGER)
def define_parameter(name):
    """Add a job parameter to a session, or replace its allowed values."""
    body = json_body()
    s.refuse_unknown(body, ("name", "allowed"))
    ((pname, allowed),) = _parameter_defs({"parameters": [body]}, "body")
    with db.write_transaction():
        session = get_session(name)
        param = m.JobParameter.get_or_none(session=session, name=pname)
        if param is None:
            position = session.parameters.count()
            m.JobParameter.create(session=session, name=pname, allowed=allowed, position=position)
        else:
            param.allowed = allowed
            param.save()
    return jsonify(session_dict(session, full=True)), 201 if param is None else 200


@bp.post("/sessions/<name>/software")
@auth.require(MANAGER)
def create_software(name):
    body = json_body()
    s.refuse_unknown(body, ("name", "version", "revision", "lfn", "adler32", "workdir", "exe", "env"))
    fields = {
        "name": s.text(body, "name", pattern=NAME_RE, max_len=128),
        "version": s.text(body, "version", pattern=NAME_RE, max_len=64),
        "revision": s.integer(body, "revision", default=0, hi=2 ** 31 - 1),
        "lfn": s.lfn(body, "lfn"),
        "adler32": s.text(body, "adler32", pattern=ADLER32_RE),
        "workdir": s.relative_path(body, "workdir"),
        "exe": s.relative_path(body, "exe"),
        "env": s.text_map(body, "env", default={}),
    }
    if not fields["lfn"].endswith((".tjz", ".tgz", ".tar.gz")):
        raise s.SchemaError("'lfn' must name a .tjz, .tgz or .tar.gz tarball")
    with db.write_transaction():
        session = get_session(name)
        if m.Software.select().where((m.Software.session == session) & (m.Software.version == fields["version"])
                                     & (m.Software.revision == fields["revision"])).exists():
            raise conflict("duplicate-software",
                           f"{name} already has release {fields['version']} {fields['revision']}")
        sw = m.Software.create(session=session, **fields)
    return jsonify(software_dict(sw)), 201
