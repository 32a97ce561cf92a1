"""A grid PKI and token issuer of our own, for the secured SE of `sbk demo` and the tests.

    make_pki(base) -> GridPKI        everything the tests use (made once per session, ~3 s)
      CA (/DC=test/DC=grid/CN=Test CA) in an `openssl rehash`ed dir (X509_CERT_DIR),
      host cert CN=localhost (SAN DNS:localhost, IP:127.0.0.1), a user cert the SE maps,
      an "other" user cert it does not (unmapped DN), proxies: plain RFC, VOMS (testvo, made
      with voms-proxy-fake: no VOMS server), expired, unmapped; a token issuer whose keys
      an SE reads from a seeded key cache (libscitokens 0.7 trusts only the system CA bundle
      for its HTTPS key fetch), tokens valid / expired / read-only (WLCG profile).
    make_demo_pki(base) -> GridPKI   CA, host and user certs, a 12 h proxy (grid-proxy-init, else
      made in Python: make_proxy), a VOMS proxy when voms-proxy-fake is there, a 12 h token when
      the `scitokens` library is; what the demo's SE and jobs need, nothing to test refusals with.

Commands and flags come from the verified recipe (../shared/recipes/secure-se). Nothing here is
a real grid's trust: the CA's key lies next to its certificate.
"""
import base64
import datetime
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TOOLS = {"openssl": "openssl", "grid-proxy-init": "globus-proxy-utils", "voms-proxy-fake": "voms-clients",
         "voms-proxy-info": "voms-clients", "xrootd": "xrootd-server", "xrdcp": "xrootd-client",
         "xrdfs": "xrootd-client", "xrdadler32": "xrootd-client"}
SCITOKENS_LIB = "/usr/lib/x86_64-linux-gnu/libXrdAccSciTokens-5.so"
AUDIENCE = "test-se"
VO = "testvo"
USER_DN = "/DC=test/DC=grid/CN=Test User"
OTHER_DN = "/DC=test/DC=grid/CN=Unmapped User"
FULL_SCOPE = "storage.read:/ storage.modify:/ storage.create:/"
# The issuer is a name only: its keys are seeded into each SE's key cache, never fetched.
ISSUER = "https://localhost:8443/severus-test-issuer"
INSTALL_HINT = ("run `make test` or scripts/install-deps (Debian: xrootd-server xrootd-client "
                "xrootd-scitokens-plugins globus-proxy-utils voms-clients; PyPI: scitokens)")
# What the demo's secured SE cannot do without; proxies come from grid-proxy-init or, without
# it, from `cryptography` (make_proxy); VOMS attributes and tokens are extras.
DEMO_TOOLS = {"openssl": "openssl", "xrootd": "xrootd-server", "xrdcp": "xrootd-client", "xrdfs": "xrootd-client"}


class PKIError(RuntimeError):
    """A command making the PKI failed; the message carries its own."""


def has_module(name):
    return importlib.util.find_spec(name) is not None


def missing_tools():
    """What the secured SE needs and this machine lacks, as 'tool (package)' strings."""
    missing = [f"{tool} ({pkg})" for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if not has_module("scitokens"):
        missing.append("scitokens (PyPI)")
    if not Path(SCITOKENS_LIB).exists():
        missing.append(f"{SCITOKENS_LIB} (xrootd-scitokens-plugins)")
    return missing


def demo_missing():
    """What `sbk demo`'s secured SE needs and this machine lacks ([]: it can run)."""
    missing = [f"{tool} ({pkg})" for tool, pkg in DEMO_TOOLS.items() if shutil.which(tool) is None]
    if not Path(SCITOKENS_LIB).exists():
        # the SE's configuration loads the plugin: without it xrootd does not start
        missing.append("xrootd-scitokens-plugins")
    if shutil.which("grid-proxy-init") is None and not has_module("cryptography"):
        missing.append("grid-proxy-init (globus-proxy-utils) or python3-cryptography")
    return missing


@dataclass(frozen=True)
class GridPKI:
    base: Path

    cert_dir = property(lambda self: self.base / "certificates")
    hostcert = property(lambda self: self.base / "hostcert.pem")
    hostkey = property(lambda self: self.base / "hostkey.pem")
    usercert = property(lambda self: self.base / "usercert.pem")
    userkey = property(lambda self: self.base / "userkey.pem")
    proxy = property(lambda self: self.base / "proxy.pem")               # plain RFC proxy, 12 h
    voms_proxy = property(lambda self: self.base / "vproxy.pem")         # with testvo FQANs, 12 h
    expired_proxy = property(lambda self: self.base / "expired.pem")     # ended an hour ago
    short_proxy = property(lambda self: self.base / "short.pem")         # 1 h left
    unmapped_proxy = property(lambda self: self.base / "unmapped.pem")   # a DN no SE maps
    issuer_dir = property(lambda self: self.base / "issuer")
    token = property(lambda self: self.base / "token")                   # full scope, 1 h
    token_expired = property(lambda self: self.base / "token.expired")
    token_readonly = property(lambda self: self.base / "token.readonly")

    def jwks(self):
        return json.loads((self.issuer_dir / "jwks.json").read_text())

    def mint_token(self, scope=FULL_SCOPE, lifetime=3600, audience=AUDIENCE, subject="testuser"):
        """A signed WLCG token (profile 1.0: storage.* scopes); negative lifetime: already expired
        (scitokens' serialize() sets exp from `lifetime`, so that is the only way to an old one)."""
        import scitokens
        from cryptography.hazmat.primitives import serialization
        key = serialization.load_pem_private_key((self.issuer_dir / "issuer.key").read_bytes(), None)
        token = scitokens.SciToken(key=key, key_id="key-rs256", algorithm="RS256")
        token.update_claims({"sub": subject, "aud": audience, "scope": scope, "wlcg.ver": "1.0"})
        return token.serialize(issuer=ISSUER, lifetime=lifetime).decode()

    def seed_key_cache(self, cache_home):
        """scitokens-cpp's key cache under `cache_home` (its XDG_CACHE_HOME) holding this
        issuer's keys, valid for ten years: the SE never fetches them."""
        d = Path(cache_home) / "scitokens"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        far = int(time.time()) + 10 * 365 * 86400
        db = sqlite3.connect(str(d / "scitokens_cpp.sqllite"))
        try:
            db.execute("CREATE TABLE IF NOT EXISTS keycache (issuer text UNIQUE PRIMARY KEY NOT NULL,"
                       " keys text NOT NULL)")
            db.execute("INSERT OR REPLACE INTO keycache VALUES (?, ?)",
                       (ISSUER, json.dumps({"jwks": self.jwks(), "next_update": far, "expires": far})))
            db.commit()
        finally:
            db.close()


def _run(args, base, **kw):
    proc = subprocess.run([str(a) for a in args], cwd=base, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, RANDFILE=str(base / ".rnd")), **kw)
    if proc.returncode != 0:
        raise PKIError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _sign(base, ca, name, subject, ext):
    (base / f"{name}.ext").write_text(ext)
    _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}key.pem", "-out",
          f"{name}.csr", "-subj", subject], base)
    _run(["openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", ca / "ca.pem", "-CAkey", ca / "ca.key",
          "-CAcreateserial", "-days", "365", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}cert.pem"], base)
    os.chmod(base / f"{name}key.pem", 0o400)   # grid-proxy-init refuses a readable key
    (base / f"{name}.csr").unlink()


_USER_EXT = ("basicConstraints=critical,CA:FALSE\n"
             "keyUsage=critical,digitalSignature,keyEncipherment,dataEncipherment\nextendedKeyUsage=clientAuth\n")


def make_pki(base):
    """Everything GridPKI names, made under `base` (a new directory)."""
    pki = _make_certificates(base)
    base, certs, user = pki.base, pki.cert_dir, ["-cert", pki.usercert, "-key", pki.userkey]
    _run(["grid-proxy-init", "-q", "-rfc", "-bits", "2048", "-valid", "12:00", "-certdir", certs] + user
         + ["-out", pki.proxy], base)
    _run(["grid-proxy-init", "-q", "-rfc", "-bits", "2048", "-valid", "1:00", "-certdir", certs] + user
         + ["-out", pki.short_proxy], base)
    _run(["grid-proxy-init", "-q", "-rfc", "-bits", "2048", "-valid", "12:00", "-certdir", certs,
          "-cert", base / "othercert.pem", "-key", base / "otherkey.pem", "-out", pki.unmapped_proxy], base)
    _voms_proxy(pki, 12, pki.voms_proxy)
    _run(["voms-proxy-fake", "-q", "-rfc", "-hours", "1", "-pastproxy", "2:00"] + user
         + ["-out", pki.expired_proxy], base)
    _make_issuer(pki.issuer_dir)
    pki.token.write_text(pki.mint_token())
    pki.token_expired.write_text(pki.mint_token(lifetime=-60))
    pki.token_readonly.write_text(pki.mint_token(scope="storage.read:/"))
    for path in (pki.token, pki.token_expired, pki.token_readonly):
        os.chmod(path, 0o600)   # xrdcp reads BEARER_TOKEN_FILE only at 0600
    return pki


def make_demo_pki(base, hours=12):
    """The demo's PKI under `base`: CA, certs, `proxy`, `voms_proxy` when voms-proxy-fake is
    installed, `token` when `scitokens` is (both absent otherwise), all valid `hours`."""
    pki = _make_certificates(base)
    if shutil.which("grid-proxy-init"):
        _run(["grid-proxy-init", "-q", "-rfc", "-bits", "2048", "-valid", f"{hours}:00", "-certdir", pki.cert_dir,
              "-cert", pki.usercert, "-key", pki.userkey, "-out", pki.proxy], pki.base)
    else:
        make_proxy(pki.usercert, pki.userkey, pki.proxy, hours * 3600)
    if shutil.which("voms-proxy-fake"):
        _voms_proxy(pki, hours, pki.voms_proxy)
    if has_module("scitokens"):
        _make_issuer(pki.issuer_dir)
        pki.token.write_text(pki.mint_token(lifetime=hours * 3600))
        os.chmod(pki.token, 0o600)
    return pki


def make_proxy(cert, key, out, valid_s, start_offset_s=-300):
    """An RFC 3820 impersonation proxy of `cert` signed by `key`, written to `out` (0600) with
    python3-cryptography: what grid-proxy-init -rfc makes, for machines without Globus."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from server.backends.delegation import proxy_certificate
    user_cert = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    user_key = serialization.load_pem_private_key(Path(key).read_bytes(), None)
    proxy_key = rsa.generate_private_key(65537, 2048)
    start = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=start_offset_s)
    proxy = proxy_certificate(user_cert, user_key, proxy_key.public_key(),
                              start + datetime.timedelta(seconds=valid_s), not_before=start)
    fd = os.open(str(out), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(proxy.public_bytes(serialization.Encoding.PEM))
        fh.write(proxy_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                         serialization.NoEncryption()))
        fh.write(user_cert.public_bytes(serialization.Encoding.PEM))
    return Path(out)


def _voms_proxy(pki, hours, out):
    # voms-proxy-fake signs the attribute certificate with the host cert: no VOMS server needed.
    _run(["voms-proxy-fake", "-q", "-rfc", "-hours", str(hours), "-cert", pki.usercert, "-key", pki.userkey,
          "-out", out, "-voms", VO, "-hostcert", pki.hostcert, "-hostkey", pki.hostkey,
          "-fqan", f"/{VO}/Role=NULL/Capability=NULL", "-uri", "localhost:15000"], pki.base)


def _make_certificates(base):
    """The CA (its dir rehashed, with a signing policy), host, user and unmapped user certs."""
    base = Path(base).resolve()
    ca, certs = base / "ca", base / "certificates"
    ca.mkdir(parents=True)
    certs.mkdir()
    (base / ".rnd").write_bytes(os.urandom(256))
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
          "-keyout", ca / "ca.key", "-out", ca / "ca.pem", "-subj", "/DC=test/DC=grid/CN=Test CA",
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
          "-addext", "subjectKeyIdentifier=hash"], base)
    _sign(base, ca, "host", "/DC=test/DC=grid/CN=localhost",
          "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
          "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _sign(base, ca, "user", USER_DN, _USER_EXT)
    _sign(base, ca, "other", OTHER_DN, _USER_EXT)
    shutil.copy(ca / "ca.pem", certs / "testca.pem")
    subject_hash = _run(["openssl", "x509", "-noout", "-subject_hash", "-in", ca / "ca.pem"], base).strip()
    # GSI (XrdSecgsi, globus) checks the CA's namespace in a signing policy file.
    policy = ("access_id_CA   X509   '/DC=test/DC=grid/CN=Test CA'\npos_rights     globus CA:sign\n"
              "cond_subjects  globus '\"/DC=test/DC=grid/*\"'\n")
    (certs / f"{subject_hash}.signing_policy").write_text(policy)
    _run(["openssl", "rehash", certs], base)
    return GridPKI(base)


def _make_issuer(d):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    d.mkdir(parents=True)
    key = rsa.generate_private_key(65537, 2048)
    (d / "issuer.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    numbers = key.public_key().public_numbers()

    def b64(i):
        return base64.urlsafe_b64encode(i.to_bytes((i.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
    (d / "jwks.json").write_text(json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig",
                                                       "kid": "key-rs256", "n": b64(numbers.n), "e": b64(numbers.e)}]}))
