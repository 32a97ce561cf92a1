"""Session management (seed 000's "future developments"): sessions, releases, job parameters."""
from flask import render_template

from . import bp


@bp.get("/sessions")
def sessions():
    return render_template("error.html", error=None)
