"""Session management (seed 000's "future developments"): sessions, their job-parameter definitions with the
allowed values, and software releases: create, edit, retire and restore.

Every change goes through server/sessions.py with the API's body (POST/PATCH /api/v1/sessions...), under
the API's privilege (create-productions), so the page and the API obey the same rules (a used release is
not edited, a release an open production uses is not retired, a value a request uses stays allowed).
"""
from flask import flash, redirect, render_template, request, url_for

from shared.schema import SchemaError

from .. import models as m
from .. import sessions as core
from ..api.params import query_int
from ..sessions import MANAGER, get_session, get_software, release_users, session_dict, software_dict
from . import bp
from .forms import Field, action, attempt, form_body

SESSION_FIELDS = (Field("description", keep_empty=True), Field("payload_module"),
                  Field("container_image", keep_empty=True))
CREATE_FIELDS = (Field("name"), Field("description"), Field("payload_module"), Field("container_image"))
PARAMETER_FIELDS = (Field("name"), Field("allowed", "lines"))
STEP_FIELDS = (Field("name"), Field("module"), Field("parameters", "pairs"), Field("args", "lines"))
RELEASE_FIELDS = (Field("name"), Field("version"), Field("revision", "int"), Field("lfn"), Field("adler32"),
                  Field("path"), Field("workdir"), Field("exe"), Field("env", "pairs"))
# editing sends every field: an emptied environment is an empty one, not "unchanged"
EDIT_RELEASE_FIELDS = RELEASE_FIELDS[:-1] + (Field("env", "pairs", keep_empty=True),)
PARAMETER_SLOTS = 4      # the create form's parameter rows (the seed's four); ?slots= shows more


def _slots():
    return query_int("slots", PARAMETER_SLOTS, lo=1, hi=core.MAX_PARAMETERS)


def _create_body():
    """The API's body of the create form: the session's fields and its filled parameter rows."""
    body = form_body(CREATE_FIELDS)
    parameters = []
    for n in range(1, core.MAX_PARAMETERS + 1):
        row = form_body((Field(f"param-{n}-name", key="name"), Field(f"param-{n}-allowed", "lines", key="allowed")))
        if row.get("name"):
            parameters.append(row)
        elif row.get("allowed"):
            raise SchemaError(f"parameter row {n} has allowed values but no name")
    if parameters:
        body["parameters"] = parameters
    return body


def _list_page(values=None, error=None, status=200):
    rows = []
    for session in m.Session.select().order_by(m.Session.name):
        d = session_dict(session, full=True)
        d["releases_open"] = sum(not sw["retired"] for sw in d["software"])
        rows.append(d)
    slots = max(_slots(), max((n for n in range(1, core.MAX_PARAMETERS + 1)
                               if (values or {}).get(f"param-{n}-name")), default=0))
    return render_template("sessions.html", sessions=rows, values=values or {}, error=error, slots=slots,
                           manager=MANAGER), status


@bp.get("/sessions")
def sessions():
    return _list_page()[0]


@bp.post("/sessions")
@action(MANAGER)
def create_session():
    session, error = attempt(lambda: core.create_session(_create_body()))
    if error:
        return _list_page(values=request.form, error=error, status=error.status_code)
    flash(f"Session {session.name} created.")
    return redirect(url_for("web.session_detail", name=session.name))


def _detail_page(name, values=None, error=None, status=200, form=""):
    """The session's page; `form` names the form `values` (what was typed) belong to."""
    session = get_session(name)
    users = release_users(session)
    return render_template("session.html", session=session_dict(session, full=True), users=users,
                           values=values or {}, form=form, error=error, manager=MANAGER), status


@bp.get("/sessions/<name>")
def session_detail(name):
    return _detail_page(name)[0]


def _done(name, message):
    flash(message)
    return redirect(url_for("web.session_detail", name=name))


@bp.post("/sessions/<name>/settings")
@action(MANAGER)
def session_settings(name):
    session, error = attempt(lambda: core.update_session(name, form_body(SESSION_FIELDS)))
    if error:
        return _detail_page(name, request.form, error, error.status_code, "settings")
    return _done(name, f"Session {session.name} saved.")


@bp.post("/sessions/<name>/parameters")
@action(MANAGER)
def session_parameter(name):
    """Add a job parameter, or replace a parameter's allowed values (one a line; none: any value)."""
    body = form_body(PARAMETER_FIELDS)
    result, error = attempt(core.define_parameter, name, body)
    if error:
        return _detail_page(name, request.form, error, error.status_code, request.form.get("form", "parameter"))
    verb = "added" if result[1] else "saved"
    return _done(name, f"Parameter {body.get('name')} {verb}.")


@bp.post("/sessions/<name>/steps")
@action(MANAGER)
def session_step(name):
    """Add a step template, or replace one no request chooses."""
    body = form_body(STEP_FIELDS)
    result, error = attempt(core.define_step_template, name, body)
    if error:
        return _detail_page(name, request.form, error, error.status_code, "step")
    return _done(name, f"Step {body.get('name')} {'added' if result[1] else 'saved'}.")


@bp.post("/sessions/<name>/steps/<step>/delete")
@action(MANAGER)
def session_step_delete(name, step):
    _, error = attempt(core.delete_step_template, name, step)
    if error:
        return _detail_page(name, error=error, status=error.status_code)
    return _done(name, f"Step {step} removed.")


@bp.post("/sessions/<name>/software")
@action(MANAGER)
def session_release(name):
    sw, error = attempt(lambda: core.create_software(name, form_body(RELEASE_FIELDS)))
    if error:
        return _detail_page(name, request.form, error, error.status_code, "release")
    return _done(name, f"Release {sw.name} {sw.version} rev {sw.revision} added.")


def _release_page(name, software_id, values=None, error=None, status=200):
    session = get_session(name)
    sw = get_software(session, software_id)
    d = software_dict(sw)
    if values is None:
        values = {**d, "env": "\n".join(f"{k}={v}" for k, v in sorted(sw.env.items()))}
    return render_template("session_release.html", session=session_dict(session), sw=d,
                           users=release_users(session).get(sw.id, []), values=values, error=error,
                           manager=MANAGER), status


@bp.get("/sessions/<name>/software/<id:software_id>")
def session_release_detail(name, software_id):
    return _release_page(name, software_id)[0]


@bp.post("/sessions/<name>/software/<id:software_id>")
@action(MANAGER)
def session_release_edit(name, software_id):
    sw, error = attempt(lambda: core.update_software(name, software_id, form_body(EDIT_RELEASE_FIELDS)))
    if error:
        return _release_page(name, software_id, request.form, error, error.status_code)
    return _done(name, f"Release {sw.name} {sw.version} rev {sw.revision} saved.")


@bp.post("/sessions/<name>/software/<id:software_id>/retired")
@action(MANAGER)
def session_release_retire(name, software_id):
    """retire | restore."""
    value = {"true": True, "false": False}.get(request.form.get("value", ""), request.form.get("value", ""))
    sw, error = attempt(core.update_software, name, software_id, {"retired": value})
    if error:
        if request.form.get("back") == "release":
            return _release_page(name, software_id, error=error, status=error.status_code)
        return _detail_page(name, error=error, status=error.status_code)
    return _done(name, f"Release {sw.name} {sw.version} rev {sw.revision} {'retired' if sw.retired else 'restored'}.")
