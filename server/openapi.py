"""The OpenAPI 3 document of /api/v1, built from one compact route table."""
import copy
import functools
import re

from shared.errors import CODES
from shared.lifecycle import COMMANDS
from shared.states import Status, Step

STATUSES = [s.value for s in Status]
JSON = "application/json"


def _obj(properties, required=()):
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


STR, INT, NUM, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
STRS = {"type": "array", "items": STR}
ANY_OBJ = {"type": "object", "additionalProperties": True}
CHECK_STATE = {"type": "string", "enum": ["OK", "WARNING", "CRITICAL", "UNKNOWN"]}

REQUEST_SETTINGS = {
    "priority": INT, "min_runnum": INT, "required_events": INT, "events_per_job": INT, "num_jobs": INT,
    "event_time_s": NUM, "max_wct_s": NUM, "max_rss_mb": NUM, "stall_s": NUM,
    "cores": {"type": "integer", "minimum": 1, "maximum": 1024}, "memory_mb": {"type": "number", "minimum": 0},
    "input_mode": {"type": "string", "enum": ["DIR", "FILE", "LIST", "NONE"]}, "input_paths": STRS,
    "output_lfn": STR, "output_abs": STR, "output_sites": STRS, "output_patterns": STRS,
    # each job gets the next N input files of a LIST or DIR request, the last the rest (0: not split)
    "files_per_job": {"type": "integer", "minimum": 0, "maximum": 10000},
    "note": {"type": "string", "maxLength": 255},
    # the retry policy (server/retries.py): attempts at most (1: no automatic retry), first back-off (doubling)
    "max_attempts": {"type": "integer", "minimum": 1, "maximum": 20},
    "retry_backoff_s": {"type": "number", "minimum": 0, "maximum": 21600},
    # the session's step templates the jobs run, in order: names, or a name with parameter overrides
    "steps": {"type": "array", "maxItems": 20, "items": {"oneOf": [STR, {
        "type": "object", "additionalProperties": False, "required": ["template"],
        "properties": {"template": STR, "parameters": {"type": "object", "additionalProperties": STR}}}]}},
    # the follow-up stage run on the request's outputs once its condition holds ({}: none)
    "followup": {"type": "object", "additionalProperties": False, "properties": {
        "template": STR, "condition": {"type": "string", "enum": ["all", "fraction"]},
        "fraction": {"type": "number", "minimum": 0, "maximum": 1}, "files_per_job": {"type": "integer", "minimum": 0},
        "patterns": STRS}}}
REQUEST_TEST_DIRS = {"test_output_lfn": STR, "test_output_abs": STR, "same_output_dirs": BOOL}

SCHEMAS = {
    # request_id: the reply's X-Request-ID, also on every server log line of that request (server/logs.py)
    "Error": _obj({"error": STR, "message": STR, "request_id": STR}, ("error", "message")),
    "ErrorCode": _obj({"code": INT, "status": {"type": "string", "enum": STATUSES}, "blame": STR,
                       "retryable": BOOL, "message": STR}),
    "Event": _obj({"attempt": {"type": "integer", "minimum": 1}, "seq": {"type": "integer", "minimum": 1},
                   "time": NUM, "status": {"type": "string", "enum": ["running", "done", "failed", "sys-failed", "timeout"]},
                   "kind": {"type": "string", "enum": ["step", "heartbeat", "final", "info"]},
                   "step": {"type": "string", "enum": [s.value for s in Step]}, "message": STR,
                   "code": {"type": "integer", "enum": sorted(CODES)},
                   "metrics": {"type": "object", "additionalProperties": NUM}, "tail": STRS, "report": ANY_OBJ,
                   # a command from a reply the wrapper acts on: the server stops repeating it
                   "ack": {"type": "string", "enum": list(COMMANDS)}},
                  ("attempt", "seq", "time", "status")),
    # `command` is repeated in every reply until an event acknowledges it (`ack`) or the attempt ends
    "EventsReply": _obj({"accepted": INT, "duplicates": INT, "status": STR,
                         "command": {"type": "string", "nullable": True, "enum": list(COMMANDS) + [None]}}),
    # the fence: 200 only for the current attempt of a job that has not ended (409 otherwise)
    "AttemptState": _obj({"job": INT, "attempt": INT, "status": STR, "last_seq": INT,
                          "command": {"type": "string", "nullable": True, "enum": list(COMMANDS) + [None]}}),
    "RemovalIn": _obj({"site": STR, "surl": STR, "lfn": STR, "reason": {"type": "string", "maxLength": 255}},
                      ("site", "surl")),
    "Removal": _obj({"id": INT, "attempt": {"type": "integer", "nullable": True}, "site": STR, "surl": STR,
                     "reason": STR, "state": {"type": "string", "enum": ["pending", "done", "kept", "manual"]},
                     "tries": INT, "last_error": STR, "created_at": STR,
                     "done_at": {"type": "string", "nullable": True}}),
    "Job": ANY_OBJ,
    "JobPage": _obj({"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                     "total": INT, "page": {"type": "integer", "nullable": True}, "per_page": INT,
                     # exact up to 10,000 matches on PostgreSQL, 100,000 on SQLite (1,000 for a text term
                     # in over 10,000 jobs), then an estimate (PostgreSQL's planner; SQLite: matches among
                     # 2,000 evenly spaced jobs): exact counts of 100k+ rows cost 20-100+ ms, over budget
                     "total_is_estimate": BOOL,
                     # keyset paging: pass `next` as `after` for the following page (null: the last page)
                     "next": {"type": "string", "nullable": True}}),
    "Replica": _obj({"lfn": STR, "site": STR, "surl": STR, "size": {"type": "integer", "minimum": 0},
                     "adler32": {"type": "string", "pattern": "^[0-9a-f]{8}$"}},
                    ("lfn", "site", "surl", "size", "adler32")),
    "CatalogFile": _obj({"lfn": STR, "size": INT, "adler32": STR,
                         "replicas": {"type": "array", "items": _obj({"site": STR, "surl": STR})}}),
    # container_image: the image a session's payloads run in (absolute path; "" or absent: the site decides)
    "SessionIn": _obj({"name": STR, "description": STR, "payload_module": STR, "container_image": STR,
                       "parameters": {"type": "array", "items": _obj({"name": STR, "allowed": STRS}, ("name",))}},
                      ("name",)),
    # replacing the allowed values of a defined parameter: 409 value-in-use when a request of the session
    # has a value left out (an empty list allows any value)
    "ParameterIn": _obj({"name": STR, "allowed": STRS}, ("name",)),
    "SessionPatch": _obj({"description": STR, "payload_module": STR, "container_image": STR}),
    # a step template: a module instance with default parameters and arguments (seed 001)
    "StepTemplateIn": _obj({"name": STR, "module": STR, "parameters": {"type": "object", "additionalProperties": STR},
                            "args": STRS}, ("name", "module")),
    # a release is a tarball (lfn + adler32) or a read-only shared area (path, as on CVMFS): 400 for both
    "SoftwarePatch": _obj({"name": STR, "version": STR, "revision": INT, "lfn": STR, "adler32": STR, "path": STR,
                           "workdir": STR, "exe": STR, "env": {"type": "object", "additionalProperties": STR},
                           "retired": BOOL}),
    "SoftwareIn": _obj({"name": STR, "version": STR, "revision": INT, "lfn": STR, "adler32": STR, "path": STR,
                        "workdir": STR, "exe": STR, "env": {"type": "object", "additionalProperties": STR}},
                       ("name", "version", "workdir", "exe")),
    "ProductionIn": _obj({"name": STR, "session": STR, "version": STR, "revision": INT,
                          "note": {"type": "string", "maxLength": 255}}, ("name", "session", "version")),
    # a production's status is its _test twin's too (400 on the twin itself)
    "ProductionPatch": _obj({"status": {"type": "string", "enum": ["open", "closed"]},
                             "note": {"type": "string", "maxLength": 255}}),
    # output_sites: known sites only. The test request's directories: `same_output_dirs` true shares the
    # request's; otherwise test_output_lfn / test_output_abs, or by default the request's with the
    # production's name segment renamed to the twin's (400 when there is none), never the request's own.
    "RequestIn": _obj({"production": STR, "from": INT,
                       "parameters": {"type": "object", "additionalProperties": STR},
                       **REQUEST_SETTINGS, **REQUEST_TEST_DIRS}, ("production",)),
    # Settings other than note and priority change only while the request is open. On a request with a
    # test request, the directories the body touches are decided again as on create; sharing holds
    # until `same_output_dirs` or a test directory says otherwise.
    "RequestPatch": _obj({"status": {"type": "string", "enum": ["open", "valid", "running", "closed"]},
                          **REQUEST_SETTINGS, **REQUEST_TEST_DIRS}),
    # `test_request_kept`: the test request stays when it has jobs (null otherwise)
    "RequestDeleted": _obj({"deleted": {"type": "array", "items": INT},
                            "test_request_kept": {"type": "integer", "nullable": True}}),
    "SiteIn": _obj({"name": STR, "description": STR, "threshold_prepared": INT, "threshold_running": INT,
                    "threshold_failed": INT, "bunch_size": INT}, ("name",)),
    "SitePatch": _obj({"description": STR, "threshold_prepared": INT, "threshold_running": INT,
                       "threshold_failed": INT, "bunch_size": INT, "reload_se": BOOL,
                       "sessions": {"type": "object", "additionalProperties": _obj({"enabled": BOOL, "supported": BOOL})},
                       "productions": {"type": "object", "additionalProperties": _obj({"allowed": BOOL})}}),
    # `severus check --json` plus the node; `site`, `ok` and `code` are accepted and not stored.
    "SiteCheckIn": _obj({"site": STR, "node": {"type": "string", "maxLength": 255}, "state": CHECK_STATE,
                         "ok": BOOL, "code": INT, "wrapper_version": STR,
                         "checks": {"type": "array", "minItems": 1, "maxItems": 64,
                                    "items": {"$ref": "#/components/schemas/NodeCheck"}}},
                        ("node", "state", "checks")),
    "NodeCheck": _obj({"name": STR, "state": CHECK_STATE, "ok": BOOL, "reason": STR, "detail": STR,
                       "seconds": NUM, "code": INT, "perf": {"type": "object", "additionalProperties": NUM}},
                      ("name", "state")),
    "SiteCheck": _obj({"id": INT, "site": STR, "node": STR, "status": CHECK_STATE, "wrapper_version": STR,
                       "reported_by": {"type": "string", "nullable": True}, "created_at": STR,
                       "checks": {"type": "array", "items": {"$ref": "#/components/schemas/NodeCheck"}}}),
    "Resubmit": _obj({"backend": {"type": "string", "enum": ["local", "slurm", "htcondor"]}, "dry_run": BOOL}),
    # A bulk names its request, or (test bulks only) the job parameters of a test request, created if missing;
    # input_mode, input_paths and output_sites are that new request's and go only with `parameters`.
    # The plan's sets say `request_state`: exists, would be created (dry run) or created.
    "SubmissionBulk": dict(_obj(
        {"request": INT, "parameters": {"type": "object", "additionalProperties": STR},
         "test": BOOL, "sites": STRS, "runs": INT, "events": INT, "log_to_db": BOOL,
         "input_mode": {"type": "string", "enum": ["DIR", "FILE", "LIST", "NONE"]}, "input_paths": STRS,
         "output_sites": STRS,
         # a LIST request split by hand: each element (LFNs of the request's input) one job's inputs
         "split": {"type": "array", "minItems": 1, "maxItems": 10000,
                   "items": {"type": "array", "minItems": 1, "items": STR}},
         # a split request: make jobs for slices already given to jobs again (default: only the others)
         "repeat_slices": BOOL},
        # `runs` may be left out on a split request's bulk: one job per pending slice
        ("sites", "events")),
        oneOf=[{"required": ["request"]}, {"required": ["parameters", "test"]}]),
    # People (server/people.py): a token is shown once, when made; lists never show its hash.
    # expires_in_days (1-3650) or expires_at (ISO 8601, future); neither: never expires.
    "TokenIn": _obj({"label": {"type": "string", "maxLength": 64}, "expires_in_days": INT, "expires_at": STR,
                     "user": STR}),
    "Token": _obj({"id": INT, "user": STR, "label": STR, "created_at": STR,
                   "expires_at": {"type": "string", "nullable": True}, "expired": BOOL}),
    "UserIn": _obj({"name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"},
                    "groups": STRS, "label": {"type": "string", "maxLength": 64}, "expires_in_days": INT,
                    "expires_at": STR}, ("name", "groups")),
    "User": _obj({"name": STR, "groups": STRS, "auto_sub": BOOL, "created_at": STR,
                  "tokens": {"type": "array", "items": {"$ref": "#/components/schemas/Token"}}}),
    "Submission": _obj({"production": STR, "dry_run": BOOL, "override_thresholds": BOOL,
                        "backend": {"type": "string", "enum": ["local", "slurm", "htcondor"]},
                        "bulks": {"type": "array", "items": {"$ref": "#/components/schemas/SubmissionBulk"}}},
                       ("production", "bulks")),
}

JOB_FILTERS = [("user", STR), ("production", STR), ("request", STR), ("runnum_from", INT),
               ("runnum_to", INT), ("status", STR), ("error_code", INT), ("site", STR), ("last", INT),
               ("older_than_hours", NUM), ("prepared_from", STR), ("prepared_to", STR), ("q", STR),
               ("retried", {"type": "boolean", "description": "true: the jobs the server retried automatically at "
                                                              "least once; false: the others"}),
               ("sort", STR), ("page", INT), ("per_page", INT),
               # job-parameter filters (server/monitor.py): one name per parameter, e.g. param.Analysis
               ("param.<Name>", {"type": "array", "items": STR, "description": (
                   "the jobs of the requests whose job parameter <Name> has one of these values (repeatable; "
                   "several parameters: all must match); a name no session defines is a 400")})]

# (method, path, summary, security, query parameters, body schema, success code, reply schema)
ROUTES = [
    ("get", "/health", "Liveness and database check", None, [], None, 200, ANY_OBJ),
    ("get", "/error-codes", "The error-code table", None, [], None, 200,
     {"type": "array", "items": {"$ref": "#/components/schemas/ErrorCode"}}),
    ("get", "/openapi.json", "This document", None, [], None, 200, ANY_OBJ),
    ("get", "/me", "The calling user", "user", [], None, 200, ANY_OBJ),
    ("get", "/jobs", "Job monitor query; deep pages by `after` (the previous page's `next`, sorts on "
     "runnum, id, status, site, prepared_at, events) rather than `page`", "user",
     JOB_FILTERS + [("after", STR)], None, 200, "JobPage"),
    ("get", "/jobs/{job_id}", "A job with history, outputs, log link, report", "user", [], None, 200, "Job"),
    ("get", "/jobs/{job_id}/description", "The job description, its token redacted (reading never voids the "
     "token of a copy already shipped)", "user", [], None, 200, ANY_OBJ),
    ("post", "/jobs/{job_id}/token", "A new token for a prepared or submitted job (the old one gets 401; recorded "
     "as an activity); the description carrying it. 409 once the job started", "user", [], None, 200, ANY_OBJ),
    ("get", "/jobs/{job_id}/attempt", "The fence, asked before stage-out and registration (job token): 409 "
     "attempt-superseded or attempt-ended when the attempt may write nothing more", "job", [], None, 200,
     "AttemptState"),
    ("post", "/jobs/{job_id}/removals", "Files an attempt wrote and could not delete, for the server to delete "
     "(job token of any attempt of the job; only names of that job's outputs and logs)", "job", [],
     {"oneOf": [{"$ref": "#/components/schemas/RemovalIn"},
                {"type": "array", "items": {"$ref": "#/components/schemas/RemovalIn"}}]}, 200,
     _obj({"filed": INT, "asked": INT})),
    ("post", "/jobs/{job_id}/events", "A wrapper's events (job token)", "job", [],
     {"oneOf": [{"$ref": "#/components/schemas/Event"},
                {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}]}, 200, "EventsReply"),
    ("post", "/jobs/{job_id}/kill", "Kill a prepared, submitted or running job, or cancel a final job's scheduled "
     "automatic retry (`retry_cancelled`; 409 otherwise)", "user", [], None,
     200, ANY_OBJ),
    ("post", "/jobs/{job_id}/resubmit", "New attempt for a failed, sys-failed or timeout job (409 otherwise); "
     "with `backend`, submitted again", "user", [], "Resubmit", 200, ANY_OBJ),
    ("post", "/jobs/resubmit", "Resubmit the failed, sys-failed and timeout jobs matching the filters", "user",
     JOB_FILTERS, "Resubmit", 200, ANY_OBJ),
    ("put", "/jobs/{job_id}/log", "Upload the log tarball (job token)", "job", [("attempt", INT)],
     "gzip", 200, ANY_OBJ),
    ("get", "/jobs/{job_id}/log", "Download the log tarball", "user", [("attempt", INT)], None, 200, "gzip"),
    ("post", "/catalog/replicas", "Register a replica, or a list all or nothing (reply {files, created}); a job's "
     "newer attempt replaces its older attempts' replicas", "job", [],
     {"oneOf": [{"$ref": "#/components/schemas/Replica"},
                {"type": "array", "items": {"$ref": "#/components/schemas/Replica"}}]}, 201, "CatalogFile"),
    ("get", "/catalog/replicas", "Replicas of an LFN", "user", [("lfn", STR)], None, 200, "CatalogFile"),
    ("delete", "/catalog/replicas", "Delete a replica", "user", [("lfn", STR), ("site", STR)], None, 200, ANY_OBJ),
    ("get", "/catalog/files", "Files below an LFN directory", "user", [("dir", STR)], None, 200, ANY_OBJ),
    ("get", "/sessions", "Sessions", "user", [], None, 200, ANY_OBJ),
    ("post", "/sessions", "Create a session", "user", [], "SessionIn", 201, ANY_OBJ),
    ("get", "/sessions/{name}", "A session with parameters and software", "user", [], None, 200, ANY_OBJ),
    ("post", "/sessions/{name}/parameters", "Define a job parameter", "user", [], "ParameterIn", 201, ANY_OBJ),
    ("post", "/sessions/{name}/software", "Register a software release", "user", [], "SoftwareIn", 201, ANY_OBJ),
    ("post", "/sessions/{name}/steps", "Define a step template, or replace one no request chooses (409 "
     "step-in-use); create-productions", "user", [], "StepTemplateIn", 201, ANY_OBJ),
    ("delete", "/sessions/{name}/steps/{step}", "Remove a step template no request chooses (409 step-in-use)",
     "user", [], None, 200, ANY_OBJ),
    ("patch", "/sessions/{name}", "A session's description and payload module (create-productions)", "user", [],
     "SessionPatch", 200, ANY_OBJ),
    ("patch", "/sessions/{name}/software/{software_id}", "Edit a release while no production uses it (409 "
     "release-used), retire it while no open production uses it (409 release-in-use), or restore it "
     "(`retired` false); create-productions", "user", [], "SoftwarePatch", 200, ANY_OBJ),
    ("get", "/productions", "Productions", "user", [("session", STR), ("status", STR)], None, 200, ANY_OBJ),
    ("post", "/productions", "Create a production and its _test twin (create-productions) with a release that is not "
     "retired (no revision: the newest not retired); 409 duplicate-production or release-retired", "user", [],
     "ProductionIn", 201, ANY_OBJ),
    ("get", "/productions/{name}", "A production", "user", [], None, 200, ANY_OBJ),
    ("patch", "/productions/{name}", "Open or close a production and its _test twin, or change its note", "user",
     [], "ProductionPatch", 200, ANY_OBJ),
    ("get", "/requests", "Production requests", "user", [("production", STR), ("status", STR), ("limit", INT)],
     None, 200, ANY_OBJ),
    ("post", "/requests", "Create a request and its test twin", "user", [], "RequestIn", 201, ANY_OBJ),
    ("get", "/requests/{request_id}", "A request", "user", [], None, 200, ANY_OBJ),
    ("patch", "/requests/{request_id}", "Change status (open, valid, running, closed) or settings", "user", [],
     "RequestPatch", 200, ANY_OBJ),
    ("delete", "/requests/{request_id}", "Delete a request that has no jobs (create-requests), with its test "
     "request unless that one has jobs; 409 request-has-jobs, test-request (delete its request instead) or "
     "production-closed", "user", [], None, 200, "RequestDeleted"),
    ("get", "/sites", "Sites", "user", [], None, 200, ANY_OBJ),
    ("post", "/sites", "Create a site", "user", [], "SiteIn", 201, ANY_OBJ),
    ("get", "/sites/{name}", "A site with its switches", "user", [], None, 200, ANY_OBJ),
    ("patch", "/sites/{name}", "Thresholds, bunch size, description, switches", "user", [], "SitePatch", 200, ANY_OBJ),
    ("post", "/sites/{name}/checks", "Keep a node's `severus check --report` (expert-submission; body at most "
     "64 KiB); the site shows the newest as `last_check`", "user", [], "SiteCheckIn", 201, "SiteCheck"),
    ("get", "/sites/{name}/checks", "A site's node checks, newest first (`limit`, default 20)", "user",
     [("limit", INT)], None, 200,
     _obj({"site": STR, "history": {"type": "array", "items": {"$ref": "#/components/schemas/SiteCheck"}}})),
    ("post", "/submissions", "Plan (dry_run) or prepare jobs", "user", [], "Submission", 201, ANY_OBJ),
    ("post", "/sites/{name}/reset", "Reset a site (shifter-submission or expert-submission): its failed "
     "threshold counts only failed and sys-failed jobs that end from now on (within 24 h); the jobs are "
     "untouched; recorded as a site-reset activity", "user", [], None, 200,
     _obj({"site": STR, "failed_reset_at": STR, "failed_before": INT, "failed": INT, "threshold_failed": INT})),
    ("patch", "/me", "The caller's auto-sub (shifter or expert submission)", "user", [],
     _obj({"auto_sub": BOOL}, ("auto_sub",)), 200, ANY_OBJ),
    ("get", "/tokens", "The caller's API tokens (a developer's `user` names another's); never their hashes",
     "user", [("user", STR)], None, 200, _obj({"tokens": {"type": "array", "items": {"$ref": "#/components/schemas/Token"}}})),
    ("post", "/tokens", "A new API token for the caller (a developer's `user`: for another); `token` is shown "
     "this once", "user", [], "TokenIn", 201, ANY_OBJ),
    ("delete", "/tokens/{token_id}", "Revoke (delete) a token: the caller's own, or anyone's for a developer; "
     "recorded as a token-revoked activity", "user", [], None, 200, _obj({"revoked": {"$ref": "#/components/schemas/Token"}})),
    ("get", "/users", "Users with groups and tokens (Developer group)", "user", [], None, 200,
     _obj({"users": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}})),
    ("post", "/users", "Create a user with a first token (Developer group); `token` is shown this once; 409 "
     "user-exists", "user", [], "UserIn", 201, ANY_OBJ),
    ("patch", "/users/{name}", "Replace a user's groups (Developer group); 409 last-developer", "user", [],
     _obj({"groups": STRS}, ("groups",)), 200, "User"),
    ("get", "/stats", "Statistics per session and user, and per site", "user", [("user", STR)], None, 200, ANY_OBJ),
    ("get", "/activities", "Last activities", "user", [("user", STR), ("limit", INT)], None, 200, ANY_OBJ),
]


def _ref(schema):
    if schema == "gzip":
        return {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {JSON: {"schema": schema}}


def _error(description):
    return {"description": description, "content": _ref("Error")}


def _operation(method, path, summary, security, query, body, code, reply):
    op = {"summary": summary, "operationId": f"{method}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '').replace('.', '_').replace('-', '_')}",
          "responses": {str(code): {"description": "success", "content": _ref(reply)},
                        "400": _error("bad input"), "404": _error("not found")}}
    if path == "/submissions":
        op["responses"]["200"] = {"description": "the plan of a dry run", "content": _ref(ANY_OBJ)}
    if path == "/catalog/replicas" and method == "post":
        op["responses"]["200"] = {"description": "already registered", "content": _ref("CatalogFile")}
        op["responses"]["409"] = _error("replica-mismatch, attempt-superseded or attempt-ended")
    if path == "/jobs/{job_id}/attempt":
        op["responses"]["409"] = _error("attempt-superseded or attempt-ended")
    if security:
        op["security"] = [{"bearer": []}]
        op["responses"]["401"] = _error("missing, unknown or revoked token, or token-expired")
        op["responses"]["403"] = _error("token lacks the privilege, or belongs to another job")
    if method == "post" and path == "/productions":
        op["responses"]["409"] = _error("duplicate-production or release-retired")
    if method == "delete" and path == "/requests/{request_id}":
        op["responses"]["409"] = _error("request-has-jobs, test-request or production-closed")
    if method in ("post", "patch", "put"):
        op["responses"]["409"] = op["responses"].get("409") or _error("conflict")
        op["responses"]["413"] = _error("body too large")
    params = [{"name": name, "in": "query", "required": False, "schema": schema} for name, schema in query]
    for name in re.findall(r"\{(\w+)\}", path):
        params.append({"name": name, "in": "path", "required": True,
                       "schema": INT if name.endswith("_id") else STR})
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": _ref(body)}
    return op


@functools.lru_cache(maxsize=None)
def _build():
    paths = {}
    for route in ROUTES:
        paths.setdefault(route[1], {})[route[0]] = _operation(*route)
    return {
        "openapi": "3.0.3",
        "info": {"title": "sbk, the Severus bookkeeping API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def spec():
    """The document (a fresh copy callers may change)."""
    return copy.deepcopy(_build())
