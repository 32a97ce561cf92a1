"""POST /submissions: bulks of jobs, planned (dry_run) or prepared, and with `backend` submitted;
POST /sites/<name>/reset: the shifter's "reset site" (submissions.reset_site says what it means)."""
from flask import Blueprint, current_app, jsonify

from .. import auth, batch, submissions
from ..settings import base_url, settings
from .params import json_body

from . import schemas as S
from .endpoint import BACKEND_UNAVAILABLE, endpoint

bp = Blueprint("submissions", __name__)


@bp.post("/submissions")
@auth.require("shifter-submission", "expert-submission")
@endpoint(
    "Plan (dry_run, 200) or prepare jobs (201)",
    body=S.Submission, status=201, reply=S.Plan, replies=((200, "the plan of a dry run", S.Plan),),
    errors=(BACKEND_UNAVAILABLE,))
def submit():
    plan = submissions.submit(auth.current_principal(), json_body(), base_url(), settings())
    return jsonify(plan), 200 if plan["dry_run"] else 201


@bp.post("/sites/<name>/reset")
@auth.require("shifter-submission", "expert-submission")
@endpoint(
    "Reset a site (shifter-submission or expert-submission): its failed threshold counts only failed and "
    "sys-failed jobs that end from now on (within 24 h); the jobs are untouched; recorded as a site-reset"
    " activity",
    reply=S.SiteReset)
def reset_site(name):
    return jsonify(submissions.reset_site(auth.current_principal().user, name))


@bp.before_app_request
def start_batch_poller():
    """Each serving process polls the batch jobs it can see (the local backend's are its own)."""
    if not current_app.testing:
        batch.start_poller(settings())
