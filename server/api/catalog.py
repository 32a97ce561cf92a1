"""The file catalog's routes; what they do lives in server/catalog.py."""
from flask import Blueprint, jsonify

from shared import schema as s
from shared.jobdesc import ADLER32_RE, NAME_RE

from .. import auth, catalog
from .. import models as m
from ..errors import ApiError, not_found
from .params import json_body, query_text

from . import schemas as S
from .endpoint import endpoint

bp = Blueprint("catalog", __name__)

MANAGER = "create-productions"
MAX_REPLICAS = 1000


def _replica(body, where=""):
    if not isinstance(body, dict):
        raise s.SchemaError(f"replica {where.rstrip('.')} must be a JSON object")
    s.refuse_unknown(body, ("lfn", "site", "surl", "size", "adler32"), where)
    return (s.lfn(body, "lfn", where), s.text(body, "site", where, pattern=NAME_RE, max_len=64),
            s.text(body, "surl", where, max_len=2048), s.integer(body, "size", where),
            s.text(body, "adler32", where, pattern=ADLER32_RE))


@bp.post("/catalog/replicas")
@endpoint(
    "Register a replica, or a list all or nothing (reply {files, created}); a job's newer attempt "
    "replaces its older attempts' replicas",
    body=S.Replica, many=1000, status=201, reply=S.Registered, auth="job-or-user",
    replies=((200, "already registered", S.Registered),),
    errors=((409, "replica-mismatch, attempt-superseded or attempt-ended"),))
def register_replica():
    """One replica, or a list registered all or nothing (a job's outputs in one call)."""
    kind, who = auth.job_or_user(MANAGER)
    body = json_body((dict, list))
    if isinstance(body, list):
        if not 1 <= len(body) <= MAX_REPLICAS:
            raise ApiError(400, "bad-request", f"give 1 to {MAX_REPLICAS} replicas")
        items = [_replica(item, f"[{n}].") for n, item in enumerate(body)]
    else:
        items = [_replica(body)]
    job_id, attempt = (who.job_id, who.number) if kind == "job" else (None, None)
    files, created = catalog.register(items, job_id, attempt)
    reply = {"files": files, "created": created} if isinstance(body, list) else files[0]
    return jsonify(reply), 201 if created else 200


@bp.delete("/catalog/replicas")
@endpoint(
    "Delete a replica (`lfn` and `site` required)",
    query=S.ReplicaQuery, reply=S.ReplicaDeleted, auth="job-or-user")
def delete_replica():
    kind, who = auth.job_or_user(MANAGER)
    lfn, site = query_text("lfn", 1024), query_text("site", 64)
    if not lfn or not site:
        raise ApiError(400, "bad-request", "query parameters 'lfn' and 'site' are required")
    job_id, attempt = (who.job_id, who.number) if kind == "job" else (None, None)
    if not catalog.deregister(lfn, site, job_id, attempt):
        raise not_found(f"no replica of {lfn} at {site}")
    return jsonify({"deleted": {"lfn": lfn, "site": site}})


def _reader():
    """Jobs read the catalog with their token, people with the monitoring privilege."""
    auth.job_or_user("monitoring")


@bp.get("/catalog/replicas")
@endpoint("Replicas of an LFN (`lfn` required)", query=S.LfnQuery, reply=S.CatalogFile, auth="job-or-user")
def get_replicas():
    _reader()
    lfn = query_text("lfn", 1024)
    if not lfn:
        raise ApiError(400, "bad-request", "query parameter 'lfn' is required")
    f = m.CatalogFile.get_or_none(m.CatalogFile.lfn == lfn)
    if f is None:
        raise not_found(f"{lfn} is not in the catalog")
    return jsonify(catalog.file_dict(f, catalog.replicas_of(f)))


@bp.get("/catalog/files")
@endpoint(
    "Files below an LFN directory (`dir` required)",
    query=S.DirQuery, reply=S.CatalogFiles, auth="job-or-user")
def list_files():
    _reader()
    directory = query_text("dir", 1024)
    if not directory:
        raise ApiError(400, "bad-request", "query parameter 'dir' is required")
    s.check_lfn(directory, "dir")
    return jsonify({"files": catalog.files_below(directory)})
