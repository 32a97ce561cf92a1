"""Production requests: their settings, their test twins, how they are shown, made, changed and deleted."""
from shared import schema as s
from shared.jobdesc import INPUT_MODES, NAME_RE

from . import counts, db, retries, splitting, stages
from . import models as m
from .errors import ApiError, bad_request, conflict, not_found
from .productions import get_production
from .request_rules import (CREATE_LOCK_KEY, check_input, check_output_sites, check_parameters, check_steps,
                            insert_test_request, params_key, read_steps, under_twin)
from .submissions import SUBMIT_LOCK_KEY


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
    # What each job asks of the batch system (whole-node and multi-core jobs); the payload is told the cores.
    "cores": lambda d, k: s.integer(d, k, lo=1, hi=1024),
    "memory_mb": lambda d, k: s.number(d, k, hi=1024 * 1024),
    "input_mode": lambda d, k: s.text(d, k, pattern="|".join(INPUT_MODES)),
    "input_paths": lambda d, k: [s.check_lfn(p, f"{k}[{n}]") for n, p in
                                 enumerate(s.text_list(d, k, max_items=10000, max_len=1024))],
    # each job gets the next N input files of a LIST or DIR request (0: not split; server/splitting.py)
    "files_per_job": splitting.read_files_per_job,
    "output_lfn": lambda d, k: s.lfn(d, k),
    "output_abs": lambda d, k: s.text(d, k, max_len=1024, empty=True),
    "output_sites": lambda d, k: list(s.text_list(d, k, max_items=100, pattern=NAME_RE, max_len=64)),
    "output_patterns": lambda d, k: list(s.text_list(d, k, max_items=100, pattern=r"[^/\x00]+", max_len=256)),
    "note": lambda d, k: s.text(d, k, max_len=255, empty=True),
    # The session's step templates the jobs run, in order (issue 15); empty: its payload module alone.
    "steps": read_steps,
    # The follow-up stage (a merge, say) run on the request's outputs once its condition holds (server/stages.py).
    "followup": stages.read_followup,
    # The retry policy (server/retries.py): max_attempts (1: none) and retry_backoff_s.
    **retries.POLICY,
}
# The test request's output directories, chosen on its main request: a test request's own setting of the
# same name, or `same_output_dirs: true` to share the main request's (seed: "Same output directories for
# the associated test request", off by default).
TEST_DIRS = {"output_lfn": "test_output_lfn", "output_abs": "test_output_abs"}
TEST_SETTINGS = (*TEST_DIRS.values(), "same_output_dirs")


def get_request(request_id):
    return m.get_or_404(m.Request, m.Request.id == request_id, f"request {request_id}")


def request_dict(req, twin=None):
    """A request as the API shows it; `twin` is its test request when the caller has it already."""
    d = {"id": req.id, "production": req.production.name, "parameters": req.parameters,
         "status": req.status, "test_request": req.test_request_id,
         "created_by": req.created_by.name if req.created_by_id else None,
         "created_at": m.iso(req.created_at)}
    d.update({name: getattr(req, name) for name in SETTINGS})
    twin = twin or (req.test_request if req.test_request_id else None)
    d.update({field: getattr(twin, name) if twin else None for name, field in TEST_DIRS.items()})
    d["same_output_dirs"] = shares_dirs(req, twin) if twin else None
    d["jobs"] = counts.request_jobs(req.id)
    d["stage"] = stages.stage_state(req)
    return d


def shares_dirs(req, twin):
    # The LFN is never empty: equal LFNs are the shared choice (a separate test directory must differ).
    return twin.output_lfn == req.output_lfn


# ---------------------------------------------------------------- making and changing requests
# (issue 13) The API routes and the requests pages call these with the same JSON-shaped body.

# The one legal successor of each status (seed: open -> valid -> running -> closed).
NEXT_STATUS = {"open": "valid", "valid": "running", "running": "closed"}
# Settings that may change once a request has left `open` (the others shape its jobs).
ALWAYS_CHANGEABLE = ("note", "priority", *retries.POLICY)   # the retry policy is the server's, not the jobs'


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


def _check_settings(settings):
    """The rules of a request's settings as they will be stored: one place for create and modify."""
    check_input(settings)
    splitting.check_split_setting(settings)
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


def find_duplicate(production, parameters):
    """The request of `production` holding exactly `parameters`, or None (a production holds one per set)."""
    return m.Request.get_or_none((m.Request.production == production)
                                 & (m.Request.params_key == params_key(parameters)))


def create_request(user, body):
    """Create a request and its test request in the production's twin; return (request, test request)."""
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
    with db.write_transaction():
        db.advisory_lock(CREATE_LOCK_KEY)
        main = get_production(s.text(body, "production", max_len=128))
        if main.is_test:
            raise bad_request(f"create requests in {main.twin.name}: each gets its test twin in {main.name}")
        if main.status != "open":
            raise conflict("production-closed", f"production {main.name} is closed")
        check_parameters(main.session, parameters)
        _check_settings(settings)
        check_steps(main.session, settings.get("steps", []))
        stages.check_followup(main.session, settings.get("followup"))
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
    return req, test_req


def update_request(request_id, body):
    """Change a request's status (to its one successor) or settings; return (request, its test request or None
    when the change did not touch it)."""
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
        frozen = sorted((set(changes) - set(ALWAYS_CHANGEABLE)) | {f for f in TEST_SETTINGS if f in body})
        if frozen and req.status != "open":
            raise conflict("request-not-open", f"request {req.id} is {req.status}: {frozen[0]} can no longer change")
        twin = _twin_to_follow(req, changes, given, same)
        shared = twin is not None and shares_dirs(req, twin)      # before the changes
        for name, value in changes.items():
            setattr(req, name, value)
        _check_settings({"input_mode": req.input_mode, "input_paths": req.input_paths,
                         "files_per_job": req.files_per_job, **changes})
        if "steps" in changes:
            check_steps(req.production.session, changes["steps"])
        if "followup" in changes:
            stages.check_followup(req.production.session, changes["followup"])
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
    return req, twin


def delete_request(request_id):
    """Delete a request that has no jobs, with its test request unless that one has jobs:
    {"deleted": [ids], "test_request_kept": id or None}.

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
    return {"deleted": deleted, "test_request_kept": kept}


def _job_count(req):
    return m.Job.select().where(m.Job.request == req).count()
