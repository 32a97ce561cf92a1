"""sbk, the bookkeeping server: `create_app()` builds the Flask app."""
import logging
import sys

if sys.version_info < (3, 11):   # before any import that would fail with a traceback (tomllib, flask)
    raise SystemExit(f"sbk needs Python >= 3.11 (this is {sys.version.split()[0]}); "
                     "only the wrapper, severus, runs on Python 3.9 and 3.10")

from flask import Flask, request

from . import api, db, errors, logs, metrics, migrations, web
from .errors import ApiError
from .settings import layer

log = logging.getLogger("sbk")


def create_app(config=None):
    """The app: defaults, then `config`, then SBK_* environment variables."""
    app = Flask(__name__)
    settings = layer(app.config, config)
    app.extensions["sbk.settings"] = settings
    # werkzeug's own ceiling; the per-route limits below are the ones people meet.
    app.config["MAX_CONTENT_LENGTH"] = max(settings.max_body_bytes, settings.max_log_bytes) + 1
    app.json.sort_keys = False

    db.bind(settings.db_url)
    if settings.auto_init:
        migrations.upgrade()

    logs.init_app(app, settings)   # first: its hooks see every request whole

    @app.before_request
    def open_connection():
        metrics.start_timer()
        limit = settings.max_log_bytes if request.endpoint == "jobs.put_log" else settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "too-large", f"the request body is larger than {limit} bytes")
        db.database.connect(reuse_if_open=True)

    @app.teardown_request
    def close_connection(exc):
        if not db.database.is_closed():
            db.database.close()

    app.after_request(metrics.observe)
    errors.register(app)
    api.register(app)
    web.register(app)   # after the API: the pages use its `id` URL converter
    app.register_blueprint(metrics.bp)
    return app
