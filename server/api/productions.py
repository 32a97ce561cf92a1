"""Productions (prod series) and their `<name>_test` twins."""
from flask import Blueprint, jsonify

from .. import auth, productions
from .. import models as m
from ..productions import get_production, production_dict
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
    main = productions.create_production(auth.current_principal().user, json_body())
    return jsonify(production_dict(main)), 201


@bp.patch("/productions/<name>")
@auth.require(MANAGER)
def update_production(name):
    return jsonify(production_dict(productions.update_production(name, json_body())))
