"""The web desk: the production managers' and shifters' pages (seed 000's WebUI), served by the same app at `/`.

One module per seed page (home, productions, requests, submit, monitor,
sites, sessions, people, charts); layout.py holds what they share, forms.py
turns a form into the API's body so every action goes through the same
server function as its API route. Server-rendered Jinja templates
(autoescaped) sharing one layout and one form macro file, htmx (vendored, no
build step) for partial updates, and every form works without JavaScript.
People sign in with their API token; the session cookie keeps only the
token's hash, so a stolen cookie is no API credential.
"""
import os
import secrets
from pathlib import Path

from flask import Blueprint, has_request_context, request
from flask.sessions import SecureCookieSessionInterface

from ..db import DatabaseUrl

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/web-static")

SECRET_KEY_FILE = "web-secret-key"


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed cookie, Secure whenever the request came in over https."""

    def get_cookie_secure(self, app):
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)


def data_dir(app):
    """Where the server keeps its files: SBK_DATA_DIR, else the SQLite file's folder, else ./sbk-data."""
    if app.config.get("DATA_DIR"):
        return Path(app.config["DATA_DIR"])
    url = DatabaseUrl.parse(app.extensions["sbk.settings"].db_url)
    if url.kind == "sqlite" and url.path != ":memory:":
        return Path(os.path.abspath(url.path)).parent
    return Path("sbk-data").resolve()


def stored_secret_key(folder):
    """The key in `folder`, made once: the first writer wins, so every gunicorn worker reads the same one."""
    path = folder / SECRET_KEY_FILE
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{SECRET_KEY_FILE}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)   # atomic, and refuses to replace a key another worker wrote first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def register(app):
    """Serve the pages on `app`: session cookie settings, secret key, blueprint."""
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = stored_secret_key(data_dir(app))
    app.config.update(SESSION_COOKIE_NAME="sbk_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax")
    app.session_interface = SessionCookies()
    from . import (charts, home, layout, monitor, people, productions, requests, sessions,  # noqa: F401
                   signin, sites, submit)   # (they add their views to bp)
    app.register_blueprint(bp)
