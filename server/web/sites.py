"""Sites (seed 000's SITE MANAGEMENT): the list with a create form, and a site's page: SITE INFO with its
edit form, the SESSION/PRODUCTION SITE INFO table with its switches, the node checks and a chart.

Every change goes through sites.create_site / update_site with the API's body (POST and PATCH
/api/v1/sites), under the API's privilege (expert-submission, the seed's site admins).
"""
from flask import flash, redirect, render_template, request, url_for

from .. import counts
from .. import models as m
from .. import sites as core
from ..sites import SITE_ADMIN, check_dict, checks_of, get_site, site_dict
from . import bp
from .charts import site_status_chart
from .forms import Field, action, attempt, form_body

SETTING_FIELDS = (Field("description", keep_empty=True), Field("threshold_prepared", "int"),
                  Field("threshold_running", "int"), Field("threshold_failed", "int"), Field("bunch_size", "int"))
CREATE_FIELDS = (Field("name"), Field("description"), *SETTING_FIELDS[1:])
CHECKS_SHOWN = 10
# The table's buttons: (switch, value) -> what the flash says was done.
SESSION_SWITCHES = {("enabled", True): "enabled", ("enabled", False): "disabled",
                    ("supported", True): "supported", ("supported", False): "unsupported"}


def _flag(raw):
    """A button's `value` as the API's boolean ('true'/'false'); anything else goes on as text, refused by
    the core's schema check with its one line."""
    return {"true": True, "false": False}.get(raw, raw)


def _settings(site):
    return {"description": site.description, "threshold_prepared": site.threshold_prepared,
            "threshold_running": site.threshold_running, "threshold_failed": site.threshold_failed,
            "bunch_size": site.bunch_size}


def _list_page(values=None, error=None, status=200):
    per_site = counts.jobs_by_site()
    return render_template("sites.html", sites=[(site_dict(s), per_site.get(s.name, {}))
                                                for s in m.Site.select().order_by(m.Site.name)],
                           values=values or {}, error=error, admin=SITE_ADMIN), status


@bp.get("/sites")
def sites():
    return _list_page()[0]


@bp.post("/sites")
@action(SITE_ADMIN)
def create_site():
    site, error = attempt(lambda: core.create_site(form_body(CREATE_FIELDS)))   # a bad number refused too
    if error:
        return _list_page(values=request.form, error=error, status=error.status_code)
    flash(f"Site {site.name} created.")
    return redirect(url_for("web.site_detail", name=site.name))


def _detail_page(name, values=None, error=None, status=200):
    site = get_site(name)
    jobs = counts.site_jobs(site.id)
    checks = [check_dict(row, site) for row in checks_of(site).limit(CHECKS_SHOWN)]
    return render_template("site.html", site=site_dict(site), jobs=jobs,
                           table=core.session_production_table(site),
                           last_check=checks[0] if checks else None, checks=checks,
                           chart=site_status_chart({site.name: jobs} if jobs else {}),
                           values=values if values is not None else _settings(site), error=error,
                           admin=SITE_ADMIN), status


@bp.get("/sites/<name>")
def site_detail(name):
    return _detail_page(name)[0]


@bp.post("/sites/<name>/settings")
@action(SITE_ADMIN)
def site_settings(name):
    site, error = attempt(lambda: core.update_site(name, form_body(SETTING_FIELDS)))
    if error:
        return _detail_page(name, values=request.form, error=error, status=error.status_code)
    flash(f"Site info of {site.name} saved.")
    return redirect(url_for("web.site_detail", name=name))


@bp.post("/sites/<name>/sessions")
@action(SITE_ADMIN)
def site_session_switch(name):
    """disable | enable, unsupport | support: one switch of one session at the site."""
    session, switch = request.form.get("session", ""), request.form.get("switch", "")
    value = _flag(request.form.get("value", ""))
    _, error = attempt(core.update_site, name, {"sessions": {session: {switch: value}}})
    if error:
        return _detail_page(name, error=error, status=error.status_code)
    flash(f"Session {session} {SESSION_SWITCHES[(switch, value)]} at {name}.")
    return redirect(url_for("web.site_detail", name=name))


@bp.post("/sites/<name>/productions")
@action(SITE_ADMIN)
def site_production_switch(name):
    """allow | not allow: a production (and its _test twin) at the site."""
    production = request.form.get("production", "")
    value = _flag(request.form.get("value", ""))
    _, error = attempt(core.update_site, name, {"productions": {production: {"allowed": value}}})
    if error:
        return _detail_page(name, error=error, status=error.status_code)
    flash(f"Production {production} {'allowed' if value else 'not allowed'} at {name}.")
    return redirect(url_for("web.site_detail", name=name))
