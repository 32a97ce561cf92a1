"""Sites: thresholds, switches, node checks, the shifter's reset."""
from typing import Any, Dict, List, Literal, Optional

from pydantic import Field

from .base import Body, Int, Name, Query, Reply, Str

CHECK_STATE = Literal["OK", "WARNING", "CRITICAL", "UNKNOWN"]


class SiteIn(Body):
    name: str = Name()
    description: str = None
    threshold_prepared: int = Int(0, 10 ** 7, default=None)
    threshold_running: int = Int(0, 10 ** 7, default=None)
    threshold_failed: int = Int(0, 10 ** 7, default=None)
    bunch_size: int = Int(1, 10 ** 6, default=None)


class SessionSwitch(Body):
    enabled: bool = None
    supported: bool = None


class ProductionSwitch(Body):
    allowed: bool = None


class SitePatch(Body):
    description: str = None
    threshold_prepared: int = Int(0, 10 ** 7, default=None)
    threshold_running: int = Int(0, 10 ** 7, default=None)
    threshold_failed: int = Int(0, 10 ** 7, default=None)
    bunch_size: int = Int(1, 10 ** 6, default=None)
    reload_se: bool = None
    sessions: Dict[str, SessionSwitch] = None
    productions: Dict[str, ProductionSwitch] = None


class NodeCheckIn(Body):
    """One check of `severus check --json` (wrapper/check.py CheckResult.to_dict())."""
    name: str = Str(64)
    state: CHECK_STATE
    ok: bool = None
    reason: str = None
    detail: str = None
    seconds: float = Field(None, ge=0, le=86400)
    code: int = Int(0, 999, default=None)
    perf: Dict[str, float] = Field(None, max_length=32)


class SiteCheckIn(Body):
    """`severus check --json` plus the node; `site`, `ok` and `code` are accepted and not stored."""
    site: str = None
    node: str = Str(255)
    state: CHECK_STATE
    ok: bool = None
    code: int = None
    wrapper_version: str = Str(64, default=None)
    checks: List[NodeCheckIn] = Field(min_length=1, max_length=64)


class NodeCheck(Reply):
    name: str
    state: CHECK_STATE
    reason: str
    seconds: float
    code: int
    perf: Dict[str, float]


class SiteCheck(Reply):
    id: int
    site: str
    node: str
    status: CHECK_STATE
    checks: List[NodeCheck]
    wrapper_version: Optional[str]
    reported_by: Optional[str]
    created_at: Optional[str]


class SiteChecks(Reply):
    site: str
    history: List[SiteCheck]


class LimitQuery(Query):
    limit: Optional[int] = Int(1, 1000, default=None)


class Thresholds(Reply):
    prepared: int
    running: int
    failed: int


class SiteSession(Reply):
    session: str
    enabled: bool
    supported: bool
    last_activity: Optional[str]


class SiteProduction(Reply):
    production: str
    allowed: bool
    last_submission: Optional[str]
    last_submitted_by: Optional[str]


class SiteSummary(Reply):
    name: str
    description: Optional[str]
    thresholds: Thresholds
    bunch_size: int
    se: Optional[Dict[str, Any]] = Field(description="the site's storage element, as its configuration says")
    last_activity: Optional[str]
    last_submission: Optional[str]


class Site(SiteSummary):
    jobs: Dict[str, int] = Field(description="status: jobs")
    sessions: List[SiteSession]
    last_check: Optional[SiteCheck]
    productions: List[SiteProduction]


class Sites(Reply):
    sites: List[SiteSummary]


class SiteReset(Reply):
    site: str
    failed_reset_at: Optional[str]
    failed_before: int
    failed: int
    threshold_failed: int
