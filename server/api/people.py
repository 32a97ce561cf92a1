"""People: who am I, statistics per session and user and per site, and activities."""
import copy
import time

from flask import Blueprint, current_app, jsonify
from peewee import Case

from shared.states import Status

from .. import auth
from .. import models as m
from ..settings import settings
from .params import query_int, query_text

bp = Blueprint("people", __name__)


@bp.get("/me")
def me():
    principal = auth.current_principal()
    groups = [g.name for g in m.Group.select().join(m.UserGroup).where(m.UserGroup.user == principal.user)]
    return jsonify({"name": principal.user.name, "groups": sorted(groups),
                    "privileges": sorted(principal.privileges)})


@bp.get("/stats")
@auth.require("monitoring")
def stats():
    per_user = session_stats(query_text("user", 64))
    per_site = jobs_by_site()
    return jsonify({
        "sessions": per_user,
        "sites": [{"site": site, "jobs": counts} for site, counts in sorted(per_site.items())],
    })


clock = time.monotonic   # the cache's clock (a test moves it)


def _reused(key, compute):
    """compute(), or its value of less than SBK_STATS_CACHE_S ago in this process: statistics
    read every job (1M jobs: ~0.9 s on SQLite), and a home page shown to every shifter need not."""
    ttl = settings().stats_cache_s
    if ttl <= 0:
        return compute()
    cache = current_app.extensions.setdefault("sbk.stats", {})
    now = clock()
    hit = cache.get(key)
    if hit is None or now - hit[0] >= ttl:
        hit = cache[key] = (now, compute())
    return copy.deepcopy(hit[1])   # callers may change what they get


def session_stats(user=None):
    """Jobs launched (all of them), events generated (those of done jobs) and total wct (what every
    job used, failed ones too) per session and user (one user when named)."""
    return _reused(("sessions", user), lambda: _session_stats(user))


def _session_stats(user):
    # Only a done job generated its events; a prepared, running or failed one launched them at most.
    generated = m.fn.SUM(Case(None, [(m.Job.status == Status.DONE.value, m.Job.events)], 0))
    per_user = m.Job.select(m.Session.name, m.User.name, m.fn.COUNT(m.Job.id), generated,
                            m.fn.SUM(m.Job.wct)).join(m.Session).switch(m.Job).join(m.User, m.JOIN.LEFT_OUTER)
    if user:
        per_user = per_user.where(m.User.name == user)
    per_user = per_user.group_by(m.Session.name, m.User.name).order_by(m.Session.name, m.User.name)
    return [{"session": session, "user": name, "jobs": jobs, "events": int(events or 0),
             "wct": float(wct or 0.0)} for session, name, jobs, events, wct in per_user.tuples()]


def jobs_by_site():
    """{site: {status: number of jobs}}."""
    return _reused(("sites",), _jobs_by_site)


def _jobs_by_site():
    per_site = {}
    for site, status, count in (m.Job.select(m.Site.name, m.Job.status, m.fn.COUNT(m.Job.id)).join(m.Site)
                                .group_by(m.Site.name, m.Job.status).tuples()):
        per_site.setdefault(site, {})[status] = count
    return per_site


def last_activities(user=None, limit=10):
    """The newest `limit` activities (of one user when named), newest first."""
    query = m.Activity.select(m.Activity, m.User).join(m.User, m.JOIN.LEFT_OUTER)
    if user:
        query = query.where(m.User.name == user)
    return query.order_by(m.Activity.time.desc(), m.Activity.id.desc()).limit(limit)


@bp.get("/activities")
@auth.require("monitoring")
def activities():
    rows = last_activities(query_text("user", 64), query_int("limit", 10, lo=1, hi=1000))
    return jsonify({"activities": [
        {"time": m.iso(a.time), "type": a.kind, "user": a.user.name if a.user_id else None,
         "session": a.session, "info": a.info, "ref": a.ref} for a in rows]})
