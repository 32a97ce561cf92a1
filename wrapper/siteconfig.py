"""Site configuration (CONTRACT §2): one TOML file per site, a frozen dataclass.

Found by `--site-config FILE`, or by name (`--site`, `SEVERUS_SITE`, the batch
system's site variables) in: the directory of an explicit file,
`$SEVERUS_SITE_CONFIGS` (colon-separated), then the `site_configs` bundled
with the wrapper (also inside severus.pyz).
"""
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

try:
    import tomllib
except ImportError:  # Python < 3.11: the pure-Python tomli, bundled in severus.pyz
    import tomli as tomllib

from shared.ce import CeConfig, parse_ce_config
from shared.errors import SiteConfigError
from .container import ContainerConfig, parse_container_config

ACCESS_MODES = ("auto", "direct", "protocol")
SITE_NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
# Batch and grid systems that name the site for us, most specific first.
SITE_ENV_VARS = ("SEVERUS_SITE", "GLIDEIN_Site", "OSG_SITE_NAME", "DIRACSITE", "SITE_NAME")


@dataclass(frozen=True)
class StorageConfig:
    lfn_prefix: str
    urls: Tuple[str, ...] = ()
    local_path: Optional[str] = None
    access: str = "auto"
    # A file below local_path that only the real SE holds; when set, direct access needs it
    # (mount or not), else local_path must be on a mounted file system other than the root.
    probe_file: Optional[str] = None

    def relative(self, lfn):
        """`lfn:/grid/vo/x/y` -> `x/y` (relative to the SE root)."""
        path = lfn[len("lfn:"):] if lfn.startswith("lfn:") else lfn
        prefix = self.lfn_prefix.rstrip("/")
        if path != prefix and not path.startswith(prefix + "/"):
            raise SiteConfigError(f"{lfn} is not under this SE's lfn_prefix {self.lfn_prefix}")
        return path[len(prefix):].lstrip("/")

    def url(self, base, lfn):
        """The physical name of `lfn` below `base` (one of `urls`, or `local_path`)."""
        rel = self.relative(lfn)
        return base.rstrip("/") + ("/" + rel if rel else "")

    def below(self, surl):
        """The path of `surl` relative to this SE's root when it names a file of this SE (under
        one of `urls` or `local_path`), else None: how a catalog replica is reached through
        another of the SE's doors (an output's physical name is not its LFN's)."""
        for base in self.urls + ((self.local_path,) if self.local_path else ()):
            root = base.rstrip("/") + "/"
            if surl.startswith(root) and ".." not in surl[len(root):].split("/"):
                return surl[len(root):]
        return None


@dataclass(frozen=True)
class TransferConfig:
    parallel: int = 4             # files moved at once
    retries: int = 2              # extra tries per source/destination before the next one
    backoff_s: float = 1.0        # first wait between tries, doubled each time
    timeout_base_s: float = 300.0  # a transfer's timeout: base + size / min_rate, capped
    min_rate_mb_s: float = 1.0
    timeout_max_s: float = 10800.0
    probe_timeout_s: float = 5.0  # access detection's stat of an endpoint
    tool: str = "auto"            # auto | gfal2 | cli
    # A copy that moved no byte for this long is given up (its try ends as a timeout, retried as
    # one), well before a big file's size-based timeout; 0: never (wrapper/transfer/progress.py).
    stall_s: float = 600.0

    def timeout_for(self, size_bytes):
        """PanDA-style: a dead server fails early, a big file gets its time."""
        size_mb = max(0, size_bytes or 0) / 1e6
        return min(self.timeout_max_s, self.timeout_base_s + size_mb / self.min_rate_mb_s)


@dataclass(frozen=True)
class WrapperConfig:
    # From a stop (the batch system's SIGTERM, a kill command) to the wrapper's exit: payload
    # stopped, transfers cut, partial stage-out undone, log and final report sent. Under Slurm's
    # default KillWait (30 s), after which SIGKILL leaves no log and no report.
    stop_grace_s: float = 20.0
    # How long fencing and registration wait for an unreachable server (a restart) before the
    # stage gives up; a stop cuts the wait.
    server_wait_s: float = 120.0


CREDENTIAL_REQUIREMENTS = ("none", "proxy", "token", "any")


@dataclass(frozen=True)
class CredentialsConfig:
    # [credentials]: which grid credential the site's SEs demand (none: an open SE, no check);
    # before each transfer stage it must be there and live for the stage (wrapper/credentials.py).
    require: str = "none"
    # At most this many seconds of remaining life are asked for (default: the payload's
    # max_wct_s plus a stage-out's base transfer time), for sites whose agent renews proxies.
    min_lifetime_s: Optional[float] = None
    # Where the node keeps the CA certificates, for nodes whose environment names none (X509_CERT_DIR
    # wins): a CE's job environment is often bare.
    cert_dir: Optional[str] = None


@dataclass(frozen=True)
class SiteConfig:
    name: str
    se: StorageConfig
    fallback_sites: Tuple[str, ...] = ()
    min_free_gb: float = 5.0
    # [scratch]: the work dir is removed after the job; a failed job's stays when this is set.
    keep_workdir_on_failure: bool = False
    # [scratch]: the $SEVERUS_CACHE software tarballs, oldest used first out beyond this (0: no limit).
    software_cache_max_gb: float = 20.0
    transfer: TransferConfig = field(default_factory=TransferConfig)
    wrapper: WrapperConfig = field(default_factory=WrapperConfig)
    credentials: CredentialsConfig = field(default_factory=CredentialsConfig)
    ce: Optional[CeConfig] = None
    container: ContainerConfig = field(default_factory=ContainerConfig)   # [container]: wrapper/container.py
    source: str = ""              # the file it came from, for messages


def load_site_config(path):
    """Read and validate one site configuration file; raise SiteConfigError (002)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise SiteConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SiteConfigError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:   # a hostile file nested thousands deep
        raise SiteConfigError(f"{path} is nested too deeply") from None
    return parse_site_config(data, str(path))


def parse_site_config(data, source="<site config>"):
    def fail(msg):
        raise SiteConfigError(f"{source}: {msg}")

    def table(d, key):
        value = d.get(key, {})
        if not isinstance(value, dict):
            fail(f"[{key}] must be a table")
        return value

    def known(d, allowed, where):
        extra = sorted(set(d) - set(allowed))
        if extra:
            fail(f"unknown key '{where}{extra[0]}'")

    known(data, ("name", "se", "stageout", "scratch", "transfer", "wrapper", "credentials", "ce", "container"), "")
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(SITE_NAME_RE, name):
        fail("'name' must be a site name like INFN-T1")
    se = table(data, "se")
    known(se, ("lfn_prefix", "urls", "local_path", "access", "probe_file"), "se.")
    prefix = se.get("lfn_prefix")
    if not isinstance(prefix, str) or not prefix.startswith("/") or ".." in prefix.split("/"):
        fail("'se.lfn_prefix' must be an absolute path like /grid/superbvo.org")
    urls = se.get("urls", [])
    if not isinstance(urls, list) or not all(isinstance(u, str) and "://" in u for u in urls):
        fail("'se.urls' must be a list of URLs like root://host:1094//path")
    local_path = se.get("local_path")
    if local_path is not None and (not isinstance(local_path, str) or not local_path.startswith("/")):
        fail("'se.local_path' must be an absolute path")
    probe_file = se.get("probe_file")
    if probe_file is not None and (not isinstance(probe_file, str) or not probe_file.strip("/")
                                   or probe_file.startswith("/") or ".." in probe_file.split("/")
                                   or "\0" in probe_file):
        fail("'se.probe_file' must be a path relative to 'se.local_path', like .severus-se")
    if probe_file is not None and not local_path:
        fail("'se.probe_file' is set but 'se.local_path' is not")
    access = se.get("access", "auto")
    if access not in ACCESS_MODES:
        fail(f"'se.access' must be one of {', '.join(ACCESS_MODES)}")
    if access == "direct" and not local_path:
        fail("'se.access' is direct but 'se.local_path' is not set")
    if access == "protocol" and not urls:
        fail("'se.access' is protocol but 'se.urls' is empty")
    if not urls and not local_path:
        fail("the SE needs 'urls' or 'local_path'")
    stageout = table(data, "stageout")
    known(stageout, ("fallback_sites",), "stageout.")
    fallback = stageout.get("fallback_sites", [])
    if not isinstance(fallback, list) or not all(
            isinstance(s, str) and re.fullmatch(SITE_NAME_RE, s) for s in fallback):
        fail("'stageout.fallback_sites' must be a list of site names")
    scratch = table(data, "scratch")
    known(scratch, ("min_free_gb", "keep_workdir_on_failure", "software_cache_max_gb"), "scratch.")
    keep_workdir = scratch.get("keep_workdir_on_failure", False)
    if not isinstance(keep_workdir, bool):
        fail("'scratch.keep_workdir_on_failure' must be true or false")
    cache_max = scratch.get("software_cache_max_gb", 20.0)
    if isinstance(cache_max, bool) or not isinstance(cache_max, (int, float)) or not 0 <= cache_max < 1e6:
        fail("'scratch.software_cache_max_gb' must be a number >= 0 (0: no limit)")
    min_free = scratch.get("min_free_gb", 5.0)
    if isinstance(min_free, bool) or not isinstance(min_free, (int, float)) or not 0 <= min_free < 1e6:
        fail("'scratch.min_free_gb' must be a number >= 0")
    tr = table(data, "transfer")
    defaults = TransferConfig()
    known(tr, defaults.__dataclass_fields__, "transfer.")
    values = {}
    for key, default in defaults.__dict__.items():
        value = tr.get(key, default)
        if isinstance(default, str):
            if value not in ("auto", "gfal2", "cli"):
                fail(f"'transfer.{key}' must be auto, gfal2 or cli")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1e7:
            fail(f"'transfer.{key}' must be a number >= 0")
        values[key] = type(default)(value)
    if values["parallel"] < 1 or values["min_rate_mb_s"] <= 0:
        fail("'transfer.parallel' and 'transfer.min_rate_mb_s' must be positive")
    wr = table(data, "wrapper")
    known(wr, WrapperConfig.__dataclass_fields__, "wrapper.")
    wrapper = {}
    for key, default in WrapperConfig().__dict__.items():
        value = wr.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 86400:
            fail(f"'wrapper.{key}' must be a number of seconds between 1 and 86400")
        wrapper[key] = float(value)
    cred = table(data, "credentials")
    known(cred, CredentialsConfig.__dataclass_fields__, "credentials.")
    require = cred.get("require", "none")
    if require not in CREDENTIAL_REQUIREMENTS:
        fail(f"'credentials.require' must be one of {', '.join(CREDENTIAL_REQUIREMENTS)}")
    min_life = cred.get("min_lifetime_s")
    if min_life is not None and (isinstance(min_life, bool) or not isinstance(min_life, (int, float))
                                 or not 0 <= min_life <= 30 * 86400):
        fail("'credentials.min_lifetime_s' must be a number of seconds between 0 and 2592000")
    cert_dir = cred.get("cert_dir")
    if cert_dir is not None and (not isinstance(cert_dir, str) or not cert_dir.startswith("/")):
        fail("'credentials.cert_dir' must be an absolute path, like /etc/grid-security/certificates")
    credentials = CredentialsConfig(require=require, min_lifetime_s=None if min_life is None else float(min_life),
                                    cert_dir=cert_dir)
    # [ce] is the server's (its arc backend); checked here so that `severus check` refuses it too
    ce = parse_ce_config(data["ce"], source) if "ce" in data else None
    container = parse_container_config(table(data, "container"), fail)
    return SiteConfig(
        name=name,
        se=StorageConfig(lfn_prefix=prefix, urls=tuple(urls), local_path=local_path, access=access,
                         probe_file=probe_file),
        fallback_sites=tuple(fallback),
        min_free_gb=float(min_free),
        keep_workdir_on_failure=keep_workdir,
        software_cache_max_gb=float(cache_max),
        transfer=TransferConfig(**values),
        wrapper=WrapperConfig(**wrapper),
        credentials=credentials,
        ce=ce,
        container=container,
        source=source,
    )


def site_name_from_env(environ=os.environ):
    for var in SITE_ENV_VARS:
        if environ.get(var):
            return environ[var]
    return None


def _search_dirs(extra_dirs):
    dirs = [Path(d) for d in extra_dirs]
    dirs += [Path(d) for d in os.environ.get("SEVERUS_SITE_CONFIGS", "").split(":") if d]
    return dirs


def find_site_config(name, extra_dirs=()):
    """The site configuration called `name`; raise SiteConfigError when there is none."""
    if not isinstance(name, str) or not re.fullmatch(SITE_NAME_RE, name):
        raise SiteConfigError(f"invalid site name {name!r}")
    for directory in _search_dirs(extra_dirs):
        candidate = directory / f"{name}.toml"
        if candidate.is_file():
            return load_site_config(candidate)
    # Bundled configs: read through importlib.resources so this works inside a zip.
    from importlib import resources
    try:
        resource = resources.files("site_configs").joinpath(f"{name}.toml")
        if resource.is_file():
            return parse_site_config(tomllib.loads(resource.read_text("utf-8")),
                                     f"site_configs/{name}.toml")
    except (ModuleNotFoundError, tomllib.TOMLDecodeError) as exc:
        raise SiteConfigError(f"bundled site_configs/{name}.toml: {exc}") from None
    raise SiteConfigError(f"no site configuration for {name}")


def find_other_site(site, name, extra_dirs=()):
    """Another site's configuration as `site`'s node finds it: beside `site`'s own file first."""
    if name == site.name:
        return site
    dirs = tuple(extra_dirs)
    if site.source and Path(site.source).is_file():
        dirs = (str(Path(site.source).parent),) + dirs
    return find_site_config(name, dirs)


def check_fallback_sites(site, extra_dirs=()):
    """Each stage-out fallback site of `site` has a good configuration on this node, else
    SiteConfigError (002) naming it: found by the node checks, not skipped at stage-out."""
    for name in site.fallback_sites:
        try:
            find_other_site(site, name, extra_dirs)
        except SiteConfigError as exc:
            raise SiteConfigError(f"stage-out fallback site {name} (stageout.fallback_sites of {site.source}) "
                                  f"is unusable on this node: {exc}") from None


def resolve_site_config(site=None, site_config=None):
    """The command line's choice: a file, else a name from --site or the environment."""
    if site_config:
        return load_site_config(site_config)
    name = site or site_name_from_env()
    if not name:
        raise SiteConfigError("no site given: use --site, --site-config or SEVERUS_SITE")
    return find_site_config(name)
