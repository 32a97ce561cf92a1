"""The bookkeeping server's Python client: what `sbk`'s commands use, and what scripts and notebooks import.

    from server.client import Client, NotFound
    client = Client("https://sbk.example.org", token)
    for page in client.jobs(production="2026_July", status=["failed", "timeout"]):
        for job in page:
            print(job["id"], job["runnum"], job["status"])

Every failure is one of these (the server's `{"error", "message"}` kept in
`.error` and `.status`); `sbk` turns each class into its exit code in one place:

    ClientError              anything the client or the server refused
    ├── Refused              the server refused the request (a 4xx of its own kind)
    │   ├── NotFound         404 not-found
    │   └── Conflict         409: duplicate-session, illegal-transition, release-in-use, ...
    ├── BadInput             the server's 400 (it names the field), or arguments refused before sending
    ├── Unreachable          no answer, a timeout, a reply that is not the API's, or a 5xx
    └── AuthError            no token, or the token refused (401/403)
"""
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

import requests

log = logging.getLogger("sbk.client")

STATUSES = ("prepared", "submitted", "running", "done", "failed", "sys-failed", "timeout")
# The job monitor's status shortcuts (seed: "Select all | none | pending | notdone").
STATUS_GROUPS = {"all": STATUSES, "pending": ("prepared", "submitted", "running"),
                 "notdone": tuple(s for s in STATUSES if s != "done")}
DEFAULT_URL = "http://127.0.0.1:8080"


class ClientError(Exception):
    """A request that did not succeed: `.status` is the HTTP status (None before or without a reply),
    `.error` the server's error code (`duplicate-session`, ...), `.request_id` the server's id of the
    request when it sent one (its log lines about it carry the same)."""

    def __init__(self, message, status=None, error=None, request_id=None):
        super().__init__(message)
        self.status, self.error, self.request_id = status, error, request_id


class Refused(ClientError):
    """The server refused the request."""


class NotFound(Refused):
    """404: no such session, production, request, site, job or token."""


class Conflict(Refused):
    """409: the request collides with the server's state; `.error` says how."""


class BadInput(ClientError):
    """Bad arguments: the server's 400, or refused by the client before sending."""


class Unreachable(ClientError):
    """No answer, a timeout, something that is not the API, or the server failed (5xx)."""


class AuthError(ClientError):
    """No token, or the server refused it (401/403)."""


# ---------------------------------------------------------------------- settings

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
    """The config file, then SBK_URL/SBK_TOKEN, then the arguments; BadInput on a broken file,
    AuthError without a token."""
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
    url = url or environ.get("SBK_URL") or data.get("url") or DEFAULT_URL
    token = token or environ.get("SBK_TOKEN") or data.get("token")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BadInput(f"the server URL must start with http:// or https://, not {url!r}")
    if not token or not isinstance(token, str):
        raise AuthError(f"no API token: set SBK_TOKEN, pass --token, or put token = \"...\" in {path}")
    timeout = data.get("timeout_s", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise BadInput(f"{path}: timeout_s must be a positive number")
    return ClientSettings(url.rstrip("/"), token, float(timeout), str(path) if data else "environment")


# ---------------------------------------------------------------------- job filters

def expand_statuses(statuses):
    """Status names and shortcuts (all, pending, notdone), a list or a comma text, as the API's comma list."""
    names = statuses.split(",") if isinstance(statuses, str) else list(statuses or ())
    out = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        group = STATUS_GROUPS.get(name)
        if group:
            out.extend(group)
        elif name in STATUSES:
            out.append(name)
        else:
            raise BadInput(f"unknown status {name!r} (one of {', '.join(STATUSES)}, or all, pending, notdone)")
    return ",".join(dict.fromkeys(out)) or None


def job_filters(production=None, request=None, site=None, status=None, user=None, runnum_from=None,
                runnum_to=None, error_code=None, last=None, older_than_hours=None, prepared_from=None,
                prepared_to=None, q=None, retried=False):
    """The GET /jobs query parameters of the job monitor's filters; lists become the API's comma lists."""
    def listed(value):
        return ",".join(map(str, value)) if isinstance(value, (list, tuple, set)) else value

    params = {"production": listed(production), "request": listed(request), "site": listed(site),
              "status": expand_statuses(status), "user": user, "runnum_from": runnum_from,
              "runnum_to": runnum_to, "error_code": error_code, "last": last,
              "older_than_hours": older_than_hours, "prepared_from": prepared_from,
              "prepared_to": prepared_to, "q": q, "retried": "true" if retried else None}
    return {k: v for k, v in params.items() if v is not None}


@dataclass(frozen=True)
class Page:
    """One page of the job monitor: its jobs (iterate over the page), the total (an estimate for
    broad queries) and the cursor of the next page (None on the last)."""
    jobs: list = field(default_factory=list)
    total: int = 0
    total_is_estimate: bool = False
    next: str = None

    def __iter__(self):
        return iter(self.jobs)

    def __len__(self):
        return len(self.jobs)


# ---------------------------------------------------------------------- the client

class Client:
    """JSON over HTTP to `<url>/api/v1` with a bearer token; `_reply` maps every failure to one class.

    `http` is the requests.Session to use (a test mounts an adapter that answers in-process).
    """

    def __init__(self, url, token, timeout_s=30.0, http=None):
        if not url.startswith(("http://", "https://")):
            raise BadInput(f"the server URL must start with http:// or https://, not {url!r}")
        if not token:
            raise AuthError("no API token")
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self.base = self.url + "/api/v1"
        self.http = http or requests.Session()
        self.http.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})

    @classmethod
    def configured(cls, url=None, token=None, environ=os.environ):
        """A client from the config file, SBK_URL/SBK_TOKEN and these arguments (in that order)."""
        settings = load_settings(url, token, environ)
        return cls(settings.url, settings.token, settings.timeout_s)

    # -- the one door to the server

    def call(self, method, path, params=None, body=None, raw=False):
        """One request; the decoded JSON reply (bytes with `raw`)."""
        url = self.base + path
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.http.request(method, url, params=params, json=body, timeout=self.timeout_s)
        except requests.Timeout:
            raise Unreachable(f"{self.url} did not answer within {self.timeout_s:g} s") from None
        except requests.RequestException as exc:
            log.debug("%s %s failed", method, url, exc_info=True)
            raise Unreachable(f"cannot reach the server at {self.url} ({_root_cause(exc)})") from None
        return _reply(method, path, response, raw)

    def get(self, path, **params):
        return self.call("GET", path, params=params)

    def post(self, path, body=None, **params):
        return self.call("POST", path, params=params, body=body if body is not None else {})

    def patch(self, path, body):
        return self.call("PATCH", path, body=body)

    def delete(self, path):
        return self.call("DELETE", path)

    # -- who I am, sessions and software

    def me(self):
        return self.get("/me")

    def sessions(self):
        return self.get("/sessions")["sessions"]

    def session(self, name):
        return self.get(f"/sessions/{name}")

    def create_session(self, name, description="", parameters=(), payload_module=None):
        """`parameters`: [{"name": ..., "allowed": [...]}, ...]."""
        body = {"name": name, "description": description, "parameters": list(parameters)}
        if payload_module:
            body["payload_module"] = payload_module
        return self.post("/sessions", body)

    def define_parameter(self, session, name, allowed=()):
        return self.post(f"/sessions/{session}/parameters", {"name": name, "allowed": list(allowed)})

    def define_step(self, session, name, module, parameters=None, args=()):
        return self.post(f"/sessions/{session}/steps", {"name": name, "module": module,
                                                         "parameters": parameters or {}, "args": list(args)})

    def delete_step(self, session, name):
        return self.delete(f"/sessions/{session}/steps/{name}")

    def add_software(self, session, **release):
        """name, version, revision, lfn, adler32, workdir, exe, env."""
        return self.post(f"/sessions/{session}/software", release)

    def retire_software(self, session, release_id, retired=True):
        """Retire a release (409 release-in-use while an open production uses it), or restore it."""
        return self.patch(f"/sessions/{session}/software/{release_id}", {"retired": retired})

    # -- productions and requests

    def productions(self, session=None, status=None):
        return self.get("/productions", session=session, status=status)["productions"]

    def production(self, name):
        return self.get(f"/productions/{name}")

    def create_production(self, name, session, version, revision=None, note=""):
        body = {"name": name, "session": session, "version": version, "note": note}
        if revision is not None:
            body["revision"] = revision
        return self.post("/productions", body)

    def set_production_status(self, name, status):
        return self.patch(f"/productions/{name}", {"status": status})

    def requests(self, production=None, status=None, limit=None):
        return self.get("/requests", production=production, status=status, limit=limit)["requests"]

    def request(self, request_id):
        return self.get(f"/requests/{request_id}")

    def create_request(self, **body):
        """production, parameters (or from), and any request setting."""
        return self.post("/requests", body)

    def update_request(self, request_id, **changes):
        return self.patch(f"/requests/{request_id}", changes)

    def delete_request(self, request_id):
        return self.delete(f"/requests/{request_id}")

    # -- sites

    def sites(self):
        return self.get("/sites")["sites"]

    def site(self, name):
        return self.get(f"/sites/{name}")

    def add_site(self, name, **settings):
        return self.post("/sites", {"name": name, **settings})

    def update_site(self, name, **changes):
        return self.patch(f"/sites/{name}", changes)

    def reset_site(self, name):
        return self.post(f"/sites/{name}/reset")

    # -- submissions and jobs

    def submit(self, production, bulks, dry_run=False, backend=None, override_thresholds=False):
        body = {"production": production, "bulks": list(bulks), "dry_run": dry_run}
        if override_thresholds:
            body["override_thresholds"] = True
        if backend:
            body["backend"] = backend
        return self.post("/submissions", body)

    def jobs(self, sort="id", per_page=1000, **filters):
        """Every page of the jobs the filters match (job_filters' names), as Pages, following the
        `next` cursor: a broad query's total is an estimate, so counting pages against it could stop
        early (or read deep OFFSETs)."""
        params = dict(job_filters(**filters), sort=sort, per_page=per_page)
        cursor = None
        while True:
            reply = self.get("/jobs", **params, **({"after": cursor} if cursor else {}))
            page = Page(reply["jobs"], reply["total"], reply.get("total_is_estimate", False), reply.get("next"))
            yield page
            cursor = page.next
            if not cursor:
                return

    def jobs_page(self, sort="runnum", page=1, per_page=50, after=None, **filters):
        """One page of the job monitor as the server sends it (by number, or after a cursor)."""
        params = dict(job_filters(**filters), sort=sort, per_page=per_page)
        params.update({"after": after} if after else {"page": page})
        return self.get("/jobs", **params)

    def job(self, job_id):
        return self.get(f"/jobs/{job_id}")

    def job_log(self, job_id):
        """The stored log as the server keeps it (bytes: a tarball, gzip or text)."""
        return self.call("GET", f"/jobs/{job_id}/log", raw=True)

    def kill(self, job_id):
        return self.post(f"/jobs/{job_id}/kill")

    def resubmit(self, job_id, backend=None):
        return self.call("POST", f"/jobs/{job_id}/resubmit", body={"backend": backend} if backend else None)

    def resubmit_matching(self, backend=None, dry_run=False, **filters):
        """New attempts for the failed, sys-failed and timeout jobs the filters match."""
        body = dict({"backend": backend} if backend else {}, dry_run=dry_run)
        return self.call("POST", "/jobs/resubmit", params=job_filters(**filters), body=body)

    # -- the home page and people

    def stats(self, user=None):
        return self.get("/stats", user=user)

    def activities(self, user=None, limit=10):
        return self.get("/activities", user=user, limit=limit)["activities"]

    def tokens(self, user=None):
        return self.get("/tokens", user=user)["tokens"]

    def create_token(self, label="", expires_in_days=None, user=None):
        body = {"label": label}
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        if user:
            body["user"] = user
        return self.post("/tokens", body)

    def revoke_token(self, token_id):
        return self.delete(f"/tokens/{token_id}")["revoked"]


_REFUSALS = {404: NotFound, 409: Conflict}


def _reply(method, path, response, raw):
    """The decoded reply of a response, or the error class of its status (the one mapping)."""
    status = response.status_code
    if status < 400:
        if raw:
            return response.content
        try:
            return response.json() if response.content else None
        except ValueError:
            raise Unreachable(f"{method} {path}: the reply is not JSON (is this an sbk server?)") from None
    request_id = None
    try:
        body = response.json()
        error, message, request_id = body.get("error", "error"), body.get("message", ""), body.get("request_id")
    except (ValueError, AttributeError):
        error, message = "error", response.text.strip()[:200]
    line = f"{message} ({status} {error})" if message else f"HTTP {status} {error}"
    if status in (401, 403):
        raise AuthError(f"the server refused the token: {line}", status, error, request_id)
    if status == 400:
        raise BadInput(line, status, error, request_id)
    if status >= 500:
        raise Unreachable(f"the server failed on {method} {path}: {line}", status, error, request_id)
    raise _REFUSALS.get(status, Refused)(line, status, error, request_id)


def _root_cause(exc):
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    return str(exc).split(": ", 1)[-1][:160] or type(exc).__name__
