"""Output stage-out and registration (seed: "copy output files in the SE and register them").

Each file is uploaded to `<url>.severus-upload`, its size and adler32 are
read back as the SE computes them, and only then is it renamed to its
final name. Target sites: `output.sites` (the local site first when listed;
the local site when the list is empty), then the site's `fallback_sites`.
All or nothing: if one file cannot be stored anywhere, the ones already
stored are removed. Registration, after verification, names the site where
each file really went.
"""
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from shared.errors import NoOutputsMatched, OutputChecksumMismatch, StageOutError
from .access import SiteAccesses
from .catalog import Catalog
from .transfer import TransferError, copy_with_retries, make_transfer

UPLOAD_SUFFIX = ".severus-upload"


@dataclass(frozen=True)
class StoredFile:
    lfn: str
    site: str       # where the file really went (maybe a fallback site)
    surl: str       # the name registered in the catalog
    url: str        # the URL or path written through this node's access
    size: int
    adler32: str
    path: Path      # the local file


def match_outputs(ctx):
    """Regular files directly in the work dir matching `output.patterns`; none → 042."""
    workdir = Path(ctx.workdir)
    found = sorted({p for pattern in ctx.desc.output.patterns for p in workdir.glob(pattern)
                    if p.is_file() and not p.name.endswith(".part")})
    if not found:
        raise NoOutputsMatched(f"no file in {workdir} matches {', '.join(ctx.desc.output.patterns)}")
    return found


def output_sites(ctx):
    """Sites to store outputs at, in order of preference."""
    local = ctx.site.name
    wanted = list(ctx.desc.output.sites) or [local]
    if local in wanted:
        wanted.remove(local)
        wanted.insert(0, local)
    ordered = []
    for name in wanted + list(ctx.site.fallback_sites):
        if name not in ordered:
            ordered.append(name)
    return ordered


class Targets:
    """The sites to write to, in order, each one's write access probed once, on first use."""

    def __init__(self, ctx, sites, transfer_factory=make_transfer):
        self.sites = list(sites)
        self.accesses = SiteAccesses(ctx, "write", transfer_factory)

    def access(self, site_name):
        return self.accesses.get(site_name)


def store_file(ctx, targets, path, lfn, adler32=None):
    """Upload one file to the first target site that takes it, verified; return a StoredFile."""
    path = Path(path)
    size = path.stat().st_size
    failures = []
    for site_name in targets.sites:
        access = targets.access(site_name)
        if access is None:
            failures.append((site_name, "failed", "no write access"))
            continue
        final = access.url(lfn)
        tmp = final + UPLOAD_SUFFIX
        transfer = access.transfer

        def verify(_, transfer=transfer, tmp=tmp):
            # copy_out compared the SE's adler32 with the file's; the size is the SE's too.
            st = transfer.stat(tmp)
            if st.size != size:
                raise TransferError("checksum", f"{tmp}: the SE holds {st.size} bytes, sent {size}")

        try:
            stored_adler32 = copy_with_retries(transfer, "out", path, tmp, size=size, config=ctx.site.transfer,
                                               record=ctx.transfers.append, adler32=adler32, verify=verify)
            _replace(transfer, tmp, final)
        except TransferError as exc:
            ctx.log.warning("stage-out of %s to %s failed: %s", path.name, site_name, exc.message)
            failures.append((site_name, exc.kind, exc.message))
            _delete_quietly(transfer, tmp)
            continue
        if site_name != ctx.site.name:
            ctx.note(f"{lfn} stored at fallback site {site_name}")
        return StoredFile(lfn=lfn, site=site_name, surl=access.surl(lfn), url=final,
                          size=size, adler32=stored_adler32, path=path)
    detail = f"{path.name}: " + "; ".join(f"{s}: {m}" for s, _, m in failures) if failures else "no target sites"
    if failures and all(kind == "checksum" for _, kind, _ in failures):
        raise OutputChecksumMismatch(detail)
    raise StageOutError(detail)


def stage_outputs(ctx, paths, transfer_factory=make_transfer):
    """Store every output below `output.lfn_dir`, all or nothing; return where each went."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise NoOutputsMatched(f"no output files (patterns {', '.join(ctx.desc.output.patterns)})")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise StageOutError("two outputs have the same file name")
    targets = Targets(ctx, output_sites(ctx), transfer_factory)
    lfn_dir = ctx.desc.output.lfn_dir.rstrip("/")
    failed = threading.Event()

    def one(path):
        if failed.is_set():
            return None
        try:
            return store_file(ctx, targets, path, f"{lfn_dir}/{path.name}")
        except StageOutError:
            failed.set()
            raise

    with ThreadPoolExecutor(max_workers=max(1, min(ctx.site.transfer.parallel, len(paths))),
                            thread_name_prefix="severus-stageout") as pool:
        futures = [pool.submit(one, p) for p in paths]
        results = [(f.result() if f.exception() is None else f.exception()) for f in futures]
    stored = [r for r in results if isinstance(r, StoredFile)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors or len(stored) != len(paths):
        remove_stored(ctx, targets, stored)
        raise errors[0] if errors else StageOutError("stage-out stopped early")
    ctx.facts["outputs"] = [{"lfn": s.lfn, "site": s.site, "surl": s.surl, "size": s.size,
                             "adler32": s.adler32} for s in stored]
    return stored


def remove_stored(ctx, targets, stored):
    """Undo a partial stage-out: nobody must mistake half a job's outputs for a result."""
    for s in stored:
        access = targets.access(s.site)
        if access is not None:
            _delete_quietly(access.transfer, s.url)
            ctx.log.info("removed %s from %s (all-or-nothing stage-out)", s.url, s.site)


def register_outputs(ctx, stored, catalog=None):
    """Register each verified replica at the site where it really went; 043 when it fails."""
    catalog = catalog or Catalog(ctx.server)
    for s in stored:
        catalog.register(s.lfn, s.site, s.surl, s.size, s.adler32)
        ctx.log.info("registered %s at %s (%s)", s.lfn, s.site, s.surl)


def _replace(transfer, tmp, final):
    try:
        transfer.rename(tmp, final)
    except TransferError as exc:
        if exc.kind == "not_found":
            raise
        # Some doors refuse to rename onto an existing name (an earlier attempt's file).
        _delete_quietly(transfer, final)
        transfer.rename(tmp, final)


def _delete_quietly(transfer, url):
    try:
        transfer.delete(url)
    except TransferError:
        pass
