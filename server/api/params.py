"""Reading request input: the JSON body and typed query-string values (400 on bad ones)."""
import datetime

from flask import request

from shared import schema as s
from ..errors import bad_request
from .endpoint import validate_body


def json_body(kind=dict):
    """The decoded JSON body, which must be a `kind` (dict, or (dict, list))."""
    data = request.get_json(silent=True, force=True)
    if data is None:
        raise bad_request("the body must be valid JSON", "invalid-json")
    if not isinstance(data, kind):
        raise bad_request("the body must be a JSON object", "invalid-json")
    return validate_body(data)


def query_int(name, default=None, lo=0, hi=s.MAX_INT):
    """An integer query parameter."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"query parameter '{name}' must be an integer") from None
    if not lo <= value <= hi:
        raise bad_request(f"query parameter '{name}' must be between {lo} and {hi}")
    return value


def query_float(name, default=None, lo=0.0, hi=1e9):
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise bad_request(f"query parameter '{name}' must be a number") from None
    if not lo <= value <= hi:
        raise bad_request(f"query parameter '{name}' must be between {lo:g} and {hi:g}")
    return value


def query_list(name, allowed=None):
    """A comma-separated list (several ?name= also accepted); [] when absent."""
    items = [v.strip() for raw in request.args.getlist(name) for v in raw.split(",") if v.strip()]
    if allowed is not None:
        for item in items:
            if item not in allowed:
                raise bad_request(f"query parameter '{name}': unknown value {item[:64]!r}")
    return items


def query_text(name, max_len=256):
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_len or "\x00" in raw:
        raise bad_request(f"query parameter '{name}' is longer than {max_len} characters")
    return raw


def query_time(name):
    """An ISO 8601 date or date-time, as naive UTC."""
    raw = query_text(name, 64)
    if raw is None:
        return None
    try:
        value = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"query parameter '{name}' must be an ISO 8601 date or time") from None
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value

