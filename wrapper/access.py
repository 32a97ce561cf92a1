"""How this node reaches a site's SE: direct (POSIX mount) or protocol (first URL that answers).

Seed: "automatic recognition of the access type (lcg or direct)". Direct needs
`local_path` to be mounted and usable for the purpose, proved with a real
small file (read for stage-in, write+read+delete for stage-out); every probe
runs under `probe_timeout_s` so a hung mount or a dead door costs seconds.
"""
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from shared.errors import SiteConfigError
from .siteconfig import StorageConfig
from .transfer import TransferError, make_transfer

PURPOSES = ("read", "write")
_PROBE_BYTES = b"severus access probe\n"


class NoAccess(TransferError):
    """No way to reach an SE for the purpose; the stage maps it to its own code."""

    def __init__(self, message):
        super().__init__("failed", message)


@dataclass(frozen=True)
class Access:
    mode: str                     # direct | protocol
    base: str                     # local_path, or the URL that answered
    reason: str
    site: str = ""
    se: Optional[StorageConfig] = None
    transfer: Any = field(default=None, compare=False, repr=False)

    def url(self, lfn):
        """Where `lfn` lives through this access."""
        return self.se.url(self.base, lfn)

    def surl(self, lfn):
        """The name to put in the catalog: a protocol URL others can use, when the SE has one."""
        if self.mode == "protocol" or not self.se.urls:
            return self.url(lfn)
        return self.se.url(self.se.urls[0], lfn)


def detect_access(site, purpose, transfer_factory=make_transfer):
    """Decide how to reach `site`'s SE for `purpose` ("read" or "write"); raise NoAccess."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}")
    se, timeout = site.se, site.transfer.probe_timeout_s
    why_not = []
    if se.access in ("auto", "direct") and se.local_path:
        try:
            _within(timeout, _probe_direct, se.local_path, purpose)
            return Access("direct", se.local_path, f"{se.local_path} is mounted and {purpose}able",
                          site.name, se, transfer_factory(se.local_path, site.transfer.tool))
        except (OSError, TimeoutError) as exc:
            why_not.append(f"{se.local_path}: {exc}")
        if se.access == "direct":
            raise NoAccess(f"{site.name}: access is direct but {why_not[-1]}")
    elif se.access == "auto":
        why_not.append("no local_path")
    if se.access != "direct":
        for url in se.urls:
            try:
                transfer = transfer_factory(url, site.transfer.tool)
                answer = _within(timeout, _probe_url, transfer, url)
            except (TransferError, TimeoutError) as exc:
                why_not.append(f"{url}: {exc}")
                continue
            reason = f"{url} answered a stat{answer}"
            if why_not:
                reason += " (direct: " + "; ".join(why_not) + ")"
            return Access("protocol", url, reason, site.name, se, transfer)
    raise NoAccess(f"{site.name}: no usable SE access for {purpose}: " + "; ".join(why_not or ["no urls"]))


def site_access(ctx, site, purpose, transfer_factory=make_transfer):
    """detect_access, with the choice and its reason sent to the log, the events and the report."""
    try:
        access = detect_access(site, purpose, transfer_factory)
    except NoAccess as exc:
        ctx.log.warning("access %s/%s: %s", site.name, purpose, exc.message)
        ctx.facts.setdefault("access", {})[f"{site.name}/{purpose}"] = {"mode": None, "reason": exc.message}
        raise
    tool = access.transfer.tool_for(access.base)
    ctx.log.info("access %s/%s: %s via %s (%s)", site.name, purpose, access.mode, tool, access.reason)
    ctx.note(f"access {site.name} {purpose}: {access.mode} {access.base} via {tool}: {access.reason}")
    ctx.facts.setdefault("access", {})[f"{site.name}/{purpose}"] = {
        "mode": access.mode, "base": access.base, "tool": tool, "reason": access.reason}
    return access


class SiteAccesses:
    """Each site's access for one purpose, probed once on first use and shared by threads."""

    def __init__(self, ctx, purpose, transfer_factory=make_transfer):
        self.ctx = ctx
        self.purpose = purpose
        self.transfer_factory = transfer_factory
        self._lock = threading.Lock()
        self._access = {}

    def get(self, site_name):
        """The site's Access, or None when it has no configuration or no usable SE."""
        with self._lock:
            if site_name not in self._access:
                try:
                    site = self.ctx.find_site(site_name)
                    self._access[site_name] = site_access(self.ctx, site, self.purpose,
                                                          self.transfer_factory)
                except (SiteConfigError, NoAccess) as exc:
                    self.ctx.log.warning("site %s unusable for %s: %s", site_name, self.purpose, exc)
                    self._access[site_name] = None
            return self._access[site_name]


def _probe_url(transfer, url):
    try:
        st = transfer.stat(url)
    except TransferError as exc:
        if exc.kind != "not_found":
            raise
        return " (its root does not exist yet)"   # the door works; stage-out creates the root
    return "" if st.is_dir else " (not a directory)"


def _probe_direct(path, purpose):
    if not os.path.isdir(path):
        raise OSError(f"{path} is not a mounted directory")
    if purpose == "write":
        probe = os.path.join(path, f".severus-probe-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            with open(probe, "wb") as fh:
                fh.write(_PROBE_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
            with open(probe, "rb") as fh:
                if fh.read() != _PROBE_BYTES:
                    raise OSError(f"{probe} did not read back what was written")
        finally:
            try:
                os.unlink(probe)
            except FileNotFoundError:
                pass
        return
    # Reading: list the root and read a byte of a real file, if the first levels hold one.
    for directory in (path,) + tuple(os.path.join(path, n) for n in sorted(os.listdir(path))[:20]):
        if not os.path.isdir(directory):
            continue
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_size > 0:
                    with open(entry.path, "rb") as fh:
                        fh.read(1)
                    return


def _within(timeout, fn, *args):
    """fn(*args) in a daemon thread: a hung mount or door must not hang the job."""
    result = {}

    def run():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller's thread below
            result["error"] = exc

    thread = threading.Thread(target=run, name="severus-access-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")
