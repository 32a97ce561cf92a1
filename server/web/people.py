"""People (the Developer group's): users, their groups and their API tokens."""
from flask import render_template

from . import bp
from .layout import need


@bp.get("/people")
def people():
    need("developer")
    return render_template("error.html", error=None)
