"""Sites: thresholds, bunch size, SE information, and per-session / per-production switches."""
import tomllib
from pathlib import Path

from flask import Blueprint, jsonify

from shared import schema as s
from shared.jobdesc import NAME_RE

from .. import auth, db
from .. import models as m
from ..errors import bad_request, conflict
from .params import json_body
from .productions import get_production
from .sessions import get_session

bp = Blueprint("sites", __name__)

SITE_ADMIN = "expert-submission"
SITE_CONFIGS = Path(__file__).resolve().parent.parent.parent / "site_configs"
SETTINGS = {
    "description": lambda d, k: s.text(d, k, max_len=4096, empty=True),
    "threshold_prepared": lambda d, k: s.integer(d, k, hi=10 ** 7),
    "threshold_running": lambda d, k: s.integer(d, k, hi=10 ** 7),
    "threshold_failed": lambda d, k: s.integer(d, k, hi=10 ** 7),
    "bunch_size": lambda d, k: s.integer(d, k, lo=1, hi=10 ** 6),
}


def get_site(name):
    return m.get_or_404(m.Site, m.Site.name == name, f"site {name!r}")


def se_from_site_config(name):
    """The [se] table of site_configs/<name>.toml, {} when there is none."""
    path = SITE_CONFIGS / f"{name}.toml"
    if not path.is_file():
        return {}
    with open(path, "rb") as fh:
        return tomllib.load(fh).get("se", {})


def site_dict(site, full=False):
    d = {"name": site.name, "description": site.description,
         "thresholds": {"prepared": site.threshold_prepared, "running": site.threshold_running,
                        "failed": site.threshold_failed},
         "bunch_size": site.bunch_size, "se": site.se,
         "last_submission": m.iso(site.last_submission)}
    if full:
        last = m.Job.select(m.fn.MAX(m.Job.heartbeat_at)).where(m.Job.site == site).scalar()
        d["last_activity"] = m.iso(last)
        d["jobs"] = {status: count for status, count in (
            m.Job.select(m.Job.status, m.fn.COUNT(m.Job.id)).where(m.Job.site == site)
            .group_by(m.Job.status).tuples())}
        d["sessions"] = [{"session": x.session.name, "enabled": x.enabled, "supported": x.supported}
                         for x in site.sessions]
        d["productions"] = [{"production": x.production.name, "allowed": x.allowed,
                             "last_submission": m.iso(x.last_submission),
                             "last_submitted_by": x.last_submitted_by.name if x.last_submitted_by_id else None}
                            for x in site.productions]
    return d


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
