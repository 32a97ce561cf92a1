"""The node's grid credentials: where they are, who they say we are, how long they last, and
the environment each transfer tool needs to use them.

    discover(env) -> Credentials      proxy (X509_USER_PROXY, else /tmp/x509up_u<uid>),
                                      X509_CERT_DIR, bearer token (WLCG Bearer Token
                                      Discovery: BEARER_TOKEN, BEARER_TOKEN_FILE,
                                      $XDG_RUNTIME_DIR/bt_u<uid>, /tmp/bt_u<uid>)
    read_proxy(path) -> ProxyInfo     subject, identity DN, notAfter (standard library), VO,
                                      FQANs and the attributes' lifetime (voms-proxy-info)
    read_token(text) -> TokenInfo     iss, sub, scope, exp, aud: the payload's JSON, unverified
                                      (the SE checks the signature; we only need the claims)
    tool_environment(creds, env, workdir) -> dict   what xrdcp, gfal2 and gfal-* read
    prepare_stage(ctx, step)          before each transfer stage: discover again (a site agent
                                      refreshes the token file), put the environment in place,
                                      and raise CredentialError (005) when the site requires a
                                      credential that is missing or too short for the stage

The job description never names a credential (the server hands out no long-lived secret): a
credential is the node's, or the CE's delegation of the submitter's proxy (X509_USER_PROXY names
it). One missing or too short is the site's to mend (005), unless the backend said the proxy came
with the job (SEVERUS_CREDENTIAL=delegated): then the proxy is the manager's to renew (006).
"""
import base64
import json
import os
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from shared.errors import CredentialError, JobCredentialError
from shared.jobdesc import CREDENTIAL_DELEGATED, CREDENTIAL_ENV

# Set by tool_environment when it put a token read from a file into BEARER_TOKEN: the next
# discovery reads that file again instead of trusting the copy (a site agent refreshes it).
TOKEN_SOURCE_VAR = "SEVERUS_BEARER_TOKEN_SOURCE"
TOKEN_COPY = ".severus-bt"   # the 0600 copy in the work dir xrdcp is given
VOMS_INFO_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ProxyInfo:
    path: str
    subject: str
    identity: str                     # the DN without the proxy's own CN=<number> parts
    not_after: float                  # epoch seconds
    vo: Optional[str] = None
    fqans: Tuple[str, ...] = ()
    voms_not_after: Optional[float] = None
    voms_known: bool = False          # False: voms-proxy-info missing or failed, VO unknown

    def seconds_left(self, now=None):
        """The proxy's remaining life, or its VOMS attributes' when shorter."""
        now = time.time() if now is None else now
        ends = [self.not_after] + ([self.voms_not_after] if self.voms_not_after is not None else [])
        return min(ends) - now


@dataclass(frozen=True)
class TokenInfo:
    source: str                       # "BEARER_TOKEN" or the file it was read from
    issuer: str = ""
    subject: str = ""
    scope: str = ""
    audience: str = ""
    expires: Optional[float] = None   # None: no exp claim (never expires by its own account)

    def seconds_left(self, now=None):
        if self.expires is None:
            return float("inf")
        return self.expires - (time.time() if now is None else now)


@dataclass(frozen=True)
class Credentials:
    proxy_path: Optional[str]          # the file found, whether or not it can be read
    proxy: Optional[ProxyInfo]
    proxy_error: Optional[str]         # why the file named could not be used
    token: Optional[TokenInfo]
    token_value: Optional[str]
    token_error: Optional[str]
    cert_dir: Optional[str]

    def seconds_left(self, kind, now=None):
        """Remaining life of the proxy or token (None when there is none usable)."""
        item = self.proxy if kind == "proxy" else self.token
        return None if item is None else item.seconds_left(now)


def find_proxy(env=None):
    """X509_USER_PROXY, else /tmp/x509up_u<uid>; None when neither file exists."""
    env = os.environ if env is None else env
    path = env.get("X509_USER_PROXY") or f"/tmp/x509up_u{os.getuid()}"
    return path if os.path.isfile(path) else None


def find_token(env=None):
    """(token, where) by the WLCG Bearer Token Discovery order, or (None, None); files are read
    each time."""
    env = os.environ if env is None else env
    source = env.get(TOKEN_SOURCE_VAR)
    if env.get("BEARER_TOKEN") and not (source and os.path.isfile(source)):
        return env["BEARER_TOKEN"].strip(), "BEARER_TOKEN"
    uid = os.getuid()
    runtime = env.get("XDG_RUNTIME_DIR")
    candidates = [source, env.get("BEARER_TOKEN_FILE"),
                  os.path.join(runtime, f"bt_u{uid}") if runtime else None, f"/tmp/bt_u{uid}"]
    for path in candidates:
        if path and os.path.isfile(path):
            try:
                text = Path(path).read_text().strip()
            except OSError:
                continue
            if text:
                return text, path
    return None, None


def _dn(rdns):
    short = {"domainComponent": "DC", "commonName": "CN", "organizationName": "O",
             "organizationalUnitName": "OU", "countryName": "C", "localityName": "L",
             "stateOrProvinceName": "ST", "emailAddress": "emailAddress", "userId": "UID"}
    return "".join(f"/{short.get(k, k)}={v}" for rdn in rdns for k, v in rdn)


def _decode_first_cert(path):
    """(subject DN, notAfter epoch) of the first certificate in a PEM file. CPython's own
    certificate decoder (ssl._ssl._test_decode_cert, present 3.4-3.13: the one a TLS peer's
    certificate goes through) needs no subprocess and no third-party module; where a Python
    lacks it, `openssl x509` reads the same."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is not None:
        info = decode(path)
        return _dn(info["subject"]), ssl.cert_time_to_seconds(info["notAfter"])
    if shutil.which("openssl") is None:
        raise ValueError("neither ssl._ssl._test_decode_cert nor openssl is available to read it")
    proc = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-subject", "-enddate", "-nameopt", "compat"],
                          capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise ValueError(proc.stderr.strip() or "openssl cannot read it")
    fields = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return fields["subject"].strip(), ssl.cert_time_to_seconds(fields["notAfter"].strip())


def _identity(subject):
    """An RFC 3820 proxy's DN is its owner's plus CN=<number> per delegation: drop those."""
    parts = subject.split("/CN=")
    while len(parts) > 1 and parts[-1].isdigit():
        parts.pop()
    return "/CN=".join(parts)


def _hms(text):
    h, m, s = (int(x) for x in text.strip().split(":"))
    return h * 3600 + m * 60 + s


def read_voms(path, cert_dir=None, now=None):
    """(vo, fqans, attributes' end as epoch) from `voms-proxy-info -all`; None when the tool is
    missing or fails (the VO is then unknown, not absent); (None, (), None) without attributes."""
    if shutil.which("voms-proxy-info") is None:
        return None
    env = dict(os.environ, **({"X509_CERT_DIR": cert_dir} if cert_dir else {}))
    try:
        proc = subprocess.run(["voms-proxy-info", "-file", path, "-all"], capture_output=True, text=True,
                              timeout=VOMS_INFO_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 and "VO " not in proc.stdout:
        return None
    now = time.time() if now is None else now
    vo, fqans, ends, in_ac = None, [], [], False
    for line in proc.stdout.splitlines():
        if line.startswith("=== VO "):
            in_ac = True
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not in_ac:
            continue
        if key == "VO" and vo is None:
            vo = value
        elif key == "attribute":
            fqans.append(value)
        elif key == "timeleft":
            try:
                ends.append(now + _hms(value))
            except ValueError:
                pass
    return vo, tuple(fqans), (min(ends) if ends else None)


# The last proxy read, by its file's identity: every transfer stage discovers the credentials again
# (a site's agent may renew the proxy meanwhile), and reading an unchanged file again would run
# openssl and voms-proxy-info each time. A renewal changes the file's mtime, size or inode.
_LAST_READ = {}


def read_proxy(path, cert_dir=None):
    """ProxyInfo of a proxy file; ValueError with the reason when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ValueError(f"cannot read the proxy {path}: {exc}") from None
    key = (path, cert_dir, st.st_ino, st.st_size, st.st_mtime_ns)
    info = _LAST_READ.get(key)
    if info is None:
        info = _read_proxy(path, cert_dir)
        _LAST_READ.clear()
        _LAST_READ[key] = info
    return info


def _read_proxy(path, cert_dir):
    try:
        subject, not_after = _decode_first_cert(path)
        has_key = b"PRIVATE KEY-----" in Path(path).read_bytes()
    except (OSError, ssl.SSLError, KeyError) as exc:
        raise ValueError(f"cannot read the proxy {path}: {exc}") from None
    if not has_key:
        # what an ARC CE leaves in its job proxy file when nothing was delegated: the submitter's
        # certificates alone. Handed on, it would fail every transfer as a bare TLS error.
        raise ValueError(f"the proxy {path} holds certificates but no private key (nothing was delegated?)")
    voms = read_voms(path, cert_dir)
    if voms is None:
        return ProxyInfo(path, subject, _identity(subject), not_after)
    vo, fqans, voms_end = voms
    return ProxyInfo(path, subject, _identity(subject), not_after, vo, fqans, voms_end, True)


def read_token(text, source="BEARER_TOKEN"):
    """The claims of a JWT (its middle part), not verified; ValueError when it is not a JWT."""
    parts = text.strip().split(".")
    if len(parts) != 3:
        raise ValueError(f"the bearer token from {source} is not a JWT (header.payload.signature)")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"the bearer token from {source} has no readable JSON payload") from None
    if not isinstance(claims, dict):
        raise ValueError(f"the bearer token from {source} has no claims object")
    aud = claims.get("aud", "")
    exp = claims.get("exp")
    return TokenInfo(source=source, issuer=str(claims.get("iss", "")), subject=str(claims.get("sub", "")),
                     scope=str(claims.get("scope", "")), audience=" ".join(aud) if isinstance(aud, list) else str(aud),
                     expires=float(exp) if isinstance(exp, (int, float)) else None)


def discover(env=None):
    """The node's credentials as the environment (`os.environ` by default) names them."""
    env = os.environ if env is None else env
    named = env.get("X509_USER_PROXY")
    proxy_path = find_proxy(env)
    proxy = proxy_error = None
    if proxy_path:
        try:
            proxy = read_proxy(proxy_path, env.get("X509_CERT_DIR"))
        except ValueError as exc:
            proxy_error = str(exc)
    elif named:
        proxy_error = f"X509_USER_PROXY names {named}, which does not exist"
    value, where = find_token(env)
    token = token_error = None
    if value:
        try:
            token = read_token(value, where)
        except ValueError as exc:
            token_error = str(exc)
    return Credentials(proxy_path, proxy, proxy_error, token, value, token_error, env.get("X509_CERT_DIR"))


def tool_environment(creds, env, workdir=None):
    """A copy of `env` set up for xrdcp, xrdfs, gfal2 and gfal-*:
    - X509_USER_PROXY names the proxy found, or is unset: a variable naming a missing file
      makes XrdCl fail TLS altogether (exit 51) even for a token; so is an expired or unreadable
      proxy's;
    - BEARER_TOKEN carries the token (gfal2 reads only the variable over root:// and davs://);
    - BEARER_TOKEN_FILE names a file of mode 0600 (xrdcp ignores any other mode): the token's
      own file when it is 0600, else a 0600 copy in `workdir`."""
    out = dict(env)
    out.pop("X509_USER_PROXY", None)
    # A-REX sets X509_USER_CERT and X509_USER_KEY to "fake" beside the delegated proxy; gfal2's
    # HTTP plugin takes a certificate variable before the proxy's, and then has no credential.
    for var in ("X509_USER_CERT", "X509_USER_KEY"):
        if var in out and not os.path.isfile(out[var]):
            del out[var]
    # An expired proxy is not handed on: over davs its TLS handshake ends in a certificate alert
    # or a bare connection reset (GError 112, which looks like a network fault); without it the SE
    # answers 403 (or xrdcp 52), which says what it is. A token then still works.
    # So is one we could not read (no key: an ARC CE's job proxy when nothing was delegated).
    if creds.proxy is not None and creds.proxy.not_after > time.time():
        out["X509_USER_PROXY"] = creds.proxy_path
    for var in ("BEARER_TOKEN", "BEARER_TOKEN_FILE", TOKEN_SOURCE_VAR):
        out.pop(var, None)
    if creds.token_value:
        out["BEARER_TOKEN"] = creds.token_value
        where = creds.token.source if creds.token else None
        if where and where != "BEARER_TOKEN":
            out[TOKEN_SOURCE_VAR] = where
        if where and where != "BEARER_TOKEN" and (os.stat(where).st_mode & 0o777) == 0o600:
            out["BEARER_TOKEN_FILE"] = where
        elif workdir is not None:
            out["BEARER_TOKEN_FILE"] = write_token_copy(creds.token_value, workdir)
    return out


def write_token_copy(value, workdir):
    """The token in a 0600 file in `workdir` (replaced atomically); its path."""
    path = Path(workdir) / TOKEN_COPY
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    os.chmod(tmp, 0o600)   # O_CREAT's mode is only for a new file
    os.replace(tmp, path)
    return str(path)


def apply_environment(creds, workdir=None):
    """Put tool_environment into this process's environment: gfal2 and XrdCl read it in-process,
    and CliTransfer copies it when made."""
    new = tool_environment(creds, os.environ, workdir)
    for var in ("X509_USER_PROXY", "X509_USER_CERT", "X509_USER_KEY", "BEARER_TOKEN", "BEARER_TOKEN_FILE",
                TOKEN_SOURCE_VAR):
        if var in new:
            os.environ[var] = new[var]
        else:
            os.environ.pop(var, None)


def needed_lifetime(desc, site, before_payload):
    """Seconds a credential must still live for a stage: the payload's wallclock limit (when the
    payload is still to come) plus a stage-out's base transfer time, unless the site's
    `[credentials] min_lifetime_s` or the job's `limits.credential_lifetime_s` asks for less."""
    need = site.transfer.timeout_base_s + (desc.limits.max_wct_s if before_payload else 0.0)
    floors = [f for f in (site.credentials.min_lifetime_s, desc.limits.credential_lifetime_s or None)
              if f is not None]
    return min([need, *floors])


def check_lifetime(creds, require, needed_s, what, now=None, delegated=False):
    """Raise CredentialError (005) unless the credential `require` names (proxy | token | any)
    is present and lives `needed_s` more; one clear line saying which and by how much.
    `delegated`: the proxy came with the job (the submitter's), so its failing is
    JobCredentialError (006, blame manager)."""
    if require == "none":
        return
    kinds = ("proxy", "token") if require == "any" else (require,)
    problems = []
    for kind in kinds:
        left = creds.seconds_left(kind, now)
        if left is None:
            reason = (creds.proxy_error if kind == "proxy" else creds.token_error) or "none found"
            problems.append(f"no usable {kind} ({reason})")
        elif left < needed_s:
            problems.append(f"the {kind} has {_duration(max(0.0, left))} left"
                            f"{' (expired)' if left <= 0 else ''}, {what} needs {_duration(needed_s)}")
        else:
            return
    if delegated and "proxy" in kinds:
        raise JobCredentialError("; ".join(problems).replace("the proxy", "the delegated proxy", 1),
                                 credential=require, needed_s=round(needed_s))
    raise CredentialError("; ".join(problems), credential=require, needed_s=round(needed_s))


def _duration(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 120 else f"{seconds}s"


def use_site_cert_dir(site):
    """X509_CERT_DIR from the site's `[credentials] cert_dir` when the environment names none."""
    if site is not None and site.credentials.cert_dir and not os.environ.get("X509_CERT_DIR"):
        os.environ["X509_CERT_DIR"] = site.credentials.cert_dir


def prepare_stage(ctx, what, before_payload):
    """Before a transfer stage: discover the credentials again, put them in this process's
    environment, and check their lifetime against what the stage needs (site `[credentials]`)."""
    use_site_cert_dir(ctx.site)
    creds = discover()
    apply_environment(creds, ctx.workdir)
    conf = ctx.site.credentials
    check_lifetime(creds, conf.require, needed_lifetime(ctx.desc, ctx.site, before_payload), what,
                   delegated=os.environ.get(CREDENTIAL_ENV) == CREDENTIAL_DELEGATED)
    return creds


def refresh_environment(ctx):
    """Discover again and put the credentials in this process's environment, without a check."""
    use_site_cert_dir(ctx.site)
    creds = discover()
    apply_environment(creds, ctx.workdir)
    return creds


def summary(creds, now=None):
    """(what the node is, as one line; [(perf label, seconds left)]) for `severus check`."""
    parts, lifetimes = [], []
    if creds.proxy is not None:
        p = creds.proxy
        left = p.not_after - (time.time() if now is None else now)
        vo = ("VO unknown (voms-proxy-info missing)" if not p.voms_known
              else f"VO {p.vo} ({', '.join(p.fqans)})" if p.vo else "no VOMS attributes")
        parts.append(f"proxy {p.identity}, {vo}, {_duration(max(0.0, left))} left")
        lifetimes.append(("proxy_lifetime", left))
        if p.voms_not_after is not None:
            lifetimes.append(("voms_lifetime", p.voms_not_after - (time.time() if now is None else now)))
    elif creds.proxy_error:
        parts.append(f"proxy unusable: {creds.proxy_error}")
    if creds.token is not None:
        t = creds.token
        left = t.seconds_left(now)
        parts.append(f"token from {t.source}: iss {t.issuer}, sub {t.subject}, scope '{t.scope}', "
                     + ("no exp" if t.expires is None else f"{_duration(max(0.0, left))} left"))
        if t.expires is not None:
            lifetimes.append(("token_lifetime", left))
    elif creds.token_error:
        parts.append(f"token unusable: {creds.token_error}")
    return "; ".join(parts) or "no grid credential", lifetimes
