"""Work a stop or a deadline can leave behind: the stages' thread pools, bounded calls.

`ThreadPoolExecutor` as a context manager waits for every queued task on the way
out, so a batch system's SIGTERM during a stage-in of 8 files was acted on after
all 8 were copied. `run_all` waits for the tasks *or* the job's cancel event
(set by a stop): queued tasks are then dropped, running ones see the same event
(transfers end at once, see wrapper/transfer/timeouts.py) and are given `settle_s` to
return, after which the caller goes on without them.
"""
import concurrent.futures
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("severus.pool")

POLL_S = 0.05        # how often the caller looks at the cancel (an Event cannot wake a futures wait)
SETTLE_S = 5.0       # how long running tasks get to end after a cancel


class Cancelled(Exception):
    """The job's cancel was set while tasks ran or waited; the stage ends with the stop's code."""


def run_all(fn, items, workers, cancel=None, name="task", settle_s=SETTLE_S):
    """fn(item) for each item, `workers` at once; [(error, result)] in the order of `items`
    (error None on success). Raise Cancelled when `cancel` is set before all are done."""
    items = list(items)
    if not items:
        return []
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))), thread_name_prefix=f"severus-{name}")
    try:
        futures = [pool.submit(fn, item) for item in items]
        pending = set(futures)
        while pending:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"{name}: stopped with {len(pending)} of {len(futures)} unfinished")
            _, pending = concurrent.futures.wait(pending, timeout=POLL_S if cancel is not None else None)
        return [(f.exception(), None if f.exception() else f.result()) for f in futures]
    except Cancelled:
        for f in futures:
            f.cancel()   # the queued ones never start
        running = [f for f in futures if not f.done()]
        _, late = concurrent.futures.wait(running, timeout=settle_s)
        if late:
            log.warning("%s: %d task(s) still running %.0f s after the stop: left behind", name, len(late), settle_s)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def call_within(timeout, fn, *args):
    """fn(*args) on a daemon thread; its value, its exception, or TimeoutError when `timeout`
    passes first (a hung mount or a silent SE door must not hold the job: the call is left behind)."""
    result = {}

    def run():
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller's thread below
            result["error"] = exc

    thread = threading.Thread(target=run, name="severus-bounded-call", daemon=True)
    thread.start()
    thread.join(max(0.0, timeout))
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")
