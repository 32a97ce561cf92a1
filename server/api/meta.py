"""Health, the error-code table and the OpenAPI document: public, no token."""
from flask import Blueprint, jsonify

from shared.errors import CODES

from .. import models as m
from ..openapi import spec

bp = Blueprint("meta", __name__)


@bp.get("/health")
def health():
    m.SchemaVersion.select().limit(1).execute()   # proves the database answers
    return jsonify({"status": "ok"})


@bp.get("/error-codes")
def error_codes():
    return jsonify([entry.to_dict() for entry in CODES.values()])


@bp.get("/openapi.json")
def openapi():
    return jsonify(spec())
