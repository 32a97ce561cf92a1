"""A benchmark-only route: one UPDATE and one INSERT per request, the database's own limit.

Registered only when the server runs with SBK_BENCH_RAW=1 (bench/bench_server.py
starts it so); it checks no token, so it must never exist in normal serving.
It goes through the same Flask app, connection handling and database driver as
POST /jobs/<id>/events, and writes the same two tables, so the ratio of the two
rates measures what the real route adds on top of the database.
"""
import time

from flask import Blueprint, jsonify, request

from .. import db
from .. import models as m

bp = Blueprint("bench", __name__)


@bp.post("/bench/raw/<id:job_id>/events")
def raw_events(job_id):
    body = request.get_json(force=True)
    items = body if isinstance(body, list) else [body]
    now = m.utcnow()
    rows = [(job_id, e["attempt"], e["seq"], e["time"], now, e["status"], e.get("kind", "step"),
             e.get("step"), e.get("message", "")) for e in items]
    table = m.Event._meta.table_name
    values = ", ".join(["(%s)" % ", ".join([db.database.param] * 9)] * len(rows))
    with db.write_transaction():
        db.database.execute_sql(
            f"UPDATE {m.Job._meta.table_name} SET status = 'running', last_seq = {db.database.param}, "
            f"heartbeat_at = {db.database.param} WHERE id = {db.database.param}",
            (max(r[2] for r in rows), time.time(), job_id))
        db.database.execute_sql(
            f"INSERT INTO {table} (job_id, attempt, seq, time, received_at, status, kind, step, message) "
            f"VALUES {values}", [v for r in rows for v in r])
    return jsonify({"accepted": len(rows)})
