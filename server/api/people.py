"""People: who am I (and my auto-sub), tokens, users, statistics per session and user and per site, and
activities. The rules are server/people.py's."""
from flask import Blueprint, jsonify

from .. import auth, people
from .. import models as m
from ..people import jobs_by_site, last_activities, session_stats  # noqa: F401  (pages import them here)
from .params import json_body, query_int, query_text

from . import schemas as S
from .endpoint import endpoint

bp = Blueprint("people", __name__)


@bp.get("/me")
@endpoint("The calling user", reply=S.Me)
def me():
    return jsonify(people.me_dict(auth.current_principal()))


@bp.patch("/me")
@endpoint("The caller's auto-sub (shifter or expert submission)", body=S.MePatch, reply=S.Me)
def update_me():
    return jsonify(people.update_me(auth.current_principal(), json_body()))


@bp.get("/tokens")
@endpoint(
    "The caller's API tokens (a developer's `user` names another's); never their hashes",
    query=S.UserQuery, reply=S.Tokens)
def tokens():
    return jsonify({"tokens": people.list_tokens(auth.current_principal(), query_text("user", 64))})


@bp.post("/tokens")
@endpoint(
    "A new API token for the caller (a developer's `user`: for another); `token` is shown this once",
    body=S.TokenIn, status=201, reply=S.NewToken, links=(("token_id", "/id"),))
def create_token():
    return jsonify(people.create_token(auth.current_principal(), json_body())), 201


@bp.delete("/tokens/<id:token_id>")
@endpoint(
    "Revoke (delete) a token: the caller's own, or anyone's for a developer; recorded as a token-revoked "
    "activity",
    reply=S.TokenRevoked)
def revoke_token(token_id):
    return jsonify({"revoked": people.revoke_token(auth.current_principal(), token_id)})


@bp.get("/users")
@endpoint("Users with groups and tokens (Developer group)", reply=S.Users)
def users():
    return jsonify({"users": people.list_users(auth.current_principal())})


@bp.post("/users")
@endpoint(
    "Create a user with a first token (Developer group); `token` is shown this once; 409 user-exists",
    body=S.UserIn, status=201, reply=S.NewUser, links=(("name", "/user/name"),))
def create_user():
    return jsonify(people.create_user(auth.current_principal(), json_body())), 201


@bp.patch("/users/<name>")
@endpoint("Replace a user's groups (Developer group); 409 last-developer", body=S.GroupsIn, reply=S.User)
def update_user(name):
    return jsonify(people.set_groups(auth.current_principal(), name, json_body()))


@bp.get("/stats")
@auth.require("monitoring")
@endpoint("Statistics per session and user, and per site", query=S.UserQuery, reply=S.Stats)
def stats():
    per_user = session_stats(query_text("user", 64))
    per_site = jobs_by_site()
    return jsonify({
        "sessions": per_user,
        "sites": [{"site": site, "jobs": jobs} for site, jobs in sorted(per_site.items())],
    })


@bp.get("/activities")
@auth.require("monitoring")
@endpoint("Last activities", query=S.ActivityQuery, reply=S.Activities)
def activities():
    rows = last_activities(query_text("user", 64), query_int("limit", 10, lo=1, hi=1000))
    return jsonify({"activities": [
        {"time": m.iso(a.time), "type": a.kind, "user": a.user.name if a.user_id else None,
         "session": a.session, "info": a.info, "ref": a.ref} for a in rows]})
