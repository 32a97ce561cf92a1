"""Sessions (FastSim, FullSim, ...), their job-parameter definitions and software releases (the rules:
server/sessions.py)."""
from flask import Blueprint, jsonify

from .. import auth, sessions
from .. import models as m
from ..sessions import MANAGER, get_session, session_dict, software_dict
from .params import json_body

bp = Blueprint("sessions", __name__)


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
    return jsonify(session_dict(sessions.create_session(json_body()), full=True)), 201


@bp.patch("/sessions/<name>")
@auth.require(MANAGER)
def update_session(name):
    return jsonify(session_dict(sessions.update_session(name, json_body()), full=True))


@bp.post("/sessions/<name>/parameters")
@auth.require(MANAGER)
def define_parameter(name):
    """Add a job parameter to a session, or replace its allowed values."""
    session, created = sessions.define_parameter(name, json_body())
    return jsonify(session_dict(session, full=True)), 201 if created else 200


@bp.post("/sessions/<name>/software")
@auth.require(MANAGER)
def create_software(name):
    return jsonify(software_dict(sessions.create_software(name, json_body()))), 201


@bp.patch("/sessions/<name>/software/<int:software_id>")
@auth.require(MANAGER)
def update_software(name, software_id):
    return jsonify(software_dict(sessions.update_software(name, software_id, json_body())))


@bp.post("/sessions/<name>/steps")
@auth.require(MANAGER)
def define_step_template(name):
    """Add a step template to a session, or replace one no request chooses."""
    session, created = sessions.define_step_template(name, json_body())
    return jsonify(session_dict(session, full=True)), 201 if created else 200


@bp.delete("/sessions/<name>/steps/<step>")
@auth.require(MANAGER)
def delete_step_template(name, step):
    return jsonify(session_dict(sessions.delete_step_template(name, step), full=True))
