"""Proxy delegation: hand a CE a proxy of the server's credential, so its jobs act as the submitter.

GSI delegation, as A-REX's REST interface does it (and every grid CE in some form):

    POST <ce>/rest/1.0/delegations?action=new       -> 201, a certificate request (PEM) whose key
                                                       the CE keeps; Location: .../delegations/<id>
    PUT  <ce>/rest/1.0/delegations/<id>             <- the request signed into an RFC 3820 proxy by
                                                       our credential, followed by our chain
    POST <ce>/rest/1.0/delegations/<id>?action=renew -> 201, a new request for the same id: signing
                                                       it replaces the proxy of every job naming it
    POST <ce>/rest/1.0/delegations/<id>?action=get   -> 200 with the proxy's certificates, 404 unknown

A job names the delegation in its description (xRSL `delegationid`) and finds the proxy through
X509_USER_PROXY. The private key never leaves the CE, and ours never leaves the server.

The server's credential is a proxy (cert = key = the proxy file, its chain after the key) or a
robot certificate and key: either signs a proxy. ARC writes its request with version field 2,
which `cryptography` refuses to load (it accepts only version 1 = 0): `openssl req` checks the
request's own signature and gives us its public key instead.

`proxy_certificate` is also what server/grid_pki.make_proxy signs its proxies with.
"""
import datetime
import logging
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from .base import BackendError

log = logging.getLogger("sbk.backends.arc")

PROXY_CERT_INFO = "1.3.6.1.5.5.7.1.14"
# ProxyCertInfo, critical: SEQUENCE { SEQUENCE { id-ppl-inheritAll 1.3.6.1.5.5.7.21.1 } }
INHERIT_ALL = bytes.fromhex("300c300a06082b06010505071501")
MAX_LIFETIME_S = 7 * 24 * 3600   # a robot certificate lives a year; what it delegates, a week at most
RENEW_MARGIN_S = 3600            # a delegation is renewed when it would end within a job's walltime + this
CLOCK_SKEW_S = 300               # the proxy starts this much in the past: worker clocks drift
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.S)


def proxy_certificate(issuer_cert, issuer_key, public_key, not_after: datetime.datetime, serial: int = None,
                      not_before: Optional[datetime.datetime] = None):
    """An RFC 3820 impersonation proxy of `issuer_cert` for `public_key`, signed by `issuer_key`:
    subject = the issuer's + CN=<serial>, ProxyCertInfo inheritAll (critical), as grid-proxy-init -rfc."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID, ObjectIdentifier
    serial = serial or (int.from_bytes(os.urandom(4), "big") >> 1) or 1
    start = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=CLOCK_SKEW_S)
    subject = x509.Name(list(issuer_cert.subject) + [x509.NameAttribute(NameOID.COMMON_NAME, str(serial))])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_cert.subject)
            .public_key(public_key).serial_number(serial)
            .not_valid_before(start).not_valid_after(not_after)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.UnrecognizedExtension(ObjectIdentifier(PROXY_CERT_INFO), INHERIT_ALL),
                           critical=True)
            .sign(issuer_key, hashes.SHA256()))


@dataclass(frozen=True)
class Credential:
    """The server's signing credential, read from its files."""
    cert: object            # cryptography x509.Certificate: the proxy's own, or the robot's
    key: object             # its private key
    chain: Tuple[object, ...]   # the certificates after it (a proxy's issuers), nearest first
    not_after: float        # epoch seconds
    fingerprint: Tuple      # (path, mtime, size) of each file: a renewed proxy file is a new credential


def load_credential(cert_path: str, key_path: Optional[str] = None) -> Credential:
    """The certificate, key and chain in `cert_path` (a proxy holds all three) and `key_path`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    key_path = key_path or cert_path
    try:
        # one at a time: load_pem_x509_certificates is cryptography >= 39, Debian 12 has 38
        certs = [x509.load_pem_x509_certificate(block) for block in _PEM_CERT.findall(Path(cert_path).read_bytes())]
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
        if not certs:
            raise ValueError("no certificate in it")
    except (OSError, ValueError, TypeError) as exc:
        raise BackendError(f"cannot read the credential to delegate ({cert_path}): {exc}") from None
    stamp = tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in dict.fromkeys((cert_path, key_path)))
    return Credential(certs[0], key, tuple(certs[1:]), _not_after(certs[0]), stamp)


def _not_after(cert) -> float:
    ends = getattr(cert, "not_valid_after_utc", None)   # cryptography >= 42; older: naive UTC
    return (ends or cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)).timestamp()


def request_public_key(csr_pem: str):
    """The public key of a PEM certificate request whose own signature holds (`openssl req -verify`)."""
    from cryptography.hazmat.primitives import serialization
    try:
        proc = subprocess.run(["openssl", "req", "-pubkey", "-noout", "-verify"], input=csr_pem,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendError(f"cannot run openssl to read the CE's certificate request: {exc}") from None
    if proc.returncode != 0 or "BEGIN PUBLIC KEY" not in proc.stdout:
        raise BackendError("the CE's certificate request is not a valid self-signed request: "
                           + (" ".join(proc.stderr.split())[:200] or "no public key in it"))
    return serialization.load_pem_public_key(proc.stdout.encode())


def sign_request(csr_pem: str, credential: Credential, lifetime_s: float = MAX_LIFETIME_S) -> bytes:
    """The PEM the CE stores for a delegation: the new proxy, then our certificate and its chain.
    It lives `lifetime_s` at most, and never beyond our own credential."""
    from cryptography.hazmat.primitives import serialization
    public_key = request_public_key(csr_pem)
    ends = min(credential.not_after, time.time() + min(lifetime_s, MAX_LIFETIME_S))
    proxy = proxy_certificate(credential.cert, credential.key, public_key,
                              datetime.datetime.fromtimestamp(ends, datetime.timezone.utc))
    pem = proxy.public_bytes(serialization.Encoding.PEM) + credential.cert.public_bytes(serialization.Encoding.PEM)
    return pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in credential.chain)


@dataclass
class _Delegated:
    id: str
    not_after: float
    fingerprint: Tuple


class Delegations:
    """One delegation per CE, made on first use and renewed when the server's credential file changes
    or the delegated proxy would end within the jobs' needs; thread-safe.

    `call(method, endpoint, path, ok=..., **kw)` is the backend's REST call (it raises BackendError)."""

    def __init__(self, cert: str, key: Optional[str], call: Callable):
        self.cert, self.key, self._call = cert, key, call
        self._lock = threading.Lock()
        self._by_endpoint: Dict[str, _Delegated] = {}

    def for_jobs(self, endpoint: str, needed_s: float) -> str:
        """The delegation id jobs on `endpoint` name; their proxy lives `needed_s` more if ours can."""
        with self._lock:
            credential = load_credential(self.cert, self.key)
            current = self._by_endpoint.get(endpoint)
            if current is not None and not self._known(endpoint, current.id):
                current = None      # the CE lost it (reinstalled, its delegation DB wiped): start again
            if current is not None and current.fingerprint == credential.fingerprint \
                    and current.not_after - time.time() >= needed_s + RENEW_MARGIN_S:
                return current.id
            if current is not None:
                renewed = self._renew(endpoint, current.id, credential)
                if renewed is not None:
                    self._by_endpoint[endpoint] = renewed
                    return renewed.id
            self._by_endpoint[endpoint] = made = self._new(endpoint, credential)
            return made.id

    def refresh(self):
        """Renew every CE's delegation whose credential file changed since (the manager renewed the
        proxy): the CE hands the new proxy to the jobs naming it, queued and running. Called by the
        poller's status reads; a failure is logged, the next call tries again."""
        with self._lock:
            if not self._by_endpoint:
                return
            try:
                credential = load_credential(self.cert, self.key)
            except BackendError as exc:
                log.warning("%s", exc)
                return
            for endpoint, current in list(self._by_endpoint.items()):
                if current.fingerprint == credential.fingerprint:
                    continue
                try:
                    renewed = self._renew(endpoint, current.id, credential)
                except BackendError as exc:
                    log.warning("cannot renew the delegation %s on %s: %s", current.id, endpoint, exc)
                    continue
                if renewed is not None:
                    self._by_endpoint[endpoint] = renewed

    def _known(self, endpoint, delegation_id):
        """Whether the CE still holds the delegation. Asked before each reuse: A-REX accepts a job
        naming a delegation it does not know, and runs it without a proxy."""
        reply = self._call("POST", endpoint, f"/delegations/{delegation_id}", params={"action": "get"}, ok=(200, 404))
        return reply.status_code == 200

    def _new(self, endpoint, credential):
        reply = self._call("POST", endpoint, "/delegations", params={"action": "new"}, ok=(201,))
        delegation_id = (reply.headers.get("Location") or "").rstrip("/").rsplit("/", 1)[-1]
        if not delegation_id or not delegation_id.isalnum():
            raise BackendError(f"the CE {endpoint} started a delegation without saying its id "
                               f"(Location: {reply.headers.get('Location')!r})")
        return self._put(endpoint, delegation_id, reply.text, credential)

    def _renew(self, endpoint, delegation_id, credential):
        """The same id with a new proxy; None when the CE no longer knows it (then a new one is made)."""
        try:
            reply = self._call("POST", endpoint, f"/delegations/{delegation_id}", params={"action": "renew"},
                               ok=(201,))
        except BackendError:
            return None
        return self._put(endpoint, delegation_id, reply.text, credential)

    def _put(self, endpoint, delegation_id, csr_pem, credential):
        signed = sign_request(csr_pem, credential)
        self._call("PUT", endpoint, f"/delegations/{delegation_id}", data=signed,
                   headers={"Content-Type": "application/x-pem-file"})
        return _Delegated(delegation_id, min(credential.not_after, time.time() + MAX_LIFETIME_S),
                          credential.fingerprint)
