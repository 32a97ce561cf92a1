"""The job description and event schemas the server documents accept exactly what shared/ accepts.

One corpus of good and bad messages runs through both: the served /api/v1/openapi.json (validated with
openapi-schema-validator, as a client would) and shared/'s parsers (what the wrapper and the events route
use). KNOWN_GAPS lists what JSON Schema cannot say, each with a message proving the gap is only that.
"""
import copy

import pytest
from openapi_schema_validator import OAS31Validator

from server import create_app
from shared.errors import JobDescriptionError
from shared.events import parse_events
from shared.jobdesc import parse_job_description
from shared.schema import SchemaError

from ..factories import job_description_dict


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    app = create_app({"DB": f"sqlite:///{tmp_path_factory.mktemp('parity')}/sbk.db"})
    with app.test_client() as client:
        return client.get("/api/v1/openapi.json").json


def validator(spec, schema):
    """A validator of `schema`, its $refs resolved in the served document."""
    return OAS31Validator({**schema, "components": spec["components"]})


def changed(**sections):
    """The factory's description with `sections` merged (one level); a value None deletes the key."""
    desc = job_description_dict()
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(desc.get(name), dict):
            desc[name].update(value)
            desc[name] = {k: v for k, v in desc[name].items() if v is not DROP}
        elif value is DROP:
            desc.pop(name, None)
        else:
            desc[name] = value
    return desc


DROP = object()
SHARED_AREA = {"path": "/cvmfs/superbvo.org/FastSim/V0.2.5", "lfn": DROP, "adler32": DROP}
STEPS = [{"name": "sim", "module": "fastsim"}, {"name": "merge", "module": "merge", "args": ["-o", "x"]}]

DESCRIPTIONS = [
    ("the contract's example", changed()),
    ("no log, limits or container", changed(log=DROP, limits=DROP)),
    ("a null request and container", changed(job={"request": None}, container=None)),
    ("a container image", changed(container={"image": "/images/sl7.sif"})),
    ("schema 2", changed(schema=2)),
    ("no schema", changed(schema=DROP)),
    ("a string runnum", changed(job={"runnum": "1"})),
    ("a boolean events", changed(job={"events": True})),
    ("too many events", changed(job={"events": 10 ** 30})),
    ("attempt 0", changed(job={"attempt": 0})),
    ("attempt 100000", changed(job={"attempt": 100000})),
    ("attempt 100001", changed(job={"attempt": 100001})),
    ("a session name with a space", changed(job={"session": "Fast Sim"})),
    ("a session name ending in a newline", changed(job={"session": "FastSim\n"})),
    ("a 65-character session name", changed(job={"session": "F" * 65})),
    ("a 64-character session name", changed(job={"session": "F" * 64})),
    ("an extra job field", changed(job={"extra": 2})),
    ("a job that is a string", changed(job="nope")),
    ("no server", changed(server=DROP)),
    ("an ftp server", changed(server={"url": "ftp://x"})),
    ("a server URL with a space", changed(server={"url": "http://a b"})),
    ("an empty token", changed(server={"token": ""})),
    ("a tiny heartbeat", changed(server={"heartbeat_s": 0.01})),
    ("an LFN climbing out", changed(software={"lfn": "lfn:/grid/../etc/passwd.tgz"})),
    ("an LFN with a dot segment", changed(software={"lfn": "lfn:/grid/./x.tgz"})),
    ("an LFN with an empty segment", changed(software={"lfn": "lfn:/grid//x.tgz"})),
    ("a dotted LFN name", changed(software={"lfn": "lfn:/grid/.x/..y.tgz"})),
    ("a path for an LFN", changed(software={"lfn": "/grid/x.tgz"})),
    ("a zip release", changed(software={"lfn": "lfn:/grid/x.zip"})),
    ("a .tar.gz release", changed(software={"lfn": "lfn:/grid/x.tar.gz"})),
    ("no adler32", changed(software={"adler32": DROP})),
    ("an upper-case adler32", changed(software={"adler32": "1A2B3C4D"})),
    ("an exe climbing out", changed(software={"exe": "../../bin/sh"})),
    ("an absolute workdir", changed(software={"workdir": "/abs"})),
    ("a shared area", changed(software=SHARED_AREA)),
    ("a shared area with a null lfn", changed(software=dict(SHARED_AREA, lfn=None, adler32=None))),
    ("a shared area and a tarball", changed(software=dict(SHARED_AREA, lfn="lfn:/grid/x.tgz"))),
    ("a relative shared area", changed(software=dict(SHARED_AREA, path="cvmfs/x"))),
    ("a shared area climbing out", changed(software=dict(SHARED_AREA, path="/cvmfs/../etc"))),
    ("a shared area ending in ..", changed(software=dict(SHARED_AREA, path="/cvmfs/.."))),
    ("a negative revision", changed(software={"revision": -1})),
    ("no payload module", changed(payload={"module": DROP})),
    ("a null payload module", changed(payload={"module": None})),
    ("payload args", changed(payload={"args": ["-n", ""]})),
    ("payload args with a number", changed(payload={"args": [1]})),
    ("steps", changed(payload={"module": DROP, "steps": STEPS})),
    ("null steps", changed(payload={"steps": None})),
    ("steps beside a module", changed(payload={"steps": STEPS})),
    ("steps beside args", changed(payload={"module": DROP, "args": [], "steps": STEPS})),
    ("no steps", changed(payload={"module": DROP, "steps": []})),
    ("21 steps", changed(payload={"module": DROP, "steps": [{"name": f"s{n}", "module": "m"} for n in range(21)]})),
    ("a step without a module", changed(payload={"module": DROP, "steps": [{"name": "sim"}]})),
    ("a step with an extra field", changed(payload={"module": DROP, "steps": [dict(STEPS[0], x=1)]})),
    ("steps as an object", changed(payload={"module": DROP, "steps": {"name": "sim"}})),
    ("an env name starting with a digit", changed(payload={"env": {"1BAD": "x"}})),
    ("an env name with a dash", changed(payload={"env": {"A-B": "x"}})),
    ("an env name _", changed(payload={"env": {"_": "x"}})),
    ("a number in env", changed(payload={"env": {"A": 1}})),
    ("an empty parameter name", changed(payload={"parameters": {"": "x"}})),
    ("an empty parameter value", changed(payload={"parameters": {"A": ""}})),
    ("a NUL in a parameter", changed(payload={"parameters": {"A": "x\x00"}})),
    ("an unknown input mode", changed(input={"mode": "SOME"})),
    ("mode FILE with no path", changed(input={"mode": "FILE", "paths": []})),
    ("mode FILE with two paths", changed(input={"mode": "FILE", "paths": ["lfn:/a", "lfn:/b"]})),
    ("mode NONE with a path", changed(input={"mode": "NONE", "paths": ["lfn:/a"]})),
    ("mode NONE without paths", changed(input={"mode": "NONE", "paths": DROP})),
    ("mode LIST without paths", changed(input={"mode": "LIST", "paths": DROP})),
    ("mode LIST", changed(input={"mode": "LIST", "paths": ["lfn:/a/x", "lfn:/b/y", "lfn:/"]})),
    ("a LIST path climbing out", changed(input={"mode": "LIST", "paths": ["lfn:/a", "lfn:/b/../../c"]})),
    ("a null input path list", changed(input={"paths": None})),
    ("an output pattern with a slash", changed(output={"patterns": ["../*.root"]})),
    ("no output pattern", changed(output={"patterns": []})),
    ("default output patterns", changed(output={"patterns": DROP, "sites": DROP})),
    ("an output site with a space", changed(output={"sites": ["INFN T1"]})),
    ("101 output sites", changed(output={"sites": [f"S{n}" for n in range(101)]})),
    ("a trailing-slash output dir", changed(output={"lfn_dir": "lfn:/grid/out/"})),
    ("no output dir", changed(output={"lfn_dir": DROP})),
    ("a null log", changed(log=None)),
    ("log to_db as a string", changed(log={"to_db": "yes"})),
    ("a negative max_wct_s", changed(limits={"max_wct_s": -5})),
    ("an infinite max_wct_s", changed(limits={"max_wct_s": float("inf")})),
    ("0 cores", changed(limits={"cores": 0})),
    ("1024 cores", changed(limits={"cores": 1024})),
    ("a grace of an hour and a second", changed(limits={"grace_s": 3601})),
    ("an unknown limit", changed(limits={"wall": 1})),
    ("a relative container image", changed(container={"image": "images/sl7.sif"})),
    ("a container image climbing out", changed(container={"image": "/images/../x"})),
    ("a container without an image", changed(container={})),
    ("an unknown section", changed(surprise=1)),
    ("schema true (equal to 1 in Python)", changed(schema=True)),
    ("a list", [job_description_dict()]),
]

# What JSON Schema cannot say: (what, a message the document and shared/ judge differently, shared's verdict)
KNOWN_GAPS_DESCRIPTIONS = [
    ("1.0 is an integer to JSON Schema", changed(job={"runnum": 1.0}), False),
    ("step names are unique in a job", changed(payload={"module": DROP, "steps": [STEPS[0], STEPS[0]]}), False),
    ("a relative path may go down and up again (the document refuses any '..')",
     changed(software={"exe": "bin/../bin/PacProduction"}), True),
    ("a LIST job's inputs have distinct file names", changed(input={"mode": "LIST", "paths": ["lfn:/a/x", "lfn:/b/x"]}),
     False),
    ("a lone surrogate is a string", changed(server={"token": "x\ud800"}), False),
]


def ok(parse, message):
    try:
        parse(copy.deepcopy(message))
    except (JobDescriptionError, SchemaError):
        return False
    return True


@pytest.mark.parametrize("what, description", DESCRIPTIONS, ids=[d[0] for d in DESCRIPTIONS])
def test_the_documented_job_description_judges_as_shared_does(spec, what, description):
    documented = validator(spec, {"$ref": "#/components/schemas/JobDescription"}).is_valid(description)
    assert documented == ok(parse_job_description, description), what


def test_the_corpus_has_good_and_bad_descriptions_and_the_server_serves_a_good_one(spec):
    verdicts = [ok(parse_job_description, d) for _, d in DESCRIPTIONS]
    assert verdicts.count(True) >= 15 and verdicts.count(False) >= 50
    described = spec["paths"]["/jobs/{job_id}/description"]["get"]["responses"]["200"]
    assert described["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobDescription"}


@pytest.mark.parametrize("what, description, shared_verdict", KNOWN_GAPS_DESCRIPTIONS,
                         ids=[g[0] for g in KNOWN_GAPS_DESCRIPTIONS])
def test_the_known_gaps_are_what_they_say(spec, what, description, shared_verdict):
    documented = validator(spec, {"$ref": "#/components/schemas/JobDescription"}).is_valid(description)
    assert ok(parse_job_description, description) == shared_verdict
    assert documented != shared_verdict, f"no longer a gap: {what}"


def event(**kw):
    """A running step event, changed by `kw` (a value DROP deletes the key)."""
    base = {"attempt": 1, "seq": 1, "time": 1.7e9, "status": "running", "step": "RUNNING-02"}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not DROP}


FINAL = dict(status="done", kind="final", code=0)
EVENTS = [
    ("a running step", event()),
    ("a heartbeat with metrics", event(kind="heartbeat", metrics={"rss_mb": 12.5, "cpu": -1}, step=None)),
    ("an info with a tail and a message", event(kind="info", tail=["a", ""], message="")),
    ("a final", event(**FINAL, report={"events": 3})),
    ("a final failure", event(status="failed", kind="final", code=101)),
    ("an acknowledgement", event(ack="kill")),
    ("a null ack, report and code", event(ack=None, report=None, code=None)),
    ("empty metrics", event(metrics={})),
    ("metrics null", event(metrics=None)),
    ("metrics false", event(metrics=False)),
    ("metrics 0", event(metrics=0)),
    ("metrics an empty list", event(metrics=[])),
    ("metrics a list", event(metrics=[1])),
    ("metrics true", event(metrics=True)),
    ("a metric as a string", event(metrics={"a": "1"})),
    ("a metric as a boolean", event(metrics={"a": True})),
    ("a huge metric", event(metrics={"a": 1e19})),
    ("101 metrics", event(metrics={f"m{n}": 1 for n in range(101)})),
    ("a list of two", [event(), event(seq=2)]),
    ("an empty list", []),
    ("1001 events", [event(seq=n + 1) for n in range(1001)]),
    ("1000 events", [event(seq=n + 1) for n in range(1000)]),
    ("a list holding a bad one", [event(), event(seq=0)]),
    ("a string", "running"),
    ("a list holding a string", [event(), "x"]),
    ("no attempt", event(attempt=DROP)),
    ("no time", event(time=DROP)),
    ("seq 0", event(seq=0)),
    ("attempt 100001", event(attempt=100001)),
    ("a string attempt", event(attempt="1")),
    ("a boolean seq", event(seq=True)),
    ("a negative time", event(time=-1)),
    ("time 1e12", event(time=1e12)),
    ("an unknown status", event(status="queued")),
    ("status prepared", event(status="prepared")),
    ("an unknown kind", event(kind="chat")),
    ("a null kind", event(kind=None)),
    ("a final kind on running", event(kind="final")),
    ("a final status with kind step", event(**dict(FINAL, kind="step"))),
    ("a final status without a kind", event(**dict(FINAL, kind=DROP))),
    ("a final status without a code", event(**dict(FINAL, code=DROP))),
    ("a final status with a null code", event(**dict(FINAL, code=None))),
    ("an unknown code", event(**dict(FINAL, code=998))),
    ("a code on a running event", event(code=101)),
    ("an unknown step", event(step="RUNNING-08")),
    ("a step as a number", event(step=1)),
    ("a 4097-character message", event(message="x" * 4097)),
    ("a null message", event(message=None)),
    ("a NUL in the message", event(message="a\x00b")),
    ("101 tail lines", event(tail=["x"] * 101)),
    ("a tail line as a number", event(tail=[1])),
    ("a report that is a list", event(**FINAL, report=[1])),
    ("an unknown ack", event(ack="stop")),
    ("an unknown field", event(surprise=1)),
]

KNOWN_GAPS_EVENTS = [
    ("1.0 is an integer to JSON Schema", event(seq=1.0), False),
    ("a report is at most 256 KiB", event(**FINAL, report={"x": "y" * (300 * 1024)}), False),
]


def events_validator(spec):
    body = spec["paths"]["/jobs/{job_id}/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return validator(spec, body)


@pytest.mark.parametrize("what, body", EVENTS, ids=[e[0] for e in EVENTS])
def test_the_documented_events_body_judges_as_shared_does(spec, what, body):
    assert events_validator(spec).is_valid(body) == ok(parse_events, body), what


def test_the_events_corpus_has_good_and_bad_bodies():
    verdicts = [ok(parse_events, body) for _, body in EVENTS]
    assert verdicts.count(True) >= 10 and verdicts.count(False) >= 30


@pytest.mark.parametrize("what, body, shared_verdict", KNOWN_GAPS_EVENTS, ids=[g[0] for g in KNOWN_GAPS_EVENTS])
def test_the_known_event_gaps_are_what_they_say(spec, what, body, shared_verdict):
    assert ok(parse_events, body) == shared_verdict
    assert events_validator(spec).is_valid(body) != shared_verdict, f"no longer a gap: {what}"
