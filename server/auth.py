"""Tokens and privileges.

Two kinds of bearer token, told apart by their prefix: `sbku_` belongs to a
user (API token, privileges from the user's groups), `sbkj_` to one job
attempt. Both are 32 random bytes shown once and stored only as SHA-256 hex;
a lookup goes through the unique hash index and the stored hash is then
compared in constant time. A user token may carry a label and an expiry
(migration 9): an expired one is refused like an unknown one (401
token-expired); revoking one deletes its row (server/people.py).
"""
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from flask import g, request

from . import db
from . import models as m
from .errors import ApiError

USER_PREFIX = "sbku_"
JOB_PREFIX = "sbkj_"


def new_token(prefix):
    """A fresh random token."""
    return prefix + secrets.token_urlsafe(32)


def add_user(name, groups, label="", expires_at=None):
    """Create the user if needed, add it to `groups`, return a new API token (shown once)."""
    with db.write_transaction():
        known = {g.name: g for g in m.Group.select().where(m.Group.name.in_(list(groups) or ["-"]))}
        unknown = [g for g in groups if g not in known]
        if unknown:
            raise ValueError(f"unknown group {unknown[0]!r} (groups: {', '.join(m.GROUP_PRIVILEGES)})")
        user, _ = m.User.get_or_create(name=name)
        for group in groups:
            m.UserGroup.get_or_create(user=user, group=known[group])
        token, _ = issue_token(user, label, expires_at)
    return token


def issue_token(user, label="", expires_at=None):
    """A new API token of `user` (inside the caller's transaction): (the token, shown once; its row)."""
    token = new_token(USER_PREFIX)
    row = m.ApiToken.create(user=user, token_hash=hash_token(token), label=label, expires_at=expires_at)
    return token, row


def hash_token(token):
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user with privileges."""
    user: m.User
    privileges: frozenset

    def can(self, privilege):
        return privilege in self.privileges


def _bearer():
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "an 'Authorization: Bearer <token>' header is required")
    return token.strip()


def _check_hash(stored, token):
    if stored is None or not hmac.compare_digest(stored, hash_token(token)):
        raise ApiError(401, "unauthorized", "unknown or revoked token")


def user_for_token(token):
    """The Principal of a user token; raise 401 for an unknown, revoked or expired one."""
    if not token.startswith(USER_PREFIX):
        raise ApiError(403, "forbidden", "a job token cannot call this route")
    row = m.ApiToken.select(m.ApiToken, m.User).join(m.User).where(
        m.ApiToken.token_hash == hash_token(token)).first()
    _check_hash(row.token_hash if row else None, token)
    check_not_expired(row)
    return principal_of(row.user)


def is_expired(row, now=None):
    """Whether an ApiToken row is past its expiry (None: never expires)."""
    return row.expires_at is not None and row.expires_at <= (now or m.utcnow())


def check_not_expired(row):
    if is_expired(row):
        raise ApiError(401, "token-expired",
                       f"token expired at {m.iso(row.expires_at)}: ask for a new one")


def principal_of(user):
    """The Principal of `user`, privileges read from its groups now."""
    privileges = (m.GroupPrivilege.select(m.GroupPrivilege.privilege)
                  .join(m.UserGroup, on=(m.UserGroup.group == m.GroupPrivilege.group))
                  .where(m.UserGroup.user == user))
    return Principal(user, frozenset(p.privilege for p in privileges))


def job_token():
    """This request's job token, checked by its form only (401 without one, 403 for a user token)."""
    token = _bearer()
    _check_job_prefix(token)
    return token


def _check_job_prefix(token):
    if not token.startswith(JOB_PREFIX):
        raise ApiError(403, "forbidden", "this route takes a job token, not a user token")


def attempt_for_token(token):
    """The Attempt a job token was minted for; raise 401 for an unknown one."""
    _check_job_prefix(token)
    # A raw query: peewee's SQL building was a third of an event post's time (bench_server).
    row = next(iter(m.Attempt.raw(f"SELECT * FROM {m.Attempt._meta.table_name} WHERE token_hash = "
                                  f"{db.database.param}", hash_token(token))), None)
    _check_hash(row.token_hash if row else None, token)
    return row


def current_principal():
    """The calling user (cached per request)."""
    if "principal" not in g:
        g.principal = user_for_token(_bearer())
    return g.principal


def require(*privileges):
    """Decorator: the caller must hold at least one of `privileges`."""
    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            principal = current_principal()
            if not any(principal.can(p) for p in privileges):
                raise ApiError(403, "forbidden",
                               f"this needs the privilege {' or '.join(privileges)}")
            return view(*args, **kwargs)
        return wrapper
    return decorate


def job_attempt(job_id):
    """The caller's Attempt, checked to belong to job `job_id` (403 otherwise).

    Whether it is still the job's current attempt (409) is for the caller to
    check inside its transaction, where the job row is locked.
    """
    attempt = attempt_for_token(_bearer())
    if attempt.job_id != job_id:
        raise ApiError(403, "forbidden", "this job token belongs to another job")
    return attempt


def job_or_user(privilege):
    """('job', Attempt) for a job token, ('user', Principal) for a user holding `privilege`."""
    token = _bearer()
    if token.startswith(JOB_PREFIX):
        return "job", attempt_for_token(token)
    principal = current_principal()
    if not principal.can(privilege):
        raise ApiError(403, "forbidden", f"this needs a job token or the privilege {privilege}")
    return "user", principal
