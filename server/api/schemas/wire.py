"""The wrapper's messages as the API documents them: the job description (shared/jobdesc.py) and the
events (shared/events.py), written as JSON Schema.

shared/ (standard library only, the wrapper's side) parses both; these schemas document what it accepts,
and tests/server/test_schema_parity.py runs one corpus of good and bad messages through both. JSON Schema
cannot say a few things the parsers check; the test names them (KNOWN_GAPS): 1.0 is an integer to JSON
Schema, a lone surrogate is a string, a step name must be unique, a relative path must not climb out of
its root (the schema refuses any '..'), a report is at most 256 KiB, and shared/ takes `"schema": true`
(Python's True == 1).
"""
from typing import Any, Dict

from pydantic import ConfigDict, RootModel

from shared.errors import CODES
from shared.events import KINDS, MAX_BATCH, MAX_TAIL_LINES
from shared.jobdesc import INPUT_MODES, MAX_STEPS, SCHEMA_VERSION
from shared.lifecycle import COMMANDS
from shared.schema import MAX_INT
from shared.states import REPORTABLE_STATUSES, Step

# `$` would also match before a final newline in Python's re (jsonschema's): this is the end of the text
END = r"(?![\s\S])"
NAME_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._+-]*{END}"
_SEGMENT = rf"[A-Za-z0-9._+=@,:%~-]+"
# lfn:/a/b: no '.' or '..' segment, no empty one but the last (shared/schema.py check_lfn)
LFN_PATTERN = (rf"^lfn:/(?:(?!\.\.?/){_SEGMENT}/)*(?:(?!\.\.?{END}){_SEGMENT})?{END}")
NO_NUL = rf"^[^\x00]*{END}"


def _text(max_len=4096, pattern=NO_NUL, empty=False):
    return {"type": "string", "maxLength": max_len, "pattern": pattern, **({} if empty else {"minLength": 1})}


def _int(lo=0, hi=MAX_INT):
    return {"type": "integer", "minimum": lo, "maximum": hi}


def _num(lo=0, hi=MAX_INT):
    return {"type": "number", "minimum": lo, "maximum": hi}


def _obj(properties, required=()):
    return {"type": "object", "additionalProperties": False, "properties": properties,
            **({"required": list(required)} if required else {})}


def _texts(max_items=100000, **kw):
    return {"type": "array", "maxItems": max_items, "items": _text(**kw)}


TEXT_MAP = {"type": "object", "maxProperties": 1000, "propertyNames": {"minLength": 1, "pattern": NO_NUL},
            "additionalProperties": {"type": "string", "pattern": NO_NUL}}
ENV = dict(TEXT_MAP, propertyNames={"pattern": rf"^[A-Za-z_][A-Za-z0-9_]*{END}"})
LFN = _text(1024, LFN_PATTERN)
# an absolute path with no '..' segment (software.path, container.image)
ABSOLUTE = rf"^(?![\s\S]*/\.\.(?:/|{END}))/[^\x00]*{END}"
# a path below its root (the parser refuses one that climbs out; the document any '..')
RELATIVE = rf"^(?!/)(?![\s\S]*(?:^|/)\.\.(?:/|{END}))[^\x00]*{END}"
TARBALL = rf"(?:\.tjz|\.tgz|\.tar\.gz){END}"

STEP = _obj({"name": _text(64, NAME_PATTERN), "module": _text(64, NAME_PATTERN), "parameters": TEXT_MAP,
             "args": _texts(1000, empty=True), "env": ENV}, ("name", "module"))

JOB_DESCRIPTION = {
    "description": "The job description (CONTRACT §1) that `severus run` reads (shared/jobdesc.py).",
    **_obj({
        "schema": {"const": SCHEMA_VERSION},
        "job": _obj({"id": _int(1), "runnum": _int(0), "attempt": _int(1, 100000),
                     "session": _text(64, NAME_PATTERN), "production": _text(128, NAME_PATTERN),
                     "request": {"anyOf": [_int(1), {"type": "null"}]}, "events": _int(0, 10 ** 12),
                     "test": {"type": "boolean"}},
                    ("id", "runnum", "attempt", "session", "production", "events")),
        "server": _obj({"url": _text(1024, rf"^https?://[^\s\x00]+{END}"), "token": _text(512),
                        "heartbeat_s": _num(0.05, 86400)}, ("url", "token")),
        # a tarball (lfn + adler32) or a read-only shared area (path), not both
        "software": {**_obj({"name": _text(128, NAME_PATTERN), "version": _text(64, NAME_PATTERN),
                             "revision": _int(), "lfn": {}, "adler32": {}, "path": {},
                             "workdir": _text(1024, RELATIVE), "exe": _text(1024, RELATIVE)},
                            ("name", "version", "workdir", "exe")),
                     "if": {"properties": {"path": {"not": {"type": "null"}}}, "required": ["path"]},
                     "then": {"properties": {"path": _text(1024, ABSOLUTE), "lfn": {"type": "null"},
                                             "adler32": {"type": "null"}}},
                     "else": {"required": ["lfn", "adler32"],
                              "properties": {"lfn": {**LFN, "allOf": [{"pattern": TARBALL}]},
                                             "adler32": _text(8, rf"^[0-9a-f]{{8}}{END}")}}},
        # one module (module, args), or 1 to 20 steps each naming its own
        "payload": {**_obj({"module": _text(64, NAME_PATTERN), "parameters": TEXT_MAP, "env": ENV,
                            "args": _texts(1000, empty=True), "steps": {}}),
                    "if": {"properties": {"steps": {"not": {"type": "null"}}}, "required": ["steps"]},
                    "then": {"properties": {"steps": {"type": "array", "minItems": 1, "maxItems": MAX_STEPS,
                                                      "items": STEP}},
                             "not": {"anyOf": [{"required": ["module"]}, {"required": ["args"]}]}},
                    "else": {"required": ["module"]}},
        "input": {**_obj({"mode": {"enum": list(INPUT_MODES)}, "paths": _texts(pattern=LFN_PATTERN)}, ("mode",)),
                  "allOf": [
                      {"if": {"properties": {"mode": {"const": "NONE"}}},
                       "then": {"properties": {"paths": {"maxItems": 0}}}},
                      {"if": {"properties": {"mode": {"enum": ["FILE", "DIR"]}}},
                       "then": {"required": ["paths"], "properties": {"paths": {"minItems": 1, "maxItems": 1}}}},
                      {"if": {"properties": {"mode": {"const": "LIST"}}},
                       "then": {"required": ["paths"], "properties": {"paths": {"minItems": 1}}}}]},
        "output": _obj({"lfn_dir": LFN, "sites": _texts(100, pattern=NAME_PATTERN),
                        "patterns": {**_texts(100, pattern=rf"^[^/\x00]+{END}"), "minItems": 1}}, ("lfn_dir",)),
        "log": _obj({"to_db": {"type": "boolean"}}),
        "limits": _obj({"max_wct_s": _num(1, 30 * 86400), "max_rss_mb": _num(0, 1024 * 1024),
                        "stall_s": _num(0, 30 * 86400), "grace_s": _num(0, 3600), "cores": _int(1, 1024),
                        "memory_mb": _num(0, 1024 * 1024), "credential_lifetime_s": _num(0, 30 * 86400)}),
        "container": {"anyOf": [{"type": "null"}, _obj({"image": _text(4096, ABSOLUTE)}, ("image",))]},
    }, ("schema", "job", "server", "software", "payload", "input", "output")),
}

FINAL_STATUSES = [s.value for s in REPORTABLE_STATUSES if s.final]
EVENT = {
    "description": "One report of a wrapper (shared/events.py); `(attempt, seq)` is its idempotency key.",
    **_obj({
        "attempt": _int(1, 100000), "seq": _int(1), "time": _num(0, 1e11),
        "status": {"enum": sorted(s.value for s in REPORTABLE_STATUSES)},
        "kind": {"enum": list(KINDS)},
        "step": {"enum": [s.value for s in Step] + [None]},
        "message": _text(4096, empty=True),
        "code": {"enum": sorted(CODES) + [None]},
        # anything false stands for none
        "metrics": {"anyOf": [{"type": "object", "maxProperties": 100,
                               "additionalProperties": _num(-1e18, 1e18)},
                              {"enum": [None, False, 0, "", []]}]},
        "tail": _texts(MAX_TAIL_LINES, empty=True),
        "report": {"type": ["object", "null"], "description": "the final report (at most 256 KiB)"},
        # a command from a reply the wrapper acts on: the server stops repeating it
        "ack": {"enum": list(COMMANDS) + [None]},
    }, ("attempt", "seq", "time", "status")),
    # a final status goes with kind final and a code; kind final with a final status only
    "if": {"properties": {"status": {"enum": FINAL_STATUSES}}},
    "then": {"required": ["kind", "code"], "properties": {"kind": {"const": "final"}, "code": {"type": "integer"}}},
    "else": {"properties": {"kind": {"not": {"const": "final"}}}},
}
assert MAX_BATCH == 1000   # the events route declares many=1000


def _documented(schema):
    def replace(found, cls):
        found.clear()
        found.update(schema)
    return ConfigDict(json_schema_extra=replace)


class JobDescription(RootModel[Dict[str, Any]]):
    model_config = _documented(JOB_DESCRIPTION)


class Event(RootModel[Dict[str, Any]]):
    model_config = _documented(EVENT)
