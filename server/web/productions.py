"""Productions (seed 000's PRODUCTIONS): the list and a production's requests."""
from flask import render_template, request

from .. import models as m
from ..productions import get_production, production_dict
from ..production_requests import request_dict
from . import bp


@bp.get("/productions")
def productions():
    show_test = request.args.get("test") == "1"
    query = m.Production.select().order_by(m.Production.name)
    if not show_test:
        query = query.where(m.Production.is_test == False)  # noqa: E712  (peewee builds SQL from ==)
    return render_template("productions.html", productions=[production_dict(p) for p in query],
                           show_test=show_test)


@bp.get("/productions/<name>")
def production_detail(name):
    production = get_production(name)
    requests = m.Request.select().where(m.Request.production == production).order_by(m.Request.id)
    return render_template("production.html", production=production_dict(production),
                           requests=[request_dict(r) for r in requests])
