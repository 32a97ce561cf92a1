"""Sessions (FastSim, FullSim, ...): their job-parameter definitions and software releases."""
from . import models as m


def get_session(name):
    return m.get_or_404(m.Session, m.Session.name == name, f"session {name!r}")


def software_dict(sw):
    return {"id": sw.id, "session": sw.session.name, "name": sw.name, "version": sw.version,
            "revision": sw.revision, "lfn": sw.lfn, "adler32": sw.adler32, "workdir": sw.workdir,
            "exe": sw.exe, "env": sw.env, "created_at": m.iso(sw.created_at)}


def session_dict(session, full=False):
    d = {"name": session.name, "description": session.description,
         "payload_module": session.payload_module, "created_at": m.iso(session.created_at)}
    if full:
        d["parameters"] = [{"name": p.name, "allowed": p.allowed} for p in
                           session.parameters.order_by(m.JobParameter.position, m.JobParameter.id)]
        d["software"] = [software_dict(sw) for sw in
                         session.software.order_by(m.Software.version, m.Software.revision)]
    return d
