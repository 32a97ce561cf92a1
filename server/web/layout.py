"""What every page shares: template filters, the URL helper, privilege checks, and the error page."""
from flask import g, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from .. import models as m
from ..errors import ApiError, as_api_error
from ..people import is_developer   # people management is the Developer group's (seed: WebUiDeveloper)
from . import bp

# The menu: (endpoint, label, privileges that show it; none: every signed-in user), in the seed's order.
MENU = (
    ("web.home", "Home", ()),
    ("web.productions", "Productions", ()),
    ("web.requests", "Requests", ()),
    ("web.expert_init", "Expert init", ("expert-submission",)),
    ("web.shift_init", "Shift init", ("shifter-submission", "expert-submission")),
    ("web.job_monitor", "Job monitor", ()),
    ("web.sites", "Sites", ()),
    ("web.sessions", "Sessions", ()),
    ("web.people", "People", ("developer",)),
    ("web.charts_page", "Charts", ()),
)


@bp.app_template_global()
def can(*privileges):
    """Whether the signed-in user holds one of `privileges` ('developer': is in the Developer group)."""
    principal = g.get("principal")
    if principal is None:
        return False
    if not privileges:
        return True
    if "developer" in privileges:
        if "developer_member" not in g:
            g.developer_member = is_developer(principal.user)
        if g.developer_member:
            return True
    return any(principal.can(p) for p in privileges if p != "developer")


@bp.app_template_global()
def menu():
    """The menu entries this user may open: [(endpoint, label)]."""
    return [(endpoint, label) for endpoint, label, privileges in MENU if can(*privileges)]


def need(*privileges):
    """Refuse the page (403) unless the user holds one of `privileges` (see `can`)."""
    if not can(*privileges):
        named = " or ".join("membership of the Developer group" if p == "developer" else f"the privilege {p}"
                            for p in privileges)
        raise ApiError(403, "forbidden", f"this page needs {named}")


@bp.app_template_filter("num")
def format_count(value):
    return "-" if value is None else f"{value:,}"


@bp.app_template_filter("seconds")
def format_seconds(value):
    return "-" if value is None else f"{value:.2f}"


@bp.app_template_filter("when")
def format_time(value):
    """A stored time as 'YYYY-MM-DD HH:MM:SS' UTC."""
    if value is None:
        return "-"
    text = m.iso(value) if not isinstance(value, str) else value
    return text.replace("T", " ").rstrip("Z")


@bp.app_template_global()
def url_with(**changes):
    """This page's URL with some query parameters replaced (None drops one)."""
    args = MultiDict(request.args)
    for key, value in changes.items():
        args.poplist(key)
        if value is not None:
            args.setlist(key, value if isinstance(value, (list, tuple)) else [value])
    return url_for(request.endpoint, **(request.view_args or {}), **args.to_dict(flat=False))


@bp.errorhandler(Exception)
def error_page(error):
    """Every failure under the pages as an HTML page with the API's status and one sentence."""
    api_error = as_api_error(error)
    return render_template("error.html", error=api_error), api_error.status_code
