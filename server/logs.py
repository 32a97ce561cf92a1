"""The server's log lines: one per HTTP request, request ids, text or JSON.

- Every request gets an id: the client's `X-Request-ID` when it is sane (1-128 letters, digits and
  `-_.:/+=@`, as proxies and load balancers make them), else a fresh one. The reply carries it in
  `X-Request-ID`, an error reply in its body too (server/errors.py), and every line logged while the
  request runs carries it, so a user's error message leads to the server's lines about it.
- After each request one `sbk.access` line: request id, method, route (the URL rule, e.g.
  `/api/v1/jobs/<id:job_id>`: the raw path would make every job its own route), status and time in ms.
- `SBK_LOG_FORMAT=json` makes every line of the process one JSON object (`time`, `level`, `logger`,
  `message`, and the request's fields when there is one) for log shippers; `text` (the default)
  one readable line.

`configure()` sets up a process's logging; `sbk serve` and the gunicorn config (through
`GunicornLogger`, which gives gunicorn's own lines the same format) call it before serving, and
create_app() when nothing else set up logging (a plain `gunicorn 'server:create_app()'`).
"""
import datetime
import json
import logging
import os
import re
import sys
import time
import uuid

from flask import g, has_request_context, request

try:
    from gunicorn import glogging
except ImportError:
    glogging = None

log = logging.getLogger("sbk.access")

FORMATS = ("text", "json")
HEADER = "X-Request-ID"
SANE_ID = re.compile(r"[A-Za-z0-9_.:/+=@-]{1,128}")


def request_id():
    """This request's id (made on first use), or None outside a request."""
    if not has_request_context():
        return None
    rid = g.get("request_id")
    if rid is None:
        sent = request.headers.get(HEADER, "")
        rid = g.request_id = sent if SANE_ID.fullmatch(sent) else uuid.uuid4().hex
    return rid


def start_request():
    request_id()
    g.request_started_ns = time.perf_counter_ns()


def end_request(response):
    """Answer with the request id and log the request's line."""
    response.headers[HEADER] = request_id()
    started = g.pop("request_started_ns", None)
    elapsed_ms = None if started is None else round((time.perf_counter_ns() - started) / 1e6, 1)
    rule = request.url_rule
    fields = {"method": request.method, "route": rule.rule if rule is not None else None,
              "status": response.status_code, "duration_ms": elapsed_ms}
    log.info("%s %s %s %s ms", fields["method"], fields["route"] or "-", fields["status"],
             "-" if elapsed_ms is None else elapsed_ms, extra={"request": fields})
    return response


def init_app(app, settings):
    """Request ids and access lines for `app`; logging set up unless the process has its own."""
    configure(settings.log_format)
    # create_app registers these before its other hooks: the first to start (a request a later hook
    # refuses, 413, has its id and line too) and the last to end (after_request runs in reverse).
    app.before_request(start_request)
    app.after_request(end_request)


class RequestFields(logging.Filter):
    """Adds the running request's id to every record logged while it runs."""

    def filter(self, record):
        if not hasattr(record, "request_id"):
            record.request_id = request_id()
        return True


class TextFormatter(logging.Formatter):
    """`2026-11-30 11:30:00,123 INFO sbk.access [<request id>] GET /api/v1/jobs 200 3.1 ms`."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(request_tag)s%(message)s")

    def format(self, record):
        rid = getattr(record, "request_id", None)
        record.request_tag = f"[{rid}] " if rid else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the request's fields."""

    def format(self, record):
        entry = {"time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
                 .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        entry.update(getattr(record, "request", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def formatter(log_format):
    if log_format not in FORMATS:
        raise ValueError(f"SBK_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


class _StderrHandler(logging.StreamHandler):
    """Writes to the sys.stderr of the moment (as logging's own last resort does), never a stale one."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


def configure(log_format, force=False):
    """The process's log lines to stderr in `log_format`, at INFO and above.

    Without `force`, a process whose logging someone else set up (a test runner, a gunicorn
    logconfig) is left alone, except that a handler of ours takes the format."""
    chosen = formatter(log_format)   # a bad SBK_LOG_FORMAT is refused wherever the app starts
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _StderrHandler)]
    if root.handlers and not ours and not force:
        return
    for handler in list(root.handlers) if force else ours:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(chosen)
    handler.addFilter(RequestFields())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)   # Python's warnings too: one line each, in the format


def _format_from_environment():
    """SBK_LOG_FORMAT as the server's settings read it (gunicorn's logger starts before any app)."""
    from flask import Config

    from .settings import layer
    return layer(Config(os.getcwd())).log_format


if glogging is not None:   # gunicorn is optional: `sbk serve --workers 0` runs without it
    class GunicornLogger(glogging.Logger):
        """gunicorn's own lines (its error and access logs) in SBK_LOG_FORMAT; the process's logging set up.

        `sbk serve` uses it; a gunicorn of its own takes `logger_class = "server.logs.GunicornLogger"`."""

        def setup(self, cfg):
            super().setup(cfg)
            log_format = _format_from_environment()
            configure(log_format, force=True)
            for logger in (self.error_log, self.access_log):
                for handler in logger.handlers:
                    handler.setFormatter(formatter(log_format))
