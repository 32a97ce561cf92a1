"""The server's settings: read once from the Flask config into a frozen dataclass.

Layers (lowest first): DEFAULTS below, the mapping given to create_app(), then
`SBK_*` environment variables (Flask's from_prefixed_env, values parsed as
JSON when they look like it: SBK_HEARTBEAT_MULTIPLE=3).
"""
from dataclasses import dataclass

from flask import current_app

from .db import DEFAULT_DB_URL

DEFAULTS = {
    "DB": DEFAULT_DB_URL,
    "PUBLIC_URL": "",              # empty: the URL the request came in on
    "HEARTBEAT_S": 300.0,          # written into every job description
    "HEARTBEAT_MULTIPLE": 3.0,     # silent for longer than this x heartbeat_s -> timeout 100
    "REAP_INTERVAL_S": 60.0,       # the reaper thread of `sbk serve`
    "MAX_BODY_BYTES": 4 * 1024 * 1024,
    "MAX_LOG_BYTES": 8 * 1024 * 1024,
    "AUTO_INIT": True,             # create/upgrade the schema when the app starts
}


@dataclass(frozen=True)
class Settings:
    db_url: str
    public_url: str
    heartbeat_s: float
    heartbeat_multiple: float
    reap_interval_s: float
    max_body_bytes: int
    max_log_bytes: int
    auto_init: bool

    @classmethod
    def from_config(cls, config):
        """Build from a Flask config whose keys are the DEFAULTS names."""
        try:
            return cls(
                db_url=str(config["DB"]),
                public_url=str(config["PUBLIC_URL"]).rstrip("/"),
                heartbeat_s=float(config["HEARTBEAT_S"]),
                heartbeat_multiple=float(config["HEARTBEAT_MULTIPLE"]),
                reap_interval_s=float(config["REAP_INTERVAL_S"]),
                max_body_bytes=int(config["MAX_BODY_BYTES"]),
                max_log_bytes=int(config["MAX_LOG_BYTES"]),
                auto_init=_flag(config["AUTO_INIT"]),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad server setting: {exc}") from None


def layer(target, config=None):
    """Fill the flask.Config `target` in layers; return the Settings it makes."""
    target.from_mapping(DEFAULTS)
    target.from_mapping(config or {})
    target.from_prefixed_env("SBK")
    return Settings.from_config(target)


def _flag(value):
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def settings():
    """The settings of the running app."""
    return current_app.extensions["sbk.settings"]
