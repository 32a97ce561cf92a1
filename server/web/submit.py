"""Expert init and shift init (seed 000's EXPERT INIT and SHIFT INIT): bulks, the summary, the confirmation,
and the shifter's "reset sites".

One form serves both pages (a `Desk` says what each offers). The form's
strings become the POST /submissions body (`submission_body`) and go through
submissions.submit, the API's own path: "Submit data and generate summary" is
its dry run, "Confirm" the real submission with, when "Automatic submission"
is ticked, the chosen backend. Without JavaScript every change of the form
(production, add or remove a bulk, select all | supported | none) is a submit
button that re-renders it with what was typed; with htmx the same buttons
fetch a bulk row, a bulk's site boxes or the form alone.

A summary's Confirm carries a one-time token kept in the session: reloading
the result page or pressing Confirm twice cannot prepare the same jobs twice.
"""
import secrets
from dataclasses import dataclass

from flask import flash, g, redirect, render_template, request, session, url_for

from .. import submissions
from .. import models as m
from ..backends import BACKENDS
from ..errors import ApiError, bad_request
from ..settings import base_url, settings
from . import bp
from .forms import Field, action, attempt, form_body
from .layout import need
from .signin import check_csrf

SUBMITTERS = ("shifter-submission", "expert-submission")
MAX_BULKS = 100            # the API's limit per submission
ONCE_KEY = "submit_once"   # the session's one-time tokens of the summaries shown
MAX_OPEN_SUMMARIES = 5     # a few tabs may each hold a summary
# The local backend first: the one every server can run.
BACKEND_CHOICES = tuple(sorted(BACKENDS, key=lambda name: (name != "local", name)))


@dataclass(frozen=True)
class Desk:
    """What one submission page offers. The shifter's: valid or running requests only, the sites that
    take its bulks (enabled, supported, allowed), events per job the request's, no test bulks, no
    parameter values, no log in the DB, no threshold override."""
    name: str
    endpoint: str
    title: str
    privileges: tuple
    expert: bool


# Titles as the seed's ("FastSim expert UI for job submission"), the chosen production's session in front.
DESKS = {"expert": Desk("expert", "web.expert_init", "expert UI for job submission", ("expert-submission",), True),
         "shift": Desk("shift", "web.shift_init", "shifter UI for job submission", SUBMITTERS, False)}


@bp.route("/submit/expert", methods=["GET", "POST"])
def expert_init():
    return _page(DESKS["expert"])


@bp.route("/submit/shift", methods=["GET", "POST"])
def shift_init():
    return _page(DESKS["shift"])


@bp.get("/submit/<desk>/bulk")
def submit_bulk(desk):
    """htmx's "Add bulk": one new bulk row, numbered after those in the form."""
    desk = _desk(desk)
    numbers = _bulk_numbers(request.args)
    n = max(numbers, default=0) + 1
    ctx = _context(desk, request.args)
    return render_template("_bulk.html", bulk=_blank_bulk(n), **ctx)


@bp.get("/submit/<desk>/sites")
def submit_sites(desk):
    """htmx's "select all | supported | none": one bulk's site boxes with that choice."""
    desk = _desk(desk)
    ctx = _context(desk, request.args)
    n = _number(request.args.get("n", ""))
    bulk = dict(_blank_bulk(n), sites=_chosen_sites(request.args.get("choice"), ctx["sites"]))
    return render_template("_bulk_sites.html", bulk=bulk, **ctx)


@bp.post("/submit/shift/reset/<name>")
@action(*SUBMITTERS)
def reset_site(name):
    result, error = attempt(submissions.reset_site, g.principal.user, name)
    if error:
        return _render(DESKS["shift"], request.form, error=error), error.status_code
    flash(f"Site {result['site']} reset: its {result['failed_before']} failed job(s) of the last 24 h no longer "
          f"count against its failed threshold ({result['threshold_failed'] or 'none'}).")
    return redirect(url_for("web.shift_init"))


def _desk(name):
    desk = DESKS.get(name)
    if desk is None:
        raise ApiError(404, "not-found", f"no submission page {name!r}")
    need(*desk.privileges)
    return desk


def _page(desk):
    need(*desk.privileges)
    if request.method == "GET":
        return _render(desk, request.args)
    check_csrf()   # the privilege was checked above: as forms.action does for every POST of the desk
    form = request.form.copy()
    do = form.get("do", "")
    if do == "add":
        numbers = _bulk_numbers(form)
        if len(numbers) >= MAX_BULKS:
            return _render(desk, form, error=bad_request(f"at most {MAX_BULKS} bulks in one submission")), 400
        form.add("bulk", str(max(numbers, default=0) + 1))
    elif do.startswith("remove-"):
        numbers = _bulk_numbers(form)
        form.setlist("bulk", [str(n) for n in numbers if str(n) != do[len("remove-"):]] or ["1"])
    elif do.startswith("sites-"):
        n, _, choice = do[len("sites-"):].partition("-")
        ctx = _context(desk, form)
        form.poplist(f"b{_number(n)}.sites")   # (an empty list left in a MultiDict breaks its .items())
        for site in _chosen_sites(choice, ctx["sites"]):
            form.add(f"b{_number(n)}.sites", site)
    elif do == "summary":
        return _summary(desk, form)
    elif do == "confirm":
        return _confirm(desk, form)
    if request.headers.get("HX-Request"):
        return render_template("_bulk_form.html", **_context(desk, form))
    return _render(desk, form)


def _summary(desk, form):
    body, error = attempt(submission_body, desk, form)
    plan = None
    if error is None:
        plan, error = attempt(submissions.submit, g.principal, dict(body, dry_run=True), base_url(), settings())
    if error:
        return _render(desk, form, error=error), error.status_code
    return _render(desk, form, plan=plan, once=_new_once())


def _confirm(desk, form):
    once = form.get("once", "")
    if not once or once not in session.get(ONCE_KEY, []):
        error = ApiError(409, "already-confirmed", "this summary was already confirmed or has expired: "
                                                   "generate the summary again")
        return _render(desk, form, error=error), error.status_code
    body, error = attempt(submission_body, desk, form)
    result = None
    if error is None:
        if "auto_sub" in form:
            body["backend"] = form.get("backend", "")
        session[ONCE_KEY] = [t for t in session.get(ONCE_KEY, []) if t != once]   # used, whatever the outcome
        result, error = attempt(submissions.submit, g.principal, body, base_url(), settings())
    if error:
        return _render(desk, form, error=error), error.status_code
    return _render(desk, form, result=result), 201


def _new_once():
    token = secrets.token_urlsafe(16)
    session[ONCE_KEY] = (session.get(ONCE_KEY, []) + [token])[-MAX_OPEN_SUMMARIES:]
    return token


def submission_body(desk, form):
    """The POST /submissions body the form makes (the production, its bulks, the expert's override)."""
    body = {"production": form.get("production", ""), "bulks": [_bulk_body(desk, form, n)
                                                                for n in _bulk_numbers(form) or [1]]}
    if desk.expert:
        body["override_thresholds"] = "override_thresholds" in form
    return body


def _bulk_body(desk, form, n):
    p = f"b{n}."
    fields = [Field(p + "request", "int", "request"), Field(p + "sites", "list", "sites"),
              Field(p + "runs", "int", "runs")]
    if desk.expert:
        fields += [Field(p + "test", "bool", "test"), Field(p + "events", "int", "events"),
                   Field(p + "log_to_db", "bool", "log_to_db"), Field(p + "split", "lines", "split"),
                   Field(p + "repeat_slices", "bool", "repeat_slices")]
    bulk = form_body(fields, form)
    if "split" in bulk:   # a LIST request split by hand: one job a line, its LFNs apart by spaces or commas
        bulk["split"] = [line.replace(",", " ").split() for line in bulk["split"]]
    if not desk.expert:
        # The shifter runs the request as its manager set it: its own events per job.
        req = m.Request.get_or_none(m.Request.id == bulk["request"]) if "request" in bulk else None
        if req is not None:
            if not req.events_per_job:
                raise bad_request(f"request {req.id} has no events per job: an expert submits it")
            bulk["events"] = req.events_per_job
    elif "request" not in bulk and bulk.get("test"):
        parameters = {k[len(p + "param."):]: v for k, v in form.items()
                      if k.startswith(p + "param.") and v.strip()}
        if parameters:
            bulk["parameters"] = parameters
    return bulk


def _render(desk, values, **extra):
    failures = [] if desk.expert else submissions.site_failures()
    return render_template("submit.html", **_context(desk, values), failures=failures, **extra)


def _context(desk, values):
    """What the form shows: productions, the chosen one's requests, parameters and sites, the typed bulks."""
    productions = list(m.Production.select().where(
        (m.Production.is_test == False) & (m.Production.status == "open"))  # noqa: E712  (peewee builds SQL from ==)
        .order_by(m.Production.name))
    chosen = values.get("production") or (productions[0].name if productions else "")
    production = next((p for p in productions if p.name == chosen), None)
    parameters, requests, sites = [], [], []
    if production is not None:
        parameters = list(m.JobParameter.select().where(m.JobParameter.session == production.session_id)
                          .order_by(m.JobParameter.position, m.JobParameter.id))
        requests = m.Request.select().where(m.Request.production == production.id).order_by(m.Request.id)
        if not desk.expert:
            requests = requests.where(m.Request.status.in_(("valid", "running")))
        requests = [{"id": r.id, "status": r.status, "events_per_job": r.events_per_job,
                     "values": [r.parameters.get(p.name, "") for p in parameters]} for r in requests]
        sites = [s for s in submissions.site_marks(production) if desk.expert or s["ok"]]
    bulks = [_typed_bulk(values, n) for n in _bulk_numbers(values) or [1]]
    return {"desk": desk, "productions": [p.name for p in productions], "production": chosen,
            "session_name": production.session.name if production is not None else "",
            "parameters": [(p.name, p.allowed) for p in parameters], "requests": requests, "sites": sites,
            "bulks": bulks, "override": "override_thresholds" in values,
            "auto_sub": g.principal.user.auto_sub, "backends": BACKEND_CHOICES,
            "typed": [(k, v) for k, vs in values.lists() for v in vs if k not in ("csrf", "do", "once")]}


def _typed_bulk(values, n):
    p = f"b{n}."
    return {"n": n, "request": values.get(p + "request", ""), "test": p + "test" in values,
            "sites": values.getlist(p + "sites"), "runs": values.get(p + "runs", "1"),
            "events": values.get(p + "events", ""), "log_to_db": p + "log_to_db" in values,
            "params": {k[len(p + "param."):]: v for k, v in values.items() if k.startswith(p + "param.")},
            "split": values.get(p + "split", ""), "repeat_slices": p + "repeat_slices" in values}


def _blank_bulk(n):
    return {"n": n, "request": "", "test": False, "sites": [], "runs": "1", "events": "", "log_to_db": False,
            "params": {}, "split": "", "repeat_slices": False}


def _number(text):
    if not text.isdigit() or not 1 <= int(text) <= 10 * MAX_BULKS:
        raise bad_request("a bulk's number must be a whole number from 1")
    return int(text)


def _bulk_numbers(values):
    """The bulks of the form, by the number each row carries (rows come and go, numbers stay)."""
    return sorted({_number(v) for v in values.getlist("bulk")})


def _chosen_sites(choice, sites):
    """The seed's "select all | supported | none" over the offered sites."""
    if choice == "all":
        return [s["site"] for s in sites]
    if choice == "supported":
        return [s["site"] for s in sites if s["ok"]]
    if choice == "none":
        return []
    raise bad_request("the sites' choice is all, supported or none")
