"""People (seed 000's user management, the Developer group's only): users with their groups and tokens,
create a user (its first token shown once), create a token for a user, revoke a token, change a user's
groups. Every action goes through server/people.py with the API's bodies (POST /users, POST /tokens,
DELETE /tokens/<id>, PATCH /users/<name>)."""
from flask import flash, g, make_response, redirect, render_template, request, url_for

from .. import people
from . import bp
from .forms import Field, action, attempt, form_body
from .layout import need

USER_FIELDS = (Field("name"), Field("groups", "list"), Field("label"), Field("expires_in_days", "int"))
TOKEN_FIELDS = (Field("user"), Field("label"), Field("expires_in_days", "int"))
GROUP_FIELDS = (Field("groups", "list"),)


def render_people(form=None, error=None, values=None):
    """The page; after a refused action, `form` ('user' or 'token') shows `error` and keeps `values`."""
    return render_template("people.html", users=people.list_users(g.principal), groups=people.group_names(),
                           form=form, error=error, values=values or {})


def show_token_once(made, user, what):
    """The result page: the new token, once; never cached."""
    response = make_response(render_template("people_token.html", token=made, user=user, what=what), 201)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/people", endpoint="people")
def people_page():
    need("developer")
    return render_people()


@bp.post("/people/users")
@action("developer")
def create_user():
    made, error = attempt(lambda: people.create_user(g.principal, form_body(USER_FIELDS)))   # a bad number too
    if error:
        return render_people("user", error, request.form), error.status_code
    return show_token_once(dict(made["token_info"], token=made["token"]), made["user"]["name"], "user")


@bp.post("/people/tokens")
@action("developer")
def create_token():
    made, error = attempt(lambda: people.create_token(g.principal, form_body(TOKEN_FIELDS)))
    if error:
        return render_people("token", error, request.form), error.status_code
    return show_token_once(made, made["user"], "token")


@bp.post("/people/tokens/<id:token_id>/revoke")
@action("developer")
def revoke_token(token_id):
    gone, error = attempt(people.revoke_token, g.principal, token_id)
    if error:
        return render_people(None, error), error.status_code
    flash(f"Token {gone['id']} ({gone['label'] or 'no label'}) of {gone['user']} revoked.")
    return redirect(url_for("web.people"))


@bp.post("/people/users/<name>/groups")
@action("developer")
def set_groups(name):
    """A user's groups replaced: the same core and body as PATCH /users/<name>."""
    changed, error = attempt(people.set_groups, g.principal, name, form_body(GROUP_FIELDS))
    if error:
        return render_people(None, error), error.status_code
    flash(f"Groups of {changed['name']}: {', '.join(changed['groups'])}.")
    return redirect(url_for("web.people"))
