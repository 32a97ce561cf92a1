"""Productions (prod series) and their `<name>_test` twins."""
from flask import Blueprint, jsonify

from .. import auth, productions
from .. import models as m
from ..productions import get_production, production_dict
from .params import json_body, query_text

from . import schemas as S
from .endpoint import endpoint

bp = Blueprint("productions", __name__)

MANAGER = "create-productions"


@bp.get("/productions")
@auth.require("monitoring")
@endpoint("Productions", query=S.ProductionQuery, reply=S.Productions)
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
@endpoint("A production", reply=S.Production)
def show_production(name):
    return jsonify(production_dict(get_production(name)))


@bp.post("/productions")
@auth.require(MANAGER)
@endpoint(
    "Create a production and its _test twin (create-productions) with a release that is not retired (no "
    "revision: the newest not retired); 409 duplicate-production or release-retired",
    body=S.ProductionIn, status=201, reply=S.Production, links=(("name", "/name"),))
def create_production():
    main = productions.create_production(auth.current_principal().user, json_body())
    return jsonify(production_dict(main)), 201


@bp.patch("/productions/<name>")
@auth.require(MANAGER)
@endpoint(
    "Open or close a production and its _test twin, or change its note",
    body=S.ProductionPatch, reply=S.Production)
def update_production(name):
    return jsonify(production_dict(productions.update_production(name, json_body())))
