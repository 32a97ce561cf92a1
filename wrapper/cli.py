"""`severus`: run a job, check a node, pack the wrapper, replay a journal.

This is the ONE place that turns errors into exit codes: a SeverusError
exits with its three-digit code and one line on stderr; anything else is
099, with its traceback in the log file only.
"""
import argparse
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import traceback
from pathlib import Path

from shared.errors import SeverusError, WrapperError, lookup
from shared.jobdesc import load_job_description

from . import __version__

log = logging.getLogger("severus")
# Messages go to the job's log file only; stderr gets the one line main() prints.
log.addHandler(logging.NullHandler())

WRAPPER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def _parser():
    p = argparse.ArgumentParser(prog="severus", description="Grid job wrapper of Severus.")
    p.add_argument("--version", action="version", version=f"severus {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", help="run one job from its description")
    r.add_argument("job", help="the job description (JSON)")
    _site_options(r)
    r.add_argument("--workdir", help="the job's scratch directory "
                                     "(default: ./severus-<job>.<attempt>)")
    r.add_argument("--final-deadline", type=float, default=300.0, metavar="S",
                   help="how long the final report is retried when the server is down")
    r.add_argument("--sample-s", type=float, default=2.0, metavar="S",
                   help="the watchdog's sampling period")

    c = sub.add_parser("check", help="test this node: python, scratch, site config, SE access, server")
    _site_options(c)
    c.add_argument("--workdir", default=".", help="the scratch directory to check")
    c.add_argument("--server", help="the sbk server to reach and compare clocks with (default: $SBK_URL)")
    c.add_argument("--write-test", action="store_true",
                   help="write, stat, checksum, read back and delete a small file on the SE")
    out = c.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="machine-readable output")
    out.add_argument("--nagios", action="store_true",
                     help="one Nagios status line with perfdata; exit 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN")
    c.add_argument("--report", action="store_true",
                   help="keep the result on the server as the site's last check (--server or $SBK_URL, "
                        "$SBK_TOKEN with expert-submission)")

    k = sub.add_parser("pack", help="build the single-file wrapper severus.pyz")
    k.add_argument("-o", "--output", default="severus.pyz")
    k.add_argument("--module", action="append", default=[], metavar="FILE",
                   help="a site's payload module file (mysim.py) to put in the archive; repeatable")

    y = sub.add_parser("replay", help="deliver a job's journal to the server")
    y.add_argument("journal", help="a severus-journal.jsonl")
    y.add_argument("--job-file", help="the job description (server URL and token from it)")
    y.add_argument("--server", help="the server URL")
    y.add_argument("--token", help="the job token (default: $SBK_TOKEN)")
    y.add_argument("--job", type=int, help="the job id (default: from the journal)")
    return p


def _site_options(p):
    p.add_argument("--site", help="the site name (default: $SEVERUS_SITE or the batch system's)")
    p.add_argument("--site-config", help="a site configuration file")


# ---------------------------------------------------------------------- run

def _setup_log_file(path):
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("severus")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def cmd_run(args):
    from .client import ServerClient
    from .context import JobContext
    from .report import Reporter, SenderConfig
    from .runner import Stop, run_job
    from .siteconfig import resolve_site_config

    desc = load_job_description(args.job)      # 001 before any work
    workdir = Path(args.workdir or f"severus-{desc.job.id}.{desc.job.attempt}").resolve()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from shared.errors import NodeCheckError
        raise NodeCheckError(f"cannot create the work dir {workdir}: {exc.strerror}") from None
    _setup_log_file(workdir / "severus.log")
    log.info("severus %s on %s, python %s, job %s attempt %s", __version__, platform.node(),
             platform.python_version(), desc.job.id, desc.job.attempt)

    stop = Stop()
    client = ServerClient(desc.server.url, desc.server.token, timeout=20.0)
    config = SenderConfig(heartbeat_s=desc.server.heartbeat_s,
                          final_deadline_s=args.final_deadline)
    reporter = Reporter(desc, client, workdir, config=config, on_stop=stop.request).start()
    previous = {sig: signal.signal(sig, stop.from_signal) for sig in WRAPPER_SIGNALS}
    try:
        try:
            site = resolve_site_config(args.site, args.site_config)
        except SeverusError as exc:
            # The server learns why this node could not even start the job.
            reporter.final(exc.code, exc.one_line(), {"status": lookup(exc.code).status,
                                                      "code": exc.code, "failed_step": None,
                                                      "message": exc.one_line()})
            reporter.close()
            raise
        stop.grace_s = site.wrapper.stop_grace_s   # a stop before this point had the default grace
        ctx = JobContext(desc=desc, site=site, workdir=workdir, server=client, log=log)
        outcome = run_job(ctx, reporter, stop, watch_overrides={"sample_s": args.sample_s})
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop.close()
    line = f"job {desc.job.id} attempt {desc.job.attempt}: {outcome.status} {outcome.message}"
    if not outcome.delivered:
        line += f" (final report not delivered; journal in {workdir})"
    log.info("%s", line)
    print(line, file=sys.stderr if outcome.code else sys.stdout)
    from .transfer import copies_left_behind
    if stop.error is not None and copies_left_behind():
        # Stopped, with copies given up inside XrdCl: a normal exit would wait for them (and
        # abort if cut short) past the batch system's kill. The log and the report are out.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(outcome.code)
    return outcome.code


# ---------------------------------------------------------------------- check

def cmd_check(args):
    """The site admin's node test (wrapper/check.py); exit 0, the first failure's code, or Nagios' 0-3."""
    from . import check
    options = check.CheckOptions(site=args.site, site_config=args.site_config,
                                 server=args.server or os.environ.get("SBK_URL"), workdir=args.workdir,
                                 write_test=args.write_test)
    results = check.run_checks(options)
    site = check.site_name(results) or args.site
    if args.report:
        # Sent before printing so that a failed report is one more CRITICAL line in every output format.
        sent = check.report(check.result_dict(results, site), options.server, os.environ.get("SBK_TOKEN"),
                            options.server_timeout_s)
        results.append(sent)
        if sent.state != check.OK:
            print(f"severus check: --report: {sent.reason}", file=sys.stderr)
    if args.nagios:
        print(check.nagios_line(results, site))
        return check.nagios_exit(results)
    if args.json:
        print(json.dumps(check.result_dict(results, site), indent=2))
    else:
        print(check.format_table(results))
    return check.exit_code(results)


# ---------------------------------------------------------------------- pack, replay

def cmd_pack(args):
    from .pack import build_pyz
    try:
        out = build_pyz(args.output, modules=args.module)
    except (OSError, RuntimeError) as exc:
        raise WrapperError(f"cannot build {args.output}: {exc}") from None
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    return 0


def cmd_replay(args):
    """Deliver a journal under the sender's rules (report.Outbox): batches within the byte
    limit, heartbeat runs coalesced, a refused event marked rejected in the journal while
    the rest go on. Events the journal already marks rejected are sent again. Exit 0 when
    the server took every event sent, else 099 naming the rejected ones."""
    from .client import ServerClient, ServerError
    from .report import replay_journal
    url, token = args.server, args.token or os.environ.get("SBK_TOKEN")
    if args.job_file:
        desc = load_job_description(args.job_file)
        url, token = url or desc.server.url, token or desc.server.token
    if not url or not token:
        raise WrapperError("replay needs --job-file, or --server and --token")
    try:
        result = replay_journal(args.journal, ServerClient(url, token), job_id=args.job)
    except (OSError, ValueError) as exc:
        raise WrapperError(f"cannot replay {args.journal}: {exc}") from None
    except ServerError as exc:
        raise WrapperError(f"the server did not take the journal: {exc}") from None
    line = (f"replayed {args.journal}: {result.accepted} new event(s), "
            f"{result.duplicates} already known")
    if result.coalesced:
        line += f", {result.coalesced} heartbeat(s) coalesced"
    if result.rejected:
        line += f", {len(result.rejected)} rejected"
    print(line)
    if result.rejected:
        first = result.rejected[0]
        seqs = ", ".join(str(r["rejected"]) for r in result.rejected)
        final = " (the final report among them)" if result.final_seq is not None \
            and not result.final_delivered else ""
        raise WrapperError(f"the server rejected event(s) {seqs}{final} of {args.journal}, "
                           f"marked in it; first: HTTP {first['status']} {first['error']}: "
                           f"{first['message']}")
    return 0


COMMANDS = {"run": cmd_run, "check": cmd_check, "pack": cmd_pack, "replay": cmd_replay}


def _crash_log(text):
    """Where a traceback goes when the command has no log file of its own."""
    if any(isinstance(h, logging.FileHandler) for h in log.handlers):
        log.error("%s", text)
        return next(h.baseFilename for h in log.handlers if isinstance(h, logging.FileHandler))
    fd, path = tempfile.mkstemp(prefix="severus-crash-", suffix=".log")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def main(argv=None):
    """Entry point of the `severus` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SeverusError as exc:
        log.error("%s", exc.one_line())
        print(exc.one_line(), file=sys.stderr)
        return exc.code
    except Exception as exc:
        where = _crash_log(traceback.format_exc())
        error = WrapperError(f"{type(exc).__name__}: {exc} (traceback in {where})")
        print(error.one_line(), file=sys.stderr)
        return error.code


if __name__ == "__main__":
    sys.exit(main())
