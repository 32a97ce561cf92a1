"""Productions (seed 000's PRODUCTIONS): the list, a production's page, and their actions.

Create, close/open and the note go through productions.create_production / update_production with the
API's body, so the page and `POST/PATCH /api/v1/productions` obey the same rules.
"""
from flask import flash, g, redirect, render_template, request, url_for

from .. import models as m
from .. import productions as core
from ..errors import bad_request
from ..production_requests import request_dict
from ..productions import get_production, open_releases, production_dict
from . import bp
from .forms import Field, action, attempt, form_body

MANAGER = "create-productions"
CREATE_FIELDS = (Field("name"), Field("session"), Field("note"))


def release_value(sw):
    """A release as one select value: the revision first (a number), then the version (any text)."""
    return f"{sw.revision}:{sw.version}"


def release_body(raw):
    """The API's `version` and `revision` from a release select value ({} when none was chosen)."""
    revision, sep, version = raw.partition(":")
    if not sep or not revision.isdigit():
        return {}
    return {"version": version, "revision": int(revision)}


def _sessions():
    return list(m.Session.select().order_by(m.Session.name))


def _releases(session_name):
    session = m.Session.get_or_none(m.Session.name == session_name) if session_name else None
    return [(release_value(sw), f"{sw.name} {sw.version} rev {sw.revision}")
            for sw in (open_releases(session) if session else [])]


def _list_page(values=None, error=None, status=200):
    show_test = request.args.get("test") == "1"
    query = m.Production.select().order_by(m.Production.name)
    if not show_test:
        query = query.where(m.Production.is_test == False)  # noqa: E712  (peewee builds SQL from ==)
    sessions = _sessions()
    values = values if values is not None else request.args
    chosen = values.get("session") or (sessions[0].name if sessions else "")
    return render_template("productions.html", productions=[production_dict(p) for p in query],
                           show_test=show_test, sessions=[s.name for s in sessions], chosen_session=chosen,
                           releases=_releases(chosen), values=values, error=error), status


@bp.get("/productions")
def productions():
    return _list_page()


@bp.get("/productions/_releases")
def production_releases():
    """The release select of the create form for ?session= (htmx swaps it in when the session changes)."""
    return render_template("_production_releases.html", releases=_releases(request.args.get("session", "")),
                           chosen="")


@bp.post("/productions")
@action(MANAGER)
def create_production():
    if "releases" in request.form:      # no JavaScript: "Show releases" re-renders for the chosen session
        return _list_page(values=request.form)
    body = {**form_body(CREATE_FIELDS), **release_body(request.form.get("release", ""))}
    if "version" not in body and "session" in body:
        return _list_page(values=request.form, error=bad_request("choose a software release"), status=400)
    main, error = attempt(core.create_production, g.principal.user, body)
    if error:
        return _list_page(values=request.form, error=error, status=error.status_code)
    flash(f"Production {main.name} and its test twin {main.name}{core.TEST_SUFFIX} created.")
    return redirect(url_for("web.production_detail", name=main.name))


def _detail_page(name, error=None, status=200, values=None):
    production = get_production(name)
    requests = m.Request.select().where(m.Request.production == production).order_by(m.Request.id)
    return render_template("production.html", production=production_dict(production),
                           requests=[request_dict(r) for r in requests], error=error,
                           values=values or {}), status


@bp.get("/productions/<name>")
def production_detail(name):
    return _detail_page(name)[0]


@bp.post("/productions/<name>/status")
@action(MANAGER)
def production_status(name):
    status = request.form.get("status", "")
    production, error = attempt(core.update_production, name, {"status": status})
    if error:
        return _detail_page(name, error=error, status=error.status_code)
    twin = f" with {production.twin.name}" if production.twin_id else ""
    flash(f"Production {production.name} {'closed' if status == 'closed' else 'opened'}{twin}.")
    if request.form.get("back") == "list":
        return redirect(url_for("web.productions"))
    return redirect(url_for("web.production_detail", name=name))


@bp.post("/productions/<name>/note")
@action(MANAGER)
def production_note(name):
    production, error = attempt(core.update_production, name, form_body((Field("note", keep_empty=True),)))
    if error:
        return _detail_page(name, error=error, status=error.status_code, values=request.form)
    flash(f"Note of {production.name} saved.")
    return redirect(url_for("web.production_detail", name=name))
