"""Runs the stages of one job in order and turns what happened into an Outcome.

    RUNNING-01 node checks  → 02 software → 03 inputs → 04 payload
    → 05 outputs → 06 register → 07 log (always attempted) → final event

The first error decides the job's status and code; later steps that make no
sense after it are skipped; what a failed job wrote on SEs and did not register
is undone (all or nothing); the log is uploaded whatever happened (PanDA and
DIRAC users ask for the log of the failed job most of all).

A stop request (the batch system's signal, the server's kill command, a
superseded attempt) is a `Stop`. Each stage runs on a thread of its own while
the main thread waits for it or for a stop: on a stop the job's cancel event
ends transfers and pools at once, the watchdog kills the payload, and a stage
that does not end within its share of the grace is left behind; the undo, the
log and the final report then fit in the rest of the grace (the site's
`stop_grace_s`, under the batch system's kill wait).
"""
import json
import logging
import os
import select
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from shared.errors import (AttemptSuperseded, KilledByManager, LogUploadError, PayloadError, PayloadFailed,
                           PayloadWallclock, ScratchSpaceError, NodeCheckError, SeverusError, WrapperError,
                           WrapperSignalled, lookup)
from shared.events import MAX_REPORT_BYTES
from shared.states import Step

from . import modules
from . import payload as payload_mod
from .pool import Cancelled
from .siteconfig import check_fallback_sites

log = logging.getLogger("severus.runner")

TIMING_NAMES = {Step.NODE_CHECKS: "node_checks", Step.SOFTWARE: "software", Step.INPUTS: "inputs",
                Step.PAYLOAD: "payload", Step.OUTPUTS: "outputs", Step.REGISTER: "register",
                Step.LOG: "log"}
STDERR_TAIL_LINES = 50
STEP_TAIL_LINES = 20     # a payload step's last stdout lines, in its event and in the final report
# Several payload steps' metrics as one (the job's): times and counts add up, peaks take the largest,
# the rest (current memory, events, output size) are the latest step's.
SUMMED_METRICS = ("wct_s", "cpu_s", "leftover_processes")
PEAK_METRICS = ("max_rss_mb", "max_pss_mb")
# After a stop, the grace (site config `stop_grace_s`) is shared out, as fractions of it: the
# payload's TERM-to-KILL, the stage ending (a left-behind stage is abandoned), the undo of
# what was written, the log upload, and the final report's delivery.
PAYLOAD_SHARE, STAGE_SHARE, UNDO_SHARE, LOG_SHARE, LOG_UNDO_SHARE, FINAL_SHARE = 0.35, 0.5, 0.6, 0.8, 0.85, 0.97
UNDO_S = 120.0   # the undo's bound without a stop (deletes on a hung SE give up one by one)
# How long a payload's death by a signal waits for the wrapper's own signal (see _batch_stop).
BATCH_SIGNAL_SETTLE_S = 2.0
SCRATCH_FULL_BYTES = 1 << 20   # less free than this after a payload failure: it ran out of scratch
# The stages that reach an SE check the grid credential first (wrapper/credentials.py): step ->
# whether the payload is still to come (its wallclock then counts in the lifetime needed).
CREDENTIAL_STEPS = {Step.SOFTWARE: True, Step.INPUTS: True, Step.OUTPUTS: False}


class StageAbandoned(Exception):
    """A stage did not end within its share of the grace after a stop: it was left running."""


class Stop:
    """A stop request (the batch system's signal, the server's kill command, a superseded
    attempt), safe to make from a signal handler or another thread.

    The first request wins (`error`) and starts the grace (`grace_s`, the site's
    `stop_grace_s`): everything after it, the payload's kill, the undo of a partial
    stage-out, the log and the final report, must fit in it. A byte written to a pipe
    wakes the main thread and the payload watchdog at once; a watcher thread turns it
    into `event`, the threading.Event that transfers and pools obey (an Event set from
    a signal handler could deadlock on its own lock).
    """

    def __init__(self, grace_s=20.0):
        self.error: Optional[SeverusError] = None
        self.grace_s = grace_s
        self.requested_at: Optional[float] = None   # monotonic
        self.event = threading.Event()
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self._closed = False
        self._watcher = threading.Thread(target=self._watch, name="severus-stop", daemon=True)
        self._watcher.start()

    def fileno(self):
        return self._r

    def _watch(self):
        select.select([self._r], [], [])
        if not self._closed:
            self.event.set()

    def request(self, error: SeverusError):
        if self.error is None:
            self.error = error
            self.requested_at = time.monotonic()
        try:
            os.write(self._w, b"x")
        except (BlockingIOError, OSError):
            pass

    def from_signal(self, signum, frame=None):
        """Signal handler: SIGTERM/SIGINT/SIGUSR1 from the batch system → 060."""
        self.request(WrapperSignalled(f"received {_signal_name(signum)}", signal=signum))

    def check(self):
        """Raise the pending stop request, if any (called at step boundaries)."""
        if self.error is not None:
            raise self.error

    def deadline(self, share=1.0):
        """The monotonic time by which `share` of the grace is used (infinite before a stop)."""
        if self.requested_at is None:
            return float("inf")
        return self.requested_at + share * self.grace_s

    def run(self, func, name, share=None):
        """func() on a thread of its own, waited for until it ends or a stop comes; after a stop
        it gets until `share` of the grace (STAGE_SHARE: the payload's TERM-to-KILL, transfers
        ending on the cancel), then it is left behind and StageAbandoned raised: whatever the
        stage was blocked in (a hung mount, a silent server) cannot eat the grace. Its exception
        is raised."""
        share = STAGE_SHARE if share is None else share
        done_r, done_w = os.pipe()
        outcome = {}

        def target():
            try:
                func()
            except BaseException as exc:   # handed to the waiting thread below
                outcome["error"] = exc
            finally:
                try:
                    os.write(done_w, b"x")
                except OSError:   # left behind: nobody waits any more
                    pass

        thread = threading.Thread(target=target, name=f"severus-{name}", daemon=True)
        try:
            thread.start()
            while self.error is None:
                if done_r in select.select([self._r, done_r], [], [])[0]:
                    break
            thread.join(max(0.0, self.deadline(share) - time.monotonic()) if self.error else None)
        finally:
            if not thread.is_alive():
                os.close(done_w)
            os.close(done_r)   # a left-behind thread's last write then fails quietly (EBADF/EPIPE)
        if thread.is_alive():
            raise StageAbandoned(f"{name} did not end within {share * self.grace_s:.0f} s of the stop")
        if "error" in outcome:
            raise outcome["error"]

    def close(self):
        self._closed = True
        try:
            os.write(self._w, b"x")   # ends the watcher
        except OSError:
            pass
        self._watcher.join(1.0)
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


class _StepRun:
    """One payload step of the job: its module (found at the node checks), its watch, how it ended."""

    def __init__(self, index, count, step):
        self.index, self.step = index, step
        self.label = f"step {index}/{count} {step.name} ({step.module})"
        self.module: Optional[modules.PayloadModule] = None
        self.watch: Optional[payload_mod.PayloadWatch] = None
        self.code: Optional[int] = None         # None: not run; 0: success; else its error code
        self.exit_code: Optional[int] = None
        self.signal: Optional[int] = None
        self.ended = ""                         # "exit code 0", "E035 exit code 1", ...

    def sample(self):
        """(metrics with the exit code or signal, last stdout lines) of the step as it ended."""
        metrics = self.watch.snapshot() if self.watch else {}
        for key, value in (("exit_code", self.exit_code), ("signal", self.signal)):
            if value is not None:
                metrics[key] = value
        return metrics, (self.watch.stdout_tail(STEP_TAIL_LINES) if self.watch else [])

    def to_report(self):
        metrics, tail = self.sample()
        metrics.pop("exit_code", None)
        metrics.pop("signal", None)
        return {"name": self.step.name, "module": self.step.module, "code": self.code,
                "exit_code": self.exit_code, "signal": self.signal, "metrics": metrics, "tail": tail}


def combine_metrics(parts):
    """The job's payload metrics from its steps' (one step: that step's, unchanged)."""
    out = {}
    for metrics in parts:
        for key, value in metrics.items():
            if key in out and key in SUMMED_METRICS:
                out[key] = round(out[key] + value, 3)
            elif key in out and key in PEAK_METRICS:
                out[key] = max(out[key], value)
            else:
                out[key] = value
    return out


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
        self.watch: Optional[payload_mod.PayloadWatch] = None    # the payload step's running or last
        self.result: Optional[payload_mod.PayloadResult] = None
        # A job of `payload.steps` reports each step (events, report); a single-module job as before.
        self.stepped = bool(ctx.desc.payload.steps)
        planned = ctx.desc.payload.steps_to_run()
        self.runs = [_StepRun(n, len(planned), step) for n, step in enumerate(planned, 1)]
        self.outputs = []
        self.stored = []
        self.log_file = None
        self.log_error: Optional[str] = None
        self.start = time.monotonic()

    def probe(self):
        """Metrics and stdout tail for heartbeats (called from the sender thread)."""
        metrics = {"wrapper_wct_s": round(time.monotonic() - self.start, 1)}
        metrics.update(self.payload_metrics())
        metrics.update(self.ctx.progress.metrics())   # a stage's running copies: bytes moved, of, rate
        watch = self.watch
        return metrics, (watch.stdout_tail(20) if watch is not None else [])

    def payload_metrics(self):
        return combine_metrics([run.watch.snapshot() for run in self.runs if run.watch is not None])

    def step_message(self, step):
        """The step event's message: a job of steps names its first payload step (the label else)."""
        return self.runs[0].label if step == Step.PAYLOAD and self.stepped else ""

    def run_step(self, step, func, message=""):
        """Run one step with its event and timing; record the first error."""
        self.reporter.step(step, message)
        began = time.monotonic()
        try:
            self.stop.check()
            if step in CREDENTIAL_STEPS:
                from .credentials import prepare_stage
                prepare_stage(self.ctx, TIMING_NAMES[step], before_payload=CREDENTIAL_STEPS[step])
            self.stop.run(func, TIMING_NAMES[step])
        except SeverusError as exc:
            self._fail(step, exc)
        except (Cancelled, StageAbandoned) as exc:   # only a stop does this: its code below
            self._fail(step, WrapperError(str(exc)))
        except Exception as exc:  # a bug in a stage: still report and upload the log
            log.error("unexpected error in %s:\n%s", step, traceback.format_exc())
            self._fail(step, WrapperError(f"{type(exc).__name__}: {exc}"))
        finally:
            self.timings[TIMING_NAMES[step]] = round(time.monotonic() - began, 3)

    def _fail(self, step, exc):
        if self.stop.error is not None and exc is not self.stop.error:
            log.error("%s stopped (%s): %s", step, self.stop.error.one_line(), exc.one_line())
        else:
            log.error("%s failed: %s", step, exc.one_line())
        if isinstance(exc, (KilledByManager, AttemptSuperseded)):
            self.stop.request(exc)   # seen by a stage first (the fence): the rest runs under the grace
        if self.error is None:
            # What a stop cut short (a cancelled copy: 022) fails because of the stop: its code.
            self.error, self.failed_step = self.stop.error or exc, str(step)

    # ------------------------------------------------------------------ the steps

    def node_checks(self):
        # The payload's steps first: a module this node lacks or a missing parameter is the job
        # description's fault (001), found before any transfer.
        self.plan_steps()
        # A fallback site this node cannot write to would only be skipped at stage-out: the site's fault now.
        check_fallback_sites(self.ctx.site, self.ctx.site_config_dirs)
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
        self.area = stage_software(self.ctx)

    def stage_inputs(self):
        from .inputs import stage_inputs
        self.inputs = list(stage_inputs(self.ctx))

    def plan_steps(self):
        for run, (_, module) in zip(self.runs, modules.plan_steps(self.ctx.desc.payload)):
            run.module = module

    def payload(self):
        """The payload's steps in order, in the job's work dir (a step's outputs are the next one's
        inputs there); the first that fails ends the job with its code. The job's wallclock limit
        counts over all of them; memory, stall, stop and container hold for each."""
        if any(run.module is None for run in self.runs):
            self.plan_steps()
        config = payload_mod.WatchConfig.from_limits(self.ctx.desc.limits, **self.watch_overrides)
        began, used = time.monotonic(), 0.0
        for run in self.runs:
            if run.index > 1:
                self.stop.check()
                self.watch = None
                self.reporter.step(Step.PAYLOAD, run.label)
            if used >= config.max_wct_s:
                raise PayloadWallclock(f"{run.label} not started: the job's {config.max_wct_s:g} s "
                                       "wallclock is used up")
            self.run_payload_step(run, replace(config, max_wct_s=config.max_wct_s - used), config.max_wct_s)
            used = time.monotonic() - began

    def run_payload_step(self, run, config, max_wct_s):
        d, area = self.ctx.desc, self.area
        self.result = None
        try:
            # The payload runs in the job's work dir, where stage-out looks for its outputs.
            job = modules.PayloadJob(desc=d, exe=Path(area.exe), software_root=Path(area.root),
                                     software_workdir=Path(area.workdir), cwd=self.ctx.workdir,
                                     inputs=tuple(Path(p) for p in self.inputs), site=self.ctx.site,
                                     step=run.step, index=run.index)
            spec = run.module.build(job)
            self.ctx.facts["payload_module"] = run.module.name
            run.watch = self.watch = payload_mod.PayloadWatch(spec, config, self.ctx.workdir, self.stop,
                                                              streams=self.streams(run))
            self.result = run.watch.run()
            run.code, run.exit_code, run.signal = 0, self.result.exit_code, self.result.signal
            run.ended = f"exit code {self.result.exit_code}"
            if self.result.container:
                self.ctx.facts["container"] = self.result.container
        except SeverusError as exc:
            run.exit_code, run.signal = exc.data.get("exit_code"), exc.data.get("signal")
            error = self._step_error(run, exc) if isinstance(exc, PayloadError) else exc
            run.code, run.ended = error.code, f"E{error.code:03d} {error}"
            if self.stepped and error is not self.stop.error:
                if isinstance(error, PayloadWallclock):
                    error.detail = f"still running at the job's wallclock limit ({max_wct_s:g} s over its steps)"
                error.detail = f"{run.label}: {error.detail}"
            if error is exc:
                raise
            raise error from None
        finally:
            if self.stepped:   # the step's own RUNNING-04 event: how it ended, its metrics and stdout tail
                metrics, tail = run.sample()
                self.reporter.info(f"{run.label} ended: {run.ended or 'not started'}", metrics=metrics, tail=tail)

    def _step_error(self, run, exc):
        """What a payload step's failure is for the job: the batch system's stop, a full scratch
        (the site's), a module's own code for a non-zero exit (dq: 035), or the failure itself."""
        stopped = self._batch_stop(exc)
        if stopped is not None:
            return stopped
        ws = self.ctx.workdir
        if shutil.disk_usage(ws).free < SCRATCH_FULL_BYTES:
            # The payload died with the disk full: the site's scratch problem, not the user's.
            for pattern in self.ctx.desc.output.patterns:   # never staged out now; room for the log tarball
                for path in ws.glob(pattern):
                    if path.is_file():
                        path.unlink()
            return ScratchSpaceError(f"the payload failed ({exc}) with the scratch {ws} full", **exc.data)
        if type(exc) is PayloadFailed and exc.data.get("exit_code") and run.module.exit_error is not PayloadFailed:
            return run.module.exit_error(f"exit code {exc.data['exit_code']}", **exc.data)
        return exc

    def streams(self, run):
        """The names of a payload step's stdout and stderr files in the work dir (without .stdout)."""
        return f"payload-{run.index}-{run.step.name}" if self.stepped else "payload"

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
        self.stored = list(stage_outputs(self.ctx, self.outputs))

    def register(self):
        from .stageout import register_outputs
        register_outputs(self.ctx, self.stored)

    def upload_log(self):
        from .credentials import refresh_environment
        from .joblog import upload_log
        refresh_environment(self.ctx)   # the log goes whatever the lifetime: a refused one is 051
        files = [p for p in self.log_files() if p.is_file()]
        # The log goes after a stop too (the job's cancel is set then): its own cancel fires at
        # the end of its share of the grace.
        cancel = threading.Event()
        if self.stop.error is not None:
            timer = threading.Timer(max(0.0, self.stop.deadline(LOG_SHARE) - time.monotonic()), cancel.set)
            timer.daemon = True
            timer.start()
        self.log_file = upload_log(self.ctx, files, cancel=cancel)

    def undo(self, share=UNDO_SHARE):
        """All or nothing: delete what this attempt wrote on SEs and did not register (by `share`
        of the grace after a stop, else within UNDO_S); what stays goes to the server."""
        from .stageout import undo_writes
        stop = self.stop
        started = time.monotonic()
        removed, left = undo_writes(self.ctx, lambda: min(started + UNDO_S, stop.deadline(share)))
        if removed or left:
            self.ctx.facts["undone"] = {"removed": removed, "left_to_the_server": len(left)}

    def log_files(self):
        ws = self.ctx.workdir
        streams = [ws / f"{self.streams(run)}.{ext}" for run in self.runs for ext in ("stdout", "stderr")]
        if not self.stepped:
            streams = [ws / "payload.stdout", ws / "payload.stderr"]
        return [ws / "severus.log", *streams, Path(self.reporter.journal.path)]

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
        metrics = self.payload_metrics()
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
        if self.stepped:
            report["payload"]["steps"] = [run.to_report() for run in self.runs]
        if self.ctx.removals:   # the server was not told of them sooner: it files them from here
            report["removals"] = list(self.ctx.removals)
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
    for key in ("transfers", "payload.steps.tail", "stderr_tail", "outputs"):
        if key == "payload.steps.tail":   # up to 20 steps' stdout tails: each keeps its last lines
            steps = (report.get("payload") or {}).get("steps") or []
            while len(json.dumps(report)) > MAX_REPORT_BYTES and any(st["tail"] for st in steps):
                for st in steps:
                    st["tail"] = st["tail"][len(st["tail"]) // 2 or 1:]
                report.setdefault("truncated", []).append(key)
            continue
        while len(json.dumps(report)) > MAX_REPORT_BYTES and report.get(key):
            dropped = len(report[key]) // 2 or 1
            report[key] = report[key][dropped:]
            report.setdefault("truncated", []).append(key)
    return report


def run_job(ctx, reporter, stop: Optional[Stop] = None, watch_overrides=None) -> Outcome:
    """Run every step of the job; undo what a failure left on SEs; upload the log; send the
    final event; return the Outcome. After a stop all of it fits in the grace (Stop)."""
    stop = stop or Stop(ctx.site.wrapper.stop_grace_s)
    ctx.cancel = stop.event
    overrides = dict(watch_overrides or {})
    # The payload's TERM-to-KILL must leave the grace room for the log and the final report.
    overrides.setdefault("grace_s", min(ctx.desc.limits.grace_s, PAYLOAD_SHARE * stop.grace_s))
    job = _Job(ctx, reporter, stop, overrides)
    reporter.probe = job.probe
    ctx.note = reporter.info
    steps = [(Step.NODE_CHECKS, job.node_checks), (Step.SOFTWARE, job.software),
             (Step.INPUTS, job.stage_inputs), (Step.PAYLOAD, job.payload),
             (Step.OUTPUTS, job.stage_outputs), (Step.REGISTER, job.register)]
    for step, func in steps:
        if job.error is not None:
            break
        job.run_step(step, func, job.step_message(step))
    if job.error is not None:
        job.undo()
    newer = (isinstance(job.error, AttemptSuperseded) and not job.error.data.get("ended")) or reporter.superseded
    if newer:
        # Another attempt owns the job now: it wrote nothing more, and undid what it had written.
        error = job.error if isinstance(job.error, AttemptSuperseded) else AttemptSuperseded()
        log.error("%s", error.one_line())
        return Outcome(code=error.code, status=lookup(error.code).status,
                       message=error.one_line(), report={}, delivered=False)
    reporter.step(Step.LOG)
    began = time.monotonic()
    try:
        stop.run(job.upload_log, "log", LOG_SHARE)
    except SeverusError as exc:
        job.log_error = exc.one_line()
        job._fail(Step.LOG, exc)
    except Exception as exc:
        log.error("the log upload did not end well:\n%s", traceback.format_exc())
        job.log_error = f"{type(exc).__name__}: {exc}"
        job._fail(Step.LOG, LogUploadError(job.log_error))
    job.timings["log"] = round(time.monotonic() - began, 3)
    job.undo(LOG_UNDO_SHARE)   # a log upload that failed half-way (the outputs' undo ran above)
    code, status, message = job.outcome()
    report = job.report()
    reporter.final(code, message, report)
    if stop.error is not None:
        delivered = reporter.close(max(0.5, stop.deadline(FINAL_SHARE) - time.monotonic()))
    else:
        delivered = reporter.close()
    if not delivered:
        log.error("the final report was not delivered; the journal %s holds it",
                  reporter.journal.path)
    if reporter.superseded and code != 61:
        code, status = 61, lookup(61).status
        message = AttemptSuperseded().one_line()
    outcome = Outcome(code=code, status=status, message=message, report=report, delivered=delivered)
    remove_workdir(ctx, outcome)
    return outcome


def remove_workdir(ctx, outcome):
    """Remove the job's work dir once the job is over (the scratch is the site's): True when removed.

    It stays when the site keeps failed jobs' (`scratch.keep_workdir_on_failure`, to look at them),
    when the final report was not delivered (its journal is what `severus replay` sends later),
    when it holds the directory the wrapper runs in (`--workdir .`: not ours to remove), and
    when SEVERUS_KEEP_WORKDIR is set (a person rerunning one job by hand to look at it; the tests).
    """
    workdir = Path(ctx.workdir).resolve()
    if os.environ.get("SEVERUS_KEEP_WORKDIR"):
        log.info("work dir %s kept (SEVERUS_KEEP_WORKDIR is set)", workdir)
        return False
    if not outcome.delivered:
        log.warning("work dir %s kept: it holds the undelivered final report's journal", workdir)
        return False
    if outcome.code != 0 and ctx.site.keep_workdir_on_failure:
        log.info("work dir %s kept (the site keeps failed jobs')", workdir)
        return False
    try:
        here = Path.cwd().resolve()
    except OSError:
        here = None
    if here is None or here == workdir or workdir in here.parents:
        log.warning("work dir %s kept: the wrapper runs inside it", workdir)
        return False
    errors = []
    shutil.rmtree(workdir, onerror=lambda func, path, exc: errors.append(f"{path}: {exc[1]}"))
    if errors:   # the job is over and reported: a leftover is the site's to see, not a job error
        log.warning("work dir %s not wholly removed: %s", workdir, "; ".join(errors[:3]))
        return False
    return True
