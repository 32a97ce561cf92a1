"""A copy as the stages make it: the size-based timeout, retries with backoff, and one attempt
record per try, so the final report shows the exact transfer that failed."""
import time

from .errors import TransferError
from .progress import watched
from .timeouts import check_cancel


def copy_with_retries(transfer, direction, source, destination, *, size, config, record,
                      adler32=None, verify=None, cancel=None, progress=None):
    """Copy (direction "in" or "out") with the size-based timeout, retries and backoff;
    `verify(adler32)` may raise TransferError after a copy; return the verified adler32.
    `cancel` (an Event) ends the running try at once (recorded) and the backoff, with
    TransferError("cancelled"); set before the call, nothing is tried and nothing recorded.
    Each try is watched (wrapper/transfer/progress.py): its bytes go to `progress` (the job's,
    for heartbeats), and a try that moved nothing for `config.stall_s` ends as a "timeout"."""
    timeout = config.timeout_for(size)
    tries = 1 + int(config.retries)
    remote = source if direction == "in" else destination
    check_cancel(cancel, f"copy {source} -> {destination}")
    for n in range(tries):
        start = time.monotonic()
        error = None
        try:
            probe = transfer.progress_probe(direction, source, destination)
            with watched(f"copy {source} -> {destination}", probe, size, config.stall_s, progress,
                         cancel) as copy_cancel:
                if direction == "in":
                    value = transfer.copy_in(source, destination, timeout, adler32=adler32, cancel=copy_cancel)
                else:
                    value = transfer.copy_out(source, destination, timeout, adler32=adler32, cancel=copy_cancel)
            if verify is not None:
                verify(value)
            return value
        except TransferError as exc:
            error = exc
            # A missing source stays missing; a cancelled copy is not tried again; a refused
            # credential stays refused; everything else may be a passing fault.
            if exc.kind in ("not_found", "cancelled", "auth") or n == tries - 1:
                raise
        finally:
            record(attempt_record(transfer.tool_for(remote), direction, source, destination,
                                  time.monotonic() - start, size, error, timeout=round(timeout, 3)))
        backoff = config.backoff_s * (2 ** n)
        if cancel is None:
            time.sleep(backoff)
        elif cancel.wait(backoff):
            raise TransferError("cancelled", f"copy {source} -> {destination}: cancelled after try {n + 1}"
                                             f" of {tries} failed ({error})")
    raise AssertionError("unreachable")


def attempt_record(tool, direction, source, destination, seconds, size, error, **extra):
    """One transfer attempt as the final report carries it."""
    return dict({"tool": tool, "direction": direction, "source": str(source),
                 "destination": str(destination), "seconds": round(seconds, 3), "size": size,
                 "error": None if error is None else str(error)}, **extra)
