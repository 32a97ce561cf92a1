"""`sbk` as the managers' client: every command of CONTRACT §4 over the HTTP API.

Settings come in layers: the config file (`$XDG_CONFIG_HOME/sbk/config.toml`
or `~/.config/sbk/config.toml`, keys `url` and `token`), then `SBK_URL` and
`SBK_TOKEN`, then `--url` / `--token`. Output is a human table, or the
server's JSON with `--json`.

Errors, one class per exit code; `run()` is the one place that turns them
into one line on stderr and the exit code:

    ClientError          1  the server refused the request (not found, conflict, ...)
    ├── BadInput         2  wrong arguments, or the server's 400
    ├── Unreachable      3  no answer, a timeout, or a 5xx
    └── AuthError        4  no token, or the token is refused (401/403)
"""
import argparse
import gzip
import io
import json
import logging
import math
import os
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import tomllib

import requests

log = logging.getLogger("sbk.client")

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_AUTH = 1, 2, 3, 4
STATUSES = ("prepared", "submitted", "running", "done", "failed", "sys-failed", "timeout")
# The job monitor's status shortcuts (seed: "Select all | none | pending | notdone").
STATUS_GROUPS = {"all": STATUSES, "pending": ("prepared", "submitted", "running"),
                 "notdone": tuple(s for s in STATUSES if s != "done")}
BACKENDS = ("local", "slurm", "htcondor", "arc")   # server/backends registry names (no server import here)


class ClientError(Exception):
    """The server refused the request."""
    exit_code = EXIT_REFUSED


class BadInput(ClientError):
    exit_code = EXIT_USAGE


class Unreachable(ClientError):
    exit_code = EXIT_UNREACHABLE


class AuthError(ClientError):
    exit_code = EXIT_AUTH


# ---------------------------------------------------------------------- settings and HTTP

@dataclass(frozen=True)
class ClientSettings:
    url: str
    token: str
    timeout_s: float = 30.0
    source: str = ""


def config_path(environ=os.environ):
    """The user's config file (it need not exist)."""
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "sbk" / "config.toml"


def load_settings(url=None, token=None, environ=os.environ):
    """File, then environment, then flags; BadInput on a broken file, AuthError without a token."""
    path = config_path(environ)
    data = {}
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise BadInput(f"cannot read {path}: {exc}") from None
        unknown = sorted(set(data) - {"url", "token", "timeout_s"})
        if unknown:
            raise BadInput(f"{path}: unknown key {unknown[0]!r} (known: url, token, timeout_s)")
    url = url or environ.get("SBK_URL") or data.get("url") or "http://127.0.0.1:8080"
    token = token or environ.get("SBK_TOKEN") or data.get("token")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BadInput(f"the server URL must start with http:// or https://, not {url!r}")
    if not token or not isinstance(token, str):
        raise AuthError(f"no API token: set SBK_TOKEN, pass --token, or put token = \"...\" in {path}")
    timeout = data.get("timeout_s", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise BadInput(f"{path}: timeout_s must be a positive number")
    return ClientSettings(url.rstrip("/"), token, float(timeout), str(path) if data else "environment")


class Client:
    """JSON over HTTP to `<url>/api/v1` with the bearer token; `_reply` maps every failure."""

    def __init__(self, settings):
        self.settings = settings
        self.base = settings.url + "/api/v1"
        self.http = requests.Session()
        self.http.headers.update({"Authorization": f"Bearer {settings.token}",
                                  "Accept": "application/json"})

    def call(self, method, path, params=None, body=None, raw=False):
        """One request; the decoded JSON reply (bytes with `raw`)."""
        url = self.base + path
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.http.request(method, url, params=params, json=body,
                                         timeout=self.settings.timeout_s)
        except requests.Timeout:
            raise Unreachable(f"{self.settings.url} did not answer within {self.settings.timeout_s:g} s") from None
        except requests.RequestException as exc:
            log.debug("%s %s failed", method, url, exc_info=True)
            raise Unreachable(f"cannot reach the server at {self.settings.url} ({_root_cause(exc)})") from None
        return self._reply(method, path, response, raw)

    @staticmethod
    def _reply(method, path, response, raw):
        status = response.status_code
        if status < 400:
            if raw:
                return response.content
            try:
                return response.json() if response.content else None
            except ValueError:
                raise Unreachable(f"{method} {path}: the reply is not JSON (is this an sbk server?)") from None
        try:
            body = response.json()
            error, message = body.get("error", "error"), body.get("message", "")
        except (ValueError, AttributeError):
            error, message = "error", response.text.strip()[:200]
        line = f"{message} ({status} {error})" if message else f"HTTP {status} {error}"
        if status in (401, 403):
            raise AuthError(f"the server refused the token: {line}")
        if status == 400:
            raise BadInput(line)
        if status >= 500:
            raise Unreachable(f"the server failed on {method} {path}: {line}")
        raise ClientError(line)

    def get(self, path, **params):
        return self.call("GET", path, params=params)

    def post(self, path, body=None):
        return self.call("POST", path, body=body if body is not None else {})

    def patch(self, path, body):
        return self.call("PATCH", path, body=body)

    def delete(self, path):
        return self.call("DELETE", path)


def _root_cause(exc):
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    return str(exc).split(": ", 1)[-1][:160] or type(exc).__name__


# ---------------------------------------------------------------------- output

class Output:
    """Tables for people, JSON for scripts; progress lines only on a terminal."""

    def __init__(self, as_json, stream=None, err=None):
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self.err = err or sys.stderr
        self.live = self.err.isatty() and not as_json

    def json(self, data):
        print(json.dumps(data, indent=2, sort_keys=False), file=self.stream)

    def line(self, text=""):
        print(text, file=self.stream)

    def table(self, columns, rows, empty="(none)"):
        """`columns` are (header, key or function); numbers align right."""
        cells = [[_cell(get(r) if callable(get) else r.get(get)) for _, get in columns] for r in rows]
        if not cells:
            self.line(empty)
            return
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _) in enumerate(columns)]
        numeric = [all(_numeric(c[i]) for c in cells) for i in range(len(columns))]

        def fmt(values):
            return "  ".join(v.rjust(w) if num else v.ljust(w)
                             for v, w, num in zip(values, widths, numeric)).rstrip()

        self.line(fmt([h for h, _ in columns]))
        for c in cells:
            self.line(fmt(c))

    def pairs(self, items):
        width = max(len(k) for k, _ in items)
        for key, value in items:
            self.line(f"{key + ':':<{width + 1}} {_cell(value)}")

    def progress(self, text):
        if self.live:
            print(f"» {text}", file=self.err, flush=True)


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def _numeric(text):
    if text in ("", "-"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _counts(counts, order=None):
    """{"open": 1, "valid": 0} as "1 open, 0 valid"."""
    keys = order or sorted(counts)
    return ", ".join(f"{counts.get(k, 0)} {k}" for k in keys if counts.get(k, 0) or order)


# ---------------------------------------------------------------------- argument helpers

def _pairs(items, what, sep="="):
    """["K=V", ...] (or another separator) as a dict; BadInput on a malformed item."""
    out = {}
    for item in items or ():
        key, found, value = item.partition(sep)
        if not found or not key:
            raise BadInput(f"{what} must look like NAME{sep}VALUE, not {item!r}")
        out[key.strip()] = value.strip()
    return out


def _csv(text):
    return [x.strip() for x in text.split(",") if x.strip()] if text else []


def _statuses(text):
    out = []
    for name in _csv(text):
        group = STATUS_GROUPS.get(name)
        if group:
            out.extend(group)
        elif name in STATUSES:
            out.append(name)
        else:
            raise BadInput(f"unknown status {name!r} (one of {', '.join(STATUSES)}, or all, pending, notdone)")
    return ",".join(dict.fromkeys(out)) or None


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be 1 or more")
    return value


BULK_SYNTAX = ("request=ID,sites=A+B,runs=N,events=N[,test][,log][,repeat] (a split request: runs optional, "
               "repeat makes slices given to jobs again), or for a test bulk "
               "test,params=NAME:VALUE+NAME:VALUE[,input=MODE[:LFN+LFN]][,output-sites=A+B] instead of request")


def parse_bulk(spec):
    """`request=7,sites=INFN-T1+INFN-BARI,runs=10,events=80000[,test][,log]` (or params=...) as a bulk dict."""
    bulk = {"test": False, "log_to_db": False}
    for part in _csv(spec):
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
            bulk["parameters"] = _pairs(value.split("+"), f"params in {spec!r}", sep=":")
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


# ---------------------------------------------------------------------- commands: definitions

def cmd_me(client, out, args):
    me = client.get("/me")
    if out.as_json:
        return out.json(me)
    out.pairs([("user", me["name"]), ("groups", me["groups"]), ("privileges", me["privileges"]),
               ("auto-sub", "enabled" if me.get("auto_sub", True) else "disabled")])


def cmd_session(client, out, args):
    if args.action == "list":
        sessions = client.get("/sessions")["sessions"]
        if out.as_json:
            return out.json(sessions)
        return out.table([("session", "name"), ("module", "payload_module"),
                          ("parameters", lambda s: [p["name"] for p in s["parameters"]]),
                          ("releases", lambda s: [f"{sw['version']} {sw['revision']}" for sw in s["software"]]),
                          ("description", "description")], sessions)
    if args.action == "create":
        body = {"name": args.name, "description": args.description or "",
                "parameters": [_parameter(p) for p in args.param or ()]}
        if args.payload_module:
            body["payload_module"] = args.payload_module
        session = client.post("/sessions", body)
    elif args.action == "param":
        session = client.post(f"/sessions/{args.name}/parameters", _parameter(args.param))
    elif args.action == "step":
        session = client.post(f"/sessions/{args.name}/steps", {
            "name": args.step, "module": args.module, "parameters": _pairs(args.param or (), "--param"),
            "args": args.arg or []})
    elif args.action == "step-delete":
        session = client.delete(f"/sessions/{args.name}/steps/{args.step}")
    else:
        session = client.get(f"/sessions/{args.name}")
    if out.as_json:
        return out.json(session)
    out.pairs([("session", session["name"]), ("payload module", session["payload_module"]),
               ("description", session["description"])])
    out.line()
    out.table([("parameter", "name"), ("allowed values", lambda p: p["allowed"] or "(any)")],
              session["parameters"], empty="no job parameters")
    out.line()
    out.table([("step", "name"), ("module", "module"), ("parameters", "parameters"), ("args", "args")],
              session.get("steps", []), empty="no step templates")
    out.line()
    _software_table(out, session["software"])


def _stage_text(stage):
    """A request's follow-up stage and where it stands, in one line."""
    if not stage:
        return "none"
    when = "all jobs done" if stage["condition"] == "all" else f"{stage['fraction']:g} of the jobs done, the rest final"
    state = stage["state"] + (f" ({stage['waiting_for']})" if stage.get("waiting_for") else "")
    jobs = f", jobs {_counts(stage['jobs'])}" if stage.get("jobs") else ""
    return f"{stage['template']} when {when}: {state}{jobs}"


def _steps_text(steps):
    """A request's steps in one line: sim, dq(min_events=10)."""
    return ", ".join(step["template"] + (f"({', '.join(f'{k}={v}' for k, v in step['parameters'].items())})"
                                         if step["parameters"] else "") for step in steps or []) or "(the session's module)"


def _parameter(text):
    name, _, allowed = text.partition("=")
    return {"name": name, "allowed": _csv(allowed)}


def _software_table(out, releases):
    out.table([("id", "id"), ("session", "session"), ("name", "name"), ("version", "version"),
               ("revision", "revision"), ("workdir", "workdir"), ("exe", "exe"), ("lfn", "lfn"),
               ("retired", lambda sw: "retired" if sw.get("retired") else "")],
              releases, empty="no software releases")


def cmd_software(client, out, args):
    if args.action == "add":
        body = {"name": args.name, "version": args.version, "revision": args.revision, "lfn": args.lfn,
                "adler32": args.adler32, "workdir": args.workdir, "exe": args.exe,
                "env": _pairs(args.env, "--env")}
        sw = client.post(f"/sessions/{args.session}/software", body)
        return out.json(sw) if out.as_json else out.line(
            f"software {sw['name']} {sw['version']} {sw['revision']} added to {sw['session']} (id {sw['id']})")
    if args.action in ("retire", "restore"):   # 409 release-in-use while an open production uses it
        sw = client.patch(f"/sessions/{args.session}/software/{args.id}", {"retired": args.action == "retire"})
        return out.json(sw) if out.as_json else out.line(
            f"software {sw['name']} {sw['version']} {sw['revision']} of {sw['session']} {args.action}d")
    if args.session:
        releases = client.get(f"/sessions/{args.session}")["software"]
    else:
        releases = [sw for s in client.get("/sessions")["sessions"] for sw in s["software"]]
    return out.json(releases) if out.as_json else _software_table(out, releases)


def cmd_production(client, out, args):
    if args.action == "list":
        prods = client.get("/productions", session=args.session, status=args.status)["productions"]
        if not args.all:
            prods = [p for p in prods if not p["test"]]
        if out.as_json:
            return out.json(prods)
        return out.table([
            ("prod series", "name"), ("session", "session"), ("status", "status"),
            ("soft release", lambda p: f"{p['software']['version']} {p['software']['revision']}"),
            ("jobs", lambda p: _counts(p["jobs"]) or "0"),
            ("requests", lambda p: f"{sum(p['requests'].values())} ("
                                   + _counts(p["requests"], ("open", "valid", "running", "closed")) + ")"),
            ("note", "note")], prods, empty="no productions")
    if args.action == "create":
        body = {"name": args.name, "session": args.session, "version": args.version, "note": args.note or ""}
        if args.revision is not None:
            body["revision"] = args.revision
        prod = client.post("/productions", body)
        verb = f"created (and {prod['twin']})"
    elif args.action in ("close", "open"):
        prod = client.patch(f"/productions/{args.name}", {"status": "closed" if args.action == "close" else "open"})
        verb = f"{prod['status']} (and {prod['twin']})"
    else:
        prod = client.get(f"/productions/{args.name}")
        verb = None
    if out.as_json:
        return out.json(prod)
    if verb:
        return out.line(f"production {prod['name']} {verb}")
    sw = prod["software"]
    out.pairs([("production", prod["name"]), ("session", prod["session"]), ("status", prod["status"]),
               ("test twin of" if prod["test"] else "test twin", prod["twin"]),
               ("software", f"{sw['name']} {sw['version']} {sw['revision']}"),
               ("requests", _counts(prod["requests"], ("open", "valid", "running", "closed"))),
               ("jobs", _counts(prod["jobs"]) or "0"), ("created", f"{prod['created_at']} by {prod['created_by']}"),
               ("note", prod["note"])])


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


def _request_columns():
    return [("id", "id"), ("production", "production"), ("status", "status"),
            ("parameters", lambda r: list(r["parameters"].values())), ("evt/job", "events_per_job"),
            ("min runnum", "min_runnum"), ("input", lambda r: r["input_mode"]),
            ("sites", "output_sites"), ("jobs", lambda r: _counts(r["jobs"]) or "0"), ("test req", "test_request")]


def cmd_request(client, out, args):
    if args.action == "list":
        reqs = client.get("/requests", production=args.production, status=args.status,
                          limit=args.limit)["requests"]
        return out.json(reqs) if out.as_json else out.table(_request_columns(), reqs, empty="no requests")
    if args.action == "create":
        body = {"production": args.production}
        if args.source is not None:
            body["from"] = args.source
        if args.param:
            body["parameters"] = _pairs(args.param, "--param")
        for flag, field, _ in REQUEST_SETTINGS:
            value = getattr(args, flag.replace("-", "_"))
            if value is not None:
                body[field] = value
        for flag, field in REQUEST_LISTS:
            value = getattr(args, flag.replace("-", "_"))
            if value:
                body[field] = [x for v in value for x in _csv(v)]
        if args.same_output_dirs:
            body["same_output_dirs"] = True
        if args.followup:
            body["followup"] = {"template": args.followup, "files_per_job": args.followup_files_per_job or 0,
                                **({"condition": "fraction", "fraction": args.followup_fraction}
                                   if args.followup_fraction is not None else {"condition": "all"})}
        if "parameters" not in body and "from" not in body:
            raise BadInput("a request needs --param NAME=VALUE for each job parameter, or --from REQUEST")
        req = client.post("/requests", body)
        if not out.as_json:
            return out.line(f"request {req['id']} created on {req['production']} (test request "
                            f"{req['test_request']}), status {req['status']}")
    elif args.action == "set-status":
        req = client.patch(f"/requests/{args.id}", {"status": args.status})
        if not out.as_json:
            return out.line(f"request {req['id']} is {req['status']}")
    elif args.action == "delete":
        gone = client.delete(f"/requests/{args.id}")
        if out.as_json:
            return out.json(gone)
        also = [f"its test request {i}" for i in gone["deleted"][1:]]
        if gone["test_request_kept"]:
            also.append(f"its test request {gone['test_request_kept']} kept: it has jobs")
        return out.line(f"request {args.id} deleted" + (f" ({'; '.join(also)})" if also else ""))
    else:
        req = client.get(f"/requests/{args.id}")
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
               ("jobs", _counts(req["jobs"]) or "0"), ("created", f"{req['created_at']} by {req['created_by']}")])


def cmd_site(client, out, args):
    if args.action == "reset":
        reply = client.post(f"/sites/{args.name}/reset")
        if out.as_json:
            return out.json(reply)
        return out.line(f"site {reply['site']} reset: its {reply['failed_before']} failed job(s) of the last 24 h no "
                        f"longer count against its failed threshold ({reply['threshold_failed'] or 'none'})")
    if args.action == "list":
        sites = client.get("/sites")["sites"]
        if out.as_json:
            return out.json(sites)
        return out.table([("site", "name"), ("prepared", lambda s: s["thresholds"]["prepared"]),
                          ("running", lambda s: s["thresholds"]["running"]),
                          ("failed", lambda s: s["thresholds"]["failed"]), ("bunch", "bunch_size"),
                          ("se", lambda s: s["se"].get("access") if s["se"] else None),
                          ("last submission", "last_submission"), ("description", "description")],
                         sites, empty="no sites")
    if args.action == "add":
        body = {"name": args.name, **_site_settings(args)}
        site = client.post("/sites", body)
    elif args.action == "set":
        body = _site_settings(args)
        sessions, productions = {}, {}
        for names, flag, value in ((args.enable_session, "enabled", True), (args.disable_session, "enabled", False),
                                   (args.support_session, "supported", True),
                                   (args.unsupport_session, "supported", False)):
            for name in names or ():
                sessions.setdefault(name, {})[flag] = value
        for names, value in ((args.allow_production, True), (args.disallow_production, False)):
            for name in names or ():
                productions[name] = {"allowed": value}
        if sessions:
            body["sessions"] = sessions
        if productions:
            body["productions"] = productions
        if args.reload_se:
            body["reload_se"] = True
        if not body:
            raise BadInput("nothing to set: give a threshold, --bunch-size, --description or a switch")
        site = client.patch(f"/sites/{args.name}", body)
    else:
        site = client.get(f"/sites/{args.name}")
    if out.as_json:
        return out.json(site)
    t = site["thresholds"]
    out.pairs([("site", site["name"]), ("thresholds", f"prepared {t['prepared']}, running {t['running']}, "
                                                      f"failed {t['failed']}"),
               ("bunch dimension", site["bunch_size"]), ("description", site["description"]),
               ("se", site["se"] or None), ("jobs", _counts(site.get("jobs", {})) or "0"),
               ("last activity", site.get("last_activity")), ("last submission", site["last_submission"])])
    out.line()
    out.table([("session", "session"), ("enabled", "enabled"), ("supported", "supported")],
              site.get("sessions", []), empty="no per-session switches (every session enabled)")
    out.line()
    out.table([("production", "production"), ("allowed", "allowed"), ("last submission", "last_submission"),
               ("by", "last_submitted_by")], site.get("productions", []),
              empty="no per-production switches (every production allowed)")


def _site_settings(args):
    body = {}
    for key in ("description", "threshold_prepared", "threshold_running", "threshold_failed", "bunch_size"):
        value = getattr(args, key)
        if value is not None:
            body[key] = value
    return body


# ---------------------------------------------------------------------- commands: submit

def cmd_submit(client, out, args):
    bulks = [parse_bulk(b) for b in args.bulk or ()]
    if args.request is not None or args.param or args.sites or args.runs or args.events:
        # (--runs may be left out for a split request: one job per slice not yet given to a job)
        missing = [f for f, v in (("--request", args.request or args.param), ("--sites", args.sites),
                                  ("--events", args.events)) if not v]
        if missing:
            raise BadInput(f"a bulk given by flags needs {missing[0]} as well")
        bulk = {"sites": _csv(args.sites), "events": args.events, "test": args.test,
                "log_to_db": args.log_in_db, **({"runs": args.runs} if args.runs else {})}
        if args.split_list:
            bulk["split"] = _split_list(args.split_list)
        if args.repeat_slices:
            bulk["repeat_slices"] = True
        if args.param:
            bulk["parameters"] = _pairs(args.param, "--param")
        if args.request is not None:
            bulk["request"] = args.request
        bulks.insert(0, bulk)
    if not bulks:
        raise BadInput("nothing to submit: give --request/--sites/--runs/--events or one --bulk per set")
    body = {"production": args.production, "bulks": bulks, "dry_run": args.dry_run}
    if args.override_thresholds:
        body["override_thresholds"] = True
    if args.backend:
        body["backend"] = args.backend
    total = sum(b["runs"] * len(b["sites"]) for b in bulks if b.get("runs"))
    if any(not b.get("runs") for b in bulks):
        total = f"{total} + one a slice"
    started = time.monotonic()
    out.progress(f"{'planning' if args.dry_run else 'preparing'} {len(bulks)} bulk(s), {total} job(s) "
                 f"on {args.production}" + (f" for the {args.backend} backend" if args.backend else ""))
    plan = client.post("/submissions", body)
    out.progress(f"server answered in {time.monotonic() - started:.1f} s")
    if not args.dry_run and args.wait and args.backend:
        _wait_submitted(client, out, plan["job_ids"], args.wait)
    if out.as_json:
        return out.json(plan)
    print_plan(out, plan, parameter_order(client))


def _split_list(path):
    """The JSON list of LFN lists in `path` (the server checks the LFNs)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"--split-list {path}: {exc}") from None
    if not isinstance(data, list):
        raise BadInput(f"--split-list {path}: not a JSON list of LFN lists")
    return data


def _split_line(split):
    """A set's split in the summary: how it was cut, what was made, what was left out or left over."""
    how = (f"{split['files_per_job']} files per job" if split["by"] == "files_per_job" else "by the given list")
    first = " | ".join(", ".join(piece) for piece in split["first_slices"])
    return (f"  Split: {split['slices']} slice(s), {how}, of {split['input_files']} input file(s); "
            f"{split['files_already_given']} already in jobs' slices, {split['left']} slice(s) left for later"
            + (" (repeating slices)" if split.get("repeat_slices") else "") + f"\n  First slice(s): {first}")


def _job_inputs(job):
    """A job's inputs in one line: its slice, or its request's input."""
    given = job.get("input") or {}
    if given.get("split"):
        return f"slice of {len(given['paths'])} file(s) (LIST)"
    if not given or given.get("mode") == "NONE":
        return "-"
    paths = given.get("paths") or []
    return f"{given['mode']} {paths[0]}" + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")


def _wait_submitted(client, out, job_ids, timeout):
    """Poll until no job of the submission is still `prepared` (the backend took them)."""
    deadline = time.monotonic() + timeout
    ids = set(job_ids)
    while True:
        waiting = 0
        for page in _pages(client, {"status": "prepared", "sort": "id"}):
            waiting += sum(1 for j in page if j["id"] in ids)
        out.progress(f"{len(ids) - waiting}/{len(ids)} job(s) handed to the backend")
        if not waiting or time.monotonic() > deadline:
            return
        time.sleep(1.0)


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
    names = _ordered(order, (k for s in plan["sets"] for k in (s["parameters"] or {})))
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


# ---------------------------------------------------------------------- commands: jobs

JOB_FILTERS = (  # (flag, API parameter, argparse type, help)
    ("user", "user", str, "jobs of this user"),
    ("production", "production", str, "comma list of productions"),
    ("request", "request", str, "comma list of request ids"),
    ("runnum-from", "runnum_from", int, "lowest runnum"),
    ("runnum-to", "runnum_to", int, "highest runnum"),
    ("status", "status", str, "comma list of statuses, or all, pending, notdone"),
    ("error-code", "error_code", int, "error code (e.g. 7 or 007)"),
    ("site", "site", str, "comma list of sites"),
    ("last", "last", _positive, "only the last N jobs"),
    ("older-than-hours", "older_than_hours", float, "submitted more than H hours ago"),
    ("prepared-from", "prepared_from", str, "prepared at or after (ISO time)"),
    ("prepared-to", "prepared_to", str, "prepared at or before (ISO time)"),
)


def _add_job_filters(p):
    group = p.add_argument_group("job monitor filters")
    for flag, _, kind, text in JOB_FILTERS:
        group.add_argument(f"--{flag}", type=kind, help=text)
    group.add_argument("-q", "--search", help="text search (runnum, gjid, parameters, site, user)")
    group.add_argument("--retried", action="store_true", help="only jobs the server retried automatically")


def job_query(args):
    """The GET /jobs query parameters of the filter flags."""
    params = {api: getattr(args, flag.replace("-", "_")) for flag, api, _, _ in JOB_FILTERS}
    params["status"] = _statuses(params["status"])
    params["q"] = args.search
    params["retried"] = "true" if getattr(args, "retried", False) else None
    return {k: v for k, v in params.items() if v is not None}


def _pages(client, params, per_page=1000):
    """Every page of a job query, followed by its `next` cursor: a broad query's total is an
    estimate, so counting pages against it could stop early (or read deep OFFSETs)."""
    cursor = None
    while True:
        reply = client.get("/jobs", **dict(params, per_page=per_page, **({"after": cursor} if cursor else {})))
        yield reply["jobs"]
        cursor = reply.get("next")
        if not cursor:
            return


def _status_with_code(job):
    code = job.get("error_code")
    return (job["status"] + ("" if code in (None, 0) else f" {code:03d}")
            + (f", retry at {job['retry_at']}" if job.get("retry_at") else ""))   # server/retries.py


def parameter_order(client):
    """Job parameter names in their sessions' order (the API's JSON objects come sorted)."""
    return [p["name"] for s in client.get("/sessions")["sessions"] for p in s["parameters"]]


def _ordered(order, names):
    names = list(dict.fromkeys(names))
    return [n for n in dict.fromkeys(order) if n in names] + [n for n in names if n not in order]


def job_columns(jobs, order=()):
    names = _ordered(order, (k for j in jobs for k in (j.get("parameters") or {})))
    return [("id", "id"), ("runnum", "runnum"), ("events", "events"),
            *[(n, lambda j, n=n: (j.get("parameters") or {}).get(n)) for n in names],
            ("status", _status_with_code), ("step", "step"), ("gjid", "gjid"), ("site", "site"),
            ("wct (s)", "wct")]


def cmd_jobs(client, out, args):
    params = dict(job_query(args), sort=args.sort, per_page=args.per_page)
    params.update({"after": args.after} if args.after else {"page": args.page})
    reply = client.get("/jobs", **params)
    if out.as_json:
        return out.json(reply)
    jobs = reply["jobs"]
    out.table(job_columns(jobs, parameter_order(client) if jobs else ()), jobs, empty="")
    about = "about " if reply.get("total_is_estimate") else ""
    shown = ""
    if jobs and reply["page"] is not None:
        pages = max(1, math.ceil(reply["total"] / reply["per_page"]))
        first = (reply["page"] - 1) * reply["per_page"] + 1
        shown = f"; showing {first} to {first + len(jobs) - 1}, page {reply['page']} of {about}{pages}"
    out.line(f"{about}{reply['total']} jobs found matching the search criteria{shown}")
    if reply.get("next"):
        # deep pages cost the same as the first one through the cursor
        out.line(f"next page: --after {reply['next']}")


def cmd_job(client, out, args):
    job = client.get(f"/jobs/{args.id}")
    log_text = _log_text(client.call("GET", f"/jobs/{args.id}/log", raw=True)) if args.log else None
    if out.as_json:
        if log_text is not None:
            job["log_text"] = log_text
        return out.json(job)
    error = job.get("error") if job.get("error_code") else None
    out.pairs([("job", job["id"]), ("runnum", job["runnum"]), ("events", job["events"]),
               ("production", f"{job['production']} (request {job['request']}, session {job['session']})"),
               ("parameters", job["parameters"]), ("user", job["user"]),
               ("status", _status_with_code(job) + (f" ({error['message']}, blame {error['blame']})" if error else "")),
               ("step", f"{job['step'] or '-'} {job['message'] or ''}".strip()), ("site", job["site"]),
               ("gjid", job["gjid"]), ("backend", job["backend"]), ("attempt", _attempt_text(job)),
               ("wct (s)", job["wct"]), ("prepared", job["prepared_at"]), ("submitted", job["submitted_at"]),
               ("started", job["started_at"]), ("finished", job["finished_at"]),
               ("queue time", _duration(job.get("queue_s"))), ("run time", _duration(job.get("run_s"))),
               ("last heartbeat", job["last_heartbeat"]), ("log", job["log"]), ("inputs", _job_inputs(job))])
    if (job.get("input") or {}).get("split"):   # a split request's job: the slice it was given
        out.line("\nINPUT SLICE")
        for lfn in job["input"]["paths"]:
            out.line(f"  {lfn}")
    out.line("\nHISTORY")
    out.table([("attempt", "attempt"), ("seq", "seq"), ("time", "time"), ("status", "status"),
               ("kind", "kind"), ("step", "step"), ("code", "code"), ("message", "message")],
              job["history"], empty="no events yet")
    if args.outputs:
        out.line("\nOUTPUTS")
        out.table([("lfn", "lfn"), ("site", "site"), ("surl", "surl"), ("size", "size"), ("adler32", "adler32"),
                   ("attempt", "attempt")], job["outputs"], empty="no outputs registered")
        out.line("\nTRANSFER ATTEMPTS (final report)")
        out.table([("direction", "direction"), ("tool", "tool"), ("source", "source"),
                   ("destination", "destination"), ("size", "size"), ("seconds", "seconds"),
                   ("error", "error")], (job.get("report") or {}).get("transfers", []),
                  empty="no transfer attempts reported")
    if job.get("removals"):   # shown whenever there are some: files on SEs waiting to be deleted
        out.line("\nREMOVAL REQUESTS")
        out.table([("attempt", "attempt"), ("site", "site"), ("surl", "surl"), ("state", "state"),
                   ("tries", "tries"), ("last error", "last_error")], job["removals"])
    if log_text is not None:
        out.line("\nLOG")
        out.line(log_text.rstrip())


def _duration(seconds):
    """Seconds and their human form, '3723.0 s (1h 2m 3s)'; None (not queued or not started) stays None."""
    if seconds is None:
        return None
    whole = int(round(seconds))
    units = ((whole // 86400, "d"), (whole // 3600 % 24, "h"), (whole // 60 % 60, "m"), (whole % 60, "s"))
    return f"{seconds:.1f} s ({' '.join(f'{n}{u}' for n, u in units if n) or '0s'})"


def _attempt_text(job):
    """`2 of 3 (1 automatic retry: 2)`: the attempt, the request's max_attempts, the automatic attempts."""
    text = str(job["attempt"]) + (f" of {job['max_attempts']}" if job.get("max_attempts") else "")
    automatic = [a["number"] for a in job.get("attempts", []) if a.get("automatic")]
    if automatic:
        text += f" ({len(automatic)} automatic {'retry' if len(automatic) == 1 else 'retries'}: " \
                f"{', '.join(map(str, automatic))})"
    return text


def _log_text(data):
    """The text files of a log tarball, each under a header line."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            parts = []
            for member in tar.getmembers():
                if member.isfile():
                    text = tar.extractfile(member).read().decode("utf-8", "replace")
                    parts.append(f"==> {member.name} <==\n{text.rstrip()}")
            return "\n\n".join(parts)
    except tarfile.TarError:
        try:
            return gzip.decompress(data).decode("utf-8", "replace")
        except OSError:
            return data.decode("utf-8", "replace")


def cmd_kill(client, out, args):
    results = [client.post(f"/jobs/{job_id}/kill") for job_id in args.ids]
    if out.as_json:
        return out.json(results)
    for r in results:
        out.line(f"job {r['id']}: {r['status']}" + (" (kill sent with its next replies until the wrapper acts on it)"
                                                   if r.get("command") else "")
                 + (" (its automatic retry cancelled)" if r.get("retry_cancelled") else ""))


def cmd_resubmit(client, out, args):
    """By ids (POST /jobs/ID/resubmit each), or by filters (POST /jobs/resubmit: the failed ones that match)."""
    params = job_query(args)
    if args.ids and params:
        raise BadInput("give job ids or filters, not both")
    if not args.ids and not params:
        raise BadInput("give job ids, or filters such as --production P --status failed,sys-failed")
    body = {"backend": args.backend} if args.backend else {}
    if params:
        reply = client.call("POST", "/jobs/resubmit", params=params, body=dict(body, dry_run=args.dry_run))
        if args.dry_run:
            return out.json(reply) if out.as_json else out.line(
                f"would resubmit {reply['total']} job(s): {' '.join(map(str, reply['jobs'])) or '-'}")
        results, refused = reply["resubmitted"], reply["refused"]
    else:
        if args.dry_run:
            raise BadInput("--dry-run lists the jobs that filters match; with ids there is nothing to list")
        results, refused = [], []
        for n, job_id in enumerate(args.ids, start=1):
            try:
                results.append(client.call("POST", f"/jobs/{job_id}/resubmit", body=body or None))
            except ClientError as exc:
                if type(exc) is not ClientError:   # unreachable, token refused: stop at once
                    raise
                refused.append({"id": job_id, "message": str(exc)})
            if n % 20 == 0:
                out.progress(f"{n}/{len(args.ids)} resubmitted")
        reply = {"resubmitted": results, "refused": refused}
    if out.as_json:
        out.json(reply)
    else:
        for r in results:
            out.line(f"job {r['id']}: attempt {r['attempt']}, {r['status']}")
        for r in refused:
            out.line(f"job {r['id']}: not resubmitted: {r['message']}")
        out.line(f"{len(results)} job(s) resubmitted" + (f", {len(refused)} refused" if refused else ""))
    if refused:
        raise ClientError(f"{len(refused)} of {len(results) + len(refused)} job(s) not resubmitted")


# ---------------------------------------------------------------------- commands: home page

def cmd_stats(client, out, args):
    stats = client.get("/stats", user=args.user)
    if out.as_json:
        return out.json(stats)
    out.line("SESSIONS' STATISTICS")
    out.table([("session", "session"), ("user", "user"), ("job launched", "jobs"),
               ("events generated", "events"), ("total wct (s)", "wct")], stats["sessions"], empty="no jobs yet")
    out.line("\nSITES")
    out.table([("site", "site"), *[(s, lambda r, s=s: r["jobs"].get(s, 0)) for s in STATUSES]],
              stats["sites"], empty="no jobs yet")


def cmd_activities(client, out, args):
    acts = client.get("/activities", user=args.user, limit=args.limit)["activities"]
    if out.as_json:
        return out.json(acts)
    out.table([("time", "time"), ("type", lambda a: a["type"].upper().replace("-", "")),
               ("session", "session"), ("user", "user"), ("info", "info")], acts, empty="no activities")


# ---------------------------------------------------------------------- commands: people (tokens)

def cmd_token(client, out, args):
    """API tokens: list (never their hashes), create (shown once), revoke."""
    if args.action == "list":
        tokens = client.get("/tokens", user=args.user)["tokens"]
        if out.as_json:
            return out.json(tokens)
        return out.table([("id", "id"), ("user", "user"), ("label", "label"), ("created", "created_at"),
                          ("expires", lambda t: (t["expires_at"] or "never") + (" (expired)" if t["expired"] else ""))],
                         tokens, empty="no tokens")
    if args.action == "create":
        body = {"label": args.label or ""}
        if args.expires_days is not None:
            body["expires_in_days"] = args.expires_days
        if args.user:
            body["user"] = args.user
        made = client.post("/tokens", body)
        if out.as_json:
            return out.json(made)
        out.line(made["token"])
        print(f"token {made['id']} of {made['user']}, expires {made['expires_at'] or 'never'}: "
              "shown this once, keep it", file=out.err)
        return None
    gone = client.delete(f"/tokens/{args.id}")["revoked"]
    return out.json(gone) if out.as_json else out.line(f"token {gone['id']} of {gone['user']} revoked")


# ---------------------------------------------------------------------- parser and the one catch point

COMMANDS = {"me": cmd_me, "session": cmd_session, "software": cmd_software, "production": cmd_production,
            "request": cmd_request, "site": cmd_site, "submit": cmd_submit, "jobs": cmd_jobs, "job": cmd_job,
            "kill": cmd_kill, "resubmit": cmd_resubmit, "stats": cmd_stats, "activities": cmd_activities,
            "token": cmd_token}


class OneLineParser(argparse.ArgumentParser):
    """Wrong arguments: one line and exit 2, not the whole usage text."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _common():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="print the server's JSON (for scripts)")
    p.add_argument("--url", help="server URL (default: $SBK_URL, the config file, http://127.0.0.1:8080)")
    p.add_argument("--token", help="API token (default: $SBK_TOKEN or the config file)")
    return p


def add_commands(sub):
    """Add the client commands to `sbk`'s subparsers."""
    common = _common()

    def command(name, help_text, with_actions=False):
        # Commands with actions take the common flags after the action (`sbk production list --json`).
        p = sub.add_parser(name, help=help_text, parents=[] if with_actions else [common],
                           description=help_text)
        p.__class__ = OneLineParser
        p.set_defaults(func=run, client_command=name)
        return p

    def actions(p):
        return p.add_subparsers(dest="action", required=True, parser_class=OneLineParser)

    command("me", "who the token belongs to, with groups and privileges")

    s = actions(command("session", "sessions and their job parameters", with_actions=True))
    s.add_parser("list", parents=[common], help="all sessions")
    s.add_parser("show", parents=[common], help="one session").add_argument("name")
    c = s.add_parser("create", parents=[common], help="a new session")
    c.add_argument("name")
    c.add_argument("--description")
    c.add_argument("--payload-module", help="payload module (default: the name in lower case)")
    c.add_argument("--param", action="append", metavar="NAME[=V1,V2]", help="a job parameter (repeat)")
    c = s.add_parser("param", parents=[common], help="define a job parameter or replace its allowed values")
    c.add_argument("name", help="the session")
    c.add_argument("param", metavar="NAME[=V1,V2]")
    c = s.add_parser("step", parents=[common], help="define a step template (a module instance a request may "
                                                    "choose with --step), or replace one no request uses")
    c.add_argument("name", help="the session")
    c.add_argument("step", help="the step's name")
    c.add_argument("--module", required=True, help="its payload module (generic, fastsim, dq, a site's, ...)")
    c.add_argument("--param", action="append", metavar="NAME=VALUE", help="a default parameter (repeat)")
    c.add_argument("--arg", action="append", metavar="ARG", help="a command-line argument (repeat, in order)")
    c = s.add_parser("step-delete", parents=[common], help="remove a step template no request uses")
    c.add_argument("name", help="the session")
    c.add_argument("step")

    s = actions(command("software", "software releases of the sessions", with_actions=True))
    s.add_parser("list", parents=[common], help="releases").add_argument("session", nargs="?")
    c = s.add_parser("add", parents=[common], help="register a release (tarball by LFN)")
    c.add_argument("session")
    for flag in ("name", "version", "lfn", "adler32", "workdir", "exe"):
        c.add_argument(f"--{flag}", required=True)
    c.add_argument("--revision", type=int, default=0)
    c.add_argument("--env", action="append", metavar="K=V")
    for verb, help_text in (("retire", "retire a release: no new production may use it"),
                            ("restore", "make a retired release available again")):
        c = s.add_parser(verb, parents=[common], help=help_text)
        c.add_argument("session")
        c.add_argument("id", type=int, help="the release's id (sbk software list)")

    s = actions(command("production", "productions (prod series) and their _test twins", with_actions=True))
    c = s.add_parser("list", parents=[common], help="productions (without _test twins unless --all)")
    c.add_argument("--session")
    c.add_argument("--status", choices=("open", "closed"))
    c.add_argument("--all", action="store_true", help="show the _test twins too")
    s.add_parser("show", parents=[common], help="one production").add_argument("name")
    c = s.add_parser("create", parents=[common], help="a production and its _test twin")
    c.add_argument("name")
    c.add_argument("--session", required=True)
    c.add_argument("--version", required=True, help="software version, e.g. V0.2.5")
    c.add_argument("--revision", type=int, help="software revision (default: the latest)")
    c.add_argument("--note")
    s.add_parser("close", parents=[common], help="close a production").add_argument("name")
    s.add_parser("open", parents=[common], help="reopen a production").add_argument("name")

    s = actions(command("request", "production requests", with_actions=True))
    c = s.add_parser("list", parents=[common], help="requests")
    c.add_argument("--production")
    c.add_argument("--status", choices=("open", "valid", "running", "closed"))
    c.add_argument("--limit", type=_positive)
    s.add_parser("show", parents=[common], help="one request").add_argument("id", type=_positive)
    c = s.add_parser("create", parents=[common], help="a request and its test request")
    c.add_argument("--production", required=True)
    c.add_argument("--from", dest="source", type=_positive, metavar="REQUEST",
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
    c = s.add_parser("set-status", parents=[common], help="open -> valid -> running -> closed")
    c.add_argument("id", type=_positive)
    c.add_argument("status", choices=("open", "valid", "running", "closed"))
    s.add_parser("delete", parents=[common],
                 help="a request without jobs, with its test request unless that one has jobs"
                 ).add_argument("id", type=_positive)

    s = actions(command("site", "sites: thresholds, bunch size, switches", with_actions=True))
    s.add_parser("list", parents=[common], help="all sites")
    s.add_parser("show", parents=[common], help="one site with its switches").add_argument("name")
    s.add_parser("reset", parents=[common], help="the shifter's reset: failed jobs so far no longer count against "
                 "the site's failed threshold (the jobs stay as they are)").add_argument("name")
    for action, text in (("add", "a new site"), ("set", "change a site")):
        c = s.add_parser(action, parents=[common], help=text)
        c.add_argument("name")
        c.add_argument("--description")
        for key in ("prepared", "running", "failed"):
            c.add_argument(f"--threshold-{key}", type=int, metavar="N")
        c.add_argument("--bunch-size", type=_positive, metavar="N")
    for flag in ("enable-session", "disable-session", "support-session", "unsupport-session",
                 "allow-production", "disallow-production"):
        c.add_argument(f"--{flag}", action="append", metavar="NAME")
    c.add_argument("--reload-se", action="store_true", help="reread [se] from site_configs/<name>.toml")

    c = command("submit", "submit bulks of jobs (the seed's expert UI); --dry-run prints the summary")
    c.add_argument("--production", required=True)
    c.add_argument("--request", type=_positive, help="one bulk by flags: the request id")
    c.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="with --test, instead of --request: a job parameter's value (repeat); "
                        "a missing test request is created")
    c.add_argument("--sites", help="comma list of submission sites")
    c.add_argument("--runs", type=_positive, help="jobs per site")
    c.add_argument("--events", type=_positive, help="events per job")
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

    c = command("jobs", "the job monitor")
    _add_job_filters(c)
    c.add_argument("--sort", default="runnum", help="runnum, id, status, site, prepared_at, finished_at, wct, "
                                                    "events, error_code; --sort=-wct for descending")
    c.add_argument("--page", type=_positive, default=1)
    c.add_argument("--after", metavar="CURSOR", help="the page after the one that printed this cursor "
                                                     "(as fast deep down as on page 1)")
    c.add_argument("--per-page", type=_positive, default=50)

    c = command("job", "one job: history, outputs, transfer attempts, log")
    c.add_argument("id", type=_positive)
    c.add_argument("--log", action="store_true", help="print the stored log")
    c.add_argument("--outputs", action="store_true", help="outputs and the transfer attempts")

    c = command("kill", "kill jobs (prepared: at once; running: with their next report)")
    c.add_argument("ids", nargs="+", type=_positive, metavar="ID")

    c = command("resubmit", "new attempts for jobs by id, or for the failed, sys-failed and timeout jobs "
                            "the job monitor filters match")
    c.add_argument("ids", nargs="*", type=_positive, metavar="ID")
    _add_job_filters(c)
    c.add_argument("--backend", choices=BACKENDS, help="batch backend that starts the new attempts")
    c.add_argument("--dry-run", action="store_true", help="list the jobs the filters match, resubmit nothing")

    c = command("stats", "per session and user: jobs, events, wallclock; jobs per site and status")
    c.add_argument("--user")

    c = command("activities", "the last activities (submissions, productions and requests created)")
    c.add_argument("--user")
    c.add_argument("--limit", type=_positive, default=10)

    s = actions(command("token", "API tokens: yours, or (Developer group) anyone's", with_actions=True))
    s.add_parser("list", parents=[common], help="tokens (never their hashes)").add_argument(
        "--user", help="another user's (Developer group)")
    c = s.add_parser("create", parents=[common], help="a new token, printed once")
    c.add_argument("--label", help="what the token is for")
    c.add_argument("--expires-days", type=_positive, metavar="N", help="expires after N days (default: never)")
    c.add_argument("--user", help="for another user (Developer group)")
    s.add_parser("revoke", parents=[common], help="delete a token: it is refused at once").add_argument(
        "id", type=_positive)


def run(args, stream=None, err=None):
    """Run a client command; the one place that turns ClientError into a line and an exit code."""
    err = err or sys.stderr
    try:
        client = Client(load_settings(args.url, args.token))
        COMMANDS[args.client_command](client, Output(args.json, stream, err), args)
        return 0
    except ClientError as exc:
        print(f"sbk {' '.join(filter(None, (args.client_command, getattr(args, 'action', None))))}: {exc}",
              file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"sbk {args.client_command}: interrupted", file=err)
        return 130
