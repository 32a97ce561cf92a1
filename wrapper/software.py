"""Software stage-in (seed: "copy software to WN"): fetch the tarball by LFN, verify, unpack safely.

The tarball's replicas come from the catalog, the local site's first; its
adler32 (the job description's) is checked before anything is unpacked.
With `SEVERUS_CACHE` set, verified tarballs are kept under
`$SEVERUS_CACHE/software/<adler32>-<name>`: filled under an flock through a
temporary name and an atomic rename, so two jobs filling it at once download
once and nobody ever reads a half-written file.
"""
import fcntl
import os
import posixpath
import shutil
import tarfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

from shared.errors import (ExecutableMissing, SoftwareChecksumMismatch, SoftwareError,
                           SoftwareNotFound, SoftwareUnpackError, UnsafeArchive)
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
    tarball = _fetch_tarball(ctx, Sources(ctx, transfer_factory), entry, sw.adler32)
    root = Path(ctx.workdir) / SOFTWARE_DIR
    unpack_safely(tarball, root)
    if not os.environ.get("SEVERUS_CACHE"):
        tarball.unlink()   # the unpacked tree is what the job needs; free the scratch
    return _check_area(root, sw.workdir, sw.exe)


def _fetch_tarball(ctx, sources, entry, adler32):
    name = posixpath.basename(entry.lfn)
    cache = os.environ.get("SEVERUS_CACHE")
    if not cache:
        dest = Path(ctx.workdir) / ".severus" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        _download(ctx, sources, entry, dest, adler32)
        ctx.facts["software"] = {"lfn": entry.lfn, "cache": "off"}
        return dest
    cache_dir = Path(cache) / "software"
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"{adler32}-{name}"
    with open(cache_dir / f"{adler32}.lock", "a") as lock:
        # Blocks while another job fills this entry; afterwards it finds the file ready.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_file():
            if adler32_file(final) == adler32:
                ctx.log.info("software %s from the node cache %s", entry.lfn, final)
                ctx.facts["software"] = {"lfn": entry.lfn, "cache": "hit", "path": str(final)}
                return final
            ctx.log.warning("cached %s is damaged; fetching it again", final)
            final.unlink()
        tmp = cache_dir / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            _download(ctx, sources, entry, tmp, adler32)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
    ctx.facts["software"] = {"lfn": entry.lfn, "cache": "filled", "path": str(final)}
    return final


def _download(ctx, sources, entry, dest, adler32):
    try:
        fetch_entry(ctx, sources, entry, dest, adler32=adler32)
    except TransferError as exc:
        cls = {"not_found": SoftwareNotFound, "checksum": SoftwareChecksumMismatch}.get(exc.kind, SoftwareError)
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
