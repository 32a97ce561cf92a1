"""The file catalog: LFNs with size and adler32, their replicas per site, and who registered them.

Registration is idempotent and all or nothing (a job's outputs in one call, one transaction).
A job's attempt registers only while it is the job's current attempt and the job runs (the
fence: 409 otherwise). Outputs are immutable (shared/outputs.py): a newer attempt of the
same job registering an LFN replaces the older attempt's replicas, whose files the server
then deletes (removal requests); an LFN another job or a manager registered is never
taken over (409 `replica-mismatch`: the wrapper's 044).
"""
from shared.lifecycle import FINAL

from . import db, removals
from . import models as m
from .errors import ApiError, conflict


def file_dict(f, replicas):
    return {"lfn": f.lfn, "size": f.size, "adler32": f.adler32,
            "replicas": [{"site": r.site, "surl": r.surl} for r in replicas]}


def replicas_of(f):
    return list(m.Replica.select().where(m.Replica.file == f).order_by(m.Replica.site))


def register(replicas, job_id=None, attempt=None):
    """Register (lfn, site, surl, size, adler32) tuples in one transaction, for the job attempt
    (`job_id`, `attempt`) or for a manager (None); return ([file dicts], how many were new)."""
    created, files = 0, []
    with db.write_transaction():
        if job_id is not None:
            job = db.for_update(m.Job.select().where(m.Job.id == job_id)).get()
            if job.attempt != attempt:
                raise conflict("attempt-superseded", f"attempt {attempt} of job {job_id} was superseded "
                                                     f"by attempt {job.attempt}: it registers nothing")
            if job.status in FINAL:
                raise conflict("attempt-ended", f"job {job_id} already ended ({job.status}): "
                                                f"attempt {attempt} registers nothing")
        for lfn, site, surl, size, adler32 in replicas:
            f, new = _register_one(lfn, site, surl, size, adler32, job_id, attempt)
            created += new
            files.append(f)
        return [file_dict(f, replicas_of(f)) for f in files], created


def _register_one(lfn, site, surl, size, adler32, job_id, attempt):
    f = db.for_update(m.CatalogFile.select().where(m.CatalogFile.lfn == lfn)).first()
    if f is None:
        f = m.CatalogFile.create(lfn=lfn, size=size, adler32=adler32)
        m.Replica.create(file=f, site=site, surl=surl, job=job_id, attempt=attempt)
        return f, 1
    existing = replicas_of(f)
    here = next((r for r in existing if r.site == site), None)
    if here is not None and here.surl == surl and (f.size, f.adler32) == (size, adler32):
        return f, 0   # the same replica again: a retry after a lost reply
    if job_id is not None and existing and all(r.job_id == job_id and (r.attempt or 0) < attempt for r in existing):
        # A newer attempt of the same job: its file wins, the older attempt's files go.
        for r in existing:
            if r.surl != surl:
                removals.file_removal(job_id, r.attempt, r.site, r.surl,
                                      f"replaced in the catalog by attempt {attempt}'s {surl}")
            r.delete_instance()
        f.size, f.adler32 = size, adler32
        f.save()
        m.Replica.create(file=f, site=site, surl=surl, job=job_id, attempt=attempt)
        return f, 1
    if (f.size, f.adler32) != (size, adler32) or here is not None:
        owner = next((f"job {r.job_id} attempt {r.attempt}" for r in existing if r.job_id), "a manager")
        raise conflict("replica-mismatch", f"{lfn} is registered by {owner} with size {f.size} and adler32 "
                                           f"{f.adler32}" + (f" at {site} as {here.surl}" if here else "")
                                           + f", not {size} and {adler32}" + (f" as {surl}" if here else ""))
    m.Replica.create(file=f, site=site, surl=surl, job=job_id, attempt=attempt)   # the same bytes elsewhere
    return f, 1


def deregister(lfn, site, job_id=None, attempt=None):
    """Remove the replica of `lfn` at `site` (a job attempt: only one it registered itself);
    the file entry goes with its last replica. Returns False when there is no such replica."""
    with db.write_transaction():
        replica = m.Replica.select().join(m.CatalogFile).where(
            (m.CatalogFile.lfn == lfn) & (m.Replica.site == site)).first()
        if replica is None:
            return False
        if job_id is not None and (replica.job_id, replica.attempt) != (job_id, attempt):
            raise ApiError(403, "forbidden", "a job attempt may only remove the replicas it registered itself")
        file_id = replica.file_id
        replica.delete_instance()
        if not m.Replica.select().where(m.Replica.file == file_id).exists():
            m.CatalogFile.delete().where(m.CatalogFile.id == file_id).execute()
    return True


def files_below(directory):
    """Every file below the LFN directory, recursively, sorted by LFN, with its replicas."""
    prefix = directory.rstrip("/") + "/"
    # A range instead of LIKE: no wildcard escaping and the unique index serves it.
    # "0" is the character after "/", so [prefix, prefix-with-0) is everything below.
    below = (m.CatalogFile.lfn >= prefix) & (m.CatalogFile.lfn < prefix[:-1] + "0")
    files = list(m.CatalogFile.select().where(below).order_by(m.CatalogFile.lfn))
    replicas = {}
    for r in m.Replica.select().join(m.CatalogFile).where(below).order_by(m.Replica.site):
        replicas.setdefault(r.file_id, []).append(r)
    return [file_dict(f, replicas.get(f.id, [])) for f in files]
