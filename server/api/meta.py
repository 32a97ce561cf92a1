"""Health, the error-code table and the OpenAPI document: public, no token."""
from typing import Any, Dict, List

from flask import Blueprint, jsonify

from shared.errors import CODES

from .. import models as m
from ..openapi import spec
from . import schemas as S
from .endpoint import endpoint

bp = Blueprint("meta", __name__)


@bp.get("/health")
@endpoint("Liveness and database check", reply=S.Health, auth=None)
def health():
    m.SchemaVersion.select().limit(1).execute()   # proves the database answers
    return jsonify({"status": "ok"})


@bp.get("/error-codes")
@endpoint("The error-code table", reply=List[S.ErrorCode], auth=None)
def error_codes():
    return jsonify([entry.to_dict() for entry in CODES.values()])


@bp.get("/openapi.json")
@endpoint("This document (OpenAPI 3.1)", reply=Dict[str, Any], auth=None)
def openapi():
    return jsonify(spec())
