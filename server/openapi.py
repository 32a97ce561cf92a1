"""The OpenAPI 3.1 document of /api/v1, made from the routes' declarations (server/api/endpoint.py) and
their typed definitions (server/api/schemas.py): what validates the input is what the document says."""
import copy
import inspect
import functools
import re

import pydantic
from flask import current_app

from shared.schema import MAX_INT

from .api.endpoint import declaration
from .api.schemas import Error, Query

PREFIX = "/api/v1"
JSON = "application/json"
REF = "#/components/schemas/{model}"
ERRORS = {400: "bad input: the message names the field", 401: "missing, unknown or revoked token, or token-expired",
          403: "the token lacks the privilege, or belongs to another job", 404: "not found",
          409: "conflict: the error names the rule", 413: "body too large"}


class _Components:
    """The document's schemas: each model once, by name, referred to by $ref."""

    def __init__(self):
        self.schemas = {}

    def schema(self, kind):
        if kind == "gzip":
            return {"type": "string", "format": "binary"}
        found = _without_none_defaults(pydantic.TypeAdapter(kind).json_schema(ref_template=REF, mode="validation"))
        self.schemas.update(found.pop("$defs", {}))
        if isinstance(kind, type) and issubclass(kind, pydantic.BaseModel):
            self.schemas[kind.__name__] = found
            return {"$ref": REF.format(model=kind.__name__)}
        return found

    def content(self, kind):
        media = "application/gzip" if kind == "gzip" else JSON
        return {media: {"schema": self.schema(kind)}}


def _without_none_defaults(schema):
    """`default: null` says only "absent"; on a field that takes no null it would contradict its type."""
    if isinstance(schema, dict):
        return {k: _without_none_defaults(v) for k, v in schema.items() if not (k == "default" and v is None)}
    if isinstance(schema, list):
        return [_without_none_defaults(v) for v in schema]
    return schema


def _without_null(schema):
    """A query parameter is absent or a value, never null."""
    options = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
    if len(options) == 1:
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        return {**options[0], **rest}
    return {k: v for k, v in schema.items() if k != "default"}


def _path_parameter(rule, name):
    converter = type(rule._converters[name]).__name__
    schema = ({"type": "integer", "minimum": 1, "maximum": MAX_INT} if converter == "IdConverter"
              else {"type": "integer", "minimum": 0} if converter == "IntegerConverter" else {"type": "string"})
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _operation(components, method, rule, declared, view):
    responses = {str(declared.status): {"description": "success", "content": components.content(declared.reply)}}
    for status, description, reply in declared.replies:
        responses[str(status)] = {"description": description, "content": components.content(reply)}
    codes = [400, 404]
    if declared.auth:
        codes += [401, 403]
    if method in ("post", "patch", "put", "delete"):
        codes.append(409)
    if declared.body is not None:
        codes.append(413)
    errors = {code: ERRORS[code] for code in codes}
    errors.update(dict(declared.errors))
    for code, description in sorted(errors.items()):
        responses[str(code)] = {"description": description, "content": components.content(Error)}
    op = {"summary": declared.summary, "operationId": f"{method}_{view.__name__}", "responses": responses}
    explained = inspect.getdoc(declared.query) if declared.query is not None else None
    if explained and explained != inspect.getdoc(Query):
        op["description"] = explained   # what a query's parameters mean together (the job monitor's filters)
    if declared.auth:
        op["security"] = [{"bearer": []}]
    params = [_path_parameter(rule, name) for name in re.findall(r"<(?:\w+:)?(\w+)>", rule.rule)]
    if declared.query is not None:
        query = declared.query.model_json_schema(ref_template=REF)
        params += [{"name": name, "in": "query", "required": False, "schema": _without_null(schema),
                    **({"description": schema["description"]} if "description" in schema else {})}
                   for name, schema in query["properties"].items()]
    if params:
        op["parameters"] = params
    if declared.body is not None:
        body = components.schema(declared.body)
        if declared.many:
            body = {"oneOf": [body, {"type": "array", "minItems": 1, "maxItems": declared.many, "items": body}]}
        media = "application/gzip" if declared.body == "gzip" else JSON
        op["requestBody"] = {"required": declared.body_required, "content": {media: {"schema": body}}}
    return op


def _link(paths, app):
    """OpenAPI links from each create to the operations on what it created (create -> read -> update)."""
    for rule in app.url_map.iter_rules():
        declared = declaration(app.view_functions[rule.endpoint])
        if declared is None or not declared.links or "POST" not in rule.methods:
            continue
        collection = rule.rule[len(PREFIX):]
        for parameter, pointer in declared.links:
            below = f"{collection}/{{{parameter}}}"
            links = {op["operationId"]: {"operationId": op["operationId"],
                                         "parameters": {parameter: f"$response.body#{pointer}"}}
                     for path, ops in paths.items() if path == below or path.startswith(below + "/")
                     for op in ops.values()}
            paths[collection]["post"]["responses"][str(declared.status)]["links"] = links


@functools.lru_cache(maxsize=4)   # per app (a test makes many; a server one)
def _build(app):
    components, paths = _Components(), {}
    components.schema(Error)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith(PREFIX + "/"):
            continue
        view = app.view_functions[rule.endpoint]
        declared = declaration(view)
        if declared is None:
            raise LookupError(f"{rule.rule} has no @endpoint declaration")
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule[len(PREFIX):])
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(components, method.lower(), rule, declared, view)
    _link(paths, app)
    return {
        "openapi": "3.1.0",
        "info": {"title": "sbk, the Severus bookkeeping API", "version": "1"},
        "servers": [{"url": PREFIX}],
        "paths": paths,
        "components": {"schemas": dict(sorted(components.schemas.items())),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def spec(app=None):
    """The document of `app` (the current one by default), a fresh copy callers may change."""
    return copy.deepcopy(_build(app or current_app._get_current_object()))
