"""POST /submissions: bulks of jobs, planned (dry_run) or prepared."""
from flask import Blueprint, jsonify

from .. import auth, submissions
from ..errors import ApiError
from ..settings import settings
from .params import json_body

bp = Blueprint("submissions", __name__)


@bp.post("/submissions")
@auth.require("shifter-submission", "expert-submission")
def submit():
    production, bulks, dry_run, override = submissions.parse_submission(json_body())
    principal = auth.current_principal()
    if override and not principal.can("expert-submission"):
        raise ApiError(403, "forbidden", "overriding site thresholds needs the expert-submission privilege")
    plan = submissions.prepare_jobs(principal.user, production, bulks, dry_run=dry_run,
                                    override_thresholds=override, heartbeat_s=settings().heartbeat_s)
    return jsonify(plan), 200 if dry_run else 201
