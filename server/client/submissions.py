"""`sbk submit`: bulks of jobs (the seed's expert UI) and the EXPERT INIT summary it prints."""
import json
import time
from pathlib import Path

from .arguments import add_command, comma_list, key_values, positive
from .jobs import BACKENDS, ordered, parameter_order, wait_handed_over
from .library import BadInput

BULK_SYNTAX = ("request=ID,sites=A+B,runs=N,events=N[,test][,log][,repeat] (a split request: runs optional, "
               "repeat makes slices given to jobs again), or for a test bulk "
               "test,params=NAME:VALUE+NAME:VALUE[,input=MODE[:LFN+LFN]][,output-sites=A+B] instead of request")


def parse_bulk(spec):
    """`request=7,sites=INFN-T1+INFN-BARI,runs=10,events=80000[,test][,log]` (or params=...) as a bulk dict."""
    bulk = {"test": False, "log_to_db": False}
    for part in comma_list(spec):
        key, sep, value = part.partition("=")
        if not sep and key in ("test", "log"):
            bulk["test" if key == "test" else "log_to_db"] = True
            continue
        if not sep and key == "repeat":   # a split request's slices already given to jobs, again
            bulk["repeat_slices"] = True
            continue
        if key in ("sites", "output-sites"):
            bulk[key.replace("-", "_")] = [x for x in value.split("+") if x]
        elif key in ("request", "runs", "events") and value.isdigit() and int(value) > 0:
            bulk[key] = int(value)
        elif key == "params":
            bulk["parameters"] = key_values(value.split("+"), f"params in {spec!r}", sep=":")
        elif key == "input" and value:
            mode, _, paths = value.partition(":")
            bulk.update(input_mode=mode, input_paths=[x for x in paths.split("+") if x])
        else:
            raise BadInput(f"bad bulk item {part!r} in {spec!r} ({BULK_SYNTAX})")
    missing = [k for k in ("sites", "events") if not bulk.get(k)]   # no runs: a split request's, a job a slice
    if "request" not in bulk and "parameters" not in bulk:
        missing.insert(0, "request (or params for a test bulk)")
    if missing:
        raise BadInput(f"bulk {spec!r} has no {missing[0]}")
    return bulk


def read_split_list(path):
    """The JSON list of LFN lists in `path` (the server checks the LFNs)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"--split-list {path}: {exc}") from None
    if not isinstance(data, list):
        raise BadInput(f"--split-list {path}: not a JSON list of LFN lists")
    return data


def _flag_bulk(args):
    """The bulk given by --request/--param/--sites/--runs/--events, or None."""
    if args.request is None and not (args.param or args.sites or args.runs or args.events):
        return None
    # (--runs may be left out for a split request: one job per slice not yet given to a job)
    missing = [f for f, v in (("--request", args.request or args.param), ("--sites", args.sites),
                              ("--events", args.events)) if not v]
    if missing:
        raise BadInput(f"a bulk given by flags needs {missing[0]} as well")
    bulk = {"sites": comma_list(args.sites), "events": args.events, "test": args.test,
            "log_to_db": args.log_in_db, **({"runs": args.runs} if args.runs else {})}
    if args.split_list:
        bulk["split"] = read_split_list(args.split_list)
    if args.repeat_slices:
        bulk["repeat_slices"] = True
    if args.param:
        bulk["parameters"] = key_values(args.param, "--param")
    if args.request is not None:
        bulk["request"] = args.request
    return bulk


def cmd_submit(client, out, args):
    bulks = [parse_bulk(b) for b in args.bulk or ()]
    flagged = _flag_bulk(args)
    if flagged:
        bulks.insert(0, flagged)
    if not bulks:
        raise BadInput("nothing to submit: give --request/--sites/--runs/--events or one --bulk per set")
    total = sum(b["runs"] * len(b["sites"]) for b in bulks if b.get("runs"))
    if any(not b.get("runs") for b in bulks):
        total = f"{total} + one a slice"
    started = time.monotonic()
    out.progress(f"{'planning' if args.dry_run else 'preparing'} {len(bulks)} bulk(s), {total} job(s) "
                 f"on {args.production}" + (f" for the {args.backend} backend" if args.backend else ""))
    plan = client.submit(args.production, bulks, dry_run=args.dry_run, backend=args.backend,
                         override_thresholds=args.override_thresholds)
    out.progress(f"server answered in {time.monotonic() - started:.1f} s")
    if not args.dry_run and args.wait and args.backend:
        wait_handed_over(client, out, plan["job_ids"], args.wait)
    if out.as_json:
        return out.json(plan)
    print_plan(out, plan, parameter_order(client))


def _split_line(split):
    """A set's split in the summary: how it was cut, what was made, what was left out or left over."""
    how = (f"{split['files_per_job']} files per job" if split["by"] == "files_per_job" else "by the given list")
    first = " | ".join(", ".join(piece) for piece in split["first_slices"])
    return (f"  Split: {split['slices']} slice(s), {how}, of {split['input_files']} input file(s); "
            f"{split['files_already_given']} already in jobs' slices, {split['left']} slice(s) left for later"
            + (" (repeating slices)" if split.get("repeat_slices") else "") + f"\n  First slice(s): {first}")


def print_plan(out, plan, order=()):
    """The seed's EXPERT INIT summary: one table per set, totals, then the request's paths."""
    normal = [s for s in plan["sets"] if not s["test"]]
    kind = "normal" if normal else "test"
    verb = "would launch" if plan.get("dry_run") else "launched"
    out.line(f"{verb} {len(plan['sets'])} set(s) of {kind} jobs (a total of {plan['total_jobs']} jobs, "
             f"{plan['total_events']} events) for the Production {plan['production']}")
    out.line()
    out.line("PRODUCTION DATA - SUMMARY")
    out.pairs([("Production Series", plan["production"]), ("Software", plan["software"]),
               ("Test release", plan["software_lfn"])])
    names = ordered(order, (k for s in plan["sets"] for k in (s["parameters"] or {})))
    for st in plan["sets"]:
        out.line()
        request = "a new request" if st["request"] is None else f"request {st['request']}"
        out.line(f"JOB BULK DATA - SUMMARY (set {st['set']}, {request} on {st['production']})")
        rows = [dict(r, set=st["set"], **{f"p:{n}": (st["parameters"] or {}).get(n) for n in names})
                for r in st["rows"]]
        # The totals line, as in the seed: the other cells stay blank.
        rows.append(dict({k: "" for k in rows[0]}, set=st["set"], jobs=st["jobs"], events_total=st["events"]))
        out.table([("Set", "set"), ("#Jobs", "jobs"), ("Site", "site"), ("First RUNNUM", "first_runnum"),
                   ("Last RUNNUM", "last_runnum"),
                   ("#Events", lambda r: r["events_total"] if "events_total" in r
                    else f"{r['events']} ({r['events_per_job']} ea.)"),
                   *[(n, f"p:{n}") for n in names],
                   ("Target Site(s)", lambda r: st["output_sites"] if r["site"] else ""),
                   ("Log in DB", lambda r: st["log_to_db"] if r["site"] else "")], rows)
        out.line({"exists": "  ✓ Production Request exists!", "created": "  Production Request created",
                  "would be created": "  Production Request would be created"}.get(st.get("request_state"), ""))
        out.line(f"  Input mode: {st['input_mode']}  Input path: {', '.join(st['input_paths']) or '-'}")
        if st.get("split"):
            out.line(_split_line(st["split"]))
        out.line(f"  output directory's lfn: {st['output_lfn']}")
    for refusal in plan.get("refusals", []):
        out.line(f"WARNING {refusal}")
    if plan.get("job_ids"):
        ids = plan["job_ids"]
        out.line(f"\n{len(ids)} job(s) prepared: ids {ids[0]}..{ids[-1]}")


def add_commands(sub):
    c = add_command(sub, "submit", "submit bulks of jobs (the seed's expert UI); --dry-run prints the summary",
                    cmd_submit)
    c.add_argument("--production", required=True)
    c.add_argument("--request", type=positive, help="one bulk by flags: the request id")
    c.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="with --test, instead of --request: a job parameter's value (repeat); "
                        "a missing test request is created")
    c.add_argument("--sites", help="comma list of submission sites")
    c.add_argument("--runs", type=positive, help="jobs per site")
    c.add_argument("--events", type=positive, help="events per job")
    c.add_argument("--test", action="store_true", help="on the request's test twin")
    c.add_argument("--log-in-db", action="store_true", help="store the logs in the bookkeeping database")
    c.add_argument("--bulk", action="append", metavar="SPEC",
                   help=f"{BULK_SYNTAX} (repeat for more sets)")
    c.add_argument("--dry-run", action="store_true", help="print the summary, prepare nothing")
    c.add_argument("--backend", choices=BACKENDS, help="batch backend that starts the jobs")
    c.add_argument("--override-thresholds", action="store_true", help="expert: ignore site thresholds")
    c.add_argument("--wait", type=float, default=0, metavar="S",
                   help="with --backend: wait up to S seconds until the backend took every job")
    c.add_argument("--split-list", metavar="FILE.json",
                   help="a LIST request split by hand: a JSON list of LFN lists, each one job's inputs "
                        "(without --runs: a job for each element not yet given to a job)")
    c.add_argument("--repeat-slices", action="store_true",
                   help="a split request: make jobs for slices already given to jobs, again")
