"""ApiError and the one place that turns errors into `{"error", "message", "request_id"}` replies.

Views and domain functions raise ApiError (or one of the shortcuts below);
werkzeug's own HTTP errors (404 route, 405, 413 body too large) get the same
JSON shape; anything else is a bug: logged with its traceback, answered 500
without details.
"""
import logging

from flask import jsonify
from werkzeug.exceptions import HTTPException

from shared.schema import SchemaError

from . import logs

log = logging.getLogger("sbk")


class ApiError(Exception):
    """An error reply: HTTP status, kebab-case reason, one sentence."""

    def __init__(self, status_code, error, message):
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.message = message

    def to_dict(self):
        return {"error": self.error, "message": self.message}


def bad_request(message, error="bad-request"):
    return ApiError(400, error, message)


def not_found(message):
    return ApiError(404, "not-found", message)


def conflict(error, message):
    return ApiError(409, error, message)


def as_api_error(error):
    """The ApiError a raised exception stands for."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, SchemaError):
        return bad_request(str(error), "schema-error")
    if isinstance(error, HTTPException):
        reason = (error.name or "error").lower().replace(" ", "-")
        return ApiError(error.code or 500, reason, error.description or error.name)
    log.exception("unexpected error")
    return ApiError(500, "internal-error", "the server failed; the details are in its log")


def handle_error(error):
    """The one error handler: every failure leaves as `{"error", "message"}`."""
    api_error = as_api_error(error)
    # the request's id (server/logs.py) leads from the user's error to the server's lines about it
    response = jsonify({**api_error.to_dict(), "request_id": logs.request_id()})
    response.status_code = api_error.status_code
    return response


def register(app):
    """Install the handler on `app`."""
    app.register_error_handler(Exception, handle_error)
