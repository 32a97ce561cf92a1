"""Sites: thresholds, bunch size, SE information, per-session / per-production switches, node checks."""
import tomllib
from pathlib import Path

from shared import schema as s
from shared.jobdesc import NAME_RE

from . import counts, db
from . import models as m
from .errors import bad_request, conflict
from .productions import get_production
from .sessions import get_session

SITE_CONFIGS = Path(__file__).resolve().parent.parent / "site_configs"
# Managing a site, and reporting a node check for it, is expert submission (the seed's site admins).
SITE_ADMIN = "expert-submission"
# The settings a manager changes (POST/PATCH /sites and the site page's forms), each with its reader.
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
         # written where it happens (jobs.note_site_activity): reading it costs no pass over the site's jobs
         "last_activity": m.iso(site.last_activity), "last_submission": m.iso(site.last_submission)}
    if full:
        d["jobs"] = counts.site_jobs(site.id)
        d["sessions"] = [{"session": x.session.name, "enabled": x.enabled, "supported": x.supported,
                          "last_activity": m.iso(x.last_activity)} for x in site.sessions]
        d["last_check"] = check_dict(checks_of(site).first(), site)
        d["productions"] = [{"production": x.production.name, "allowed": x.allowed,
                             "last_submission": m.iso(x.last_submission),
                             "last_submitted_by": x.last_submitted_by.name if x.last_submitted_by_id else None}
                            for x in site.productions]
    return d


def checks_of(site):
    """The site's node checks, newest first, with who reported them."""
    return (m.SiteCheck.select(m.SiteCheck, m.User).join(m.User, m.JOIN.LEFT_OUTER)
            .where(m.SiteCheck.site == site).order_by(m.SiteCheck.id.desc()))


def check_dict(row, site):
    """A stored node check of `site` (None stays None)."""
    if row is None:
        return None
    return {"id": row.id, "site": site.name, "node": row.node, "status": row.status, "checks": row.checks,
            "wrapper_version": row.wrapper_version,
            "reported_by": row.reported_by.name if row.reported_by_id else None,
            "created_at": m.iso(row.created_at)}


# ---------------------------------------------------------------------- changes (the API and the site page)

def create_site(body):
    """A new site from the API's body (name and SETTINGS); 409 duplicate-site."""
    s.refuse_unknown(body, ("name", *SETTINGS))
    name = s.text(body, "name", pattern=NAME_RE, max_len=64)
    fields = {k: reader(body, k) for k, reader in SETTINGS.items() if k in body}
    with db.write_transaction():
        if m.Site.select().where(m.Site.name == name).exists():
            raise conflict("duplicate-site", f"site {name} already exists")
        return m.Site.create(name=name, se=se_from_site_config(name), **fields)


def _switches(body, key, names):
    raw = s.section(body, key)
    out = {}
    for target, flags in raw.items():
        if not isinstance(flags, dict):
            raise s.SchemaError(f"'{key}.{target}' must be an object")
        s.refuse_unknown(flags, names, f"{key}.{target}.")
        out[target] = {n: s.boolean(flags, n, f"{key}.{target}.") for n in names if n in flags}
    return out


def update_site(name, body):
    """Settings, per-session switches (enabled, supported) and per-production `allowed` of site `name`."""
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
    return site


# ---------------------------------------------------------------------- the site page's table

def session_jobs_at(site_id):
    """{session id: {status: jobs}} at one site, from the job counters (never the jobs)."""
    C = m.JobCount
    out = {}
    for session_id, status, n in (C.select(m.Production.session, C.status, m.fn.SUM(C.jobs))
                                  .join(m.Production, on=(m.Production.id == C.production_id))
                                  .where(C.site_id == site_id)
                                  .group_by(m.Production.session, C.status).having(m.fn.SUM(C.jobs) > 0)
                                  .tuples()):
        out.setdefault(session_id, {})[status] = int(n)
    return out


def session_production_table(site):
    """The seed's SESSION/PRODUCTION SITE INFO: every session with the site's switches for it (no row:
    enabled and supported), its jobs here and last activity, and its main productions with `allowed`, jobs
    and events here (main and _test twin apart) and the last submission."""
    per_session = {x.session_id: x for x in m.SiteSession.select().where(m.SiteSession.site == site)}
    per_production = {x.production_id: x for x in
                      m.SiteProduction.select(m.SiteProduction, m.User).join(m.User, m.JOIN.LEFT_OUTER)
                      .where(m.SiteProduction.site == site)}
    jobs = counts.site_productions(site.id)
    by_session = session_jobs_at(site.id)
    productions = {}
    for p in (m.Production.select().where(m.Production.is_test == False)   # noqa: E712 (SQL)
              .order_by(m.Production.name)):
        row = per_production.get(p.id)
        productions.setdefault(p.session_id, []).append({
            "production": p.name, "status": p.status, "allowed": row.allowed if row else True,
            "jobs": jobs.get(p.id, (0, 0)), "test_jobs": jobs.get(p.twin_id, (0, 0)),
            "last_submission": m.iso(row.last_submission) if row else None,
            "last_submitted_by": row.last_submitted_by.name if row and row.last_submitted_by_id else None})
    table = []
    for session in m.Session.select().order_by(m.Session.name):
        row = per_session.get(session.id)
        table.append({"session": session.name, "enabled": row.enabled if row else True,
                      "supported": row.supported if row else True,
                      "last_activity": m.iso(row.last_activity) if row else None,
                      "jobs": by_session.get(session.id, {}), "productions": productions.get(session.id, [])})
    return table
