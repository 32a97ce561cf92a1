"""The job description (CONTRACT §1): frozen dataclasses and one parser.

The server writes it when jobs are prepared; `severus run` reads it. Parsing
is strict: unknown fields, wrong types and paths that escape their root are
refused, so a mistake is caught before any work starts.
"""
import json
import posixpath
from dataclasses import dataclass, field, asdict
from typing import Mapping, Optional, Tuple

from . import schema as s
from .errors import JobDescriptionError

SCHEMA_VERSION = 1
INPUT_MODES = ("DIR", "FILE", "LIST", "NONE")
MAX_STEPS = 20
ADLER32_RE = r"[0-9a-f]{8}"
NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
# Beside the description, one word in the job's environment: a backend whose CE hands the job a
# delegated proxy of the submitter sets it to "delegated" (that proxy is then the manager's to keep
# alive: 006, not the site's 005).
CREDENTIAL_ENV, CREDENTIAL_DELEGATED = "SEVERUS_CREDENTIAL", "delegated"


@dataclass(frozen=True)
class JobInfo:
    id: int
    runnum: int
    attempt: int
    session: str
    production: str
    request: Optional[int]
    events: int
    test: bool = False


@dataclass(frozen=True)
class ServerInfo:
    url: str
    token: str
    heartbeat_s: float = 300.0


@dataclass(frozen=True)
class Software:
    name: str
    version: str
    revision: int
    lfn: Optional[str]              # the tarball, or None with `path`
    adler32: Optional[str]
    workdir: str
    exe: str
    # A read-only shared area (the CVMFS way) used in place, instead of a tarball: absolute.
    path: Optional[str] = None


@dataclass(frozen=True)
class PayloadStep:
    """One step of a job's payload (seed 001's workflow): a module with its own parameters, args
    and environment; the steps run in order in the job's work dir, each on the previous one's files."""
    name: str
    module: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    args: Tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Payload:
    module: Optional[str] = None    # None with `steps`: each step names its own
    parameters: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    args: Tuple[str, ...] = ()
    steps: Tuple[PayloadStep, ...] = ()

    def steps_to_run(self) -> Tuple[PayloadStep, ...]:
        """The steps as they run: a job without `steps` is one step named after its module; a
        step's parameters and env are the payload's with the step's own over them."""
        if not self.steps:
            return (PayloadStep(name=self.module, module=self.module, parameters=dict(self.parameters),
                                args=tuple(self.args), env=dict(self.env)),)
        return tuple(PayloadStep(name=st.name, module=st.module,
                                 parameters={**self.parameters, **st.parameters}, args=tuple(st.args),
                                 env={**self.env, **st.env})
                     for st in self.steps)


@dataclass(frozen=True)
class Input:
    mode: str
    paths: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Output:
    lfn_dir: str
    sites: Tuple[str, ...] = ()
    patterns: Tuple[str, ...] = ("*.root",)


@dataclass(frozen=True)
class LogSpec:
    to_db: bool = False


@dataclass(frozen=True)
class Limits:
    max_wct_s: float = 86400.0
    max_rss_mb: float = 0.0        # 0: no limit
    stall_s: float = 0.0           # 0: no stall detection
    grace_s: float = 10.0          # SIGTERM -> SIGKILL
    cores: int = 1                 # what the batch system gives the job; the payload is told
    memory_mb: float = 0.0         # the batch system's memory request for the job; 0: its default
    # at most this much remaining credential life asked before a stage (a job whose credential an agent
    # renews); 0: the default need, max_wct_s + the stage-out time (wrapper/credentials.py)
    credential_lifetime_s: float = 0.0


@dataclass(frozen=True)
class ContainerRequest:
    """The image the payload runs in (the job's own, or its session's written here by the server)."""
    image: str                     # absolute path: a directory image (as on CVMFS) or a SIF file


@dataclass(frozen=True)
class JobDescription:
    job: JobInfo
    server: ServerInfo
    software: Software
    payload: Payload
    input: Input
    output: Output
    log: LogSpec = LogSpec()
    limits: Limits = Limits()
    container: Optional[ContainerRequest] = None   # None: on the host, unless the site requires one
    schema: int = SCHEMA_VERSION

    def to_dict(self):
        d = _plain(asdict(self))
        payload = d["payload"]
        if payload["steps"]:
            del payload["module"], payload["args"]   # a job of steps has neither (the parser says so)
        else:
            del payload["steps"]                     # a single-module job as the contract has it
        return d


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def parse_job_description(data):
    """Validate a decoded job description; raise JobDescriptionError (001)."""
    try:
        return _parse(data)
    except s.SchemaError as exc:
        raise JobDescriptionError(str(exc)) from None


def load_job_description(path):
    """Read and validate a job description file."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(16 * 1024 * 1024 + 1)
    except OSError as exc:
        raise JobDescriptionError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > 16 * 1024 * 1024:
        raise JobDescriptionError(f"{path} is larger than 16 MiB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise JobDescriptionError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:   # a hostile file nested thousands deep
        raise JobDescriptionError(f"{path} is nested too deeply") from None
    return parse_job_description(data)


def _parse(d):
    if not isinstance(d, dict):
        raise s.SchemaError("a job description must be a JSON object")
    version = d.get("schema")
    if type(version) is not int or version != SCHEMA_VERSION:   # true == 1 in Python, not in JSON
        raise s.SchemaError(f"unknown schema {version!r} (this wrapper reads schema {SCHEMA_VERSION})")
    s.refuse_unknown(d, ("schema", "job", "server", "software", "payload", "input",
                         "output", "log", "limits", "container"))
    j = s.section(d, "job")
    s.refuse_unknown(j, ("id", "runnum", "attempt", "session", "production", "request",
                         "events", "test"), "job.")
    job = JobInfo(
        id=s.integer(j, "id", "job.", lo=1),
        runnum=s.integer(j, "runnum", "job.", lo=0),
        attempt=s.integer(j, "attempt", "job.", lo=1, hi=100000),
        session=s.text(j, "session", "job.", pattern=NAME_RE, max_len=64),
        production=s.text(j, "production", "job.", pattern=NAME_RE, max_len=128),
        request=None if j.get("request") is None else s.integer(j, "request", "job.", lo=1),
        events=s.integer(j, "events", "job.", lo=0, hi=10 ** 12),
        test=s.boolean(j, "test", "job.", default=False),
    )
    sv = s.section(d, "server")
    s.refuse_unknown(sv, ("url", "token", "heartbeat_s"), "server.")
    server = ServerInfo(
        url=s.text(sv, "url", "server.", pattern=r"https?://[^\s]+", max_len=1024),
        token=s.text(sv, "token", "server.", max_len=512),
        heartbeat_s=s.number(sv, "heartbeat_s", "server.", default=300.0, lo=0.05, hi=86400),
    )
    sw = s.section(d, "software")
    s.refuse_unknown(sw, ("name", "version", "revision", "lfn", "adler32", "workdir", "exe", "path"),
                     "software.")
    area = _software_path(sw)
    software = Software(
        name=s.text(sw, "name", "software.", pattern=NAME_RE, max_len=128),
        version=s.text(sw, "version", "software.", pattern=NAME_RE, max_len=64),
        revision=s.integer(sw, "revision", "software.", default=0),
        lfn=None if area else s.lfn(sw, "lfn", "software."),
        adler32=None if area else s.text(sw, "adler32", "software.", pattern=ADLER32_RE),
        workdir=s.relative_path(sw, "workdir", "software."),
        exe=s.relative_path(sw, "exe", "software."),
        path=area,
    )
    if software.lfn is not None and not software.lfn.endswith((".tjz", ".tgz", ".tar.gz")):
        raise s.SchemaError("'software.lfn' must name a .tjz, .tgz or .tar.gz tarball")
    p = s.section(d, "payload")
    s.refuse_unknown(p, ("module", "parameters", "env", "args", "steps"), "payload.")
    steps = _payload_steps(p)
    payload = Payload(
        module=None if steps else s.text(p, "module", "payload.", pattern=NAME_RE, max_len=64),
        parameters=s.text_map(p, "parameters", "payload.", default={}),
        env=_env(p, "payload."),
        args=() if steps else s.text_list(p, "args", "payload.", default=(), max_items=1000, empty=True),
        steps=steps,
    )
    i = s.section(d, "input")
    s.refuse_unknown(i, ("mode", "paths"), "input.")
    mode = s.text(i, "mode", "input.")
    if mode not in INPUT_MODES:
        raise s.SchemaError(f"'input.mode' must be one of {', '.join(INPUT_MODES)}")
    paths = s.text_list(i, "paths", "input.", default=())
    for n, path in enumerate(paths):
        s.check_lfn(path, f"input.paths[{n}]")
    want = {"NONE": (0, 0), "FILE": (1, 1), "DIR": (1, 1)}.get(mode, (1, None))
    if len(paths) < want[0] or (want[1] is not None and len(paths) > want[1]):
        count = "no paths" if want[1] == 0 else ("exactly one path" if want[1] == 1 else "at least one path")
        raise s.SchemaError(f"'input.paths' must hold {count} in mode {mode}")
    clash = input_name_clash(paths) if mode == "LIST" else None
    if clash:
        raise s.SchemaError(f"'input.paths' hold {clash[0]} and {clash[1]}, one file name: a LIST job stages "
                            "its inputs by file name (put them in different jobs)")
    input_ = Input(mode=mode, paths=paths)
    o = s.section(d, "output")
    s.refuse_unknown(o, ("lfn_dir", "sites", "patterns"), "output.")
    output = Output(
        lfn_dir=s.lfn(o, "lfn_dir", "output."),
        sites=s.text_list(o, "sites", "output.", default=(), max_items=100, pattern=NAME_RE),
        patterns=s.text_list(o, "patterns", "output.", default=("*.root",), max_items=100,
                             pattern=r"[^/\x00]+"),
    )
    if not output.patterns:
        raise s.SchemaError("'output.patterns' must not be empty")
    lg = d.get("log", {})
    if not isinstance(lg, dict):
        raise s.SchemaError("'log' must be an object")
    s.refuse_unknown(lg, ("to_db",), "log.")
    log = LogSpec(to_db=s.boolean(lg, "to_db", "log.", default=False))
    lm = d.get("limits", {})
    if not isinstance(lm, dict):
        raise s.SchemaError("'limits' must be an object")
    s.refuse_unknown(lm, ("max_wct_s", "max_rss_mb", "stall_s", "grace_s", "cores", "memory_mb",
                          "credential_lifetime_s"), "limits.")
    limits = Limits(
        max_wct_s=s.number(lm, "max_wct_s", "limits.", default=86400.0, lo=1, hi=30 * 86400),
        max_rss_mb=s.number(lm, "max_rss_mb", "limits.", default=0.0, hi=1024 * 1024),
        stall_s=s.number(lm, "stall_s", "limits.", default=0.0, hi=30 * 86400),
        grace_s=s.number(lm, "grace_s", "limits.", default=10.0, lo=0, hi=3600),
        cores=s.integer(lm, "cores", "limits.", default=1, lo=1, hi=1024),
        memory_mb=s.number(lm, "memory_mb", "limits.", default=0.0, hi=1024 * 1024),
        credential_lifetime_s=s.number(lm, "credential_lifetime_s", "limits.", default=0.0, hi=30 * 86400),
    )
    container = None
    if d.get("container") is not None:
        ct = s.section(d, "container")
        s.refuse_unknown(ct, ("image",), "container.")
        image = s.text(ct, "image", "container.", max_len=4096)
        if not image.startswith("/") or ".." in image.split("/") or "\0" in image:
            raise s.SchemaError("'container.image' must be an absolute path (a directory image or a SIF file)")
        container = ContainerRequest(image=image)
    return JobDescription(job=job, server=server, software=software, payload=payload,
                          input=input_, output=output, log=log, limits=limits, container=container)


def input_name_clash(paths):
    """The first two of `paths` with one file name, or None. A job's LIST inputs land in its work dir by
    file name, so such a pair would overwrite each other; refused, not kept apart in subdirectories, so
    that a payload always finds its inputs by their names (the server refuses such a job at submission)."""
    seen = {}
    for lfn in paths:
        base = posixpath.basename(lfn)
        if base in seen:
            return seen[base], lfn
        seen[base] = lfn
    return None


def _software_path(sw):
    """`software.path`, absolute and without `..`, or None; it excludes the tarball's lfn and adler32."""
    if sw.get("path") is None:
        return None
    path = s.text(sw, "path", "software.", max_len=1024)
    if not path.startswith("/") or ".." in path.split("/") or "\0" in path:
        raise s.SchemaError("'software.path' must be an absolute path like /cvmfs/superbvo.org/FastSim/V1")
    both = [k for k in ("lfn", "adler32") if sw.get(k) is not None]
    if both:
        raise s.SchemaError(f"'software.path' and 'software.{both[0]}' exclude each other: "
                            "a shared area or a tarball")
    return path


def _payload_steps(p):
    """`payload.steps`: 1 to MAX_STEPS uniquely named steps, or () when absent (a single-module job)."""
    raw = p.get("steps")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise s.SchemaError("'payload.steps' must be a list of objects")
    if not 1 <= len(raw) <= MAX_STEPS:
        raise s.SchemaError(f"'payload.steps' must hold 1 to {MAX_STEPS} steps")
    both = [k for k in ("module", "args") if k in p]
    if both:
        raise s.SchemaError(f"'payload.{both[0]}' and 'payload.steps' exclude each other: "
                            "each step names its module and args")
    steps, names = [], set()
    for n, item in enumerate(raw):
        where = f"payload.steps[{n}]."
        if not isinstance(item, dict):
            raise s.SchemaError(f"'payload.steps[{n}]' must be an object")
        s.refuse_unknown(item, ("name", "module", "parameters", "args", "env"), where)
        name = s.text(item, "name", where, pattern=NAME_RE, max_len=64)
        if name in names:
            raise s.SchemaError(f"'{where}name' {name!r} is an earlier step's name: names are unique in a job")
        names.add(name)
        steps.append(PayloadStep(
            name=name,
            module=s.text(item, "module", where, pattern=NAME_RE, max_len=64),
            parameters=s.text_map(item, "parameters", where, default={}),
            args=s.text_list(item, "args", where, default=(), max_items=1000, empty=True),
            env=_env(item, where),
        ))
    return tuple(steps)


def _env(data, where):
    env = s.text_map(data, "env", where, default={})
    for name in env:
        if not _is_env_name(name):
            raise s.SchemaError(f"'{where}env.{name}' is not a valid environment variable name")
    return env


def _is_env_name(name):
    return name.replace("_", "a").isalnum() and not name[0].isdigit() and name.isascii()
