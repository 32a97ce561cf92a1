"""The job's log (seed: "copy log in SE and insert it in the DB").

A tarball of the wrapper log, the payload's stdout/stderr and the report
journal goes to `<lfn_dir>/log/<runnum>.<attempt>.log.tgz` on the same SEs as
the outputs (fenced, verified and registered the same way; its LFN already
names the attempt) and, with `log.to_db`, to the server, whose size cap is met
by keeping each file's tail. A killed job's log still goes; a superseded
attempt's does not.
"""
import io
import tarfile
import threading
import time
from pathlib import Path

from shared.errors import AttemptSuperseded, LogUploadAuthRefused, LogUploadError, StageOutAuthRefused, StageOutError
from shared.outputs import log_name as attempt_log_name
from .catalog import Catalog, request_with_retries
from .client import ServerError, ServerRefused
from .stageout import StoredFile, Targets, fence_writes, output_sites, register_outputs, store_file
from .transfer import TransferError, make_transfer

MAX_DB_LOG_BYTES = 8 * 2 ** 20    # the server's default SBK_MAX_LOG_BYTES
# The log's fence and registration wait this long at most for an unreachable server: unregistered,
# the tarball would be one more file to undo, and the journal in the work dir keeps the record.
LOG_SERVER_WAIT_S = 10.0
MIN_TAIL_BYTES = 1024


def log_name(desc):
    """`<runnum>.<attempt>.log.tgz`."""
    return attempt_log_name(desc.job.runnum, desc.job.attempt)


def upload_log(ctx, files, catalog=None, transfer_factory=make_transfer,
               max_db_bytes=MAX_DB_LOG_BYTES, cancel=None) -> StoredFile:
    """Tar the files, store and register the tarball, send it to the server when asked; 050 on failure.
    It runs after a stop too: `cancel` (not the job's, which the stop has set) ends it."""
    desc = ctx.desc
    files = [Path(f) for f in files if Path(f).is_file()]
    tarball = Path(ctx.workdir) / ".severus" / log_name(desc)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    build_log_tarball(tarball, files)
    lfn = f"{desc.output.lfn_dir.rstrip('/')}/log/{tarball.name}"
    problems, stored, refused = [], None, False
    if desc.log.to_db:
        # The server first: one quick PUT, the copy a manager opens from the job monitor; a stop's
        # grace or a silent SE door must not cost it.
        try:
            sent = send_log_to_server(ctx, files, tarball, max_db_bytes)
            ctx.facts.setdefault("log", {})["db_bytes"] = sent
        except ServerError as exc:
            problems.append(f"server: {exc}")
    catalog = catalog or Catalog(ctx.server)
    try:
        cancel = cancel or threading.Event()
        wait_s = min(ctx.site.wrapper.server_wait_s, LOG_SERVER_WAIT_S)
        fence_writes(ctx, catalog, kill_stops=False, cancel=cancel, wait_s=wait_s)
        targets = Targets(ctx, output_sites(ctx), transfer_factory)
        stored = store_file(ctx, targets, tarball, lfn, cancel=cancel)
        register_outputs(ctx, [stored], catalog, cancel=cancel, wait_s=wait_s)
        ctx.facts.setdefault("log", {}).update(lfn=lfn, site=stored.site, surl=stored.surl)
    except (StageOutError, AttemptSuperseded, TransferError) as exc:
        problems.append(f"SE: {exc}")
        refused = isinstance(exc, StageOutAuthRefused) or getattr(exc, "kind", None) == "auth"
    if problems:
        # The SE refusing our credential is the site's to fix (051), whatever the server said.
        raise (LogUploadAuthRefused if refused else LogUploadError)("; ".join(problems))
    return stored


def send_log_to_server(ctx, files, tarball, max_bytes=MAX_DB_LOG_BYTES):
    """PUT the tarball to /jobs/<id>/log, keeping each file's tail while it is over the cap."""
    job = ctx.desc.job
    tail = None
    cut = tarball.with_name(tarball.name + ".tail")
    while True:
        if tarball.stat().st_size <= max_bytes:
            data = tarball.read_bytes()
            try:
                request_with_retries(ctx.server, "PUT", f"/jobs/{job.id}/log",
                                     params={"attempt": job.attempt}, data=data,
                                     content_type="application/gzip")
                return len(data)
            except ServerRefused as exc:
                if exc.status != 413:
                    raise
                max_bytes = len(data) - 1   # the server's cap is lower than ours
        largest = max((f.stat().st_size for f in files), default=0)
        tail = (tail or largest) // 2
        if tail < MIN_TAIL_BYTES:
            raise ServerRefused(413, "too-large", f"log does not fit in {max_bytes} bytes")
        tarball = build_log_tarball(cut, files, tail_bytes=tail)


def build_log_tarball(out, files, tail_bytes=None):
    """Write a gzipped tar of the files by name to `out`; with `tail_bytes`, only each file's end."""
    out = Path(out)
    seen = set()
    with tarfile.open(out, mode="w:gz", compresslevel=6) as tar:
        for path in files:
            name = path.name
            n = 1
            while name in seen:   # two files of the same name from different directories
                n += 1
                name = f"{path.stem}.{n}{path.suffix}"
            seen.add(name)
            if not tail_bytes:
                tar.add(str(path), arcname=name, recursive=False)   # streamed: stdout can be huge
                continue
            with open(path, "rb") as fh:
                size = fh.seek(0, 2)
                start = max(0, size - tail_bytes)
                fh.seek(start)
                content = fh.read()
            if start:
                content = b"[... %d bytes cut: the tail is kept ...]\n" % start + content
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = int(time.time())
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return out
