"""Sites (seed 000's SITE MANAGEMENT): the list and a site's page."""
from flask import render_template

from .. import counts
from .. import models as m
from ..api.people import jobs_by_site
from ..sites import get_site, site_dict
from . import bp


@bp.get("/sites")
def sites():
    per_site = jobs_by_site()
    return render_template("sites.html", sites=[(site_dict(s), per_site.get(s.name, {}))
                                                for s in m.Site.select().order_by(m.Site.name)])


@bp.get("/sites/<name>")
def site_detail(name):
    site = get_site(name)
    per_production = counts.site_productions(site.id)
    productions = {p.name: p.id for p in m.Production.select(m.Production.id, m.Production.name)}
    return render_template("site.html", site=site_dict(site, full=True), per_production=per_production,
                           production_ids=productions)
