"""People: users, their groups, their API tokens (label, expiry, revocation), auto-sub, and the
statistics and activities the home page shows.

Managing people is the Developer group's (seed 000: WebUiDeveloper), whatever privileges other groups
hold. Every other user lists, creates and revokes only his own tokens. A token is shown once, when it is
made; lists show its id, label and times, never its hash. Revoking deletes the row: the API refuses the
token at once and a web session signed in with it (the cookie keeps the token's hash) ends at its next
request. The API routes (server/api/people.py) and the People and Home pages call these functions with
the same JSON-shaped bodies.
"""
import datetime

import peewee as pw

from shared import schema as s

from . import auth, counts, db
from . import models as m
from .errors import ApiError, bad_request, conflict

DEVELOPER_GROUP = "Developer"
MAX_EXPIRY_DAYS = 3650
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"
# who may switch auto-sub: it only matters to someone whose submissions it sends on
SUBMITTERS = ("shifter-submission", "expert-submission")


def is_developer(user):
    """Whether `user` is in the Developer group."""
    return (m.UserGroup.select().join(m.Group)
            .where((m.UserGroup.user == user) & (m.Group.name == DEVELOPER_GROUP)).exists())


def _need_developer(principal, what):
    if not is_developer(principal.user):
        raise ApiError(403, "forbidden", f"only the Developer group may {what}")


def get_user(name):
    return m.get_or_404(m.User, m.User.name == name, f"user {name!r}")


def user_groups(user):
    return sorted(g.name for g in m.Group.select().join(m.UserGroup).where(m.UserGroup.user == user))


def group_names():
    """Every group, in the seed's order (models.GROUP_PRIVILEGES) then by name."""
    order = list(m.GROUP_PRIVILEGES)
    return sorted((g.name for g in m.Group.select()), key=lambda n: (order.index(n) if n in order else 99, n))


def token_dict(row, user_name=None):
    """What lists show of a token: never its hash."""
    return {"id": row.id, "user": user_name or row.user.name, "label": row.label,
            "created_at": m.iso(row.created_at), "expires_at": m.iso(row.expires_at),
            "expired": auth.is_expired(row)}


def me_dict(principal):
    """GET /me: the caller, his groups, privileges and auto-sub."""
    return {"name": principal.user.name, "groups": user_groups(principal.user),
            "privileges": sorted(principal.privileges), "auto_sub": principal.user.auto_sub}


# ---------------------------------------------------------------------- tokens

def list_tokens(principal, user=None):
    """The caller's tokens; a developer's `user` names someone else's (403 for anyone else)."""
    owner = principal.user
    if user and user != owner.name:
        _need_developer(principal, "list another user's tokens")
        owner = get_user(user)
    rows = m.ApiToken.select().where(m.ApiToken.user == owner).order_by(m.ApiToken.id)
    return [token_dict(t, owner.name) for t in rows]


def _expiry(body, now=None):
    """expires_in_days (whole days from now) or expires_at (ISO 8601, in the future); None: never."""
    if "expires_in_days" in body and "expires_at" in body:
        raise bad_request("give 'expires_in_days' or 'expires_at', not both")
    now = now or m.utcnow()
    if body.get("expires_in_days") is not None:
        days = s.integer(body, "expires_in_days", lo=1, hi=MAX_EXPIRY_DAYS)
        return (now + datetime.timedelta(days=days)).replace(microsecond=0)
    if body.get("expires_at") is not None:
        raw = s.text(body, "expires_at", max_len=64)
        try:
            when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise bad_request("'expires_at' must be an ISO 8601 date or time") from None
        if when.tzinfo is not None:
            when = when.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        if when <= now:
            raise bad_request("'expires_at' must be in the future")
        if when > now + datetime.timedelta(days=MAX_EXPIRY_DAYS):
            raise bad_request(f"'expires_at' must be within {MAX_EXPIRY_DAYS} days")
        return when.replace(microsecond=0)
    return None


def _label(body):
    return s.text(body, "label", default="", max_len=64, empty=True)


def _record(principal, kind, info, ref):
    m.Activity.create(user=principal.user, kind=kind, info=info, ref=ref)


def create_token(principal, body):
    """A new token for the caller, or (developer) for `user`: its list entry plus `token`, shown once."""
    s.refuse_unknown(body, ("label", "expires_in_days", "expires_at", "user"))
    owner_name = s.text(body, "user", default=principal.user.name, max_len=64)
    label, expires_at = _label(body), _expiry(body)
    with db.write_transaction():
        owner = principal.user
        if owner_name != owner.name:
            _need_developer(principal, "create a token for another user")
            owner = get_user(owner_name)
        token, row = auth.issue_token(owner, label, expires_at)
        if owner.id != principal.user.id:   # a token made for someone else is worth a trace
            _record(principal, "token-created", f"token {row.id} ({label or 'no label'}) for {owner.name}",
                    {"token": row.id, "user": owner.name})
    return dict(token_dict(row, owner.name), token=token)


def revoke_token(principal, token_id):
    """Delete a token (the caller's own, or anyone's for a developer); recorded as 'token-revoked'."""
    with db.write_transaction():
        row = m.ApiToken.select(m.ApiToken, m.User).join(m.User).where(m.ApiToken.id == token_id).first()
        if row is None:
            raise ApiError(404, "not-found", f"token {token_id} does not exist")
        if row.user_id != principal.user.id:
            _need_developer(principal, "revoke another user's token")
        gone = token_dict(row)
        row.delete_instance()
        _record(principal, "token-revoked", f"token {gone['id']} ({gone['label'] or 'no label'}) of {gone['user']}",
                {"token": gone["id"], "user": gone["user"]})
    return gone


# ---------------------------------------------------------------------- users

def user_dict(user, groups, tokens=None):
    out = {"name": user.name, "groups": groups, "auto_sub": user.auto_sub, "created_at": m.iso(user.created_at)}
    if tokens is not None:
        out["tokens"] = tokens
    return out


def list_users(principal):
    """Every user with groups and tokens (developer only); three queries whatever the number of users."""
    _need_developer(principal, "list users")
    groups, tokens = {}, {}
    for user_id, name in (m.UserGroup.select(m.UserGroup.user, m.Group.name).join(m.Group)
                          .order_by(m.Group.name).tuples()):
        groups.setdefault(user_id, []).append(name)
    users = list(m.User.select().order_by(m.User.name))
    names = {u.id: u.name for u in users}
    for t in m.ApiToken.select().order_by(m.ApiToken.id):
        tokens.setdefault(t.user_id, []).append(token_dict(t, names[t.user_id]))
    return [user_dict(u, groups.get(u.id, []), tokens.get(u.id, [])) for u in users]


def _groups(body, key="groups"):
    """Known group names, at least one."""
    names = list(dict.fromkeys(s.text_list(body, key, max_items=32, max_len=64)))
    if not names:
        raise bad_request(f"'{key}' must name at least one group")
    known = {g.name: g for g in m.Group.select().where(m.Group.name.in_(names))}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise bad_request(f"unknown group {unknown[0][:64]!r} (groups: {', '.join(group_names())})",
                          "unknown-group")
    return [known[n] for n in names]


def create_user(principal, body):
    """A new user in `groups` with a first token (developer only): the user and `token`, shown once."""
    s.refuse_unknown(body, ("name", "groups", "label", "expires_in_days", "expires_at"))
    _need_developer(principal, "create users")
    name = s.text(body, "name", max_len=64, pattern=NAME_PATTERN)
    label, expires_at = _label(body), _expiry(body)
    exists = conflict("user-exists", f"user {name!r} already exists: create a token for it instead")
    try:
        with db.write_transaction():
            groups = _groups(body)
            if m.User.select().where(m.User.name == name).exists():
                raise exists
            user = m.User.create(name=name)
            for group in groups:
                m.UserGroup.create(user=user, group=group)
            token, row = auth.issue_token(user, label, expires_at)
            _record(principal, "user-created", f"user {name} ({', '.join(g.name for g in groups)})",
                    {"user": name, "token": row.id})
    except pw.IntegrityError:   # the same name created at the same moment (PostgreSQL's read committed)
        raise exists from None
    return {"user": user_dict(user, sorted(g.name for g in groups)), "token": token,
            "token_info": token_dict(row, name)}


def set_groups(principal, name, body):
    """Replace a user's groups (developer only); the last developer keeps the Developer group."""
    s.refuse_unknown(body, ("groups",))
    _need_developer(principal, "change a user's groups")
    with db.write_transaction():
        user = get_user(name)
        groups = _groups(body)
        if DEVELOPER_GROUP not in {g.name for g in groups} and is_developer(user):
            others = (m.UserGroup.select().join(m.Group)
                      .where((m.Group.name == DEVELOPER_GROUP) & (m.UserGroup.user != user)).exists())
            if not others:
                raise conflict("last-developer", f"{name} is the last member of the Developer group")
        m.UserGroup.delete().where(m.UserGroup.user == user).execute()
        for group in groups:
            m.UserGroup.create(user=user, group=group)
    return user_dict(user, sorted(g.name for g in groups))


def update_me(principal, body):
    """PATCH /me: the caller's auto-sub (whether his confirmed submissions go to the batch system at once)."""
    s.refuse_unknown(body, ("auto_sub",))
    auto_sub = s.boolean(body, "auto_sub")
    if not any(principal.can(p) for p in SUBMITTERS):
        raise ApiError(403, "forbidden", "auto-sub is for users who submit (shifter or expert submission)")
    with db.write_transaction():
        m.User.update(auto_sub=auto_sub).where(m.User.id == principal.user.id).execute()
    principal.user.auto_sub = auto_sub
    return me_dict(principal)


# ---------------------------------------------------------------------- statistics (home, /stats)

def session_stats(user=None):
    """Jobs launched, events generated and total wct per session and user (counts.session_stats)."""
    return counts.session_stats(user)


def jobs_by_site():
    """{site: {status: number of jobs}}."""
    return counts.jobs_by_site()


def session_jobs():
    """{session: {status: number of jobs}} of every user: the home page's graph."""
    return counts.session_jobs()


def last_activities(user=None, limit=10):
    """The newest `limit` activities (of one user when named), newest first."""
    query = m.Activity.select(m.Activity, m.User).join(m.User, m.JOIN.LEFT_OUTER)
    if user:
        query = query.where(m.User.name == user)
    return query.order_by(m.Activity.time.desc(), m.Activity.id.desc()).limit(limit)
