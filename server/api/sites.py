"""Sites: thresholds, bunch size, SE information, per-session / per-production switches, node checks."""
from flask import Blueprint, jsonify, request

from shared import schema as s
from shared.jobdesc import NAME_RE

from .. import auth, db
from .. import models as m
from ..errors import ApiError, bad_request, conflict
from ..sites import check_dict, checks_of, get_site, se_from_site_config, site_dict
from .params import json_body, query_int
from .productions import get_production
from .sessions import get_session

bp = Blueprint("sites", __name__)

# Managing a site, and reporting a node check for it, is expert submission (the seed's site admins).
SITE_ADMIN = "expert-submission"
CHECK_STATES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
CHECK_FIELDS = ("name", "state", "ok", "reason", "detail", "seconds", "code", "perf")
# A real report is ~2 KiB (eight checks); the limit keeps a node from filling the table.
MAX_CHECK_BYTES = 64 * 1024
MAX_CHECKS = 64
SETTINGS = {
    "description": lambda d, k: s.text(d, k, max_len=4096, empty=True),
    "threshold_prepared": lambda d, k: s.integer(d, k, hi=10 ** 7),
    "threshold_running": lambda d, k: s.integer(d, k, hi=10 ** 7),
    "threshold_failed": lambda d, k: s.integer(d, k, hi=10 ** 7),
    "bunch_size": lambda d, k: s.integer(d, k, lo=1, hi=10 ** 6),
}


@bp.get("/sites")
@auth.require("monitoring")
def list_sites():
    return jsonify({"sites": [site_dict(x) for x in m.Site.select().order_by(m.Site.name)]})


@bp.get("/sites/<name>")
@auth.require("monitoring")
def show_site(name):
    return jsonify(site_dict(get_site(name), full=True))


@bp.post("/sites")
@auth.require(SITE_ADMIN)
def create_site():
    body = json_body()
    s.refuse_unknown(body, ("name", *SETTINGS))
    name = s.text(body, "name", pattern=NAME_RE, max_len=64)
    fields = {k: reader(body, k) for k, reader in SETTINGS.items() if k in body}
    with db.write_transaction():
        if m.Site.select().where(m.Site.name == name).exists():
            raise conflict("duplicate-site", f"site {name} already exists")
        site = m.Site.create(name=name, se=se_from_site_config(name), **fields)
    return jsonify(site_dict(site, full=True)), 201


def _switches(body, key, names):
    raw = s.section(body, key)
    out = {}
    for target, flags in raw.items():
        if not isinstance(flags, dict):
            raise s.SchemaError(f"'{key}.{target}' must be an object")
        s.refuse_unknown(flags, names, f"{key}.{target}.")
        out[target] = {n: s.boolean(flags, n, f"{key}.{target}.") for n in names if n in flags}
    return out


@bp.patch("/sites/<name>")
@auth.require(SITE_ADMIN)
def update_site(name):
    body = json_body()
    s.refuse_unknown(body, ("sessions", "productions", "reload_se", *SETTINGS))
    fields = {k: reader(body, k) for k, reader in SETTINGS.items() if k in body}
    sessions = _switches(body, "sessions", ("enabled", "supported")) if "sessions" in body else {}
    productions = _switches(body, "productions", ("allowed",)) if "productions" in body else {}
    with db.write_transaction():
        site = get_site(name)
        for k, v in fields.items():
            setattr(site, k, v)
        if s.boolean(body, "reload_se", default=False):
            site.se = se_from_site_config(site.name)
        site.save()
        for session_name, flags in sessions.items():
            row, _ = m.SiteSession.get_or_create(site=site, session=get_session(session_name))
            for k, v in flags.items():
                setattr(row, k, v)
            row.save()
        for production_name, flags in productions.items():
            production = get_production(production_name)
            if production.is_test:
                raise bad_request(f"{production.name} follows {production.twin.name}: set that one")
            row, _ = m.SiteProduction.get_or_create(site=site, production=production)
            row.allowed = flags.get("allowed", row.allowed)
            row.save()
    return jsonify(site_dict(site, full=True))


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
def list_checks(name):
    site = get_site(name)
    limit = query_int("limit", 20, lo=1, hi=1000)
    return jsonify({"site": site.name, "history": [check_dict(r, site) for r in checks_of(site).limit(limit)]})
