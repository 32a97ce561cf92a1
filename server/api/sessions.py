"""Sessions (FastSim, FullSim, ...), their job-parameter definitions and software releases (the rules:
server/sessions.py)."""
from flask import Blueprint, jsonify

from .. import auth, sessions
from .. import models as m
from ..sessions import MANAGER, get_session, session_dict, software_dict
from .params import json_body

from . import schemas as S
from .endpoint import endpoint

bp = Blueprint("sessions", __name__)


@bp.get("/sessions")
@auth.require("monitoring")
@endpoint("Sessions", reply=S.Sessions)
def list_sessions():
    return jsonify({"sessions": [session_dict(x, full=True) for x in m.Session.select().order_by(m.Session.name)]})


@bp.get("/sessions/<name>")
@auth.require("monitoring")
@endpoint("A session with parameters, software and step templates", reply=S.Session)
def show_session(name):
    return jsonify(session_dict(get_session(name), full=True))


@bp.post("/sessions")
@auth.require(MANAGER)
@endpoint(
    "Create a session (create-productions)",
    body=S.SessionIn, status=201, reply=S.Session, links=(("name", "/name"),))
def create_session():
    return jsonify(session_dict(sessions.create_session(json_body()), full=True)), 201


@bp.patch("/sessions/<name>")
@auth.require(MANAGER)
@endpoint(
    "A session's description, payload module and container image (create-productions)",
    body=S.SessionPatch, reply=S.Session)
def update_session(name):
    return jsonify(session_dict(sessions.update_session(name, json_body()), full=True))


@bp.post("/sessions/<name>/parameters")
@auth.require(MANAGER)
@endpoint(
    "Define a job parameter (201), or replace its allowed values (200)",
    body=S.ParameterIn, status=201, reply=S.Session, replies=((200, "replaced", S.Session),))
def define_parameter(name):
    """Add a job parameter to a session, or replace its allowed values."""
    session, created = sessions.define_parameter(name, json_body())
    return jsonify(session_dict(session, full=True)), 201 if created else 200


@bp.post("/sessions/<name>/software")
@auth.require(MANAGER)
@endpoint("Register a software release", body=S.SoftwareIn, status=201, reply=S.Software)
def create_software(name):
    return jsonify(software_dict(sessions.create_software(name, json_body()))), 201


@bp.patch("/sessions/<name>/software/<id:software_id>")
@auth.require(MANAGER)
@endpoint(
    "Edit a release while no production uses it (409 release-used), retire it while no open production "
    "uses it (409 release-in-use), or restore it (`retired` false); create-productions",
    body=S.SoftwarePatch, reply=S.Software)
def update_software(name, software_id):
    return jsonify(software_dict(sessions.update_software(name, software_id, json_body())))


@bp.post("/sessions/<name>/steps")
@auth.require(MANAGER)
@endpoint(
    "Define a step template (201), or replace one no request chooses (200; 409 step-in-use); "
    "create-productions",
    body=S.StepTemplateIn, status=201, reply=S.Session, replies=((200, "replaced", S.Session),))
def define_step_template(name):
    """Add a step template to a session, or replace one no request chooses."""
    session, created = sessions.define_step_template(name, json_body())
    return jsonify(session_dict(session, full=True)), 201 if created else 200


@bp.delete("/sessions/<name>/steps/<step>")
@auth.require(MANAGER)
@endpoint("Remove a step template no request chooses (409 step-in-use)", reply=S.Session)
def delete_step_template(name, step):
    return jsonify(session_dict(sessions.delete_step_template(name, step), full=True))
