"""Sites: thresholds, bunch size, SE information, per-session / per-production switches, node checks."""
import tomllib
from pathlib import Path

from . import counts
from . import models as m

SITE_CONFIGS = Path(__file__).resolve().parent.parent / "site_configs"


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
