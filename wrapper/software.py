"""Software stage-in (seed: "copy software to WN"): fetch the tarball by LFN, verify, unpack safely.

The tarball's replicas come from the catalog, the local site's first; its
adler32 (the job description's) is checked before anything is unpacked.
With `SEVERUS_CACHE` set, verified tarballs are kept under
`$SEVERUS_CACHE/software/<adler32>-<name>`: filled under an flock through a
temporary name and an atomic rename, so two jobs filling it at once download
once and nobody ever reads a half-written file. The cache holds at most the site's
`scratch.software_cache_max_gb`: after a fill, the tarballs used longest ago go first
(a hit renews an entry's time), never one a job is reading (its lock is held).

A job may instead name a read-only shared area (`software.path`, the CVMFS way): it is
used in place, after a check at RUNNING-02 that it is there and readable (else 017).
"""
import fcntl
import os
import posixpath
import shutil
import stat
import tarfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

from shared.errors import (ExecutableMissing, SoftwareAuthRefused, SoftwareChecksumMismatch, SoftwareError,
                           SoftwareNotFound, SoftwareUnpackError, UnsafeArchive)
from shared.errors import SoftwareAreaUnavailable
from .catalog import Catalog
from .checksum import adler32_file
from .client import ServerError
from .inputs import Sources, fetch_entry
from .transfer import TransferError, make_transfer

SOFTWARE_DIR = "software"
# A tarball bomb: more than this unpacked, or above the floor and this many times its size.
MAX_UNPACKED_BYTES = 64 * 2 ** 30
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 256 * 2 ** 20


@dataclass(frozen=True)
class SoftwareArea:
    root: Path      # where the tarball was unpacked
    workdir: Path   # root / software.workdir
    exe: Path       # root / software.exe, executable


def stage_software(ctx, catalog=None, transfer_factory=make_transfer):
    """Fetch, verify and unpack the job's software; check its workdir and executable."""
    sw = ctx.desc.software
    if sw.path:
        return use_shared_area(ctx, sw)
    catalog = catalog or Catalog(ctx.server)
    try:
        entry = catalog.replicas(sw.lfn)
    except ServerError as exc:
        raise SoftwareError(f"catalog: {exc}") from None
    if entry is None or not entry.replicas:
        raise SoftwareNotFound(f"{sw.lfn} has no replica in the catalog")
    if entry.adler32 != sw.adler32:
        ctx.log.warning("catalog adler32 %s of %s differs from the job's %s; the job's is checked",
                        entry.adler32, sw.lfn, sw.adler32)
    tarball, held = _fetch_tarball(ctx, Sources(ctx, transfer_factory), entry, sw.adler32)
    root = Path(ctx.workdir) / SOFTWARE_DIR
    try:
        unpack_safely(tarball, root)
    finally:
        if held is not None:
            held.close()   # the cache entry's shared lock: eviction may take it now
    if held is None:
        tarball.unlink()   # the unpacked tree is what the job needs; free the scratch
    return _check_area(root, sw.workdir, sw.exe)


def use_shared_area(ctx, sw):
    """`software.path` used in place: 017 when it is missing or unreadable, 014 when the job's
    workdir or executable is not in it."""
    root = Path(sw.path)
    check_shared_area(root)
    ctx.facts["software"] = {"path": str(root), "cache": "shared area"}
    ctx.log.info("software from the shared area %s", root)
    # No containment check as for a tarball: the area is the site's, and CVMFS releases link
    # across repositories on purpose.
    wd, exe = root / sw.workdir, root / sw.exe
    if not wd.is_dir():
        raise ExecutableMissing(f"software workdir {sw.workdir} is not a directory in {root}")
    if not exe.is_file():
        raise ExecutableMissing(f"software executable {sw.exe} is not in {root}")
    if not os.access(exe, os.X_OK):
        raise ExecutableMissing(f"software executable {exe} is not executable")
    return SoftwareArea(root=root, workdir=wd, exe=exe)


def check_shared_area(root):
    """Raise SoftwareAreaUnavailable (017) unless `root` is a directory this process can list."""
    try:
        info = os.stat(root)   # on CVMFS this mounts the repository (autofs)
    except FileNotFoundError:
        raise SoftwareAreaUnavailable(f"{root} does not exist on this node (repository not mounted?)") from None
    except OSError as exc:
        raise SoftwareAreaUnavailable(f"{root}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise SoftwareAreaUnavailable(f"{root} is not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise SoftwareAreaUnavailable(f"{root} is not readable by uid {os.getuid()}")
    try:
        with os.scandir(root) as listing:   # a broken mount passes stat() and fails here (EIO)
            next(listing, None)
    except OSError as exc:
        raise SoftwareAreaUnavailable(f"{root} cannot be listed: {exc.strerror}") from None


def _fetch_tarball(ctx, sources, entry, adler32):
    """(the verified tarball, the cache entry's lock to hold while it is read, or None)."""
    name = posixpath.basename(entry.lfn)
    cache = os.environ.get("SEVERUS_CACHE")
    if not cache:
        dest = Path(ctx.workdir) / ".severus" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        _download(ctx, sources, entry, dest, adler32)
        ctx.facts["software"] = {"lfn": entry.lfn, "cache": "off"}
        return dest, None
    cache_dir = Path(cache) / "software"
    cache_dir.mkdir(parents=True, exist_ok=True)
    max_gb = getattr(ctx.site, "software_cache_max_gb", 0.0)
    return _cached_tarball(ctx, sources, entry, adler32, cache_dir, int(max_gb * 1e9))


def _cached_tarball(ctx, sources, entry, adler32, cache_dir, max_bytes):
    """The entry's file under a shared lock (readers at once; a filler or an evictor waits);
    filled under the exclusive lock when missing or damaged, then read again under the shared."""
    final = cache_dir / f"{adler32}-{posixpath.basename(entry.lfn)}"
    lock = open(cache_dir / f"{adler32}.lock", "a")
    how, verified = "hit", False
    try:
        for _ in range(3):
            fcntl.flock(lock, fcntl.LOCK_SH)
            if final.is_file() and (verified or adler32_file(final) == adler32):
                os.utime(final)   # its last use: eviction takes the longest unused first
                facts = {"lfn": entry.lfn, "cache": how, "path": str(final)}
                if how == "filled":
                    facts["evicted"] = evict_cache(cache_dir, max_bytes)
                ctx.log.info("software %s from the node cache %s (%s)", entry.lfn, final, how)
                ctx.facts["software"] = facts
                return final, lock
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(lock, fcntl.LOCK_EX)   # blocks while another job fills it
            if final.is_file() and adler32_file(final) == adler32:
                verified = True            # filled by another job meanwhile: a hit
            else:
                if final.exists():
                    ctx.log.warning("cached %s is damaged; fetching it again", final)
                    final.unlink()
                _fill(ctx, sources, entry, adler32, final)
                how, verified = "filled", True
            fcntl.flock(lock, fcntl.LOCK_UN)
        raise SoftwareError(f"the node cache entry {final} was evicted each time it was filled")
    except BaseException:
        lock.close()
        raise


def _fill(ctx, sources, entry, adler32, final):
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        _download(ctx, sources, entry, tmp, adler32)
        os.replace(tmp, final)   # readers never see a half-written file
    finally:
        if tmp.exists():
            tmp.unlink()


def evict_cache(cache_dir, max_bytes):
    """Remove cached tarballs, least recently used first, until at most `max_bytes` remain
    (0: no limit); one a job is reading (its lock held) stays. Returns the names removed."""
    if max_bytes <= 0:
        return []
    cache_dir = Path(cache_dir)
    removed = []
    with open(cache_dir / ".evict.lock", "a") as evicting:
        fcntl.flock(evicting, fcntl.LOCK_EX)   # one evictor at a time counts the same files
        entries = []
        for path in cache_dir.iterdir():
            if path.name.startswith(".") or path.suffix == ".lock":
                continue
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            entries.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= max_bytes:
                break
            # Lock files stay: deleting one another job has open would split its lock in two.
            with open(cache_dir / f"{path.name.split('-', 1)[0]}.lock", "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue   # in use
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            total -= size
            removed.append(path.name)
    return removed


def _download(ctx, sources, entry, dest, adler32):
    try:
        fetch_entry(ctx, sources, entry, dest, adler32=adler32)
    except TransferError as exc:
        cls = {"not_found": SoftwareNotFound, "checksum": SoftwareChecksumMismatch,
               "auth": SoftwareAuthRefused}.get(exc.kind, SoftwareError)
        raise cls(exc.message) from None


def unpack_safely(tarball, root, max_bytes=MAX_UNPACKED_BYTES, max_ratio=MAX_RATIO):
    """Unpack into `root` (replaced), refusing members that escape it, devices, and bombs."""
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    root = root.resolve()
    packed = os.path.getsize(tarball)
    limit = min(max_bytes, max(RATIO_FLOOR_BYTES, packed * max_ratio))
    # Python's own "data" filter, where it exists, as a second line behind our checks.
    extract_kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    total = 0
    try:
        with tarfile.open(tarball, "r:*") as tar:
            for member in tar:   # one pass: a compressed tarball is read once
                _check_member(member, root)
                total += member.size
                if total > limit:
                    raise UnsafeArchive(f"{tarball}: unpacks to more than {limit} bytes"
                                        f" ({packed} bytes packed): refused as a tarball bomb")
                tar.extract(member, root, **extract_kw)
            # tarfile stops at the end-of-archive marker; reading on catches a cut gzip/bzip2 trailer.
            while tar.fileobj.read(1 << 20):
                pass
    except UnsafeArchive:
        shutil.rmtree(root, ignore_errors=True)
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        # The data filter's refusals (Python >= 3.9.17 / 3.11.4) are unsafe members too.
        if isinstance(exc, getattr(tarfile, "FilterError", ())):
            raise UnsafeArchive(f"{tarball}: {exc}") from None
        raise SoftwareUnpackError(f"{tarball}: {exc}") from None


def _check_member(member, root):
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        raise UnsafeArchive(f"member {name!r} escapes the unpack root")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchive(f"member {name!r} is a device, fifo or other special file")
    target = root / name
    if not _inside(target.resolve(), root):
        raise UnsafeArchive(f"member {name!r} would be written outside the unpack root")
    if member.issym():
        if member.linkname.startswith("/") or not _inside((target.parent / member.linkname).resolve(), root):
            raise UnsafeArchive(f"symlink {name!r} -> {member.linkname!r} points outside the unpack root")
    elif member.islnk():
        if member.linkname.startswith("/") or not _inside((root / member.linkname).resolve(), root):
            raise UnsafeArchive(f"hard link {name!r} -> {member.linkname!r} points outside the unpack root")


def _inside(path, root):
    return path == root or root in path.parents


def _check_area(root, workdir, exe):
    wd, exe_path = root / workdir, root / exe
    if not _inside(wd.resolve(), root) or not wd.is_dir():
        raise ExecutableMissing(f"software workdir {workdir} is not a directory in the tarball")
    if not _inside(exe_path.resolve(), root) or not exe_path.is_file():
        raise ExecutableMissing(f"software executable {exe} is not in the tarball")
    if not os.access(exe_path, os.X_OK):
        raise ExecutableMissing(f"software executable {exe} is not executable")
    return SoftwareArea(root=root, workdir=wd, exe=exe_path)
