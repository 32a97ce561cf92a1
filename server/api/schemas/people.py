"""People: tokens, users, statistics and activities (server/people.py)."""
from typing import Any, Dict, List, Optional

from pydantic import Field

from .base import Body, Int, Query, Reply, Str


class TokenIn(Body):
    """expires_in_days (1-3650) or expires_at (ISO 8601, future); neither: never expires."""
    label: str = Str(64, default=None)
    expires_in_days: Optional[int] = Int(1, 3650, default=None)
    expires_at: Optional[str] = None
    user: str = Str(64, default=None)


class Token(Reply):
    """A token as lists show it: never its hash."""
    id: int
    user: str
    label: Optional[str]
    created_at: Optional[str]
    expires_at: Optional[str]
    expired: bool


class NewToken(Token):
    token: str = Field(description="shown this once")


class Tokens(Reply):
    tokens: List[Token]


class TokenRevoked(Reply):
    revoked: Token


class UserQuery(Query):
    user: Optional[str] = Str(64, default=None)


class UserIn(Body):
    name: str = Field(json_schema_extra={"pattern": "^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"})
    groups: List[str] = Field(max_length=32, json_schema_extra={"minItems": 1})   # [] is people.py's 400
    label: str = Str(64, default=None)
    expires_in_days: Optional[int] = Int(1, 3650, default=None)
    expires_at: Optional[str] = None


class GroupsIn(Body):
    groups: List[str] = Field(max_length=32, json_schema_extra={"minItems": 1})   # [] is people.py's 400


class User(Reply):
    name: str
    groups: List[str]
    auto_sub: bool
    created_at: Optional[str]
    tokens: Optional[List[Token]] = None


class Users(Reply):
    users: List[User]


class NewUser(Reply):
    user: User
    token: str = Field(description="shown this once")
    token_info: Token


class SessionUserStats(Reply):
    session: str
    user: Optional[str]
    jobs: int
    events: int
    wct: float


class SiteJobs(Reply):
    site: str
    jobs: Dict[str, int]


class Stats(Reply):
    sessions: List[SessionUserStats]
    sites: List[SiteJobs]


class ActivityQuery(Query):
    user: Optional[str] = Str(64, default=None)
    limit: Optional[int] = Int(1, 1000, default=None)


class Activity(Reply):
    time: Optional[str]
    type: str
    user: Optional[str]
    session: Optional[str]
    info: Optional[str]
    ref: Optional[Dict[str, Any]]


class Activities(Reply):
    activities: List[Activity]
