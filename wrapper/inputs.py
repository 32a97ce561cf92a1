"""Input stage-in (seed modes DIR / FILE / LIST / NONE), and fetching any catalogued file.

Inputs land in `ctx.workdir / "inputs"` (FILE and LIST: by file name; DIR: by
path below the directory), never directly in the work dir, so that input
files can never be mistaken for outputs by the output patterns. The payload
runs in `ctx.workdir` and is given the returned paths.

Each file is copied to `<name>.part` (a bulk xrdcp: to a hidden staging
directory beside it) and renamed to `<name>` only once its adler32 matches
the catalog's (or, for files the catalog does not know, the SE's);
up to `site.transfer.parallel` files move at once; replicas at the local
site come first. Many files move in bulk (one `xrdcp --parallel N` for
root://, one gfal2 bulk copy per worker otherwise); the catalog lookups of a
long list run `parallel` at once too.
"""
import os
import posixpath
import shutil
import threading
import time
from pathlib import Path

from shared.errors import (InputAuthRefused, InputChecksumMismatch, InputError, InputNotFound, ScratchSpaceError,
                           SiteConfigError)
from .access import SiteAccesses
from .catalog import Catalog, FileEntry, Replica
from .client import ServerError
from .pool import run_all
from .transfer import (TransferError, attempt_record, bulk_transfer_for, copy_with_retries, make_transfer,
                       part_path, watched)

INPUT_DIR = "inputs"
GB = 1e9
BULK_MIN_FILES = 8   # fewer files: per-file copies in parallel are as quick


class Sources:
    """Where a catalogued file can be read from; each site's access is probed once."""

    def __init__(self, ctx, transfer_factory=make_transfer):
        self.ctx = ctx
        self.transfer_factory = transfer_factory
        self.accesses = SiteAccesses(ctx, "read", transfer_factory)

    def access(self, site_name):
        return self.accesses.get(site_name)

    def candidates(self, entry):
        """(transfer, url) pairs to try for `entry`: the local site's replica first, each through
        this node's access to its SE (the replica's SURL names the physical file, which for an
        output is not its LFN's: `<name>.<attempt>`), else the SURL itself."""
        local = self.ctx.site.name
        replicas = sorted(entry.replicas, key=lambda r: r.site != local)
        for replica in replicas:
            access = self.access(replica.site)
            if access is not None:
                try:
                    yield access.transfer, access.reach(replica.surl, entry.lfn)
                    continue
                except SiteConfigError:   # neither the SURL nor the LFN is below that SE: the SURL
                    pass
            yield self.transfer_factory(replica.surl, self.ctx.site.transfer.tool), replica.surl


def fetch_entry(ctx, sources, entry, dest, adler32=None):
    """Copy a catalogued file to `dest` through `<dest>.part`, verified against `adler32`
    (default: the catalog's); raise TransferError whose kind sums up every replica's failure."""
    dest = Path(dest)
    part = part_path(dest)
    expected = adler32 or entry.adler32
    kinds, last = [], None
    for transfer, url in sources.candidates(entry):
        try:
            copy_with_retries(transfer, "in", url, part, size=entry.size, config=ctx.site.transfer,
                              record=ctx.transfers.append, adler32=expected, cancel=ctx.cancel,
                              progress=ctx.progress)
            os.replace(part, dest)
            return dest
        except TransferError as exc:
            if exc.kind == "cancelled":
                raise   # the job is being stopped: no other replica
            kinds.append(exc.kind)
            last = exc
            ctx.log.warning("%s from %s: %s", entry.lfn, url, exc.message)
        finally:
            if part.exists():
                part.unlink()
    if last is None:
        raise TransferError("not_found", f"{entry.lfn}: no replica in the catalog")
    # A bad checksum anywhere means the data is damaged; all not_found means it is gone.
    kind = "checksum" if "checksum" in kinds else ("not_found" if set(kinds) == {"not_found"} else last.kind)
    raise TransferError(kind, f"{entry.lfn}: every replica failed, last: {last.message}")


def stage_inputs(ctx, catalog=None, transfer_factory=make_transfer):
    """Copy the job's inputs below ctx.workdir/inputs; return their paths in order."""
    spec = ctx.desc.input
    if spec.mode == "NONE":
        return []
    catalog = catalog or Catalog(ctx.server)
    sources = Sources(ctx, transfer_factory)
    planned = _plan(ctx, catalog, sources, spec)
    root = Path(ctx.workdir) / INPUT_DIR
    root.mkdir(parents=True, exist_ok=True)
    check_free_space(root, sum(e.size for e, _ in planned), ctx.site.min_free_gb)
    ctx.log.info("stage-in: %d files, %d bytes, %d at once", len(planned),
                 sum(e.size for e, _ in planned), ctx.site.transfer.parallel)
    items = [(entry, root / rel) for entry, rel in planned]
    if len(items) >= BULK_MIN_FILES and len(items) > ctx.site.transfer.parallel:
        items = _bulk_pass(ctx, sources, items)
    _file_pass(ctx, sources, items)
    ctx.facts["inputs"] = {"files": len(planned), "bytes": sum(e.size for e, _ in planned)}
    return [root / rel for _, rel in planned]


def _parallel(ctx, fn, jobs, name):
    """fn(job) for every job, `transfer.parallel` at once; the results in order. A stop ends it
    at once (pool.Cancelled): queued copies never start, running ones are cancelled."""
    return run_all(fn, jobs, ctx.site.transfer.parallel, ctx.cancel, name)


def _bulk_pass(ctx, sources, items):
    """Many files: each worker hands its share to one bulk copy from the first replica;
    return the items that still need the per-file path (retries, other replicas)."""
    groups, leftover = {}, []
    for entry, dest in items:
        first = next(iter(sources.candidates(entry)), None)
        if first is None:
            leftover.append((entry, dest))
            continue
        transfer, url = first
        groups.setdefault(id(transfer), (transfer, []))[1].append((entry, dest, url))
    chunks = []
    parallel = ctx.site.transfer.parallel
    for transfer, members in groups.values():
        bulk = bulk_transfer_for(transfer, members[0][2])
        n = 1 if bulk.bulk_parallel else max(1, min(parallel, len(members)))
        chunks += [(bulk, members[k::n]) for k in range(n)]

    def run(chunk):
        transfer, members = chunk
        start = time.monotonic()
        try:
            size = sum(e.size for e, _, _ in members)
            timeout = ctx.site.transfer.timeout_for(size)
            # Watched as one copy: its bytes in the heartbeats, given up when they stall (then each file alone).
            probe = transfer.bulk_progress_probe([(dest, e.size) for e, dest, _ in members])
            with watched(f"bulk copy of {len(members)} files", probe, size, ctx.site.transfer.stall_s,
                         ctx.progress, ctx.cancel) as cancel:
                # Each file appears at its destination only verified (copy_in_many's promise).
                results = transfer.copy_in_many([(url, dest, e.adler32) for e, dest, url in members],
                                                timeout, parallel=parallel, sizes=[e.size for e, _, _ in members],
                                                cancel=cancel)
        except TransferError as exc:
            results = [exc] * len(members)
        seconds = time.monotonic() - start
        failed = []
        for (entry, dest, url), error in zip(members, results):
            ctx.transfers.append(attempt_record(transfer.tool_for(url), "in", url, dest, seconds, entry.size,
                                                error, bulk=len(members)))
            if error is not None:
                ctx.log.warning("%s from %s: %s (trying again alone)", entry.lfn, url, error.message)
                failed.append((entry, dest))
        return failed

    for error, failed in _parallel(ctx, run, chunks, "bulk"):
        if error is not None:
            raise error
        leftover += failed
    return leftover


def _file_pass(ctx, sources, items):
    """Each file on its own, every replica in turn, with retries; stop early on the first failure."""
    failed = threading.Event()

    def one(item):
        entry, dest = item
        if failed.is_set():
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            return fetch_entry(ctx, sources, entry, dest)
        except TransferError:
            failed.set()   # the job fails anyway: do not start the remaining copies
            raise

    for (entry, _), (error, _) in zip(items, _parallel(ctx, one, items, "stagein")):
        if error is not None:
            raise _input_error(entry.lfn, error)


def check_free_space(directory, needed_bytes, min_free_gb):
    """Refuse (003) when the scratch cannot hold `needed_bytes` plus the site's margin."""
    free = shutil.disk_usage(directory).free
    want = needed_bytes + min_free_gb * GB
    if free < want:
        raise ScratchSpaceError(f"{directory}: {free / GB:.2f} GB free, need {needed_bytes / GB:.2f} GB"
                                f" + {min_free_gb:g} GB margin")


def _input_error(lfn, error):
    if isinstance(error, TransferError):
        cls = {"not_found": InputNotFound, "checksum": InputChecksumMismatch,
               "auth": InputAuthRefused}.get(error.kind, InputError)
        return cls(error.message)
    return error


def _plan(ctx, catalog, sources, spec):
    """[(FileEntry, relative destination)] for the job's input spec."""
    try:
        if spec.mode == "DIR":
            lfn_dir = spec.paths[0].rstrip("/")
            entries = catalog.files_under(lfn_dir) or _list_on_se(ctx, sources, lfn_dir)
            if not entries:
                raise InputNotFound(f"{lfn_dir}: no files in the catalog or on the SE")
            return [(e, posixpath.relpath(e.lfn, lfn_dir)) for e in entries]
        planned = []
        for lfn, entry in zip(spec.paths, _lookups(ctx, catalog, spec.paths)):
            entry = entry or _stat_on_se(ctx, sources, lfn)
            if entry is None:
                raise InputNotFound(f"{lfn}: not in the catalog nor on the SE of {ctx.site.name}")
            planned.append((entry, posixpath.basename(lfn)))
    except ServerError as exc:
        raise InputError(f"catalog: {exc}") from None
    names = [rel for _, rel in planned]
    if len(set(names)) != len(names):
        raise InputError("two inputs have the same file name: " +
                         ", ".join(sorted({n for n in names if names.count(n) > 1})))
    return planned


def _lookups(ctx, catalog, lfns):
    """catalog.replicas() of each LFN, `transfer.parallel` requests at once: one round trip
    per file to the server is the slow part of planning a long LIST. Each worker takes the
    next LFN itself: a pool task per LFN costs more than a fast lookup (2-core node: 5-50 ms
    for 500 LFNs)."""
    if len(lfns) < 2:
        return [catalog.replicas(lfn) for lfn in lfns]
    results = [None] * len(lfns)
    pending = iter(enumerate(lfns))
    lock, failed = threading.Lock(), threading.Event()

    def work():
        while not failed.is_set():
            with lock:
                i, lfn = next(pending, (None, None))
            if i is None:
                return
            try:
                results[i] = catalog.replicas(lfn)
            except BaseException:
                failed.set()   # the plan fails anyway: no more requests
                raise

    workers = max(1, min(ctx.site.transfer.parallel, len(lfns)))
    for error, _ in run_all(lambda _: work(), range(workers), workers, ctx.cancel, "catalog"):
        if error is not None:
            raise error
    return results


def _stat_on_se(ctx, sources, lfn):
    """A FileEntry for an LFN the catalog lacks, from the local SE itself (size and adler32)."""
    access = sources.access(ctx.site.name)
    if access is None:
        return None
    url = access.url(lfn)
    try:
        st = access.transfer.stat(url)
        if st.is_dir:
            return None
        return FileEntry(lfn, st.size, access.transfer.checksum(url), (Replica(ctx.site.name, url),))
    except TransferError as exc:
        if exc.kind == "not_found":
            return None
        raise _input_error(lfn, TransferError(exc.kind if exc.kind == "auth" else "failed",
                                              f"{lfn}: {exc.message}")) from None


def _list_on_se(ctx, sources, lfn_dir):
    """Every file below `lfn_dir` on the local SE, for directories the catalog does not know."""
    access = sources.access(ctx.site.name)
    if access is None:
        return []
    entries, pending = [], [lfn_dir]
    try:
        while pending:
            current = pending.pop()
            for name in access.transfer.listdir(access.url(current)):
                lfn = f"{current}/{name}"
                if access.transfer.stat(access.url(lfn)).is_dir:
                    pending.append(lfn)
                else:
                    entries.append(_stat_on_se(ctx, sources, lfn))
    except TransferError as exc:
        if exc.kind == "not_found":
            return []
        raise _input_error(lfn_dir, TransferError(exc.kind if exc.kind == "auth" else "failed",
                                                  f"{lfn_dir}: {exc.message}")) from None
    return sorted((e for e in entries if e is not None), key=lambda e: e.lfn)
