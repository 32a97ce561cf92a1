"""Expert init and shift init (seed 000's EXPERT INIT and SHIFT INIT): bulks, the summary, the confirmation."""
from flask import render_template

from . import bp
from .layout import need


@bp.get("/submit/expert")
def expert_init():
    need("expert-submission")
    return render_template("error.html", error=None)


@bp.get("/submit/shift")
def shift_init():
    need("shifter-submission", "expert-submission")
    return render_template("error.html", error=None)
