"""Sessions (FastSim, FullSim, ...): their job-parameter definitions and software releases.

The rules of session management (the API and the sessions page both call these functions):
- an allowed value of a job parameter cannot be taken away while a request of the session uses it
  (409 value-in-use naming the request): the request could no longer be checked or imported;
- a release is edited only while no production uses it (409 release-used): a production's jobs keep
  the release they were defined with, so a change is a new revision;
- a release is retired (no new production may use it) only while no open production uses it
  (409 release-in-use); a retired release can be restored;
- a step template (seed 001's module instance: a name, a payload module, its default parameters
  and arguments) is changed or removed only while no request chooses it (409 step-in-use): the
  request's jobs are described from it, and a prepared job must run what was asked for.
"""
import peewee as pw

from shared import schema as s
from shared.jobdesc import ADLER32_RE, NAME_RE

from . import db
from . import models as m
from .errors import conflict, not_found

# Changing sessions, parameters and releases is the production managers' (seed: FastProdMgr, FullProdMgr).
MANAGER = "create-productions"
MAX_PARAMETERS = 50
MAX_STEP_TEMPLATES = 50
# A release's fields and their readers; `revision` defaults to 0 on create only.
SOFTWARE_FIELDS = {
    "name": lambda d, k: s.text(d, k, pattern=NAME_RE, max_len=128),
    "version": lambda d, k: s.text(d, k, pattern=NAME_RE, max_len=64),
    "revision": lambda d, k: s.integer(d, k, hi=2 ** 31 - 1),
    "lfn": lambda d, k: s.lfn(d, k),
    "adler32": lambda d, k: s.text(d, k, pattern=ADLER32_RE),
    "path": lambda d, k: _absolute(d, k, "/cvmfs/superbvo.org/FastSim/V0.2.5"),
    "workdir": lambda d, k: s.relative_path(d, k),
    "exe": lambda d, k: s.relative_path(d, k),
    "env": lambda d, k: s.text_map(d, k),
}
SESSION_SETTINGS = {
    "description": lambda d, k: s.text(d, k, max_len=4096, empty=True),
    "payload_module": lambda d, k: s.text(d, k, pattern=NAME_RE, max_len=64),
    "container_image": lambda d, k: _absolute(d, k, "/cvmfs/unpacked.cern.ch/.../el9:latest", empty=True),
}
# A release is a tarball (lfn and adler32) or a read-only shared area (path), never both.
TARBALL, AREA = ("lfn", "adler32"), ("path",)


def _absolute(d, k, example, empty=False):
    """An absolute path without '..' (what the job description takes), or "" when `empty` allows it."""
    value = s.text(d, k, max_len=1024, empty=empty)
    if value and (not value.startswith("/") or ".." in value.split("/")):
        raise s.SchemaError(f"'{k}' must be an absolute path like {example}")
    return value


def get_session(name):
    return m.get_or_404(m.Session, m.Session.name == name, f"session {name!r}")


def get_software(session, software_id):
    """Release `software_id` of `session`, or 404."""
    sw = m.Software.get_or_none((m.Software.id == software_id) & (m.Software.session == session))
    if sw is None:
        raise not_found(f"session {session.name} has no software release {software_id}")
    return sw


def software_dict(sw):
    return {"id": sw.id, "session": sw.session.name, "name": sw.name, "version": sw.version,
            "revision": sw.revision, "lfn": sw.lfn or None, "adler32": sw.adler32 or None, "path": sw.path or None,
            "workdir": sw.workdir,
            "exe": sw.exe, "env": sw.env, "retired": sw.retired, "created_at": m.iso(sw.created_at)}


def session_dict(session, full=False):
    d = {"name": session.name, "description": session.description,
         "payload_module": session.payload_module, "container_image": session.container_image or None,
         "created_at": m.iso(session.created_at)}
    if full:
        d["parameters"] = [{"name": p.name, "allowed": p.allowed} for p in
                           session.parameters.order_by(m.JobParameter.position, m.JobParameter.id)]
        d["software"] = [software_dict(sw) for sw in
                         session.software.order_by(m.Software.version, m.Software.revision)]
        d["steps"] = [step_dict(t) for t in
                      session.step_templates.order_by(m.StepTemplate.position, m.StepTemplate.id)]
    return d


def step_dict(template):
    return {"name": template.name, "module": template.module, "parameters": template.parameters,
            "args": template.args}


def release_users(session):
    """{software id: [(production name, status)]}: the main productions of `session` using each release
    (a _test twin has its production's release and status)."""
    out = {}
    for sw_id, name, status in (m.Production.select(m.Production.software, m.Production.name, m.Production.status)
                                .where((m.Production.session == session) & (m.Production.is_test == False))  # noqa: E712
                                .order_by(m.Production.name).tuples()):
        out.setdefault(sw_id, []).append((name, status))
    return out


# ---------------------------------------------------------------------- sessions and job parameters

def read_parameter_defs(body, where="parameters"):
    """[(name, allowed values)] of the body's `parameters` list; names unique."""
    raw = body.get("parameters", [])
    if not isinstance(raw, list) or len(raw) > MAX_PARAMETERS:
        raise s.SchemaError(f"'{where}' must be a list of at most {MAX_PARAMETERS} objects")
    defs = []
    for n, p in enumerate(raw):
        if not isinstance(p, dict):
            raise s.SchemaError(f"'{where}[{n}]' must be an object")
        s.refuse_unknown(p, ("name", "allowed"), f"{where}[{n}].")
        defs.append((s.text(p, "name", f"{where}[{n}].", pattern=NAME_RE, max_len=64),
                     list(s.text_list(p, "allowed", f"{where}[{n}].", default=(), max_items=1000,
                                      max_len=256))))
    if len({name for name, _ in defs}) != len(defs):
        raise s.SchemaError(f"'{where}' names a parameter twice")
    return defs


def create_session(body):
    """A new session with its job parameters; 409 duplicate-session."""
    s.refuse_unknown(body, ("name", "description", "payload_module", "container_image", "parameters"))
    name = s.text(body, "name", pattern=NAME_RE, max_len=64)
    description = s.text(body, "description", default="", max_len=4096, empty=True)
    module = s.text(body, "payload_module", default=name.lower(), pattern=NAME_RE, max_len=64)
    image = SESSION_SETTINGS["container_image"](body, "container_image") if "container_image" in body else ""
    defs = read_parameter_defs(body)
    with db.write_transaction():
        if m.Session.select().where(m.Session.name == name).exists():
            raise conflict("duplicate-session", f"session {name} already exists")
        session = m.Session.create(name=name, description=description, payload_module=module,
                                   container_image=image)
        for position, (pname, allowed) in enumerate(defs):
            m.JobParameter.create(session=session, name=pname, allowed=allowed, position=position)
    return session


def update_session(name, body):
    """A session's description and payload module."""
    s.refuse_unknown(body, tuple(SESSION_SETTINGS))
    fields = {k: reader(body, k) for k, reader in SESSION_SETTINGS.items() if k in body}
    with db.write_transaction():
        session = get_session(name)
        for k, v in fields.items():
            setattr(session, k, v)
        session.save()
    return session


def _refuse_used_values(session, pname, allowed):
    """409 value-in-use when a request of the session has a value of `pname` outside `allowed` (empty: any);
    a main request is named before a test request."""
    if not allowed:
        return
    keep = set(allowed)
    for req_id, production, parameters in (m.Request.select(m.Request.id, m.Production.name, m.Request.parameters)
                                           .join(m.Production).where(m.Production.session == session)
                                           .order_by(m.Production.is_test, m.Request.id).tuples()):
        value = m.Request.parameters.python_value(parameters) if isinstance(parameters, str) else parameters
        if pname in value and value[pname] not in keep:
            raise conflict("value-in-use", f"request {req_id} of production {production} uses "
                                           f"{pname} = {value[pname]!r}: keep it among the allowed values")


def define_parameter(name, body):
    """Add a job parameter to session `name`, or replace its allowed values: (session, created)."""
    s.refuse_unknown(body, ("name", "allowed"))
    ((pname, allowed),) = read_parameter_defs({"parameters": [body]}, "body")
    with db.write_transaction():
        session = get_session(name)
        param = m.JobParameter.get_or_none(session=session, name=pname)
        if param is None:
            if session.parameters.count() >= MAX_PARAMETERS:
                raise conflict("too-many-parameters", f"session {name} has {MAX_PARAMETERS} parameters already")
            m.JobParameter.create(session=session, name=pname, allowed=allowed, position=session.parameters.count())
        else:
            _refuse_used_values(session, pname, allowed)
            param.allowed = allowed
            param.save()
    return session, param is None


# ---------------------------------------------------------------------- software releases

def _read_release(body, partial):
    s.refuse_unknown(body, (*SOFTWARE_FIELDS, *(("retired",) if partial else ())))
    kind = AREA if "path" in body else TARBALL
    if "path" in body and any(k in body for k in TARBALL):
        raise s.SchemaError("'path' and 'lfn'/'adler32' exclude each other: a release is a shared area or a tarball")
    optional = ("revision", "env") + (TARBALL if kind == AREA else AREA)
    fields = {k: reader(body, k) for k, reader in SOFTWARE_FIELDS.items()
              if k in body or not (partial or k in optional)}
    if not partial:
        fields.setdefault("revision", 0)
        fields.setdefault("env", {})
    if "path" in fields:       # a release moved to a shared area leaves its tarball behind, and back
        fields.update(lfn="", adler32="")
    elif "lfn" in fields and partial:
        fields["path"] = ""
    if fields.get("lfn") and not fields["lfn"].endswith((".tjz", ".tgz", ".tar.gz")):
        raise s.SchemaError("'lfn' must name a .tjz, .tgz or .tar.gz tarball")
    return fields


def _refuse_duplicate(session, version, revision, but=None):
    query = m.Software.select().where((m.Software.session == session) & (m.Software.version == version)
                                      & (m.Software.revision == revision))
    if but is not None:
        query = query.where(m.Software.id != but)
    if query.exists():
        raise conflict("duplicate-software", f"{session.name} already has release {version} {revision}")


def create_software(name, body):
    """Register a release of session `name`; 409 duplicate-software."""
    fields = _read_release(body, partial=False)
    with db.write_transaction():
        session = get_session(name)
        _refuse_duplicate(session, fields["version"], fields["revision"])
        return m.Software.create(session=session, **fields)


def update_software(name, software_id, body):
    """Edit release `software_id` of session `name` (only while no production uses it), retire it (only
    while no open production uses it) or restore it (`retired` false)."""
    fields = _read_release(body, partial=True)
    retired = s.boolean(body, "retired") if "retired" in body else None
    with db.write_transaction():
        session = get_session(name)
        sw = get_software(session, software_id)
        users = release_users(session).get(sw.id, [])
        label = f"release {sw.version} {sw.revision}"
        if fields and users:
            raise conflict("release-used", f"{label} is used by production {users[0][0]}: a production's jobs "
                                           "keep the release they were defined with; register a new revision")
        if retired and not sw.retired:
            open_users = [p for p, status in users if status == "open"]
            if open_users:
                raise conflict("release-in-use", f"{label} is used by the open production {open_users[0]}: "
                                                 "close it before retiring the release")
        if fields:
            _refuse_duplicate(session, fields.get("version", sw.version), fields.get("revision", sw.revision),
                              but=sw.id)
        for k, v in fields.items():
            setattr(sw, k, v)
        if retired is not None:
            sw.retired = retired
        sw.save()
    return sw


# ---------------------------------------------------------------------- step templates

def read_step_template(body):
    """(name, module, parameters, args) of a step template body."""
    s.refuse_unknown(body, ("name", "module", "parameters", "args"))
    return (s.text(body, "name", pattern=NAME_RE, max_len=64), s.text(body, "module", pattern=NAME_RE, max_len=64),
            dict(s.text_map(body, "parameters", default={})),
            list(s.text_list(body, "args", default=(), max_items=1000, empty=True)))


def step_users(session, name):
    """Ids of the requests of `session` whose steps or follow-up stage choose template `name` (main
    before test)."""
    rows = (m.Request.select(m.Request.id, m.Request.steps, m.Request.followup).join(m.Production)
            .where(m.Production.session == session).order_by(m.Production.is_test, m.Request.id).tuples())
    used = []
    for req_id, steps, followup in rows:
        steps = m.Request.steps.python_value(steps) if isinstance(steps, str) else steps
        followup = m.Request.followup.python_value(followup) if isinstance(followup, str) else followup
        if any(step["template"] == name for step in steps or []) or (followup or {}).get("template") == name:
            used.append(req_id)
    return used


def define_step_template(name, body):
    """Add step template to session `name`, or replace an unused one: (session, created)."""
    tname, module, parameters, args = read_step_template(body)
    try:
        with db.write_transaction():
            session = get_session(name)
            template = m.StepTemplate.get_or_none(session=session, name=tname)
            if template is None:
                count = session.step_templates.count()
                if count >= MAX_STEP_TEMPLATES:
                    raise conflict("too-many-steps", f"session {name} has {MAX_STEP_TEMPLATES} step templates already")
                m.StepTemplate.create(session=session, name=tname, module=module, parameters=parameters,
                                      args=args, position=count)
                return session, True
            _refuse_used_step(session, tname, "changed")
            template.module, template.parameters, template.args = module, parameters, args
            template.save()
    except pw.IntegrityError:   # the same step defined at the same moment (PostgreSQL's read committed)
        raise conflict("step-defined-meanwhile", f"step {tname} of session {name} was defined at the same "
                                                 "moment by another request: read it, then change it") from None
    return session, False


def delete_step_template(name, step):
    with db.write_transaction():
        session = get_session(name)
        template = m.StepTemplate.get_or_none(session=session, name=step)
        if template is None:
            raise not_found(f"session {name} has no step template {step!r}")
        _refuse_used_step(session, step, "removed")
        template.delete_instance()
    return session


def resolved_steps(session, steps):
    """A request's `steps` as the job description's `payload.steps`: each template's module and
    arguments, its parameters = the template's defaults with the request's overrides over them (the
    wrapper puts them over the payload's, the request's job parameters); a template chosen twice is
    named <name>-2, <name>-3, ..."""
    templates = {t.name: t for t in m.StepTemplate.select().where(m.StepTemplate.session == session)}
    out, seen = [], {}
    for step in steps:
        template = templates.get(step["template"])
        if template is None:    # check_steps refused this at the request; a template cannot go while used
            raise conflict("step-missing", f"session {session.name} has no step template {step['template']!r}")
        seen[template.name] = seen.get(template.name, 0) + 1
        name = template.name if seen[template.name] == 1 else f"{template.name}-{seen[template.name]}"
        out.append({"name": name, "module": template.module,
                    "parameters": {**template.parameters, **step["parameters"]},
                    "args": list(template.args)})
    return out


def _refuse_used_step(session, step, what):
    users = step_users(session, step)
    if users:
        raise conflict("step-in-use", f"step {step} of session {session.name} is chosen by request {users[0]}: "
                                      f"it cannot be {what} while a request's jobs are described from it; "
                                      "define a new step instead")
