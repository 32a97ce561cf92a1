"""Production requests: parameters and settings, their test twins, and the status machine."""
from flask import Blueprint, jsonify

from shared import schema as s
from shared.jobdesc import INPUT_MODES, NAME_RE

from .. import auth, db
from .. import models as m
from ..errors import ApiError, bad_request, conflict, not_found
from ..request_rules import (CREATE_LOCK_KEY, check_input, check_parameters, insert_test_request,
                             params_key, twin_path)
from .params import json_body, query_int, query_text
from .productions import get_production

bp = Blueprint("requests", __name__)

MANAGER = "create-requests"
# The one legal successor of each status (seed: open -> valid -> running -> closed).
NEXT_STATUS = {"open": "valid", "valid": "running", "running": "closed"}

SETTINGS = {
    "priority": lambda d, k: s.integer(d, k, hi=1000),
    "min_runnum": lambda d, k: s.integer(d, k, lo=1, hi=2 ** 62),
    "required_events": lambda d, k: s.integer(d, k, hi=10 ** 15),
    "events_per_job": lambda d, k: s.integer(d, k, hi=10 ** 12),
    "num_jobs": lambda d, k: s.integer(d, k, hi=10 ** 7),
    "event_time_s": lambda d, k: s.number(d, k, hi=1e7),
    "max_wct_s": lambda d, k: s.number(d, k, lo=1, hi=30 * 86400),
    "max_rss_mb": lambda d, k: s.number(d, k, hi=1024 * 1024),
    "stall_s": lambda d, k: s.number(d, k, hi=30 * 86400),
    "input_mode": lambda d, k: s.text(d, k, pattern="|".join(INPUT_MODES)),
    "input_paths": lambda d, k: [s.check_lfn(p, f"{k}[{n}]") for n, p in
                                 enumerate(s.text_list(d, k, max_items=10000, max_len=1024))],
    "output_lfn": lambda d, k: s.lfn(d, k),
    "output_abs": lambda d, k: s.text(d, k, max_len=1024, empty=True),
    "output_sites": lambda d, k: list(s.text_list(d, k, max_items=100, pattern=NAME_RE, max_len=64)),
    "output_patterns": lambda d, k: list(s.text_list(d, k, max_items=100, pattern=r"[^/\x00]+", max_len=256)),
    "note": lambda d, k: s.text(d, k, max_len=255, empty=True),
}
TEST_SETTINGS = ("test_output_lfn", "test_output_abs")


def get_request(request_id):
    return m.get_or_404(m.Request, m.Request.id == request_id, f"request {request_id}")


def request_dict(req):
    d = {"id": req.id, "production": req.production.name, "parameters": req.parameters,
         "status": req.status, "test_request": req.test_request_id,
         "created_by": req.created_by.name if req.created_by_id else None,
         "created_at": m.iso(req.created_at)}
    d.update({name: getattr(req, name) for name in SETTINGS})
    d["jobs"] = {status: count for status, count in (
        m.Job.select(m.Job.status, m.fn.COUNT(m.Job.id)).where(m.Job.request == req)
        .group_by(m.Job.status).tuples())}
    return d


def _read_settings(body):
    return {name: reader(body, name) for name, reader in SETTINGS.items() if name in body}


@bp.get("/requests")
@auth.require("monitoring")
def list_requests():
    query = m.Request.select().order_by(m.Request.id)
    production = query_text("production", 128)
    if production:
        query = query.join(m.Production).where(m.Production.name == production)
    status = query_text("status", 16)
    if status:
        query = query.where(m.Request.status == status)
    limit = query_int("limit", 1000, lo=1, hi=10000)
    return jsonify({"requests": [request_dict(r) for r in query.limit(limit)]})


@bp.get("/requests/<id:request_id>")
@auth.require("monitoring")
def show_request(request_id):
    return jsonify(request_dict(get_request(request_id)))


@bp.post("/requests")
@auth.require(MANAGER)
def create_request():
    body = json_body()
    s.refuse_unknown(body, ("production", "parameters", "from", *SETTINGS, *TEST_SETTINGS))
    settings, parameters = {}, None
    source_id = s.integer(body, "from", default=None, lo=1)
    if source_id is not None:
        source = get_request(source_id)
        settings = {name: getattr(source, name) for name in SETTINGS}
        parameters = dict(source.parameters)
    settings.update(_read_settings(body))
    if "parameters" in body:
        parameters = s.text_map(body, "parameters", max_items=50)
    if parameters is None:
        raise s.SchemaError("missing field 'parameters'")
    if "output_lfn" not in settings:
        raise s.SchemaError("missing field 'output_lfn'")
    check_input(settings)
    user = auth.current_principal().user
    with db.write_transaction():
        db.advisory_lock(CREATE_LOCK_KEY)
        main = get_production(s.text(body, "production", max_len=128))
        if main.is_test:
            raise bad_request(f"create requests in {main.twin.name}: each gets its test twin in {main.name}")
        if main.status != "open":
            raise conflict("production-closed", f"production {main.name} is closed")
        check_parameters(main.session, parameters)
        key = params_key(parameters)
        if m.Request.select().where((m.Request.production == main) & (m.Request.params_key == key)).exists():
            raise conflict("duplicate-request",
                           f"a request with these parameters already exists in {main.name}")
        test_settings = dict(settings)
        test_settings["output_lfn"] = s.lfn(body, "test_output_lfn", default=None) or \
            twin_path(settings["output_lfn"], main)
        test_settings["output_abs"] = s.text(body, "test_output_abs", default=None, max_len=1024) or \
            twin_path(settings.get("output_abs", ""), main)
        test_req, _ = insert_test_request(m.Request(production=main.twin, parameters=parameters, params_key=key,
                                                    created_by=user, **test_settings))
        req = m.Request.create(production=main, parameters=parameters, params_key=key,
                               test_request=test_req, created_by=user, **settings)
        m.Activity.create(user=user, kind="request-created", session=main.session.name,
                          info=f"Request {req.id} created on {main.name}: "
                               + ", ".join(f"{k}={v}" for k, v in parameters.items()),
                          ref={"production": main.name, "request": req.id})
    return jsonify(request_dict(req)), 201


@bp.patch("/requests/<id:request_id>")
@auth.require(MANAGER)
def update_request(request_id):
    body = json_body()
    s.refuse_unknown(body, ("status", *SETTINGS))
    changes = _read_settings(body)
    with db.write_transaction():
        req = db.for_update(m.Request.select().where(m.Request.id == request_id)).first()
        if req is None:
            raise not_found(f"request {request_id} does not exist")
        if "status" in body:
            status = s.text(body, "status", max_len=16)
            if status not in m.REQUEST_STATUSES:
                raise bad_request(f"'status' must be one of {', '.join(m.REQUEST_STATUSES)}")
            if status != req.status and NEXT_STATUS.get(req.status) != status:
                raise ApiError(409, "illegal-transition", f"request {req.id} is {req.status}: it can only become "
                                                          f"{NEXT_STATUS.get(req.status, 'nothing else')}")
            req.status = status
        # Settings that shape jobs are frozen once the request left `open`; the note and priority are not.
        frozen = sorted(set(changes) - {"note", "priority"})
        if frozen and req.status != "open":
            raise conflict("request-not-open", f"request {req.id} is {req.status}: {frozen[0]} can no longer change")
        for name, value in changes.items():
            setattr(req, name, value)
        check_input({"input_mode": req.input_mode, "input_paths": req.input_paths})
        req.save()
    return jsonify(request_dict(req))
