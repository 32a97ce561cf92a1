"""The file catalog: LFNs with size and adler32, and their replicas per site."""
from flask import Blueprint, jsonify

from shared import schema as s
from shared.jobdesc import ADLER32_RE, NAME_RE

from .. import auth, db
from .. import models as m
from ..errors import ApiError, conflict, not_found
from .params import json_body, query_text

bp = Blueprint("catalog", __name__)

MANAGER = "create-productions"


def _file_dict(f, replicas):
    return {"lfn": f.lfn, "size": f.size, "adler32": f.adler32,
            "replicas": [{"site": r.site, "surl": r.surl} for r in replicas]}


@bp.post("/catalog/replicas")
def register_replica():
    kind, who = auth.job_or_user(MANAGER)
    body = json_body()
    s.refuse_unknown(body, ("lfn", "site", "surl", "size", "adler32"))
    lfn = s.lfn(body, "lfn")
    site = s.text(body, "site", pattern=NAME_RE, max_len=64)
    surl = s.text(body, "surl", max_len=2048)
    size = s.integer(body, "size")
    adler32 = s.text(body, "adler32", pattern=ADLER32_RE)
    job_id, attempt = (who.job_id, who.number) if kind == "job" else (None, None)
    with db.write_transaction():
        if kind == "job":
            job = db.for_update(m.Job.select().where(m.Job.id == job_id)).get()
            if job.attempt != attempt:
                raise conflict("attempt-superseded", f"attempt {attempt} of job {job_id} was superseded")
        f = db.for_update(m.CatalogFile.select().where(m.CatalogFile.lfn == lfn)).first()
        if f is None:
            f = m.CatalogFile.create(lfn=lfn, size=size, adler32=adler32)
        elif (f.size, f.adler32) != (size, adler32):
            raise conflict("replica-mismatch", f"{lfn} is registered with size {f.size} and adler32 "
                                               f"{f.adler32}, not {size} and {adler32}")
        replica = m.Replica.get_or_none(file=f, site=site)
        created = replica is None
        if created:
            m.Replica.create(file=f, site=site, surl=surl, job=job_id, attempt=attempt)
    reply = _file_dict(f, m.Replica.select().where(m.Replica.file == f).order_by(m.Replica.site))
    return jsonify(reply), 201 if created else 200


@bp.delete("/catalog/replicas")
def delete_replica():
    kind, who = auth.job_or_user(MANAGER)
    lfn, site = query_text("lfn", 1024), query_text("site", 64)
    if not lfn or not site:
        raise ApiError(400, "bad-request", "query parameters 'lfn' and 'site' are required")
    with db.write_transaction():
        replica = m.Replica.select().join(m.CatalogFile).where(
            (m.CatalogFile.lfn == lfn) & (m.Replica.site == site)).first()
        if replica is None:
            raise not_found(f"no replica of {lfn} at {site}")
        if kind == "job" and replica.job_id != who.job_id:
            raise ApiError(403, "forbidden", "a job may only delete the replicas it registered")
        file_id = replica.file_id
        replica.delete_instance()
        if not m.Replica.select().where(m.Replica.file == file_id).exists():
            m.CatalogFile.delete().where(m.CatalogFile.id == file_id).execute()
    return jsonify({"deleted": {"lfn": lfn, "site": site}})


def _reader():
    """Jobs read the catalog with their token, people with the monitoring privilege."""
    auth.job_or_user("monitoring")


@bp.get("/catalog/replicas")
def get_replicas():
    _reader()
    lfn = query_text("lfn", 1024)
    if not lfn:
        raise ApiError(400, "bad-request", "query parameter 'lfn' is required")
    f = m.CatalogFile.get_or_none(m.CatalogFile.lfn == lfn)
    if f is None:
        raise not_found(f"{lfn} is not in the catalog")
    return jsonify(_file_dict(f, m.Replica.select().where(m.Replica.file == f).order_by(m.Replica.site)))


@bp.get("/catalog/files")
def list_files():
    _reader()
    directory = query_text("dir", 1024)
    if not directory:
        raise ApiError(400, "bad-request", "query parameter 'dir' is required")
    s.check_lfn(directory, "dir")
    prefix = directory.rstrip("/") + "/"
    # A range instead of LIKE: no wildcard escaping and the unique index serves it.
    # "0" is the character after "/", so [prefix, prefix-with-0) is everything below.
    below = (m.CatalogFile.lfn >= prefix) & (m.CatalogFile.lfn < prefix[:-1] + "0")
    files = list(m.CatalogFile.select().where(below).order_by(m.CatalogFile.lfn))
    replicas = {}
    for r in m.Replica.select().join(m.CatalogFile).where(below).order_by(m.Replica.site):
        replicas.setdefault(r.file_id, []).append(r)
    return jsonify({"files": [_file_dict(f, replicas.get(f.id, [])) for f in files]})
