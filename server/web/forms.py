"""From an HTML form to the API's body, and the guard every action passes.

A page's action calls the same server function as the API route, with the
same JSON-shaped body: `form_body` turns the form's strings into it by a
table of field kinds, so a form and a JSON client are checked by one set of
rules (shared/schema.py and the domain modules). A refused action re-renders
its page with the one-line reason and the API's status (`attempt`).
"""
import functools
from dataclasses import dataclass

from flask import request

from shared.schema import SchemaError

from ..errors import ApiError, as_api_error
from .layout import need
from .signin import check_csrf


def _integer(raw, name):
    try:
        return int(raw)
    except ValueError:
        raise SchemaError(f"'{name}' must be a whole number") from None


def _number(raw, name):
    try:
        return float(raw)
    except ValueError:
        raise SchemaError(f"'{name}' must be a number") from None


def _lines(raw, name):
    return [line.strip() for line in raw.splitlines() if line.strip()]


def _pairs(raw, name):
    """`KEY=value` lines as a mapping."""
    pairs = {}
    for line in _lines(raw, name):
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise SchemaError(f"'{name}': each line must be NAME=value (not {line[:64]!r})")
        pairs[key.strip()] = value.strip()
    return pairs


KINDS = {"text": lambda raw, name: raw, "int": _integer, "number": _number, "lines": _lines, "pairs": _pairs}


@dataclass(frozen=True)
class Field:
    """One form field and the body key it fills.

    kind: text | int | number | lines (a textarea, one item a line) | pairs (NAME=value lines) |
    bool (a checkbox: present or not) | list (checkboxes or a multiple select sharing the name).
    An empty text field is left out of the body (the server's default applies) unless `keep_empty`.
    """
    name: str
    kind: str = "text"
    key: str = ""            # the body key, when it differs from the field's name
    keep_empty: bool = False


def form_body(fields, form=None):
    """The JSON-shaped body the form's `fields` make."""
    form = request.form if form is None else form
    body = {}
    for f in fields:
        key = f.key or f.name
        if f.kind == "bool":
            body[key] = f.name in form
        elif f.kind == "list":
            body[key] = [v for v in form.getlist(f.name) if v != ""]
        else:
            raw = form.get(f.name, "").strip() if f.kind != "text" else form.get(f.name, "")
            if raw.strip() == "" and not f.keep_empty:
                continue
            body[key] = KINDS[f.kind](raw, key)
    return body


def action(*privileges):
    """Decorator for a page's POST: a valid CSRF token and one of `privileges` (see layout.can)."""
    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            check_csrf()
            need(*privileges)
            return view(*args, **kwargs)
        return wrapper
    return decorate


def attempt(call, *args, **kwargs):
    """(call's result, None), or (None, ApiError) when the call is refused (4xx); a bug stays a 500."""
    try:
        return call(*args, **kwargs), None
    except (ApiError, SchemaError) as error:
        refused = as_api_error(error)
        if refused.status_code >= 500:
            raise
        return None, refused
