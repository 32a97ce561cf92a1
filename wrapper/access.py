"""How this node reaches a site's SE: direct (POSIX mount) or protocol (first URL that answers).

Seed: "automatic recognition of the access type (lcg or direct)". Direct needs
`local_path` to be the real SE and usable for the purpose. Real: it holds the
site's `probe_file` when the site names one, else it is on a mounted file
system other than the node's root (an empty mount point left by GPFS or the
automounter being down on one node is a directory on the root file system,
and reading inputs there would report a node fault as lost data). Usable:
proved with a real small file (read for stage-in, write+read+delete for
stage-out). Every probe runs under `probe_timeout_s` so a hung mount or a dead
door costs seconds.
"""
import os
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from shared.errors import SiteConfigError
from .pool import call_within
from .siteconfig import StorageConfig
from .transfer import TransferError, make_transfer

PURPOSES = ("read", "write")
_PROBE_BYTES = b"severus access probe\n"
MOUNTINFO = "/proc/self/mountinfo"      # Linux; elsewhere the mount point is found with ismount


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

    def reach(self, surl, lfn):
        """Where the catalog replica `surl` of `lfn` is read through this access: by the SURL's
        path below the SE's root (an output's physical name is not its LFN's, shared/outputs.py),
        else by its LFN (SiteConfigError when that is outside the SE's prefix too)."""
        rel = self.se.below(surl)
        if rel is not None:
            return self.base.rstrip("/") + "/" + rel
        return self.url(lfn)

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
            mounted = call_within(timeout, _probe_direct, se, purpose)
            return Access("direct", se.local_path, f"{se.local_path} is mounted ({mounted}) and {purpose}able",
                          site.name, se, transfer_factory(se.local_path, site.transfer.tool))
        except (OSError, TimeoutError) as exc:
            message = str(exc)
            why_not.append(message if message.startswith(se.local_path) else f"{se.local_path}: {message}")
        if se.access == "direct":
            raise NoAccess(f"{site.name}: access is direct but {why_not[-1]}")
    elif se.access == "auto":
        why_not.append("no local_path")
    if se.access != "direct":
        for url in se.urls:
            try:
                transfer = transfer_factory(url, site.transfer.tool)
                answer = call_within(timeout, _probe_url, transfer, url)
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


def _probe_direct(se, purpose):
    """Prove `se.local_path` is the real SE and usable for `purpose`: what makes it real, or OSError."""
    path = se.local_path
    if not os.path.isdir(path):
        raise OSError(f"{path} is not a mounted directory")
    mounted = _real_se(path, se.probe_file)
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
        return mounted
    # Reading: list the root and read a byte of a real file, if the first levels hold one.
    for directory in (path,) + tuple(os.path.join(path, n) for n in sorted(os.listdir(path))[:20]):
        if not os.path.isdir(directory):
            continue
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_size > 0:
                    with open(entry.path, "rb") as fh:
                        fh.read(1)
                    return mounted
    return mounted


def _real_se(path, probe_file):
    """Why `path` is the SE and not an empty mount point on the node's own disk; OSError when it is not.

    With `probe_file` the file decides (a parent file system, /storage, may be mounted while the
    SE's own, /storage/gpfs, is not); without, the file system holding `path` must be mounted
    somewhere other than "/" and be more than the root file system bound elsewhere or an
    automounter's placeholder.
    """
    try:
        with os.scandir(path):   # opening the directory, unlike stat(), triggers an automount
            pass
    except PermissionError:      # the lookup has triggered it already; writing may still be allowed
        pass
    point, fstype = _mount_of(path)
    on = f"{fstype or 'file system'} at {point}"
    if probe_file:
        where = "its mount point is /" if point == "/" else on
        try:
            with open(os.path.join(path, probe_file), "rb") as fh:
                fh.read(1)
        except FileNotFoundError:
            raise OSError(f"{path} does not hold the probe file {probe_file} ({where})") from None
        except OSError as exc:
            raise OSError(f"{path}: the probe file {probe_file} is unreadable: {exc.strerror} ({where})") from None
        return f"probe file {probe_file} found; {on}"
    if point == "/":
        raise OSError(f"{path} is not on a mounted file system (its mount point is /)")
    if fstype == "autofs":
        raise OSError(f"{path} is not on a mounted file system (its mount point {point} is an "
                      "automount trigger with nothing mounted)")
    if os.stat(path).st_dev == os.stat("/").st_dev:
        raise OSError(f"{path} is not on a mounted file system ({point} is a bind mount of the root file system)")
    return on


def _mount_of(path):
    """(mount point, file system type or None) of the mount holding `path`, symbolic links resolved."""
    real = os.path.realpath(path)
    best = None
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                # id parent major:minor root mount-point options [optional...] - fstype source super-options
                fields = line.split()
                try:
                    fstype = fields[fields.index("-", 6) + 1]
                except (ValueError, IndexError):
                    continue
                point = _unescape_mountinfo(fields[4])
                inside = point == "/" or real == point or real.startswith(point.rstrip("/") + "/")
                # The longest mount point wins; at the same point the later mount is on top.
                if inside and (best is None or len(point) >= len(best[0])):
                    best = (point, fstype)
    except OSError:
        pass
    if best is not None:
        return best
    point = real
    while not os.path.ismount(point):
        point = os.path.dirname(point)
    return point, None


def _unescape_mountinfo(field):
    r"""mountinfo writes space, tab, newline and backslash in paths as \040, \011, \012, \134."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
