"""`@endpoint(...)`: a route's typed definitions (body, query, reply; server/api/schemas/) declared once.

The same pydantic models validate the input and make /api/v1/openapi.json (server/openapi.py). Ours, not
spectree or flask-openapi3: those validate before the route and answer in their own error shape, where ours
must stay `{"error", "message"}` naming the field, and a job token must hear "401" before "bad body". So the
query is checked when the route starts (under @auth.require), the body when the route reads it
(params.json_body), and the business rules stay in the core modules.
"""
import dataclasses
import functools
import typing
from typing import List, Optional

import pydantic
from flask import current_app, request

from ..errors import bad_request


# the routes that take a `backend` (server/batch.py raises it)
BACKEND_UNAVAILABLE = (503, "backend-unavailable: the backend cannot be reached or has no credential here")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    summary: str
    reply: object = None               # a model, a type (List[Model]) or "gzip"
    status: int = 200
    body: object = None                # a model; "gzip" for raw bytes
    body_validated: bool = True        # False: shared/'s parser reads it (tests/server/test_schema_parity.py)
    body_required: bool = True
    many: int = 0                      # > 0: the body is one `body` or a list of 1 to `many` of them
    query: Optional[type] = None
    auth: Optional[str] = "user"       # "user", "job", "job-or-user", None (public)
    errors: tuple = ()                 # (status, description) beyond the usual ones
    replies: tuple = ()                # (status, description, model): other successes
    # (path parameter, JSON pointer in the reply): what was created is read and changed at <path>/{parameter}
    links: tuple = ()


def endpoint(summary, **kw):
    """Declare the route below: what it reads and replies. Put it last, under @bp.<method> and @auth.require."""
    declared = Endpoint(summary, **kw)

    def wrap(view):
        @functools.wraps(view)
        def route(*args, **kwargs):
            if declared.query is not None:
                validate(declared.query, request.args.to_dict(), "query parameter")
            return view(*args, **kwargs)
        route.declared = declared   # functools.wraps carries it to the decorators above (@auth.require)
        return route
    return wrap


def declaration(view):
    """The Endpoint of a view function (None: not declared)."""
    return getattr(view, "declared", None)


def declared_here():
    """The Endpoint of the route serving this request (None outside a declared route)."""
    return declaration(current_app.view_functions.get(request.endpoint))


@functools.lru_cache(maxsize=None)
def adapter(kind):
    return pydantic.TypeAdapter(kind)


def validate(kind, data, what="field"):
    """`data` checked against `kind`; 400 schema-error naming the first field that does not fit."""
    try:
        adapter(kind).validate_python(data)
    except pydantic.ValidationError as exc:
        raise bad_request(describe(_telling(exc.errors(include_url=False)), kind, what), "schema-error") from None


def _is_branch(part):
    """A union member's tag in an error's location ('str', 'StepChoice', 'list[str]'), not a field or a key."""
    return isinstance(part, str) and ("[" in part or part in _SCALARS or part in _models())


@functools.lru_cache(maxsize=1)
def _models():
    """The names of the definitions (a union of models tags its errors with them)."""
    names, todo = set(), [pydantic.BaseModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            names.add(sub.__name__)
            todo.append(sub)
    return frozenset(names)


_SCALARS = ("str", "int", "float", "bool", "dict", "list", "none")


def _telling(errors):
    """The error to report: the first, or within a union the one that went deepest into the value (a step
    object with an unknown field, not "it is not a string")."""
    if any(_is_branch(p) for e in errors for p in e["loc"]):
        return max(errors, key=lambda e: len([p for p in e["loc"] if not _is_branch(p)]))
    return errors[0]


def validate_body(data):
    """The decoded JSON body checked against this route's declared body (nothing declared: as is)."""
    declared = declared_here()
    if declared is None or declared.body is None or not declared.body_validated:
        return data
    if declared.many and isinstance(data, list):
        if not 1 <= len(data) <= declared.many:
            raise bad_request(f"give 1 to {declared.many} items", "schema-error")
        validate(List[declared.body], data)
    else:
        validate(declared.body, data)
    return data


def _path(loc):
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _field(kind, loc):
    """The FieldInfo at `loc` in model `kind` (through lists, dicts and Optional), or None."""
    info = None
    for part in loc:
        while typing.get_origin(kind) is not None and not hasattr(kind, "model_fields"):
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            kind = args[-1] if args else None   # Optional[X] -> X, List[X] -> X, Dict[K, V] -> V
        if isinstance(part, int) or not hasattr(kind, "model_fields"):
            continue
        info = kind.model_fields.get(part)
        if info is None:
            return None
        kind = info.annotation
    return info


def _bounds(kind, loc):
    """(ge, le) of the field at `loc`, for "must be between" messages."""
    info = _field(kind, loc)
    lo = hi = None
    for meta in getattr(info, "metadata", ()):
        lo = meta.ge if getattr(meta, "ge", None) is not None else lo
        hi = meta.le if getattr(meta, "le", None) is not None else hi
    return lo, hi


# pydantic's error types in the words shared/schema.py uses, so that a message reads the same either way
WORDS = {
    "int_type": "must be an integer", "int_parsing": "must be an integer", "int_from_float": "must be an integer",
    "float_type": "must be a number", "float_parsing": "must be a number", "finite_number": "must be a number",
    "string_type": "must be a string", "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "dict_type": "must be an object", "model_type": "must be an object", "model_attributes_type": "must be an object",
    "list_type": "must be a list", "missing": "is required", "extra_forbidden": "is not a known field",
    "string_pattern_mismatch": "has an invalid value", "literal_error": "must be one of {expected}",
    "enum": "must be one of {expected}", "string_too_long": "is longer than {max_length} characters",
    "too_long": "has more than {max_length} items", "too_short": "must have at least {min_length} items",
}
BOUNDS = ("greater_than_equal", "less_than_equal", "greater_than", "less_than")


def describe(error, kind=None, what="field"):
    """One sentence naming the field: "field 'bulks[0].events' must be an integer"."""
    loc = tuple(p for p in error["loc"] if not _is_branch(p) and not str(p).startswith(("function-", "tagged-")))
    name = _path(loc) or "body"
    etype, ctx = error["type"], error.get("ctx") or {}
    if etype in BOUNDS:
        lo, hi = _bounds(kind, loc)
        lo = ctx.get("ge", ctx.get("gt")) if lo is None else lo
        hi = ctx.get("le", ctx.get("lt")) if hi is None else hi
        text = (f"must be between {lo:g} and {hi:g}" if lo is not None and hi is not None
                else f"must be at least {lo:g}" if lo is not None else f"must be at most {hi:g}")
    elif etype in WORDS:
        try:
            text = WORDS[etype].format(**ctx)
        except KeyError:
            text = WORDS[etype].split(" {")[0]
    else:
        return f"{what} '{name}': {error['msg'][:200]}"
    return f"{what} '{name}' {text}"
