"""What a production request obeys wherever it is made: by a manager (POST /requests) or a test submission."""
import json

from . import models as m
from .errors import bad_request

# Serialises the creation of main requests across PostgreSQL sessions, so that
# "a request with these parameters already exists" is decided by one at a time
# (SQLite's BEGIN IMMEDIATE already does it).
CREATE_LOCK_KEY = 0x5B6


def check_parameters(session, parameters, where=""):
    """Refuse (400) values that are not `session`'s job parameters; `where` prefixes the names in messages."""
    defs = {p.name: p.allowed for p in session.parameters}
    for name, value in parameters.items():
        if name not in defs:
            raise bad_request(f"session {session.name} has no job parameter '{where}{name}'")
        if defs[name] and value not in defs[name]:
            raise bad_request(f"{value!r} is not an allowed value of {where}{name} ({', '.join(defs[name])})")
    missing = sorted(set(defs) - set(parameters))
    if missing:
        raise bad_request(f"job parameter {where}{missing[0]} has no value")


def params_key(parameters):
    """Canonical JSON of the parameters: a production holds one request per key."""
    return json.dumps(parameters, sort_keys=True, separators=(",", ":"))


def check_input(settings):
    mode, paths = settings.get("input_mode", "NONE"), settings.get("input_paths", [])
    counts = {"NONE": (0, 0), "FILE": (1, 1), "DIR": (1, 1), "LIST": (1, 10000)}[mode]
    if not counts[0] <= len(paths) <= counts[1]:
        raise bad_request(f"input mode {mode} takes {counts[0]} to {counts[1]} input paths, not {len(paths)}")


MAX_STEPS = 20


def read_steps(body, key):
    """A request's `steps`: a list of step template names or {"template": name, "parameters": {...}}
    (overrides of the template's defaults), stored as the latter."""
    from shared import schema as s
    from shared.jobdesc import NAME_RE
    raw = body[key]
    if not isinstance(raw, list) or len(raw) > MAX_STEPS:
        raise s.SchemaError(f"'{key}' must be a list of at most {MAX_STEPS} step template names or objects")
    steps = []
    for n, item in enumerate(raw):
        item = {"template": item} if isinstance(item, str) else item
        if not isinstance(item, dict):
            raise s.SchemaError(f"'{key}[{n}]' must be a step template name or an object")
        s.refuse_unknown(item, ("template", "parameters"), f"{key}[{n}].")
        steps.append({"template": s.text(item, "template", f"{key}[{n}].", pattern=NAME_RE, max_len=64),
                      "parameters": dict(s.text_map(item, "parameters", f"{key}[{n}].", default={}))})
    return steps


def check_steps(session, steps):
    """Every step names one of `session`'s step templates (400 naming the first that does not)."""
    known = {name for (name,) in m.StepTemplate.select(m.StepTemplate.name)
             .where(m.StepTemplate.session == session).tuples()}
    for n, step in enumerate(steps):
        if step["template"] not in known:
            raise bad_request(f"'steps[{n}]': session {session.name} has no step template {step['template']!r}"
                              f" ({', '.join(sorted(known)) or 'none defined: POST /sessions/<name>/steps'})")


def check_output_sites(names):
    """Outputs are stored only at sites the server knows (a typo would send every output to nowhere)."""
    known = {name for (name,) in m.Site.select(m.Site.name).where(m.Site.name.in_(list(names))).tuples()}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise bad_request(f"'output_sites': unknown site{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                          "(a site is added with POST /sites)")


def under_twin(path, main, renamed=None):
    """`path` of a request of production `main` for its test twin: the segment naming `main` becomes the
    twin's name and, after it, segments in `renamed` ({old: new}) are renamed; None when no segment
    names `main` (no test directory follows from it)."""
    parts = path.split("/")
    if main.name not in parts:
        return None
    at = parts.index(main.name)
    return "/".join(parts[:at] + [main.twin.name] + [(renamed or {}).get(p, p) for p in parts[at + 1:]])


def insert_test_request(req):
    """Insert the unsaved test request `req` unless its production already holds its parameters: (row, created).

    POST /requests and test submissions may make the same twin at once: on
    PostgreSQL the loser's insert waits for the winner, then does nothing
    (ON CONFLICT on the unique production+params_key index) instead of failing.
    """
    existing = m.Request.get_or_none(production=req.production_id, params_key=req.params_key)
    if existing is not None:
        return existing, False
    new_id = m.Request.insert(**req.__data__).on_conflict_ignore().execute()
    row = m.Request.get(production=req.production_id, params_key=req.params_key)
    return row, new_id is not None and row.id == new_id
