"""Signing in with an API token, the session that remembers it, CSRF tokens, and signing out."""
import hmac
import secrets

from flask import abort, flash, g, redirect, render_template, request, session, url_for

from .. import auth
from .. import models as m
from ..errors import ApiError
from . import bp

READ_PRIVILEGE = "monitoring"
PUBLIC_ENDPOINTS = ("web.signin", "web.static")


def csrf_token():
    """This session's CSRF token (made on first use)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf():
    sent = request.form.get("csrf", "")
    if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
        abort(400, "the form expired or did not come from this site: load the page again")


def local_target(target):
    """`target` when it is a path on this site, else the home page (no open redirects)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("web.home")


def session_principal():
    """The signed-in user's Principal, or None when the session names no live token (none, revoked:
    its row is gone, or expired)."""
    token_hash, user_id = session.get("token_hash"), session.get("user_id")
    if not token_hash or not user_id:
        return None
    row = m.ApiToken.select(m.ApiToken, m.User).join(m.User).where(
        (m.ApiToken.token_hash == token_hash) & (m.ApiToken.user == user_id)).first()
    return auth.principal_of(row.user) if row and not auth.is_expired(row) else None


@bp.app_template_global()
def csrf_field():
    """The hidden form field every POST form carries."""
    return csrf_token()


@bp.before_request
def require_sign_in():
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    principal = session_principal()
    if principal is None:
        if session.pop("token_hash", None):
            flash("Your session ended: its token was revoked or has expired. Sign in with a valid token.")
        session.pop("user_id", None)
        return redirect(url_for("web.signin", next=request.full_path.rstrip("?")))
    if not principal.can(READ_PRIVILEGE):
        raise ApiError(403, "forbidden", f"these pages need the privilege {READ_PRIVILEGE}")
    g.principal = principal
    return None


@bp.route("/signin", methods=["GET", "POST"])
def signin():
    target = local_target(request.values.get("next"))
    error = None
    if request.method == "POST":
        check_csrf()
        token = request.form.get("token", "").strip()
        expired = False
        try:
            principal = auth.user_for_token(token) if token else None
        except ApiError as refused:
            principal, expired = None, refused.error == "token-expired"
        if principal is None:
            error = "This token has expired." if expired else "This token is not a valid API token."
        elif not principal.can(READ_PRIVILEGE):
            error = f"This token's user lacks the privilege {READ_PRIVILEGE}."
        else:
            session.clear()   # a fresh session (and CSRF token) for the signed-in user
            session.update(user_id=principal.user.id, token_hash=auth.hash_token(token))
            return redirect(target)
    status = 401 if error else 200
    return render_template("signin.html", error=error, target=target), status


@bp.post("/signout")
def signout():
    check_csrf()
    session.clear()
    return redirect(url_for("web.signin"))
