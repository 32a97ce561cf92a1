"""`arc`: each job of a bunch becomes one job on the site's NorduGrid ARC CE, through A-REX's REST interface.

The site config's `[ce] url` (and `queue`) names the CE. A bunch is one
`POST <url>/rest/1.0/jobs?action=new` with a multi-job xRSL (`+(&...)(&...)`):
xRSL, not ADL, because it is one short line per job that reads like the site
admin's own `arcsub` tests, and it says everything needed (inputs uploaded by
the client, declared outputs, count/memory/walltime, queue). Then every job's
sandbox is uploaded into its session directory: severus.pyz, job-<i>.json and
site.toml. gjid = the A-REX job id.

The session directory keeps only what is declared as output: the wrapper's
stdout+stderr (`job.out`); the work dir goes with the rest when the job ends.

States come from `/jobs/<id>/diagnose/status` (A-REX's own state, real time;
the `action=status` view lags by a minute); a FINISHED job's `failed` and
`diag` files say why and with which exit code. Kill is `action=kill` (with
LRMS slurm it scancels). Finished jobs are cleaned (`action=clean`) once seen
finished for `clean_after_s`, by a sweep over the CE's job list (at most every
SWEEP_INTERVAL_S, one real-time state read per listed job); each job also
asks the CE to drop its session by itself after the same time (xRSL `lifetime`).

Unless the site config says `[ce] delegate = false`, the server delegates its credential to
each CE (delegation.py: one delegation per CE, renewed when the credential file changes, at the
next status read or submission, or would end within a bunch's walltime) and every job names it (`delegationid`): the job runs with a proxy
of the submitter, found through X509_USER_PROXY, and is told so (SEVERUS_CREDENTIAL=delegated)
so that a proxy too short for it is the manager's to renew (006), not the site's (005).

Every request goes through one `requests.Session` with `trust_env=False`: the
environment's REQUESTS_CA_BUNDLE would otherwise replace the CE's CA.
"""
import json
import logging
import math
import re
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Optional

import requests

from .base import (CANCELLED, COMPLETED, FAILED, OUT_OF_MEMORY, PENDING, PYZ_NAME, RUNNING, SITE_CONFIG_NAME,
                   TIMEOUT, UNKNOWN, Backend, BackendError, BackendUnavailable, BatchState, Wrapper, make_sandbox,
                   run_args)
from shared.ce import parse_ce_config
from shared.errors import SiteConfigError
from shared.jobdesc import CREDENTIAL_DELEGATED, CREDENTIAL_ENV
from .delegation import Delegations
from .resources import job_resources

log = logging.getLogger("sbk.backends.arc")

REST = "/rest/1.0"
OUTPUT = "job.out"           # the wrapper's stdout and stderr, joined
SWEEP_INTERVAL_S = 300.0     # how often status() looks over the CE's job list for jobs to clean

# A-REX's own states (diagnose/status) -> ours. FINISHED is split by the job's `failed` file.
AREX_STATES = {
    "ACCEPTING": PENDING, "ACCEPTED": PENDING, "PREPARING": PENDING, "PREPARED": PENDING, "SUBMIT": PENDING,
    "SUBMITTING": PENDING, "INLRMS": RUNNING, "CANCELING": RUNNING, "FINISHING": RUNNING,
}
_EXIT = re.compile(r"^exitcode=(-?\d+)\s*$", re.M)
_LRMS_CODE = re.compile(r"LRMS error: \((-?\d+)\)")
_ENDED_BY = [   # the `failed` text of a FINISHED job -> why it ended, first match wins (a limit's
    # kill says "killed" too: the limits come first)
    (re.compile(r"memory|\bv?mem\b", re.I), OUT_OF_MEMORY),
    (re.compile(r"\bwall\b|wall ?time|time limit|cpu ?time", re.I), TIMEOUT),
    (re.compile(r"cancel|kill|terminated by signal", re.I), CANCELLED),
]


def resources(description: dict) -> dict:
    """xRSL count, memory (MB per core: xRSL counts it per core) and walltime (s) of one job.

    The numbers are the other backends' (resources.job_resources: cores, memory_mb else
    max_rss_mb, max_wct_s plus the staging margin); an ARC job is one Severus job, not a bunch."""
    res = job_resources(description)
    request = {"count": res.cores, "walltime": res.wall_s}
    if res.memory_mb:
        request["memory"] = math.ceil(res.memory_mb / res.cores)
    return request


def finished_state(failed: str, diag: str) -> BatchState:
    """A FINISHED job's state from its `failed` file (empty: success) and its `diag` (`exitcode=N`)."""
    why = failed.strip().splitlines()[0] if failed.strip() else ""
    codes = _EXIT.findall(diag)
    exit_code = int(codes[-1]) if codes and int(codes[-1]) >= 0 else None
    if not why:
        return BatchState(COMPLETED, "ARC FINISHED", exit_code)
    state = next((s for pattern, s in _ENDED_BY if pattern.search(why)), FAILED)
    if state != FAILED:
        # cancelled, or stopped for a limit: there is no exit code of the job's own to report
        return BatchState(state, f"ARC FINISHED: {why}")
    if exit_code is None:
        # "LRMS error: (13) Job failed": the diag's exitcode line is missing when the job script
        # did not reach its end, the failed text still carries the code
        match = _LRMS_CODE.search(why)
        exit_code = int(match.group(1)) if match and int(match.group(1)) > 0 else None
    return BatchState(FAILED, f"ARC FINISHED: {why}", exit_code)


def _quote(value) -> str:
    text = str(value)
    if '"' in text:
        # xRSL has no escape for a double quote inside a string: refuse rather than mangle
        raise BackendError(f"cannot put {text!r} into an xRSL string")
    return f'"{text}"'


def job_xrsl(index: int, site: str, job_id: int, description: dict, queue: Optional[str], python: str,
             lifetime_s: int, delegation_id: Optional[str] = None, runtime_environments=()) -> str:
    """One job's xRSL: `/usr/bin/env <python> severus.pyz run job-<i>.json ...` with its sandbox as
    inputs; naming the delegation its proxy comes from, and the runtime environments it asks for."""
    argv = [python, PYZ_NAME] + run_args(index)
    inputs = [PYZ_NAME, f"job-{index}.json", SITE_CONFIG_NAME]
    req = resources(description)
    parts = [
        '(executable="/usr/bin/env")',
        "(arguments=" + " ".join(_quote(a) for a in argv) + ")",
        "(inputfiles=" + "".join(f'({_quote(name)} "")' for name in inputs) + ")",
        f'(stdout={_quote(OUTPUT)})(join="yes")',
        f'(outputfiles=({_quote(OUTPUT)} ""))',
        f"(jobname={_quote(f'severus-{site}-{job_id}')})",
        f'(count="{req["count"]}")',
        # The CE drops the session this long after the end even if the server never cleans it.
        f'(lifetime="{lifetime_s}")',
    ]
    if "memory" in req:
        parts.append(f'(memory="{req["memory"]}")')
    parts.append(f'(walltime="{req["walltime"]} seconds")')
    if queue:
        parts.append(f"(queue={_quote(queue)})")
    if delegation_id:
        parts.append(f"(delegationid={_quote(delegation_id)})")
        # tells the wrapper its proxy came with the job: a too-short one is the manager's (006)
        parts.append(f"(environment=({_quote(CREDENTIAL_ENV)} {_quote(CREDENTIAL_DELEGATED)}))")
    parts.extend(f"(runtimeenvironment={_quote(rte)})" for rte in runtime_environments)
    return "(&" + "".join(parts) + ")"


def _items(reply: dict, key: str) -> list:
    """A-REX's JSON turns a one-element list into the element itself: always give a list."""
    value = reply.get(key, [])
    return value if isinstance(value, list) else [value]


class ArcBackend(Backend):
    """Talks to the CE named by each bunch's site config with one client credential (proxy or robot cert)."""
    name = "arc"

    def __init__(self, wrapper: Wrapper = None, python: str = "python3", cert: Optional[str] = None,
                 key: Optional[str] = None, ca: Optional[str] = None, timeout: float = 60.0,
                 clean_after_s: float = 3600.0, workdir: Optional[str] = None):
        if not cert:
            raise BackendError("arc backend: no client credential (set SBK_BACKEND_ARC_CERT to a proxy or a "
                               "robot certificate, SBK_BACKEND_ARC_KEY to its key)")
        for what, path in (("certificate", cert), ("key", key), ("CA", ca)):
            if path and not Path(path).exists():
                raise BackendError(f"arc backend: {what} {path} does not exist")
        if wrapper is not None and not isinstance(wrapper, (str, Path)):
            raise BackendError("arc backend needs `wrapper` = a severus.pyz file (or none: one is packed here)")
        self.wrapper = wrapper
        self.python = python
        self.timeout = timeout
        self.clean_after_s = clean_after_s
        self.workdir = workdir
        self._http = requests.Session()
        self._http.trust_env = False      # else REQUESTS_CA_BUNDLE overrides `verify`
        self._http.verify = ca or True
        self._http.cert = (cert, key or cert)
        self._http.headers["Accept"] = "application/json"
        self._lock = threading.Lock()
        self._endpoints = set()   # CEs this process submitted to or asked about: swept for cleaning
        self._finished_seen = {}  # (endpoint, gjid) -> when the sweep first saw it FINISHED
        self._last_sweep = 0.0
        self._packed = None
        self._delegations = Delegations(cert, key, self._call)

    # gjid: `<endpoint>#<A-REX id>`: the poller hands status() bare gjids, and a gjid must say which CE.
    @staticmethod
    def gjid(endpoint: str, arex_id: str) -> str:
        return f"{endpoint}#{arex_id}"

    @staticmethod
    def split_gjid(gjid: str):
        endpoint, sep, arex_id = gjid.rpartition("#")
        if not sep or not endpoint.startswith("https://") or not re.fullmatch(r"\w+", arex_id):
            raise BackendError(f"not an ARC gjid: {gjid!r} (expected https://ce/arex#<job id>)")
        return endpoint, arex_id

    def submit(self, bunch):
        """One POST for the bunch's jobs, then each job's sandbox uploaded; returns job_id -> gjid."""
        ce = _site_ce(bunch)
        endpoint = ce.url
        sandbox = make_sandbox(bunch, self._wrapper_file(bunch))
        lifetime = max(3600, int(self.clean_after_s) + 3600)
        delegation_id = None
        if ce.delegate:
            # the proxy must outlive the longest job of the bunch, queueing aside
            needed = max(resources(job.description)["walltime"] for job in bunch.jobs)
            delegation_id = self._delegations.for_jobs(endpoint, needed)
        xrsl = "+" + "".join(job_xrsl(i, bunch.site, job.job_id, job.description, ce.queue, self.python, lifetime,
                                      delegation_id, ce.runtime_environments)
                             for i, job in enumerate(bunch.jobs))
        (sandbox / "bunch.xrsl").write_text(xrsl + "\n")
        reply = self._call("POST", endpoint, "/jobs", params={"action": "new"}, data=xrsl.encode(),
                           headers={"Content-Type": "application/rsl"}, ok=(201,))
        created = _items(reply.json(), "job")
        ids = [item.get("id") if str(item.get("status-code")) == "201" else None for item in created]
        if len(created) != len(bunch.jobs) or not all(ids):
            refused = [f"{item.get('status-code')} {item.get('reason')}" for item in created
                       if str(item.get("status-code")) != "201"]
            self._kill_clean(endpoint, [i for i in ids if i])
            raise BackendError(f"the CE {endpoint} refused the bunch for {bunch.site}: "
                               f"{'; '.join(refused) or f'{len(created)} answers for {len(bunch.jobs)} jobs'}")
        with self._lock:
            self._endpoints.add(endpoint)
        try:
            for index, arex_id in enumerate(ids):
                for name in (PYZ_NAME, f"job-{index}.json", SITE_CONFIG_NAME):
                    self._call("PUT", endpoint, f"/jobs/{arex_id}/session/{name}",
                               data=(sandbox / name).read_bytes(), headers={"Content-Type": "application/octet-stream"})
        except (BackendError, OSError) as exc:
            # A job whose inputs never all arrive would wait in PREPARING: take the whole bunch back.
            self._kill_clean(endpoint, ids)
            raise BackendError(f"cannot upload the sandbox to {endpoint}: {exc}") from exc
        (sandbox / "gjids.json").write_text(json.dumps(dict(zip((j.job_id for j in bunch.jobs), ids))))
        return {job.job_id: self.gjid(endpoint, arex_id) for job, arex_id in zip(bunch.jobs, ids)}

    def status(self, gjids):
        """A-REX's real-time state of each job; a FINISHED one read with its `failed` and `diag` files."""
        states = {}
        for gjid in gjids:
            endpoint, arex_id = self.split_gjid(gjid)
            with self._lock:
                self._endpoints.add(endpoint)
            states[gjid] = self._state(endpoint, arex_id)
        self._sweep()
        self._delegations.refresh()
        return states

    def cancel(self, gjids):
        """action=kill, per CE; a job that already finished or is gone is left alone."""
        by_endpoint = {}
        for gjid in gjids:
            endpoint, arex_id = self.split_gjid(gjid)
            by_endpoint.setdefault(endpoint, []).append(arex_id)
        for endpoint, ids in by_endpoint.items():
            self._action(endpoint, "kill", ids)

    def clean(self, gjids):
        """action=clean: A-REX removes the jobs' session and control files (a running job is refused)."""
        by_endpoint = {}
        for gjid in gjids:
            endpoint, arex_id = self.split_gjid(gjid)
            by_endpoint.setdefault(endpoint, []).append(arex_id)
        for endpoint, ids in by_endpoint.items():
            self._action(endpoint, "clean", ids)

    def _state(self, endpoint, arex_id):
        reply = self._call("GET", endpoint, f"/jobs/{arex_id}/diagnose/status", ok=(200, 404))
        if reply.status_code == 404:
            return BatchState(UNKNOWN, f"ARC: the CE knows no job {arex_id} (cleaned, or expired)")
        arex_state = reply.text.strip().split(":")[0] or "UNDEFINED"
        if arex_state == "DELETED":
            return BatchState(UNKNOWN, "ARC DELETED: the CE dropped the job's files")
        if arex_state != "FINISHED":
            return BatchState(AREX_STATES.get(arex_state, PENDING), f"ARC {arex_state}")
        failed = self._call("GET", endpoint, f"/jobs/{arex_id}/diagnose/failed", ok=(200, 404))
        diag = self._call("GET", endpoint, f"/jobs/{arex_id}/diagnose/diag", ok=(200, 404))
        return finished_state(failed.text if failed.status_code == 200 else "",
                              diag.text if diag.status_code == 200 else "")

    def _sweep(self):
        """Clean the jobs the CEs have held FINISHED for clean_after_s (looked at every SWEEP_INTERVAL_S)."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_sweep < min(SWEEP_INTERVAL_S, self.clean_after_s):
                return
            self._last_sweep = now
            endpoints = sorted(self._endpoints)
        for endpoint in endpoints:
            try:
                listing = _items(self._call("GET", endpoint, "/jobs").json(), "job")
            except (BackendError, ValueError) as exc:
                log.warning("cannot list the jobs of %s for cleaning: %s", endpoint, exc)
                continue
            # The listing's own state view lags a minute behind: ask each job's real-time state.
            finished = set()
            for item in listing:
                arex_id = item.get("id")
                if not arex_id:
                    continue
                try:
                    reply = self._call("GET", endpoint, f"/jobs/{arex_id}/diagnose/status", ok=(200, 404))
                except BackendError as exc:
                    log.warning("cannot read the state of %s on %s: %s", arex_id, endpoint, exc)
                    continue
                if reply.status_code == 200 and reply.text.strip() == "FINISHED":
                    finished.add((endpoint, arex_id))
            due = []
            with self._lock:
                for key in finished:
                    first = self._finished_seen.setdefault(key, now)
                    if now - first >= self.clean_after_s:
                        due.append(key[1])
                for key in [k for k in self._finished_seen if k[0] == endpoint and k not in finished]:
                    del self._finished_seen[key]
            if due:
                log.info("cleaning %d finished job(s) on %s", len(due), endpoint)
                self._action(endpoint, "clean", due)

    def _action(self, endpoint, action, ids):
        """POST /jobs?action=...; per-job answers other than 2xx or 404 (gone) are logged, not raised."""
        for i in range(0, len(ids), 100):
            chunk = ids[i:i + 100]
            reply = self._call("POST", endpoint, "/jobs", params={"action": action},
                               json={"job": [{"id": arex_id} for arex_id in chunk]}, ok=(200, 201, 202))
            for item in _items(reply.json(), "job"):
                code = str(item.get("status-code", ""))
                if not code.startswith("2") and code != "404":
                    log.info("%s of %s on %s: %s %s", action, item.get("id"), endpoint, code, item.get("reason"))

    def _kill_clean(self, endpoint, ids):
        if not ids:
            return
        try:
            self._action(endpoint, "kill", ids)
            self._action(endpoint, "clean", ids)
        except BackendError as exc:
            log.warning("cannot take back jobs %s on %s: %s", ids, endpoint, exc)

    def _call(self, method, endpoint, path, ok=(200,), **kwargs):
        """One REST call; connection trouble is BackendUnavailable, an unexpected answer BackendError."""
        url = endpoint + REST + path
        try:
            reply = self._http.request(method, url, timeout=self.timeout, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise BackendUnavailable(f"TLS with the CE {endpoint} failed (credential or CA?): {_short(exc)}") \
                from None
        except requests.RequestException as exc:
            raise BackendUnavailable(f"the CE {endpoint} cannot be reached: {_short(exc)}") from None
        if reply.status_code not in ok:
            text = " ".join(reply.text.split())[:200]
            raise BackendError(f"the CE {endpoint} answered {method} {path} with HTTP {reply.status_code}"
                               + (f": {text}" if text else ""))
        return reply

    def _wrapper_file(self, bunch):
        """The .pyz to ship: the configured one, else one packed from this checkout once per process."""
        if self.wrapper is not None:
            if not Path(self.wrapper).is_file():
                raise BackendError(f"wrapper {self.wrapper} does not exist (build it with `severus pack`)")
            return self.wrapper
        with self._lock:
            if self._packed is None or not self._packed.is_file():
                out = Path(self.workdir or bunch.workdir) / PYZ_NAME
                out.parent.mkdir(parents=True, exist_ok=True)
                # through the wrapper's own door, `severus pack`, as a site admin packs it
                try:
                    done = subprocess.run([sys.executable, "-m", "wrapper", "pack", "-o", str(out)],
                                          capture_output=True, text=True, timeout=120)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    raise BackendError(f"cannot pack the wrapper for the CE: {exc}") from exc
                if done.returncode != 0:
                    last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                    raise BackendError(f"cannot pack the wrapper for the CE: {last}")
                self._packed = out
            return self._packed


def _site_ce(bunch):
    """The bunch's site config `[ce]` (CeConfig), read by the rule the wrapper's check uses too."""
    try:
        data = tomllib.loads(bunch.site_config)
    except tomllib.TOMLDecodeError as exc:
        raise BackendError(f"site config of {bunch.site} is not valid TOML: {exc}") from None
    if "ce" not in data:
        raise BackendError(f"site {bunch.site} names no CE: its site config needs [ce] url = \"https://.../arex\"")
    try:
        return parse_ce_config(data["ce"], f"site config of {bunch.site}")
    except SiteConfigError as exc:
        raise BackendError(str(exc)) from None


def _short(exc):
    return " ".join(str(exc).split())[:200]
