"""Production requests (seed 000's PRODUCTION REQUESTS)."""
from flask import redirect, render_template, url_for

from ..production_requests import get_request, request_dict
from . import bp


@bp.get("/requests")
def requests():
    return redirect(url_for("web.productions"))


@bp.get("/requests/<id:request_id>")
def request_detail(request_id):
    return render_template("request.html", req=request_dict(get_request(request_id)))
