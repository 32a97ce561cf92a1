"""`severus check`: the site admin's node test, each check OK / WARNING / CRITICAL / UNKNOWN.

Checks run in order and each is timed: python, optional modules, site config,
the site's stage-out fallback sites, scratch space, SE access mode, the SE
round trip (with `write_test`), and the server with its clock. A check that cannot run because an earlier one failed
is UNKNOWN. `nagios_line()` folds them into one Nagios plugin line with
perfdata; `exit_code()` gives the plain command its three-digit code.
`report()` posts `result_dict()` to the server, which keeps it as the site's
last check.
"""
import email.utils
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

from shared.errors import NodeCheckError, ScratchSpaceError, SiteConfigError

OK, WARNING, CRITICAL, UNKNOWN = "OK", "WARNING", "CRITICAL", "UNKNOWN"
NAGIOS_EXIT = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}
# Worst first decides the overall state; UNKNOWN ranks under CRITICAL (something could not be tested).
SEVERITY = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}
OPTIONAL_MODULES = ("gfal2", "psutil", "requests")
CLOCK_WARN_S, CLOCK_CRIT_S = 60.0, 300.0   # X.509 and tokens tolerate minutes of skew, not more
SCRATCH_WARN_FACTOR = 2.0                  # warn below twice the site's minimum


@dataclass(frozen=True)
class CheckOptions:
    site: Optional[str] = None
    site_config: Optional[str] = None
    server: Optional[str] = None
    workdir: str = "."
    write_test: bool = False
    server_timeout_s: float = 10.0


@dataclass(frozen=True)
class Perf:
    """One Nagios perfdata item."""
    label: str
    value: float
    uom: str = ""
    warn: Optional[float] = None
    crit: Optional[float] = None
    minimum: Optional[float] = None

    def render(self):
        limits = ";".join("" if x is None else f"{x:g}" for x in (self.warn, self.crit, self.minimum)).rstrip(";")
        return f"{self.label}={self.value:g}{self.uom}" + (f";{limits}" if limits else "")


@dataclass(frozen=True)
class CheckResult:
    name: str
    state: str
    reason: str
    seconds: float = 0.0
    code: int = 0                 # the error code a plain `severus check` exits with when CRITICAL
    perf: Tuple[Perf, ...] = ()

    def to_dict(self):
        return {"name": self.name, "state": self.state, "ok": self.state in (OK, WARNING),
                "reason": self.reason, "detail": self.reason, "seconds": round(self.seconds, 3),
                "code": self.code, "perf": {p.label: p.value for p in self.perf}}


@dataclass
class _Node:
    """What earlier checks found, for the later ones."""
    site: object = None
    access: object = None
    results: list = field(default_factory=list)


class _Outcome(Exception):
    """A check's verdict other than OK, raised from inside it."""

    def __init__(self, state, reason, code=0, perf=()):
        super().__init__(reason)
        self.state, self.reason, self.code, self.perf = state, reason, code, tuple(perf)


def run_checks(options):
    """Every check in order; a list of CheckResult."""
    node = _Node()
    checks = [("python", _check_python), ("modules", _check_modules), ("site config", _check_site),
              ("fallback sites", _check_fallback_sites),
              ("scratch", _check_scratch), ("credentials", _check_credentials), ("access", _check_access)]
    if options.write_test:
        checks.append(("se round trip", _check_round_trip))
    # The node's runtimes are in "modules"; this one starts the site's default image, when it has one.
    checks.append(("container", _check_container))
    if options.server:
        checks.append(("server", _check_server))
    for name, check in checks:
        if name == "container" and not getattr(getattr(node.site, "container", None), "image", None):
            continue   # no default image to start: the runtimes are in "modules"
        started = time.monotonic()
        try:
            reason, perf = check(options, node)
            state, code = OK, 0
        except _Outcome as out:
            state, reason, code, perf = out.state, out.reason, out.code, out.perf
        except Exception as exc:  # a broken check must not hide the others: it is UNKNOWN
            state, reason, code, perf = UNKNOWN, f"{type(exc).__name__}: {exc}", NodeCheckError.code, ()
        node.results.append(CheckResult(name, state, reason, time.monotonic() - started, code, tuple(perf)))
    return node.results


def site_name(results):
    """The site the checks ran for, when its configuration loaded."""
    return next((r.reason.split(" ", 1)[0] for r in results if r.name == "site config" and r.state == OK), None)


def overall_state(results):
    return max((r.state for r in results), key=SEVERITY.__getitem__, default=UNKNOWN)


def exit_code(results):
    """0 when nothing is CRITICAL or UNKNOWN, else the first such check's error code."""
    for r in results:
        if r.state in (CRITICAL, UNKNOWN):
            return r.code or NodeCheckError.code
    return 0


def nagios_line(results, site_name=None):
    """`SEVERUS <STATE> - <summary> | <perfdata>`: the bad checks' reasons, or a count of good ones."""
    state = overall_state(results)
    bad = [r for r in results if r.state != OK]
    where = f"{site_name}: " if site_name else ""
    if bad:
        summary = "; ".join(f"{r.name} {r.state}: {r.reason}" for r in bad)
    else:
        summary = f"{len(results)} checks OK"
        access = next((r for r in results if r.name == "access"), None)
        if access is not None:
            summary += f", access {access.reason.split(' ', 1)[0]}"
    perf = [p for r in results for p in r.perf]
    perf += [Perf(f"{r.name.replace(' ', '_')}_time", round(r.seconds, 3), "s") for r in results]
    # Nagios reserves "|" for the perfdata separator and reads one line only.
    summary = " ".join(summary.replace("|", "/").split())
    return f"SEVERUS {state} - {where}{summary} | " + " ".join(p.render() for p in perf)


def nagios_exit(results):
    return NAGIOS_EXIT[overall_state(results)]


# ---------------------------------------------------------------------- the checks

def _check_python(options, node):
    version = platform.python_version()
    if sys.version_info < (3, 9):
        raise _Outcome(CRITICAL, f"python {version} is older than 3.9", NodeCheckError.code)
    return f"{version} ({sys.executable})", ()


def _check_modules(options, node):
    present, missing = [], []
    for module in OPTIONAL_MODULES:
        try:
            __import__(module)
            present.append(module)
        except ImportError:
            missing.append(module)
    reason = f"present: {', '.join(present) or 'none'}"
    if missing:
        reason += f"; missing: {', '.join(missing)} (fallbacks used)"
    from .container import installed_runtimes
    reason += f"; container runtimes: {installed_runtimes() or 'none'}"
    tools = [t for t in ("xrdcp", "gfal-copy") if shutil.which(t)]
    if "gfal2" in missing and not tools:
        raise _Outcome(WARNING, reason + "; no xrdcp or gfal-copy either: only direct access can work")
    return reason, ()


def _check_site(options, node):
    from .siteconfig import resolve_site_config
    try:
        node.site = resolve_site_config(options.site, options.site_config)
    except SiteConfigError as exc:
        raise _Outcome(CRITICAL, exc.one_line(), exc.code) from None
    se = node.site.se
    return (f"{node.site.name} from {node.site.source} (access {se.access}, "
            f"{len(se.urls)} url(s){', local_path ' + se.local_path if se.local_path else ''}"
            f"{', probe_file ' + se.probe_file if se.probe_file else ''})"), ()


def _check_fallback_sites(options, node):
    """The site's stage-out fallback sites have their configuration on this node (a job checks it too)."""
    from .siteconfig import check_fallback_sites
    if node.site is None:
        raise _Outcome(UNKNOWN, "not tested: no site configuration", SiteConfigError.code)
    try:
        check_fallback_sites(node.site)
    except SiteConfigError as exc:
        raise _Outcome(CRITICAL, exc.one_line(), exc.code) from None
    return ", ".join(node.site.fallback_sites) or "none", ()


def _check_scratch(options, node):
    scratch = Path(options.workdir).resolve()
    try:
        free_gb = shutil.disk_usage(scratch).free / 1e9
    except OSError as exc:
        raise _Outcome(CRITICAL, f"{scratch}: {exc.strerror}", ScratchSpaceError.code) from None
    need = node.site.min_free_gb if node.site else 0.0
    perf = [Perf("scratch_free", round(free_gb * 1000), "MB", round(need * SCRATCH_WARN_FACTOR * 1000),
                 round(need * 1000), 0)]
    reason = f"{free_gb:.1f} GB free in {scratch} (site minimum {need:g} GB)"
    if free_gb < need:
        raise _Outcome(CRITICAL, reason, ScratchSpaceError.code, perf)
    if free_gb < need * SCRATCH_WARN_FACTOR:
        raise _Outcome(WARNING, reason, perf=perf)
    return reason, perf


CRED_WARN_S, CRED_CRIT_S = 86400.0, 3600.0   # a proxy or token under a day left: renew it soon


def _check_credentials(options, node):
    """Who the node is on the grid (proxy DN, VO, FQANs; token issuer, subject, scopes) and how
    long each credential lives; the access checks after it use them as a job would."""
    from .credentials import apply_environment, discover, summary, use_site_cert_dir
    use_site_cert_dir(node.site)
    creds = discover()
    apply_environment(creds)
    reason, lifetimes = summary(creds)
    require = node.site.credentials.require if node.site is not None else "none"
    perf = [Perf(label, round(max(0.0, left)), "s", CRED_WARN_S, CRED_CRIT_S, 0) for label, left in lifetimes]
    missing = {"proxy": creds.proxy is None, "token": creds.token is None,
               "any": creds.proxy is None and creds.token is None}.get(require, False)
    shortest = min((left for _, left in lifetimes), default=None)
    if missing:
        raise _Outcome(CRITICAL, f"the site requires a grid credential ({require}): {reason}", 5, perf)
    if shortest is not None and shortest < CRED_CRIT_S:
        raise _Outcome(CRITICAL, reason, 5, perf)
    if shortest is not None and shortest < CRED_WARN_S:
        raise _Outcome(WARNING, reason, 0, perf)
    return reason, perf


def _check_access(options, node):
    from .access import NoAccess, detect_access
    if node.site is None:
        raise _Outcome(UNKNOWN, "not tested: no site configuration", SiteConfigError.code)
    purpose = "write" if options.write_test else "read"
    try:
        node.access = detect_access(node.site, purpose)
    except NoAccess as exc:
        raise _Outcome(CRITICAL, exc.message, NodeCheckError.code) from None
    tool = node.access.transfer.tool_for(node.access.base)
    return f"{node.access.mode} for {purpose} via {tool}: {node.access.reason}", ()


def _check_round_trip(options, node):
    """Write a small file, stat it, the SE's adler32, read it back, delete it, over the detected access."""
    from .checksum import adler32_file
    from .transfer import TransferError
    if node.access is None:
        raise _Outcome(UNKNOWN, "not tested: no usable SE access", NodeCheckError.code)
    access, site = node.access, node.site
    transfer = access.transfer
    name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    lfn = f"lfn:{site.se.lfn_prefix.rstrip('/')}/.severus-check/{name}.txt"
    url = access.url(lfn)
    payload = f"severus check {name} {time.time():.3f}\n".encode() * 64
    timeout = site.transfer.timeout_for(len(payload))
    steps, step = [], "write"
    with tempfile.TemporaryDirectory(prefix="severus-check-", dir=options.workdir) as tmp:
        local, back = Path(tmp) / "probe.txt", Path(tmp) / "back.txt"
        local.write_bytes(payload)
        expected = adler32_file(local)
        started = time.monotonic()
        written = False
        try:
            transfer.copy_out(str(local), url, timeout, adler32=expected)   # compares the SE's adler32
            written = True
            steps.append("write")
            step = "stat"
            st = transfer.stat(url)
            if st.size != len(payload):
                raise TransferError("failed", f"the SE reports {st.size} bytes, {len(payload)} were written")
            steps.append("stat")
            step = "checksum"
            remote = transfer.checksum(url)
            if remote != expected:
                raise TransferError("checksum", f"the SE computes adler32 {remote}, the file has {expected}")
            steps.append(f"adler32 {remote}")
            step = "read back"
            transfer.copy_in(url, str(back), timeout, adler32=expected)
            if back.read_bytes() != payload:
                raise TransferError("checksum", "the file read back differs from the one written")
            steps.append("read")
            step = "delete"
            transfer.delete(url)
            written = False
            try:
                transfer.stat(url)
                raise TransferError("failed", "the file is still there after delete")
            except TransferError as exc:
                if exc.kind != "not_found":
                    raise
            steps.append("delete")
        except TransferError as exc:
            raise _Outcome(CRITICAL, f"{step} failed on {url}: {exc.message}", NodeCheckError.code) from None
        finally:
            if written:   # leave nothing behind on the SE, whatever failed
                try:
                    transfer.delete(url)
                except TransferError:
                    pass
        seconds = time.monotonic() - started
    return (f"{access.mode} {', '.join(steps)} of {len(payload)} B in {seconds:.2f} s ({url})",
            [Perf("se_round_trip", round(seconds, 3), "s")])


def _check_container(options, node):
    """The container runtimes this node has (name, version); the site's default image started once."""
    from .container import RUNTIMES, ContainerConfig, find_runtime, plan_container, probe
    from shared.errors import ContainerError
    config = node.site.container if node.site is not None else ContainerConfig()
    found = [r for r in (find_runtime(n, getattr(config, n)) for n in RUNTIMES) if r is not None]
    reason = (f"{', '.join(f'{r.name} {r.version}' for r in found) or 'no runtime'} on this node; "
              f"the site allows {', '.join(config.runtimes) or 'none'}")
    if not config.image:
        return reason + "; no default image", ()
    with tempfile.TemporaryDirectory(prefix="severus-check-", dir=options.workdir) as tmp:
        try:
            started = time.monotonic()
            container = plan_container(config.image, config, tmp)
            probe(container)
        except (ContainerError, SiteConfigError) as exc:
            raise _Outcome(CRITICAL, f"{reason}; {exc.one_line()}", exc.code) from None
    seconds = time.monotonic() - started
    return (f"{reason}; {container.runtime.name} started {config.image} in {seconds:.2f} s"
            f"{' (required for every payload)' if config.required else ''}",
            [Perf("container_start", round(seconds, 3), "s")])


def _check_server(options, node):
    """GET /api/v1/health; the clock offset from the reply's Date header, against the request's midpoint."""
    url = options.server.rstrip("/") + "/api/v1/health"
    sent = time.time()
    try:
        with urllib.request.urlopen(url, timeout=options.server_timeout_s) as reply:
            reply.read()
            date = reply.headers.get("Date")
    except urllib.error.HTTPError as exc:
        raise _Outcome(CRITICAL, f"{url}: HTTP {exc.code}", NodeCheckError.code) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _Outcome(CRITICAL, f"{url}: {getattr(exc, 'reason', exc)}", NodeCheckError.code) from None
    received = time.time()
    rtt = received - sent
    perf = [Perf("server_rtt", round(rtt, 3), "s")]
    if not date:
        raise _Outcome(WARNING, f"{url} answered in {rtt:.2f} s without a Date header: clock not checked",
                       perf=perf)
    try:
        server_time = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        raise _Outcome(WARNING, f"{url}: unreadable Date header {date!r}", perf=perf) from None
    # Date has one-second resolution: the server's clock read somewhere in [t, t+1).
    offset = server_time + 0.5 - (sent + received) / 2
    perf.append(Perf("clock_offset", round(offset, 1), "s", CLOCK_WARN_S, CLOCK_CRIT_S))
    reason = f"{url} answered in {rtt:.2f} s; clock offset {offset:+.1f} s"
    if abs(offset) >= CLOCK_CRIT_S:
        raise _Outcome(CRITICAL, reason, NodeCheckError.code, perf)
    if abs(offset) >= CLOCK_WARN_S:
        raise _Outcome(WARNING, reason, perf=perf)
    return reason, perf


def result_dict(results, site):
    """What `--json` prints and `--report` sends: the checks, their worst state, this node and wrapper."""
    from . import __version__
    code = exit_code(results)
    return {"site": site, "node": socket.gethostname(), "wrapper_version": __version__,
            "state": overall_state(results), "ok": code == 0, "code": code,
            "checks": [r.to_dict() for r in results]}


def report(body, server, token, timeout_s=10.0):
    """POST `body` to <server>/api/v1/sites/<site>/checks; a 'report' CheckResult, OK or CRITICAL and why."""
    from .client import ServerClient, ServerRefused, ServerUnreachable
    started = time.monotonic()
    site = body.get("site")
    try:
        if not server:
            raise _Outcome(CRITICAL, "not sent: no server (--server or SBK_URL)", NodeCheckError.code)
        if not token:
            raise _Outcome(CRITICAL, "not sent: no token (SBK_TOKEN)", NodeCheckError.code)
        if not site:
            raise _Outcome(CRITICAL, "not sent: no site name (the site configuration did not load; pass --site)",
                           SiteConfigError.code)
        path = f"/sites/{urllib.parse.quote(site, safe='')}/checks"
        try:
            kept = ServerClient(server, token, timeout=timeout_s).post(path, body)
        except ServerUnreachable as exc:
            raise _Outcome(CRITICAL, f"not sent: server unreachable: {exc}", NodeCheckError.code) from None
        except ServerRefused as exc:
            raise _Outcome(CRITICAL, f"refused by {server}: {exc}", NodeCheckError.code) from None
        state, code = OK, 0
        reason = f"kept by {server} as check {kept.get('id') if isinstance(kept, dict) else '?'} of {site}"
    except _Outcome as out:
        state, code, reason = out.state, out.code, out.reason
    return CheckResult("report", state, reason, time.monotonic() - started, code)


def format_table(results):
    """The human view: state, name, time, reason."""
    width = max(len(r.name) for r in results)
    return "\n".join(f"{r.state:<8} {r.name:<{width}} {r.seconds:7.3f} s  {r.reason}" for r in results)

