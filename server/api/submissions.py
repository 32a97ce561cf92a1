"""POST /submissions: bulks of jobs, planned (dry_run) or prepared, and with `backend` submitted."""
from flask import Blueprint, current_app, jsonify

from .. import auth, batch, submissions
from ..errors import ApiError
from ..settings import settings
from .jobs import base_url
from .params import json_body

bp = Blueprint("submissions", __name__)


@bp.post("/submissions")
@auth.require("shifter-submission", "expert-submission")
def submit():
    body = json_body()
    production, bulks, dry_run, override = submissions.parse_submission(body)
    backend = batch.backend_name(body.get("backend"))
    if backend and not dry_run:
        batch.get_backend(backend, settings())   # refuse an unusable backend before writing anything
    principal = auth.current_principal()
    if override and not principal.can("expert-submission"):
        raise ApiError(403, "forbidden", "overriding site thresholds needs the expert-submission privilege")
    plan = submissions.prepare_jobs(principal.user, production, bulks, dry_run=dry_run,
                                    override_thresholds=override, heartbeat_s=settings().heartbeat_s)
    if backend and not dry_run:
        # The plan is committed: a bunch the batch system refuses leaves its jobs prepared (in "errors").
        plan.update(batch.submit_jobs(plan["job_ids"], backend, base_url(), settings()))
    return jsonify(plan), 200 if dry_run else 201


@bp.before_app_request
def start_batch_poller():
    """Each serving process polls the batch jobs it can see (the local backend's are its own)."""
    if not current_app.testing:
        batch.start_poller(settings())
