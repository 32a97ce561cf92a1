"""Output stage-out and registration (seed: "copy output files in the SE and register them").

Outputs are immutable (shared/outputs.py): attempt N writes `<name>.N` on the
SE while the LFN stays `<lfn_dir>/<name>`, so no attempt ever overwrites a file
another attempt wrote. Before its first write the attempt asks the server
whether it is still the job's current one (the fence); registration, all the
outputs in one call, is fenced again by the server itself.

Each file is uploaded to `<physical name>.severus-upload`, its size and adler32
are read back as the SE computes them, and only then is it renamed to its
physical name. Every name is noted in `ctx.writes` before the upload starts.
Target sites: `output.sites` (the local site first when listed; the local site
when the list is empty), then the site's `fallback_sites`.

All or nothing: when the job fails or is stopped after something was written,
`undo_writes` deletes what this attempt wrote and did not register; what it
cannot delete in time (a dead or hung SE) becomes a removal request the server
works off, and a file whose registration may have happened unseen is left to
the server alone, which never deletes a registered file.
"""
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import (AttemptSuperseded, NoOutputsMatched, OutputChecksumMismatch, StageOutAuthRefused,
                           StageOutError)
from shared.outputs import UPLOAD_SUFFIX, physical_name
from .access import SiteAccesses
from .catalog import Catalog, request_until
from .client import ServerError, ServerRefused
from .context import Written
from .pool import Cancelled, call_within, run_all
from .transfer import TransferError, classify_error, copy_with_retries, make_transfer

DELETE_TIMEOUT_S = 10.0    # one delete of the undo, when no stop deadline is nearer
UNDO_BOUND_S = 120.0       # a failed stage-out's own undo (deletes on a hung SE give up one by one)


@dataclass(frozen=True)
class StoredFile:
    lfn: str
    site: str       # where the file really went (maybe a fallback site)
    surl: str       # the name registered in the catalog (the physical file)
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


def fence_writes(ctx, catalog, kill_stops=True, cancel=None, wait_s=None):
    """The fence before an attempt's first SE write (Catalog.fence, by default with the site's wait)."""
    catalog.fence(ctx.desc.job, ctx.site.wrapper.server_wait_s if wait_s is None else wait_s,
                  _cancel(ctx, cancel), kill_stops)


def _cancel(ctx, cancel):
    """The event that ends a transfer or a wait: the job's, unless the caller has its own (the
    log and its registration go on after a stop, until their own deadline)."""
    return ctx.cancel if cancel is None else cancel


def store_file(ctx, targets, path, lfn, physical_lfn=None, cancel=None):
    """Upload one file to the first target site that takes it, verified; return a StoredFile.
    `physical_lfn` names the file on the SE (default: `lfn` itself)."""
    path = Path(path)
    physical_lfn = physical_lfn or lfn
    size = path.stat().st_size
    failures = []
    for site_name in targets.sites:
        access = targets.access(site_name)
        if access is None:
            # The access probe's stat may already have been refused our credential: say so.
            why = ctx.facts.get("access", {}).get(f"{site_name}/write", {}).get("reason") or ""
            failures.append((site_name, "auth" if classify_error(why) == "auth" else "failed",
                             f"no write access{': ' + why if why else ''}"))
            continue
        final, surl = access.url(physical_lfn), access.surl(physical_lfn)
        tmp = final + UPLOAD_SUFFIX
        transfer = access.transfer
        for url, name in ((tmp, surl + UPLOAD_SUFFIX), (final, surl)):   # noted before anything is written
            ctx.writes.note(Written(site_name, url, name, transfer))

        def verify(_, transfer=transfer, tmp=tmp):
            # copy_out compared the SE's adler32 with the file's; the size is the SE's too.
            st = transfer.stat(tmp)
            if st.size != size:
                raise TransferError("checksum", f"{tmp}: the SE holds {st.size} bytes, sent {size}")

        try:
            stored_adler32 = copy_with_retries(transfer, "out", path, tmp, size=size, config=ctx.site.transfer,
                                               record=ctx.transfers.append, verify=verify, progress=ctx.progress,
                                               cancel=_cancel(ctx, cancel))
            _replace(transfer, tmp, final)
        except TransferError as exc:
            ctx.log.warning("stage-out of %s to %s failed: %s", path.name, site_name, exc.message)
            failures.append((site_name, exc.kind, exc.message))
            if exc.kind == "cancelled":
                raise
            _delete_noted(ctx, transfer, [tmp, final])
            continue
        ctx.writes.forget([tmp])   # renamed: only the final name exists now
        if site_name != ctx.site.name:
            ctx.note(f"{lfn} stored at fallback site {site_name}")
        return StoredFile(lfn=lfn, site=site_name, surl=surl, url=final, size=size, adler32=stored_adler32,
                          path=path)
    detail = f"{path.name}: " + "; ".join(f"{s}: {m}" for s, _, m in failures) if failures else "no target sites"
    if failures and all(kind == "checksum" for _, kind, _ in failures):
        raise OutputChecksumMismatch(detail)
    if failures and all(kind == "auth" for _, kind, _ in failures):
        raise StageOutAuthRefused(detail)
    raise StageOutError(detail)


def stage_outputs(ctx, paths, transfer_factory=make_transfer, catalog=None):
    """Store every output below `output.lfn_dir` under this attempt's physical names; return
    where each went. A failure leaves what was written in `ctx.writes` for undo_writes."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise NoOutputsMatched(f"no output files (patterns {', '.join(ctx.desc.output.patterns)})")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise StageOutError("two outputs have the same file name")
    fence_writes(ctx, catalog or Catalog(ctx.server))
    targets = Targets(ctx, output_sites(ctx), transfer_factory)
    lfn_dir = ctx.desc.output.lfn_dir.rstrip("/")
    attempt = ctx.desc.job.attempt

    failed = threading.Event()

    def one(path):
        if failed.is_set():
            return None   # all or nothing: after a failure the queued uploads never start
        try:
            return store_file(ctx, targets, path, f"{lfn_dir}/{path.name}",
                              f"{lfn_dir}/{physical_name(path.name, attempt)}")
        except BaseException:
            failed.set()
            raise

    results = run_all(one, paths, ctx.site.transfer.parallel, ctx.cancel, "stageout")
    errors = [e for e, _ in results if e is not None]
    if ctx.cancel.is_set():
        raise Cancelled("stage-out stopped")   # the runner undoes it, within the stop's grace
    if errors:
        # All or nothing: half a job's outputs must never pass for a result.
        undo_writes(ctx, lambda: time.monotonic() + UNDO_BOUND_S)
        raise errors[0]
    stored = [r for _, r in results]
    ctx.facts["outputs"] = [{"lfn": s.lfn, "site": s.site, "surl": s.surl, "size": s.size,
                             "adler32": s.adler32} for s in stored]
    return stored


def register_outputs(ctx, stored, catalog=None, cancel=None, wait_s=None):
    """Register every verified replica at the site where it really went, in one fenced call;
    the files are then the catalog's, no longer this attempt's to delete."""
    catalog = catalog or Catalog(ctx.server)
    urls = [s.url for s in stored]
    # Sent, the registration may happen whether or not an answer comes back (a stop may even
    # leave this thread behind): until a refusal says otherwise, only the server may delete them.
    ctx.writes.mark_uncertain(urls)
    try:
        catalog.register([(s.lfn, s.site, s.surl, s.size, s.adler32) for s in stored],
                         ctx.site.wrapper.server_wait_s if wait_s is None else wait_s, _cancel(ctx, cancel))
    except (StageOutError, AttemptSuperseded) as exc:
        if not exc.data.get("unknown"):
            ctx.writes.mark_uncertain(urls, False)   # refused: certainly not registered, ours to delete
        raise
    ctx.writes.forget(urls)
    for s in stored:
        ctx.log.info("registered %s at %s (%s)", s.lfn, s.site, s.surl)


def undo_writes(ctx, deadline):
    """Delete what this attempt wrote on SEs and did not register, by `deadline()` (monotonic,
    read again for each file: a stop may bring it nearer); ask the server to remove what could
    not be deleted, or may have been registered unseen. Returns (how many went, [Written] left)."""
    mine, uncertain = ctx.writes.take()
    left = list(uncertain)
    for w in mine:
        remaining = min(deadline() - time.monotonic(), DELETE_TIMEOUT_S)
        try:
            if remaining <= 0:
                raise TimeoutError("no time left")
            call_within(remaining, _delete_if_there, w.transfer, w.url)
            ctx.log.info("removed %s from %s (this attempt's, unregistered)", w.url, w.site)
        except (TransferError, TimeoutError) as exc:
            ctx.log.warning("could not remove %s from %s: %s", w.url, w.site, exc)
            left.append(w)
    if left:
        request_removals(ctx, left, deadline)
    return len(mine) + len(uncertain) - len(left), left


def request_removals(ctx, written, deadline):
    """POST /jobs/<id>/removals; when the server does not answer by `deadline`, the final
    report carries them (`ctx.removals`)."""
    items = [{"site": w.site, "surl": w.surl, "reason": f"attempt {ctx.desc.job.attempt} could not delete it"}
             for w in written]
    try:
        reply = request_until(ctx.server, "POST", f"/jobs/{ctx.desc.job.id}/removals",
                              max(0.0, deadline() - time.monotonic()), body=items)
        ctx.log.info("asked the server to remove %d file(s) (%s filed)", len(items), (reply or {}).get("filed"))
    except ServerRefused as exc:
        ctx.log.error("the server refused the removal of %d file(s): %s", len(items), exc)
    except ServerError as exc:
        ctx.log.warning("removal of %d file(s) not delivered (%s): in the final report", len(items), exc)
        ctx.removals.extend(items)


def _replace(transfer, tmp, final):
    try:
        transfer.rename(tmp, final)
    except TransferError as exc:
        if exc.kind == "not_found":
            raise
        # Some doors refuse to rename onto an existing name: this attempt's own earlier file.
        _delete_if_there(transfer, final)
        transfer.rename(tmp, final)


def _delete_if_there(transfer, url):
    try:
        transfer.delete(url)
    except TransferError as exc:
        if exc.kind != "not_found":
            raise


def _delete_noted(ctx, transfer, urls):
    """Delete this attempt's files of a failed upload; those that stay are left noted for the undo."""
    gone = []
    for url in urls:
        try:
            call_within(DELETE_TIMEOUT_S, _delete_if_there, transfer, url)
            gone.append(url)
        except (TransferError, TimeoutError):
            pass
    ctx.writes.forget(gone)

