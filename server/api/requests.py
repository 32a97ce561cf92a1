"""Production requests: parameters and settings, their test twins, the status machine, and deletion.

Thin routes: the rules live in server/production_requests.py, which the requests pages call too.
"""
from flask import Blueprint, jsonify

from .. import auth, production_requests
from .. import models as m
from ..production_requests import get_request, request_dict
from .params import json_body, query_int, query_text

from . import schemas as S
from .endpoint import endpoint

bp = Blueprint("requests", __name__)

MANAGER = "create-requests"


@bp.get("/requests")
@auth.require("monitoring")
@endpoint("Production requests", query=S.RequestQuery, reply=S.Requests)
def list_requests():
    query = m.Request.select().order_by(m.Request.id)
    production = query_text("production", 128)
    if production:
        query = query.join(m.Production).where(m.Production.name == production)
    status = query_text("status", 16)
    if status:
        query = query.where(m.Request.status == status)
    limit = query_int("limit", 1000, lo=1, hi=10000)
    reqs = list(query.limit(limit))
    # the test requests' directories in one query, not one per request
    twin_ids = [r.test_request_id for r in reqs if r.test_request_id]
    twins = {t.id: t for t in m.Request.select().where(m.Request.id.in_(twin_ids))} if twin_ids else {}
    return jsonify({"requests": [request_dict(r, twins.get(r.test_request_id)) for r in reqs]})


@bp.get("/requests/<id:request_id>")
@auth.require("monitoring")
@endpoint("A request", reply=S.Request)
def show_request(request_id):
    return jsonify(request_dict(get_request(request_id)))


@bp.post("/requests")
@auth.require(MANAGER)
@endpoint(
    "Create a request and its test twin",
    body=S.RequestIn, status=201, reply=S.Request, links=(("request_id", "/id"),))
def create_request():
    req, test_req = production_requests.create_request(auth.current_principal().user, json_body())
    return jsonify(request_dict(req, test_req)), 201


@bp.patch("/requests/<id:request_id>")
@auth.require(MANAGER)
@endpoint("Change status (open, valid, running, closed) or settings", body=S.RequestPatch, reply=S.Request)
def update_request(request_id):
    req, twin = production_requests.update_request(request_id, json_body())
    return jsonify(request_dict(req, twin))


@bp.delete("/requests/<id:request_id>")
@auth.require(MANAGER)
@endpoint(
    "Delete a request that has no jobs (create-requests), with its test request unless that one has jobs;"
    " 409 request-has-jobs, test-request (delete its request instead) or production-closed",
    reply=S.RequestDeleted)
def delete_request(request_id):
    """Delete a request that has no jobs (production_requests.delete_request says which go)."""
    return jsonify(production_requests.delete_request(request_id))
