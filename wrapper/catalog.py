"""The file catalog as the wrapper sees it: the server's /catalog routes (PROTOCOL.md),
and the fence that guards every write of an attempt.

Reads retry a few times when the server is unreachable and then raise
ServerUnreachable for the stage to turn into its own code. Registration of a
job's outputs is one call, all or nothing and idempotent on the server, which
also fences it (only the current attempt of a running job registers); it waits
for an unreachable server up to the site's `server_wait_s` (a restart should not
cost a finished payload), a stop cutting the wait short. Its failures:
`AttemptSuperseded` (061: another attempt owns the job, or the job ended),
`RegistrationRefused` (044: the LFN is another job's), `RegistrationFailed` (043:
no answer; whether it happened is unknown).
"""
import time
from dataclasses import dataclass
from typing import Optional, Tuple

from shared.errors import AttemptSuperseded, KilledByManager, RegistrationFailed, RegistrationRefused
from .client import ServerRefused, ServerUnreachable


@dataclass(frozen=True)
class Replica:
    site: str
    surl: str


@dataclass(frozen=True)
class FileEntry:
    lfn: str
    size: int
    adler32: str
    replicas: Tuple[Replica, ...] = ()


def entry_from_json(data):
    """A FileEntry from the server's JSON."""
    return FileEntry(lfn=data["lfn"], size=int(data["size"]), adler32=str(data["adler32"]).lower(),
                     replicas=tuple(Replica(r["site"], r["surl"]) for r in data.get("replicas", ())))


SUPERSEDED_ERRORS = ("attempt-superseded", "attempt-ended")


def request_until(server, method, path, wait_s, cancel=None, backoff_s=1.0, backoff_max_s=10.0, **kwargs):
    """server.request(), tried again while the server is unreachable, for up to `wait_s` or until
    `cancel` is set; then the last ServerUnreachable. A refusal (4xx) is raised at once."""
    deadline = time.monotonic() + wait_s
    delay = backoff_s
    while True:
        try:
            return server.request(method, path, **kwargs)
        except ServerUnreachable:
            left = deadline - time.monotonic()
            if left <= 0 or (cancel is not None and cancel.is_set()):
                raise
        pause = min(delay, left)
        if cancel is not None:
            cancel.wait(pause)
        else:
            time.sleep(pause)
        delay = min(delay * 2, backoff_max_s)


def superseded(exc):
    """The 061 of a refusal that says this attempt may write nothing more."""
    ended = exc.error == "attempt-ended"
    return AttemptSuperseded(exc.message, ended=ended)


def request_with_retries(server, method, path, retries=3, backoff_s=1.0, **kwargs):
    """server.request(), retried with backoff while the server is unreachable (not when it refuses)."""
    for n in range(retries + 1):
        try:
            return server.request(method, path, **kwargs)
        except ServerUnreachable:
            if n == retries:
                raise
        time.sleep(backoff_s * (2 ** n))


class Catalog:
    """Replica lookups and registration through the server client."""

    def __init__(self, server, retries=3, backoff_s=1.0):
        self.server = server
        self.retries = retries
        self.backoff_s = backoff_s

    def _call(self, method, path, body=None, params=None):
        return request_with_retries(self.server, method, path, self.retries, self.backoff_s,
                                    body=body, params=params)

    def replicas(self, lfn) -> Optional[FileEntry]:
        """The catalog entry of `lfn`, or None when the catalog does not know it."""
        try:
            reply = self._call("GET", "/catalog/replicas", params={"lfn": lfn})
        except ServerRefused as exc:
            if exc.status == 404:
                return None
            raise
        return entry_from_json(reply)

    def files_under(self, lfn_dir):
        """Every file below `lfn_dir`, recursively, sorted by LFN."""
        try:
            reply = self._call("GET", "/catalog/files", params={"dir": lfn_dir.rstrip("/")})
        except ServerRefused as exc:
            if exc.status == 404:
                return []
            raise
        return [entry_from_json(f) for f in reply.get("files", [])]

    def fence(self, job, wait_s, cancel=None, kill_stops=True):
        """Ask the server whether this attempt may still write to an SE (GET /jobs/<id>/attempt):
        AttemptSuperseded when not, KilledByManager when a kill waits for it (unless not
        `kill_stops`: the log of a killed job still goes), RegistrationFailed (043) when the
        server does not answer within `wait_s`."""
        try:
            state = request_until(self.server, "GET", f"/jobs/{job.id}/attempt", wait_s, cancel)
        except ServerRefused as exc:
            if exc.status == 409 and exc.error in SUPERSEDED_ERRORS:
                raise superseded(exc) from None
            raise RegistrationFailed(f"the fence refused: {exc}") from None
        except ServerUnreachable as exc:
            raise RegistrationFailed(f"the server did not confirm attempt {job.attempt} is current within "
                                     f"{wait_s:g} s ({exc}): nothing written") from None
        if kill_stops and (state or {}).get("command") == "kill":
            raise KilledByManager("kill command from the server (at the fence)")
        return state

    def register(self, replicas, wait_s=0.0, cancel=None):
        """Record verified replicas, (lfn, site, surl, size, adler32) each, all or nothing in one
        call; registering the same replicas again is a no-op. See the module docstring."""
        body = [{"lfn": lfn, "site": site, "surl": surl, "size": int(size), "adler32": adler32}
                for lfn, site, surl, size, adler32 in replicas]
        what = f"{len(body)} replica(s) ({body[0]['lfn']}{', ...' if len(body) > 1 else ''})"
        try:
            request_until(self.server, "POST", "/catalog/replicas", max(wait_s, self.backoff_s * self.retries),
                          cancel, backoff_s=self.backoff_s, body=body)
        except ServerRefused as exc:
            if exc.status == 409 and exc.error in SUPERSEDED_ERRORS:
                raise superseded(exc) from None
            if exc.status == 409:
                raise RegistrationRefused(f"{what}: {exc.message}") from None
            raise RegistrationFailed(f"{what}: {exc}") from None
        except ServerUnreachable as exc:
            raise RegistrationFailed(f"{what}: server unreachable ({exc})", unknown=True) from None

    def deregister(self, lfn, site):
        """Remove the replica of `lfn` at `site` (nothing when it is not there)."""
        try:
            self._call("DELETE", "/catalog/replicas", params={"lfn": lfn, "site": site})
        except ServerRefused as exc:
            if exc.status != 404:
                raise
