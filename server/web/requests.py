"""Production requests (seed 000's PRODUCTION REQUESTS): a production's requests, a request's page, and
their actions (create, import, modify, status, delete).

Every action calls production_requests.create_request / update_request / delete_request with the API's
body, so the page and `/api/v1/requests` obey one set of rules. The duplicate warning and the import
selects are htmx fragments; without JavaScript the same page re-renders from a GET.
"""
from flask import flash, g, redirect, render_template, request, url_for

from shared.jobdesc import INPUT_MODES
from shared.schema import SchemaError

from .. import models as m
from .. import production_requests as core
from .. import stages
from ..errors import bad_request
from ..production_requests import NEXT_STATUS, SETTINGS, get_request, request_dict
from ..productions import get_production
from . import bp
from .forms import Field, action, attempt, form_body

MANAGER = "create-requests"
PARAM_PREFIX = "p_"           # a job parameter's select: p_<name> (parameter names match NAME_RE)

# The create form's fields, by the body key they fill (kinds: see forms.Field).
SETTING_FIELDS = (
    Field("priority", "int"), Field("min_runnum", "int"), Field("required_events", "int"),
    Field("events_per_job", "int"), Field("num_jobs", "int"), Field("event_time_s", "number"),
    Field("max_wct_s", "number"), Field("max_rss_mb", "number"), Field("stall_s", "number"),
    Field("cores", "int"), Field("memory_mb", "number"), Field("files_per_job", "int"),
    Field("max_attempts", "int"), Field("retry_backoff_s", "number"),
    Field("input_mode"), Field("input_paths", "lines", keep_empty=True), Field("output_lfn"),
    Field("output_abs", keep_empty=True), Field("output_sites", "list"),
    Field("output_patterns", "lines"), Field("note", keep_empty=True),
    Field("steps", "lines", keep_empty=True),
    # the follow-up stage, one object in the API (nested_settings makes it): no template, no stage
    Field("followup_template", keep_empty=True), Field("followup_fraction", "number"),
    Field("followup_files_per_job", "int"), Field("followup_patterns", "lines", keep_empty=True))
TEST_FIELDS = (Field("test_output_lfn"), Field("test_output_abs"), Field("same_output_dirs", "bool"))
# Once a request has left `open` only these change (production_requests.ALWAYS_CHANGEABLE).
LATE_FIELDS = tuple(f for f in SETTING_FIELDS if f.name in core.ALWAYS_CHANGEABLE)


def session_parameters(session):
    """[(name, allowed values)] of `session`'s job parameters, in their order ([] allowed: any value)."""
    return [(p.name, p.allowed) for p in m.JobParameter.select().where(m.JobParameter.session == session)
            .order_by(m.JobParameter.position, m.JobParameter.id)]


def form_parameters(session, form):
    """The body's `parameters` from the parameter fields (a parameter left empty is left out: the server
    names it)."""
    return {name: form.get(PARAM_PREFIX + name, "").strip() for name, _ in session_parameters(session)
            if form.get(PARAM_PREFIX + name, "").strip()}


def form_values(d):
    """A request (request_dict) as the create and modify forms hold it: strings, lists for the sites."""
    values = {name: d.get(name) for name in SETTINGS}
    values["input_paths"] = "\n".join(d.get("input_paths") or [])
    values["output_patterns"] = "\n".join(d.get("output_patterns") or [])
    rule = d.get("followup") or {}
    values.update(followup_template=rule.get("template", ""),
                  followup_fraction=rule["fraction"] if rule.get("condition") == "fraction" else "",
                  followup_files_per_job=rule.get("files_per_job", ""),
                  followup_patterns="\n".join(rule.get("patterns", [])))
    values["steps"] = "\n".join(" ".join([step["template"], *(f"{k}={v}" for k, v in step["parameters"].items())])
                                for step in d.get("steps") or [])
    values.update({PARAM_PREFIX + k: v for k, v in d.get("parameters", {}).items()})
    for key in ("test_output_lfn", "test_output_abs", "same_output_dirs"):
        values[key] = d.get(key)
    return values


def box_wins(body):
    """The form's "same output directories" box, ticked, makes its test directory fields moot."""
    if body.get("same_output_dirs"):
        body.pop("test_output_lfn", None)
        body.pop("test_output_abs", None)
    return body


def nested_settings(body):
    """The settings the API takes as lists of objects or an object, from the form's flat fields: the
    steps, one a line `template [NAME=VALUE ...]`, as [{"template", "parameters"}]; the follow-up
    fields as `followup`, defaults filled as the server fills them (an unchanged form then sends
    nothing new)."""
    parts = {k: body.pop(f"followup_{k}") for k in ("template", "fraction", "files_per_job", "patterns")
             if f"followup_{k}" in body}
    if parts:
        rule = {}
        if parts.get("template"):
            rule = {"template": parts["template"], "files_per_job": parts.get("files_per_job", 0)}
            if "fraction" in parts:
                rule.update(condition="fraction", fraction=parts["fraction"])
            if parts.get("patterns"):
                rule["patterns"] = parts["patterns"]
        body["followup"] = stages.read_followup({"followup": rule}, "followup")
    if "steps" in body:
        steps = []
        for n, line in enumerate(body["steps"], 1):
            template, *pairs = line.split()
            bad = [p for p in pairs if "=" not in p or p.startswith("=")]
            if bad:
                raise SchemaError(f"steps line {n}: {bad[0]!r} is not NAME=VALUE (a line is: template NAME=VALUE ...)")
            steps.append({"template": template, "parameters": dict(p.split("=", 1) for p in pairs)})
        body["steps"] = steps
    return body


def submitted_values(form):
    values = form.to_dict()
    values["output_sites"] = form.getlist("output_sites")
    values["same_output_dirs"] = "same_output_dirs" in form
    return values


def _segment_renamed(path, old, new):
    """`path` with its segment `old` (a production's name) renamed `new`: an imported request's directories
    then point into the production it is imported to."""
    return "/".join(new if part == old else part for part in (path or "").split("/"))


def _imported(source, production, error_out):
    """The create form filled from request `source` for `production` (same session only)."""
    if source.production.session_id != production.session_id:
        error_out.append(bad_request(f"request {source.id} is of session {source.production.session.name}, "
                                     f"not {production.session.name}: import from a request of this session"))
        return {}
    values = form_values(request_dict(source))
    # The test request's directories follow from the new request's (off the box: derived, not copied).
    values.update(test_output_lfn="", test_output_abs="", same_output_dirs=False)
    main_name = source.production.twin.name if source.production.is_test else source.production.name
    for key in ("output_lfn", "output_abs"):
        values[key] = _segment_renamed(values[key], main_name, production.name)
    return values


def _chosen_production():
    name = request.values.get("production", "")
    if name:
        return get_production(name)
    return (m.Production.select().where(m.Production.is_test == False)  # noqa: E712
            .order_by(m.Production.status.desc(), m.Production.created_at.desc(), m.Production.id.desc()).first())


def _requests_page(values=None, error=None, status=200):
    production = _chosen_production()
    mains = list(m.Production.select().where(m.Production.is_test == False).order_by(m.Production.name))  # noqa: E712
    names = [p.name for p in mains] + ([production.name] if production is not None and production.is_test else [])
    ctx = {"production": production, "productions": names, "error": error,
           "input_modes": INPUT_MODES, "next_status": NEXT_STATUS}
    if production is None:
        return render_template("requests.html", **ctx), status
    # the production and creator in the same query: request_dict reads their names for every row
    reqs = list(m.Request.select(m.Request, m.Production, m.User).join(m.Production).switch(m.Request)
                .join(m.User, m.JOIN.LEFT_OUTER, on=(m.Request.created_by == m.User.id))
                .where(m.Request.production == production).order_by(m.Request.id))
    twin_ids = [r.test_request_id for r in reqs if r.test_request_id]
    twins = {t.id: t for t in m.Request.select().where(m.Request.id.in_(twin_ids))} if twin_ids else {}
    errors = []
    if values is None:
        values = {}
        source_id = request.args.get("from", "")
        if source_id.isdigit():
            values = _imported(get_request(int(source_id)), production, errors)
    import_production = request.args.get("import_production") or production.name
    import_from = m.Production.get_or_none(m.Production.name == import_production)
    if import_from is None or import_from.session_id != production.session_id:
        import_from = production
    parameters = session_parameters(production.session)
    chosen = {name: values.get(PARAM_PREFIX + name, "") for name, _ in parameters}
    ctx.update(
        requests=[request_dict(r, twins.get(r.test_request_id)) for r in reqs], values=values,
        error=error or (errors[0] if errors else None), parameters=parameters,
        sites=[name for (name,) in m.Site.select(m.Site.name).order_by(m.Site.name).tuples()],
        duplicate=core.find_duplicate(production, chosen) if all(chosen.values()) else None,
        import_productions=[p.name for p in m.Production.select().where(m.Production.session == production.session)
                            .order_by(m.Production.name)],
        import_production=import_from.name, import_requests=_import_options(import_from),
        chosen_from=request.args.get("from", ""))
    return render_template("requests.html", **ctx), (400 if errors and status == 200 else status)


def _import_options(production):
    return [(r.id, f"{r.id}: " + ", ".join(f"{k}={v}" for k, v in r.parameters.items()) + f" ({r.status})")
            for r in m.Request.select().where(m.Request.production == production).order_by(m.Request.id)]


@bp.get("/requests")
def requests():
    return _requests_page()


@bp.get("/requests/_duplicate")
def request_duplicate():
    """The warning fragment: whether the chosen production holds a request with the chosen parameters."""
    production = get_production(request.args.get("production", ""))
    parameters = form_parameters(production.session, request.args)
    complete = len(parameters) == len(session_parameters(production.session))
    duplicate = core.find_duplicate(production, parameters) if complete else None
    return render_template("_request_duplicate.html", duplicate=duplicate)


@bp.get("/requests/_import")
def request_import_options():
    """The import form's request select for ?import_production= (htmx swaps it in)."""
    production = get_production(request.args.get("import_production", ""))
    return render_template("_request_import.html", import_requests=_import_options(production), chosen_from="")


@bp.post("/requests")
@action(MANAGER)
def create_request():
    production = get_production(request.form.get("production", ""))
    body = {"production": production.name, "parameters": form_parameters(production.session, request.form),
            **box_wins(form_body(SETTING_FIELDS + TEST_FIELDS))}
    created, error = attempt(lambda: core.create_request(g.principal.user, nested_settings(body)))
    if error:
        return _requests_page(values=submitted_values(request.form), error=error, status=error.status_code)
    req, test_req = created
    flash(f"Request {req.id} created in {production.name}, with its test request {test_req.id} in "
          f"{production.twin.name}.")
    return redirect(url_for("web.request_detail", request_id=req.id))


def _modify_fields(req):
    """The modify form's fields: every setting while open (with the test request's directories on a
    main request), else the note and priority."""
    if req["status"] != "open":
        return LATE_FIELDS
    return SETTING_FIELDS + (TEST_FIELDS if req["test_request"] else ())


def _detail_page(request_id, error=None, status=200, values=None):
    req = request_dict(get_request(request_id))
    twin = request_dict(get_request(req["test_request"])) if req["test_request"] else None
    main = m.Request.get_or_none(m.Request.test_request == request_id)
    return render_template("request.html", req=req, twin=twin, main_request=main.id if main else None,
                           values=values or form_values(req), error=error, next_status=NEXT_STATUS,
                           modify_fields={f.name for f in _modify_fields(req)},
                           sites=[name for (name,) in m.Site.select(m.Site.name).order_by(m.Site.name).tuples()],
                           input_modes=INPUT_MODES), status


@bp.get("/requests/<id:request_id>")
def request_detail(request_id):
    return _detail_page(request_id)


@bp.post("/requests/<id:request_id>")
@action(MANAGER)
def modify_request(request_id):
    """Send what the form changed (a PATCH of the whole form would touch settings frozen after `open`)."""
    current = request_dict(get_request(request_id))
    body, error = attempt(lambda: box_wins({key: value for key, value in
                                            nested_settings(form_body(_modify_fields(current))).items()
                                            if value != current.get(key)}))
    if not error and not body:
        flash(f"Request {request_id}: nothing changed.")
        return redirect(url_for("web.request_detail", request_id=request_id))
    if not error:
        _, error = attempt(core.update_request, request_id, body)
    if error:
        return _detail_page(request_id, error=error, status=error.status_code,
                            values=submitted_values(request.form))
    flash(f"Request {request_id} modified: {', '.join(sorted(body))}.")
    return redirect(url_for("web.request_detail", request_id=request_id))


@bp.post("/requests/<id:request_id>/status")
@action(MANAGER)
def request_status(request_id):
    status = request.form.get("status", "")
    req, error = attempt(core.update_request, request_id, {"status": status})
    if error:
        return _detail_page(request_id, error=error, status=error.status_code)
    flash(f"Request {request_id} is now {req[0].status}.")
    if request.form.get("back") == "list":
        return redirect(url_for("web.requests", production=req[0].production.name))
    return redirect(url_for("web.request_detail", request_id=request_id))


@bp.post("/requests/<id:request_id>/delete")
@action(MANAGER)
def delete_request(request_id):
    production = get_request(request_id).production.name
    result, error = attempt(core.delete_request, request_id)
    if error:
        return _detail_page(request_id, error=error, status=error.status_code)
    kept = result["test_request_kept"]
    flash(f"Request {request_id} deleted" + (f" with its test request {result['deleted'][1]}."
                                             if len(result["deleted"]) > 1 else
                                             f"; its test request {kept} has jobs and stays." if kept else "."))
    return redirect(url_for("web.requests", production=production))
