"""Production requests: parameters and settings, their test twins, the status machine, and deletion."""
from flask import Blueprint, jsonify

from shared import schema as s
from shared.jobdesc import INPUT_MODES, NAME_RE

from .. import auth, db
from .. import models as m
from ..errors import ApiError, bad_request, conflict, not_found
from ..request_rules import (CREATE_LOCK_KEY, check_input, check_output_sites, check_parameters,
                             insert_test_request, params_key, under_twin)
from ..submissions import SUBMIT_LOCK_KEY
from ..production_requests import SETTINGS, TEST_DIRS, TEST_SETTINGS, get_request, request_dict, shares_dirs
from ..productions import get_production
from .params import json_body, query_int, query_text

bp = Blueprint("requests", __name__)

MANAGER = "create-requests"
# The one legal successor of each status (seed: open -> valid -> running -> closed).
NEXT_STATUS = {"open": "valid", "valid": "running", "running": "closed"}

def _read_settings(body):
    return {name: reader(body, name) for name, reader in SETTINGS.items() if name in body}


def _read_test_dirs(body):
    """The body's word on the test request's directories: ({setting: value} given, same_output_dirs or None)."""
    given = {}
    if "test_output_lfn" in body:
        given["output_lfn"] = s.lfn(body, "test_output_lfn")
    if "test_output_abs" in body:
        given["output_abs"] = SETTINGS["output_abs"](body, "test_output_abs")
    same = s.boolean(body, "same_output_dirs") if "same_output_dirs" in body else None
    return given, same


# ---------------------------------------------------------------- the rules of a request's settings
# (issue 13) One place for create and modify: the settings as they will be stored are checked here.

def _check_settings(settings):
    check_input(settings)
    if "output_sites" in settings:
        check_output_sites(settings["output_sites"])


def _test_dirs(main, dirs, given, same):
    """The test request's directories for the main request's `dirs` ({setting: value}, the ones to decide).

    Shared when `same`; otherwise each is the given one, or the main one under the twin's name, and must
    differ from the main one: a test job writing into the production's directory is what the box is for.
    """
    if same:
        if given:
            raise bad_request(f"'{TEST_DIRS[next(iter(given))]}' contradicts 'same_output_dirs': "
                              "the test request shares the request's directories")
        return dict(dirs)
    test = {}
    for name, value in dirs.items():
        field = TEST_DIRS[name]
        if name in given:
            test[name] = given[name]
        elif not value:        # no absolute directory: none for the test request either
            test[name] = ""
        else:
            test[name] = under_twin(value, main)
            if test[name] is None:
                raise bad_request(f"'{name}' {value[:300]!r} has no segment {main.name} to become "
                                  f"{main.twin.name} in the test request's directory: give '{field}', or "
                                  "'same_output_dirs': true to share the directory")
            if len(test[name]) > 1024:
                raise bad_request(f"'{name}' under {main.twin.name} is longer than 1024 characters: give '{field}'")
        if value and test[name] == value:
            raise bad_request(f"'{field}' is the request's own directory: set 'same_output_dirs' to share it")
    return test


def _twin_to_follow(req, changes, given, same):
    """The test request whose directories this change of `req` decides again (locked), or None."""
    touched = any(name in changes for name in TEST_DIRS)
    if not (touched or given or same is not None):
        return None
    if req.test_request_id is None:
        main = m.Request.get_or_none(m.Request.test_request == req.id)
        if main is not None and touched:
            raise bad_request(f"request {req.id} is the test request of request {main.id}: set its directories "
                              f"there ('test_output_lfn', 'test_output_abs' or 'same_output_dirs')")
        if given or same is not None:
            raise bad_request(f"request {req.id} has no test request")
        return None
    return db.for_update(m.Request.select().where(m.Request.id == req.test_request_id)).first()


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
    reqs = list(query.limit(limit))
    # the test requests' directories in one query, not one per request
    twin_ids = [r.test_request_id for r in reqs if r.test_request_id]
    twins = {t.id: t for t in m.Request.select().where(m.Request.id.in_(twin_ids))} if twin_ids else {}
    return jsonify({"requests": [request_dict(r, twins.get(r.test_request_id)) for r in reqs]})


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
    given, same = _read_test_dirs(body)
    if "parameters" in body:
        parameters = s.text_map(body, "parameters", max_items=50)
    if parameters is None:
        raise s.SchemaError("missing field 'parameters'")
    if "output_lfn" not in settings:
        raise s.SchemaError("missing field 'output_lfn'")
    user = auth.current_principal().user
    with db.write_transaction():
        db.advisory_lock(CREATE_LOCK_KEY)
        main = get_production(s.text(body, "production", max_len=128))
        if main.is_test:
            raise bad_request(f"create requests in {main.twin.name}: each gets its test twin in {main.name}")
        if main.status != "open":
            raise conflict("production-closed", f"production {main.name} is closed")
        check_parameters(main.session, parameters)
        _check_settings(settings)
        test_settings = dict(settings)
        test_settings.update(_test_dirs(main, {name: settings.get(name, "") for name in TEST_DIRS}, given,
                                        bool(same)))
        key = params_key(parameters)
        if m.Request.select().where((m.Request.production == main) & (m.Request.params_key == key)).exists():
            raise conflict("duplicate-request",
                           f"a request with these parameters already exists in {main.name}")
        test_req, _ = insert_test_request(m.Request(production=main.twin, parameters=parameters, params_key=key,
                                                    created_by=user, **test_settings))
        req = m.Request.create(production=main, parameters=parameters, params_key=key,
                               test_request=test_req, created_by=user, **settings)
        m.Activity.create(user=user, kind="request-created", session=main.session.name,
                          info=f"Request {req.id} created on {main.name}: "
                               + ", ".join(f"{k}={v}" for k, v in parameters.items()),
                          ref={"production": main.name, "request": req.id})
    return jsonify(request_dict(req, test_req)), 201


@bp.patch("/requests/<id:request_id>")
@auth.require(MANAGER)
def update_request(request_id):
    body = json_body()
    s.refuse_unknown(body, ("status", *SETTINGS, *TEST_SETTINGS))
    changes = _read_settings(body)
    given, same = _read_test_dirs(body)
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
        frozen = sorted((set(changes) - {"note", "priority"}) | {f for f in TEST_SETTINGS if f in body})
        if frozen and req.status != "open":
            raise conflict("request-not-open", f"request {req.id} is {req.status}: {frozen[0]} can no longer change")
        twin = _twin_to_follow(req, changes, given, same)
        shared = twin is not None and shares_dirs(req, twin)      # before the changes
        for name, value in changes.items():
            setattr(req, name, value)
        _check_settings({"input_mode": req.input_mode, "input_paths": req.input_paths, **changes})
        if twin is not None:
            # What the body touches is decided again as on create; sharing, once chosen, holds until
            # the body says otherwise (`same_output_dirs`, or an explicit test directory).
            if same is None:
                same = shared and not given
                names = [name for name in TEST_DIRS if name in changes or name in given]
            else:
                names = list(TEST_DIRS)
            for name, value in _test_dirs(req.production, {n: getattr(req, n) for n in names}, given,
                                          same).items():
                setattr(twin, name, value)
            twin.save(only=[getattr(m.Request, name) for name in TEST_DIRS])
        req.save()
    return jsonify(request_dict(req, twin))


@bp.delete("/requests/<id:request_id>")
@auth.require(MANAGER)
def delete_request(request_id):
    """Delete a request that has no jobs, with its test request unless that one has jobs.

    A test request with jobs stays (unlinked, in the twin production, as a test submission's own test
    request does): its jobs are the record of work done, and a request found wrong by its tests is the
    one a manager wants gone. A later request with the same parameters takes it up again. A test
    request linked to its request goes only with it: every request has its test request.
    """
    with db.write_transaction():
        # After any submission in flight: a job prepared for this request (or its test request) is then
        # visible, and none can be prepared for it until the deletion is over. After any creation in
        # flight too, which may be taking up the test request about to go.
        db.advisory_lock(CREATE_LOCK_KEY)
        db.advisory_lock(SUBMIT_LOCK_KEY)
        req = db.for_update(m.Request.select().where(m.Request.id == request_id)).first()
        if req is None:
            raise not_found(f"request {request_id} does not exist")
        if req.production.status != "open":
            raise conflict("production-closed", f"production {req.production.name} is closed: "
                                                "its requests stay as they are")
        main = m.Request.get_or_none(m.Request.test_request == req.id)
        if main is not None:
            raise conflict("test-request", f"request {req.id} is the test request of request {main.id}: "
                                           f"delete request {main.id} and it goes too")
        jobs = _job_count(req)
        if jobs:
            raise conflict("request-has-jobs", f"request {req.id} has {jobs} jobs: a request is deleted "
                                               "only while it has none")
        twin_id = req.test_request_id
        deleted, kept = [req.id], None
        req.delete_instance()
        if twin_id is not None:
            if _job_count(twin_id):
                kept = twin_id
            else:
                m.Request.delete().where(m.Request.id == twin_id).execute()
                deleted.append(twin_id)
    return jsonify({"deleted": deleted, "test_request_kept": kept})


def _job_count(req):
    return m.Job.select().where(m.Job.request == req).count()
