"""Runs the stages of one job in order and turns what happened into an Outcome.

    RUNNING-01 node checks  → 02 software → 03 inputs → 04 payload
    → 05 outputs → 06 register → 07 log (always attempted) → final event

The first error decides the job's status and code; later steps that make no
sense after it are skipped, but the log is uploaded whatever happened (PanDA
and DIRAC users ask for the log of the failed job most of all). A stop
request (the wrapper's own signal, the server's kill command, a superseded
attempt) is a `Stop`: the payload watchdog and the step boundaries look at it.
"""
import json
import logging
import os
import select
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from shared.errors import (AttemptSuperseded, LogUploadError, NoOutputsMatched, PayloadError,
                           ScratchSpaceError, NodeCheckError, SeverusError, WrapperError,
                           WrapperSignalled, lookup)
from shared.events import MAX_REPORT_BYTES
from shared.states import Step

from . import payload as payload_mod

log = logging.getLogger("severus.runner")

TIMING_NAMES = {Step.NODE_CHECKS: "node_checks", Step.SOFTWARE: "software", Step.INPUTS: "inputs",
                Step.PAYLOAD: "payload", Step.OUTPUTS: "outputs", Step.REGISTER: "register",
                Step.LOG: "log"}
STDERR_TAIL_LINES = 50
# How long a payload's death by a signal waits for the wrapper's own signal (see _batch_stop).
BATCH_SIGNAL_SETTLE_S = 2.0
SCRATCH_FULL_BYTES = 1 << 20   # less free than this after a payload failure: it ran out of scratch


class Stop:
    """A stop request, safe to make from a signal handler or another thread.

    The first request wins (`error`). A byte written to a pipe wakes the payload
    watchdog at once. While `interruptible` is set (long stage-in/out), a
    request from a signal handler also raises in the main thread, so a batch
    system's TERM is acted on within its grace period.
    """

    def __init__(self):
        self.error: Optional[SeverusError] = None
        self.interruptible = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)

    def fileno(self):
        return self._r

    def request(self, error: SeverusError):
        if self.error is None:
            self.error = error
        try:
            os.write(self._w, b"x")
        except (BlockingIOError, OSError):
            pass

    def from_signal(self, signum, frame=None):
        """Signal handler: SIGTERM/SIGINT/SIGUSR1 from the batch system → 060."""
        name = _signal_name(signum)
        self.request(WrapperSignalled(f"received {name}", signal=signum))
        if self.interruptible:
            self.interruptible = False
            raise self.error

    def check(self):
        """Raise the pending stop request, if any (called at step boundaries)."""
        if self.error is not None:
            raise self.error

    def close(self):
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


def _signal_name(signum):
    import signal
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@dataclass(frozen=True)
class Outcome:
    """How the job ended: the code is the wrapper's exit code."""
    code: int
    status: str
    message: str
    report: dict = field(default_factory=dict)
    delivered: bool = False      # the final event reached the server


class _Job:
    """The state of one run: what each step produced and the first error."""

    def __init__(self, ctx, reporter, stop, watch_overrides):
        self.ctx = ctx
        self.reporter = reporter
        self.stop = stop
        self.watch_overrides = watch_overrides
        self.timings = {}
        self.error: Optional[SeverusError] = None
        self.failed_step: Optional[str] = None
        self.area = None
        self.inputs = []
        self.watch: Optional[payload_mod.PayloadWatch] = None
        self.result: Optional[payload_mod.PayloadResult] = None
        self.outputs = []
        self.stored = []
        self.log_file = None
        self.log_error: Optional[str] = None
        self.start = time.monotonic()

    def probe(self):
        """Metrics and stdout tail for heartbeats (called from the sender thread)."""
        metrics = {"wrapper_wct_s": round(time.monotonic() - self.start, 1)}
        watch = self.watch
        if watch is not None:
            metrics.update(watch.snapshot())
            return metrics, watch.stdout_tail(20)
        return metrics, []

    def run_step(self, step, func):
        """Run one step with its event and timing; record the first error."""
        self.reporter.step(step)
        began = time.monotonic()
        try:
            self.stop.check()
            func()
        except SeverusError as exc:
            self._fail(step, exc)
        except Exception as exc:  # a bug in a stage: still report and upload the log
            log.error("unexpected error in %s:\n%s", step, traceback.format_exc())
            self._fail(step, WrapperError(f"{type(exc).__name__}: {exc}"))
        finally:
            self.stop.interruptible = False
            self.timings[TIMING_NAMES[step]] = round(time.monotonic() - began, 3)

    def _fail(self, step, exc):
        log.error("%s failed: %s", step, exc.one_line())
        if self.error is None:
            self.error, self.failed_step = exc, str(step)

    # ------------------------------------------------------------------ the steps

    def node_checks(self):
        ws = self.ctx.workdir
        probe = ws / ".severus-write-test"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise NodeCheckError(f"scratch {ws} is not writable: {exc.strerror}") from None
        free_gb = shutil.disk_usage(ws).free / 1e9
        self.ctx.facts["scratch_free_gb"] = round(free_gb, 2)
        if free_gb < self.ctx.site.min_free_gb:
            raise ScratchSpaceError(f"{free_gb:.1f} GB free in {ws}, the site asks for "
                                    f"{self.ctx.site.min_free_gb:g} GB")

    def software(self):
        from .software import stage_software
        self.stop.interruptible = True
        self.area = stage_software(self.ctx)

    def stage_inputs(self):
        from .inputs import stage_inputs
        self.stop.interruptible = True
        self.inputs = list(stage_inputs(self.ctx))

    def payload(self):
        d = self.ctx.desc
        module = payload_mod.find_module(d.payload.module)
        area = self.area
        # The payload runs in the job's work dir, where stage-out looks for its outputs.
        job = payload_mod.PayloadJob(desc=d, exe=Path(area.exe), software_root=Path(area.root),
                                     software_workdir=Path(area.workdir), cwd=self.ctx.workdir,
                                     inputs=tuple(Path(p) for p in self.inputs))
        spec = module.build(job)
        self.ctx.facts["payload_module"] = module.name
        config = payload_mod.WatchConfig.from_limits(d.limits, **self.watch_overrides)
        self.watch = payload_mod.PayloadWatch(spec, config, self.ctx.workdir, self.stop)
        try:
            self.result = self.watch.run()
        except PayloadError as exc:
            stopped = self._batch_stop(exc)
            if stopped is not None:
                raise stopped from None
            ws = self.ctx.workdir
            if shutil.disk_usage(ws).free >= SCRATCH_FULL_BYTES:
                raise
            # The payload died with the disk full: the site's scratch problem, not the user's.
            for pattern in d.output.patterns:   # never staged out now; room for the log tarball
                for path in ws.glob(pattern):
                    if path.is_file():
                        path.unlink()
            raise ScratchSpaceError(f"the payload failed ({exc}) with the scratch {ws} full",
                                    **exc.data) from None

    def _batch_stop(self, exc):
        """The batch system's stop when it, not the payload, ended the payload; else None.

        `scancel` and friends signal every process of the job at once, so the
        payload may die of the TERM before the wrapper's own handler has run.
        A payload that died of a signal (or exited 128+N, as shells do) is
        given a moment for the wrapper's signal to arrive: that is a site-side
        stop (060), not the user's failure (031/030).
        """
        exit_code = exc.data.get("exit_code") or 0
        if self.stop.error is None and (exc.data.get("signal") or exit_code > 128):
            select.select([self.stop], [], [], BATCH_SIGNAL_SETTLE_S)
        return self.stop.error if isinstance(self.stop.error, WrapperSignalled) else None

    def stage_outputs(self):
        from .stageout import match_outputs, stage_outputs
        self.outputs = match_outputs(self.ctx)
        self.stop.interruptible = True
        self.stored = list(stage_outputs(self.ctx, self.outputs))

    def register(self):
        from .stageout import register_outputs
        self.stop.interruptible = True
        register_outputs(self.ctx, self.stored)

    def upload_log(self):
        from .joblog import upload_log
        files = [p for p in self.log_files() if p.is_file()]
        self.log_file = upload_log(self.ctx, files)

    def log_files(self):
        ws = self.ctx.workdir
        return [ws / "severus.log", ws / "payload.stdout", ws / "payload.stderr",
                Path(self.reporter.journal.path)]

    # ------------------------------------------------------------------ the report

    def outcome(self):
        exc = self.error
        code = exc.code if exc is not None else 0
        entry = lookup(code)
        message = exc.one_line() if exc is not None else "E000 success"
        return code, entry.status, message

    def report(self):
        code, status, message = self.outcome()
        data = dict(self.error.data) if self.error is not None else {}
        watch = self.watch
        metrics = dict(watch.snapshot()) if watch else {}
        metrics["wrapper_wct_s"] = round(time.monotonic() - self.start, 3)
        report = {
            "status": status, "code": code, "message": message,
            "blame": lookup(code).blame, "retryable": lookup(code).retryable,
            "failed_step": self.failed_step,
            "payload": {"exit_code": self.result.exit_code if self.result else data.get("exit_code"),
                        "signal": self.result.signal if self.result else data.get("signal"),
                        "module": self.ctx.facts.get("payload_module")},
            "timings": self.timings,
            "metrics": metrics,
            "stderr_tail": watch.stderr_tail(STDERR_TAIL_LINES) if watch else [],
            "outputs": [_plain(s) for s in self.stored],
            "log": _plain(self.log_file) if self.log_file is not None else None,
            "log_error": self.log_error,
            "transfers": list(self.ctx.transfers),
            "facts": dict(self.ctx.facts),
            "error_data": data,
        }
        return _fit(report)


def _plain(value):
    """Dataclasses, paths and the like as JSON-ready values."""
    return json.loads(json.dumps(value, default=_default))


def _default(value):
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict
        return asdict(value)
    return str(value)


def _fit(report):
    """The report as plain JSON, shrunk (transfers first) to the server's size limit."""
    report = _plain(report)
    for key in ("transfers", "stderr_tail", "outputs"):
        while len(json.dumps(report)) > MAX_REPORT_BYTES and report.get(key):
            dropped = len(report[key]) // 2 or 1
            report[key] = report[key][dropped:]
            report.setdefault("truncated", []).append(key)
    return report


def run_job(ctx, reporter, stop: Optional[Stop] = None, watch_overrides=None) -> Outcome:
    """Run every step of the job; send the final event; return the Outcome."""
    stop = stop or Stop()
    job = _Job(ctx, reporter, stop, dict(watch_overrides or {}))
    reporter.probe = job.probe
    ctx.note = reporter.info
    steps = [(Step.NODE_CHECKS, job.node_checks), (Step.SOFTWARE, job.software),
             (Step.INPUTS, job.stage_inputs), (Step.PAYLOAD, job.payload),
             (Step.OUTPUTS, job.stage_outputs), (Step.REGISTER, job.register)]
    for step, func in steps:
        if job.error is not None:
            break
        job.run_step(step, func)
    if isinstance(job.error, AttemptSuperseded) or reporter.superseded:
        # Another attempt owns the job now: upload nothing, overwrite nothing.
        error = job.error if isinstance(job.error, AttemptSuperseded) else AttemptSuperseded()
        log.error("%s", error.one_line())
        return Outcome(code=error.code, status=lookup(error.code).status,
                       message=error.one_line(), report={}, delivered=False)
    reporter.step(Step.LOG)
    began = time.monotonic()
    try:
        job.upload_log()
    except SeverusError as exc:
        job.log_error = exc.one_line()
        job._fail(Step.LOG, exc)
    except Exception as exc:
        log.error("unexpected error uploading the log:\n%s", traceback.format_exc())
        job.log_error = f"{type(exc).__name__}: {exc}"
        job._fail(Step.LOG, LogUploadError(job.log_error))
    job.timings["log"] = round(time.monotonic() - began, 3)
    code, status, message = job.outcome()
    report = job.report()
    reporter.final(code, message, report)
    delivered = reporter.close()
    if not delivered:
        log.error("the final report was not delivered; the journal %s holds it",
                  reporter.journal.path)
    if reporter.superseded and code != 61:
        code, status = 61, lookup(61).status
        message = AttemptSuperseded().one_line()
    return Outcome(code=code, status=status, message=message, report=report, delivered=delivered)
