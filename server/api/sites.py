"""Sites: thresholds, bunch size, SE information, per-session / per-production switches, node checks."""
from flask import Blueprint, jsonify, request

from shared import schema as s

from .. import auth, db, sites
from .. import models as m
from ..errors import ApiError
from ..sites import SITE_ADMIN, check_dict, checks_of, get_site, site_dict
from .params import json_body, query_int

from . import schemas as S
from .endpoint import endpoint

bp = Blueprint("sites", __name__)

CHECK_STATES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
CHECK_FIELDS = ("name", "state", "ok", "reason", "detail", "seconds", "code", "perf")
# A real report is ~2 KiB (eight checks); the limit keeps a node from filling the table.
MAX_CHECK_BYTES = 64 * 1024
MAX_CHECKS = 64


@bp.get("/sites")
@auth.require("monitoring")
@endpoint("Sites", reply=S.Sites)
def list_sites():
    return jsonify({"sites": [site_dict(x) for x in m.Site.select().order_by(m.Site.name)]})


@bp.get("/sites/<name>")
@auth.require("monitoring")
@endpoint("A site with its switches", reply=S.Site)
def show_site(name):
    return jsonify(site_dict(get_site(name), full=True))


@bp.post("/sites")
@auth.require(SITE_ADMIN)
@endpoint("Create a site", body=S.SiteIn, status=201, reply=S.Site, links=(("name", "/name"),))
def create_site():
    return jsonify(site_dict(sites.create_site(json_body()), full=True)), 201


@bp.patch("/sites/<name>")
@auth.require(SITE_ADMIN)
@endpoint("Thresholds, bunch size, description, switches", body=S.SitePatch, reply=S.Site)
def update_site(name):
    return jsonify(site_dict(sites.update_site(name, json_body()), full=True))


# ---------------------------------------------------------------------- node checks (severus check --report)

def _check_state(data, key, where=""):
    return s.text(data, key, where, pattern="|".join(CHECK_STATES), max_len=8)


def _check_item(item, where):
    """One entry of `checks`, as wrapper/check.py's CheckResult.to_dict() writes it."""
    if not isinstance(item, dict):
        raise s.SchemaError(f"'{where}' must be an object")
    where += "."
    s.refuse_unknown(item, CHECK_FIELDS, where)
    perf = s.section(item, "perf", where) if "perf" in item else {}
    if len(perf) > 32:
        raise s.SchemaError(f"'{where}perf' has more than 32 entries")
    for label in perf:   # JSON keys are strings already; only their length is left to bound
        if len(label) > 64:
            raise s.SchemaError(f"'{where}perf' has a label longer than 64 characters")
        s.number(perf, label, f"{where}perf.", lo=-float(s.MAX_INT))
    return {"name": s.text(item, "name", where, max_len=64), "state": _check_state(item, "state", where),
            "reason": s.text(item, "reason", where, default="", empty=True),
            "seconds": s.number(item, "seconds", where, default=0.0, hi=86400.0),
            "code": s.integer(item, "code", where, default=0, hi=999), "perf": dict(perf)}


def read_check(body, site_name):
    """The fields of a SiteCheck from the body `severus check --json --report` sends; SchemaError names the field."""
    s.refuse_unknown(body, ("site", "node", "state", "ok", "code", "checks", "wrapper_version"))
    if body.get("site") is not None and body["site"] != site_name:
        raise s.SchemaError(f"'site' is {str(body['site'])[:64]!r} but the URL names {site_name!r}")
    checks = body.get("checks")
    if not isinstance(checks, list) or not checks:
        raise s.SchemaError("'checks' must be a non-empty list")
    if len(checks) > MAX_CHECKS:
        raise s.SchemaError(f"'checks' has more than {MAX_CHECKS} items")
    return {"node": s.text(body, "node", max_len=255), "status": _check_state(body, "state"),
            "wrapper_version": s.text(body, "wrapper_version", default="", max_len=64, empty=True),
            "checks": [_check_item(c, f"checks[{i}]") for i, c in enumerate(checks)]}


@bp.post("/sites/<name>/checks")
@auth.require(SITE_ADMIN)
@endpoint(
    "Keep a node's `severus check --report` (expert-submission; body at most 64 KiB); the site shows the "
    "newest as `last_check`",
    body=S.SiteCheckIn, status=201, reply=S.SiteCheck)
def post_check(name):
    # Tighter than the server-wide body limit. werkzeug cuts a chunked body at max_content_length
    # without a word, so read one byte past the limit to tell "too large" from "bad JSON".
    request.max_content_length = MAX_CHECK_BYTES + 1
    if (request.content_length or 0) > MAX_CHECK_BYTES or len(request.get_data()) > MAX_CHECK_BYTES:
        raise ApiError(413, "too-large", f"a node check is larger than {MAX_CHECK_BYTES} bytes")
    fields = read_check(json_body(), name)
    with db.write_transaction():
        row = m.SiteCheck.create(site=get_site(name), reported_by=auth.current_principal().user, **fields)
    return jsonify(check_dict(row, row.site)), 201


@bp.get("/sites/<name>/checks")
@auth.require("monitoring")
@endpoint("A site's node checks, newest first (`limit`, default 20)", query=S.LimitQuery, reply=S.SiteChecks)
def list_checks(name):
    site = get_site(name)
    limit = query_int("limit", 20, lo=1, hi=1000)
    return jsonify({"site": site.name, "history": [check_dict(r, site) for r in checks_of(site).limit(limit)]})
