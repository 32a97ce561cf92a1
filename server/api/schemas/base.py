"""The three kinds of definition (a body, a query, a reply), their field helpers, and the public ones."""
from typing import Annotated, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from shared.lifecycle import COMMANDS
from shared.schema import MAX_INT
from shared.states import Status

from ...backends import BACKENDS

STATUS = Literal[tuple(s.value for s in Status)]
COMMAND = Optional[Literal[tuple(COMMANDS)]]
INPUT_MODE = Literal["DIR", "FILE", "LIST", "NONE"]
# server/batch.py backend_name checks it (a 400 bad-request listing them); the document lists them
BACKEND = Annotated[str, Field(json_schema_extra={"enum": sorted(BACKENDS)})]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"


class Body(BaseModel):
    """A request body: exactly these fields, JSON types only (no "3" for 3). A field that may be left out
    is `x: X = None` (an explicit null refused, as shared/schema.py's readers refuse it); `Optional[X]`
    where the core module takes null for "not given"."""
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Query(BaseModel):
    """Query parameters: strings in the URL, read as their type; others are ignored (or the route's)."""
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class Reply(BaseModel):
    """A reply: these fields at least (a client must accept more)."""
    model_config = ConfigDict(extra="allow")


def Int(lo=0, hi=MAX_INT, **kw):
    return Field(ge=lo, le=hi, **kw)


def Str(max_len=4096, **kw):
    return Field(max_length=max_len, **kw)


def Name(max_len=64, **kw):
    """A name as shared/jobdesc.py NAME_RE allows (sessions, sites, productions, modules)."""
    return Field(max_length=max_len, pattern=NAME_PATTERN, **kw)


class Error(Reply):
    error: str = Field(description="kebab-case reason")
    message: str = Field(description="one sentence; a bad field is named")
    # the reply's X-Request-ID, also on every server log line of that request (server/logs.py)
    request_id: Optional[str] = None


class Health(Reply):
    status: str


class ErrorCode(Reply):
    code: int
    status: str
    blame: str
    retryable: bool
    message: str


class Me(Reply):
    name: str
    groups: List[str]
    privileges: List[str]
    auto_sub: bool


class MePatch(Body):
    auto_sub: bool
