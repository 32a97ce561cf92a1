"""The file catalog as the wrapper sees it: the server's /catalog routes (PROTOCOL.md).

Reads retry a few times when the server is unreachable and then raise
ServerUnreachable for the stage to turn into its own code; registration
raises RegistrationFailed (043). Registration is idempotent on the server.
"""
import time
from dataclasses import dataclass
from typing import Optional, Tuple

from shared.errors import RegistrationFailed
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

    def register(self, lfn, site, surl, size, adler32):
        """Record a verified replica; registering the same replica again is a no-op."""
        body = {"lfn": lfn, "site": site, "surl": surl, "size": int(size), "adler32": adler32}
        try:
            self._call("POST", "/catalog/replicas", body=body)
        except ServerRefused as exc:
            raise RegistrationFailed(f"{lfn} at {site}: {exc}") from None
        except ServerUnreachable as exc:
            raise RegistrationFailed(f"{lfn} at {site}: server unreachable ({exc})") from None

    def deregister(self, lfn, site):
        """Remove the replica of `lfn` at `site` (nothing when it is not there)."""
        try:
            self._call("DELETE", "/catalog/replicas", params={"lfn": lfn, "site": site})
        except ServerRefused as exc:
            if exc.status != 404:
                raise
