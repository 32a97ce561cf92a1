"""`sbk production` and `sbk request`: productions (prod series) with their _test twins, and their requests."""
from .arguments import add_action, add_actions, add_command, comma_list, key_values, positive
from .library import BadInput
from .output import counts

REQUEST_STATUSES = ("open", "valid", "running", "closed")
REQUEST_SETTINGS = (  # (flag, API field, type)
    ("priority", "priority", int), ("min-runnum", "min_runnum", int),
    ("required-events", "required_events", int), ("events-per-job", "events_per_job", int),
    ("num-jobs", "num_jobs", int), ("event-time", "event_time_s", float), ("max-wct", "max_wct_s", float),
    ("max-rss-mb", "max_rss_mb", float), ("stall", "stall_s", float), ("input-mode", "input_mode", str),
    ("cores", "cores", int), ("memory-mb", "memory_mb", float), ("files-per-job", "files_per_job", int),
    ("max-attempts", "max_attempts", int), ("retry-backoff-s", "retry_backoff_s", float),   # the retry policy
    ("output-lfn", "output_lfn", str), ("output-abs", "output_abs", str), ("note", "note", str),
    ("test-output-lfn", "test_output_lfn", str), ("test-output-abs", "test_output_abs", str))
REQUEST_LISTS = (("input-path", "input_paths"), ("output-site", "output_sites"),
                 ("output-pattern", "output_patterns"), ("step", "steps"))


def cmd_production(client, out, args):
    if args.action == "list":
        prods = client.productions(session=args.session, status=args.status)
        if not args.all:
            prods = [p for p in prods if not p["test"]]
        if out.as_json:
            return out.json(prods)
        return out.table([
            ("prod series", "name"), ("session", "session"), ("status", "status"),
            ("soft release", lambda p: f"{p['software']['version']} {p['software']['revision']}"),
            ("jobs", lambda p: counts(p["jobs"]) or "0"),
            ("requests", lambda p: f"{sum(p['requests'].values())} ("
                                   + counts(p["requests"], REQUEST_STATUSES) + ")"),
            ("note", "note")], prods, empty="no productions")
    if args.action == "create":
        prod = client.create_production(args.name, args.session, args.version, args.revision, args.note or "")
        verb = f"created (and {prod['twin']})"
    elif args.action in ("close", "open"):
        prod = client.set_production_status(args.name, "closed" if args.action == "close" else "open")
        verb = f"{prod['status']} (and {prod['twin']})"
    else:
        prod = client.production(args.name)
        verb = None
    if out.as_json:
        return out.json(prod)
    if verb:
        return out.line(f"production {prod['name']} {verb}")
    sw = prod["software"]
    out.pairs([("production", prod["name"]), ("session", prod["session"]), ("status", prod["status"]),
               ("test twin of" if prod["test"] else "test twin", prod["twin"]),
               ("software", f"{sw['name']} {sw['version']} {sw['revision']}"),
               ("requests", counts(prod["requests"], REQUEST_STATUSES)),
               ("jobs", counts(prod["jobs"]) or "0"), ("created", f"{prod['created_at']} by {prod['created_by']}"),
               ("note", prod["note"])])


def _request_columns():
    return [("id", "id"), ("production", "production"), ("status", "status"),
            ("parameters", lambda r: list(r["parameters"].values())), ("evt/job", "events_per_job"),
            ("min runnum", "min_runnum"), ("input", lambda r: r["input_mode"]),
            ("sites", "output_sites"), ("jobs", lambda r: counts(r["jobs"]) or "0"), ("test req", "test_request")]


def _stage_text(stage):
    """A request's follow-up stage and where it stands, in one line."""
    if not stage:
        return "none"
    when = "all jobs done" if stage["condition"] == "all" else f"{stage['fraction']:g} of the jobs done, the rest final"
    state = stage["state"] + (f" ({stage['waiting_for']})" if stage.get("waiting_for") else "")
    jobs = f", jobs {counts(stage['jobs'])}" if stage.get("jobs") else ""
    return f"{stage['template']} when {when}: {state}{jobs}"


def _steps_text(steps):
    """A request's steps in one line: sim, dq(min_events=10)."""
    text = ", ".join(step["template"] + (f"({', '.join(f'{k}={v}' for k, v in step['parameters'].items())})"
                                         if step["parameters"] else "") for step in steps or [])
    return text or "(the session's module)"


def _request_body(args):
    """POST /requests of `sbk request create`'s flags."""
    body = {"production": args.production}
    if args.source is not None:
        body["from"] = args.source
    if args.param:
        body["parameters"] = key_values(args.param, "--param")
    for flag, field, _ in REQUEST_SETTINGS:
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            body[field] = value
    for flag, field in REQUEST_LISTS:
        value = getattr(args, flag.replace("-", "_"))
        if value:
            body[field] = [x for v in value for x in comma_list(v)]
    if args.same_output_dirs:
        body["same_output_dirs"] = True
    if args.followup:
        body["followup"] = {"template": args.followup, "files_per_job": args.followup_files_per_job or 0,
                            **({"condition": "fraction", "fraction": args.followup_fraction}
                               if args.followup_fraction is not None else {"condition": "all"})}
    if "parameters" not in body and "from" not in body:
        raise BadInput("a request needs --param NAME=VALUE for each job parameter, or --from REQUEST")
    return body


def cmd_request(client, out, args):
    if args.action == "list":
        reqs = client.requests(production=args.production, status=args.status, limit=args.limit)
        return out.json(reqs) if out.as_json else out.table(_request_columns(), reqs, empty="no requests")
    if args.action == "create":
        req = client.create_request(**_request_body(args))
        if not out.as_json:
            return out.line(f"request {req['id']} created on {req['production']} (test request "
                            f"{req['test_request']}), status {req['status']}")
    elif args.action == "set-status":
        req = client.update_request(args.id, status=args.status)
        if not out.as_json:
            return out.line(f"request {req['id']} is {req['status']}")
    elif args.action == "delete":
        gone = client.delete_request(args.id)
        if out.as_json:
            return out.json(gone)
        also = [f"its test request {i}" for i in gone["deleted"][1:]]
        if gone["test_request_kept"]:
            also.append(f"its test request {gone['test_request_kept']} kept: it has jobs")
        return out.line(f"request {args.id} deleted" + (f" ({'; '.join(also)})" if also else ""))
    else:
        req = client.request(args.id)
    if out.as_json:
        return out.json(req)
    out.pairs([("request", req["id"]), ("production", req["production"]), ("status", req["status"]),
               ("test request", req["test_request"]),
               *[(k, v) for k, v in req["parameters"].items()],
               *[(field, req.get(field)) for _, field, _ in REQUEST_SETTINGS if field in req],
               *[(field, _steps_text(req[field]) if field == "steps" else req.get(field))
                 for _, field in REQUEST_LISTS],
               ("same output dirs", req.get("same_output_dirs")),
               ("follow-up stage", _stage_text(req.get("stage"))),
               ("jobs", counts(req["jobs"]) or "0"), ("created", f"{req['created_at']} by {req['created_by']}")])


def add_commands(sub):
    s = add_actions(add_command(sub, "production", "productions (prod series) and their _test twins",
                                cmd_production, with_actions=True))
    c = add_action(s, "list", "productions (without _test twins unless --all)")
    c.add_argument("--session")
    c.add_argument("--status", choices=("open", "closed"))
    c.add_argument("--all", action="store_true", help="show the _test twins too")
    add_action(s, "show", "one production").add_argument("name")
    c = add_action(s, "create", "a production and its _test twin")
    c.add_argument("name")
    c.add_argument("--session", required=True)
    c.add_argument("--version", required=True, help="software version, e.g. V0.2.5")
    c.add_argument("--revision", type=int, help="software revision (default: the latest)")
    c.add_argument("--note")
    add_action(s, "close", "close a production").add_argument("name")
    add_action(s, "open", "reopen a production").add_argument("name")

    s = add_actions(add_command(sub, "request", "production requests", cmd_request, with_actions=True))
    c = add_action(s, "list", "requests")
    c.add_argument("--production")
    c.add_argument("--status", choices=REQUEST_STATUSES)
    c.add_argument("--limit", type=positive)
    add_action(s, "show", "one request").add_argument("id", type=positive)
    c = add_action(s, "create", "a request and its test request")
    c.add_argument("--production", required=True)
    c.add_argument("--from", dest="source", type=positive, metavar="REQUEST",
                   help="import the settings and parameters of this request")
    c.add_argument("--param", action="append", metavar="NAME=VALUE", help="a job parameter's value (repeat)")
    for flag, _, kind in REQUEST_SETTINGS:
        c.add_argument(f"--{flag}", type=kind)
    for flag, _ in REQUEST_LISTS:
        c.add_argument(f"--{flag}", action="append", metavar="A[,B]")
    c.add_argument("--followup", metavar="STEP", help="a follow-up stage: the session's step template (a merge, "
                                                     "say) run on the outputs once every job is done")
    c.add_argument("--followup-fraction", type=float, metavar="F",
                   help="start the follow-up stage when this fraction of the jobs is done and the rest final")
    c.add_argument("--followup-files-per-job", type=int, metavar="N", help="outputs per follow-up job (0: all)")
    c.add_argument("--same-output-dirs", action="store_true",
                   help="the test request writes into the request's output directories (default: its own, "
                        "the production's name in them renamed to the _test twin's)")
    c = add_action(s, "set-status", "open -> valid -> running -> closed")
    c.add_argument("id", type=positive)
    c.add_argument("status", choices=REQUEST_STATUSES)
    add_action(s, "delete", "a request without jobs, with its test request unless that one has jobs"
               ).add_argument("id", type=positive)
