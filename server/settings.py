"""The server's settings: read once from the Flask config into a frozen dataclass.

Layers (lowest first): DEFAULTS below, the mapping given to create_app(), then
`SBK_*` environment variables (Flask's from_prefixed_env, values parsed as
JSON when they look like it: SBK_HEARTBEAT_MULTIPLE=3).
"""
from dataclasses import dataclass

from flask import current_app, request

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
    # Batch backends (server/batch.py): POST /submissions {"backend": ...} and the batch poller.
    "BACKEND_WRAPPER": "",         # a severus.pyz path; empty: `<this python> -m wrapper`
    "BACKEND_PYTHON": "python3",   # the interpreter that runs a .pyz wrapper on the node
    "BACKEND_SANDBOX_DIR": "",     # where bunch sandboxes go; empty: ./sbk-data/sandboxes
    "BACKEND_SITE_CONFIGS": "",    # colon list of site config dirs searched before site_configs/
    "BACKEND_LOCAL_MAX_PARALLEL": 2,
    "BACKEND_SLURM_CONF": "",      # SLURM_CONF for the Slurm clients; empty: the environment's
    "BACKEND_SLURM_PARTITION": "",
    "BACKEND_SLURM_SBATCH_ARGS": [],   # extra sbatch arguments (JSON list in the environment)
    "BACKEND_HTCONDOR_SCHEDD": "",
    # arc: the client credential the CEs accept (a proxy file as CERT and no KEY, or a robot
    # certificate and its key) and the CA dir (hashed, as X509_CERT_DIR) or file that signs the CEs.
    "BACKEND_ARC_CERT": "",
    "BACKEND_ARC_KEY": "",
    "BACKEND_ARC_CA": "",          # empty: the system's CA bundle
    "BACKEND_ARC_TIMEOUT_S": 60.0,     # one REST call to a CE
    "BACKEND_ARC_CLEAN_AFTER_S": 3600.0,   # finished jobs are cleaned off the CE this long after
    "BATCH_POLL_INTERVAL_S": 30.0,     # batch poller of each server process; 0 = off
    "BATCH_GRACE_S": 30.0,             # a batch job ended this long ago without a final report -> sys-failed
    "CLEANUP_INTERVAL_S": 60.0,        # the removal requests' cleaner thread of `sbk serve`; 0 = off
    "CLEANUP_TIMEOUT_S": 60.0,         # one deletion on an SE
    "LOG_FORMAT": "text",              # the server's log lines: text, or json (one object a line)
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
    backend_wrapper: str
    backend_python: str
    backend_sandbox_dir: str
    backend_site_configs: str
    backend_local_max_parallel: int
    backend_slurm_conf: str
    backend_slurm_partition: str
    backend_slurm_sbatch_args: tuple
    backend_htcondor_schedd: str
    backend_arc_cert: str
    backend_arc_key: str
    backend_arc_ca: str
    backend_arc_timeout_s: float
    backend_arc_clean_after_s: float
    batch_poll_interval_s: float
    batch_grace_s: float
    cleanup_interval_s: float
    cleanup_timeout_s: float
    log_format: str

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
                backend_wrapper=str(config["BACKEND_WRAPPER"]),
                backend_python=str(config["BACKEND_PYTHON"]),
                backend_sandbox_dir=str(config["BACKEND_SANDBOX_DIR"]),
                backend_site_configs=str(config["BACKEND_SITE_CONFIGS"]),
                backend_local_max_parallel=int(config["BACKEND_LOCAL_MAX_PARALLEL"]),
                backend_slurm_conf=str(config["BACKEND_SLURM_CONF"]),
                backend_slurm_partition=str(config["BACKEND_SLURM_PARTITION"]),
                backend_slurm_sbatch_args=_words(config["BACKEND_SLURM_SBATCH_ARGS"]),
                backend_htcondor_schedd=str(config["BACKEND_HTCONDOR_SCHEDD"]),
                backend_arc_cert=str(config["BACKEND_ARC_CERT"]),
                backend_arc_key=str(config["BACKEND_ARC_KEY"]),
                backend_arc_ca=str(config["BACKEND_ARC_CA"]),
                backend_arc_timeout_s=float(config["BACKEND_ARC_TIMEOUT_S"]),
                backend_arc_clean_after_s=float(config["BACKEND_ARC_CLEAN_AFTER_S"]),
                batch_poll_interval_s=float(config["BATCH_POLL_INTERVAL_S"]),
                batch_grace_s=float(config["BATCH_GRACE_S"]),
                cleanup_interval_s=float(config["CLEANUP_INTERVAL_S"]),
                cleanup_timeout_s=float(config["CLEANUP_TIMEOUT_S"]),
                log_format=str(config["LOG_FORMAT"]).strip().lower(),
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


def _words(value):
    """A list of strings from a list or a whitespace-separated string."""
    if isinstance(value, str):
        return tuple(value.split())
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of words, got {value!r}")
    return tuple(str(v) for v in value)


def settings():
    """The settings of the running app."""
    return current_app.extensions["sbk.settings"]


def base_url():
    """Where wrappers reach this server: SBK_PUBLIC_URL, else the URL of this request."""
    return settings().public_url or request.host_url.rstrip("/")
