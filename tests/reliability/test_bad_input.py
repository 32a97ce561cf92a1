"""Bad input: the served API under schemathesis and hostile requests; the wrapper under a corpus
of broken job descriptions, site configs and hostile software tarballs (real `severus run`)."""
import io
import json
import subprocess
import tarfile
import zlib

import pytest
import requests
from hypothesis import HealthCheck, given, settings

from server import demo as d

from .conftest import ROOT, run_wrapper, wrapper_command

try:
    import schemathesis
except ImportError:   # only the fuzz test needs it; the hostile-input tests below run without
    schemathesis = None
pytestmark = pytest.mark.timeout(900)

if schemathesis is not None:
    @schemathesis.serializer("application/gzip")
    def gzip_bytes(ctx, value):
        return value if isinstance(value, bytes) else str(value).encode()


@pytest.mark.skipif(schemathesis is None, reason="pip install schemathesis into .venv")
def test_schemathesis_on_the_served_spec_finds_no_500_and_no_hang(world, full, figures):
    schema = schemathesis.openapi.from_url(world.server.url + "/api/v1/openapi.json")
    # A Developer of its own: the fuzz calls DELETE /tokens/{id} and PATCH /users/{name} with any
    # values, which may revoke or demote any user's token, the world's own included (re-issued below).
    headers = {"Authorization": f"Bearer {world.server.add_user('rel-fuzz', 'Developer')}"}
    examples = 40 if full else 4
    failures, calls, operations = [], [0], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            calls[0] += 1
            try:
                response = case.call(base_url=world.server.url + "/api/v1", headers=headers, timeout=10)
            except requests.Timeout:
                failures.append((case.method, case.formatted_path, "no answer in 10 s"))
                return
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, case.body, response.text[:200]))

        check()
    world.server.token = world.server.add_user("rel-dev", "Developer")   # whatever the fuzz revoked
    assert not failures, failures[:5]
    assert "Traceback" not in world.server.logs()
    figures("API fuzz (served spec)", f"schemathesis, {examples} examples per operation",
            "no 5xx, no hang, no traceback", f"{operations} operations, {calls[0]} requests")


def test_hostile_requests_are_refused(world, figures):
    base = world.server.url + "/api/v1"
    job_a, job_b = world.prepare("REL_badreq", runs=2)
    token_a = world.description(job_a)["server"]["token"]
    as_a = {"Authorization": f"Bearer {token_a}"}
    huge = b'{"attempt": 1, "seq": 1, "time": 1, "status": "running", "message": "' + b"x" * (5 << 20) + b'"}'
    r = requests.post(f"{base}/jobs/{job_a}/events", data=huge,
                      headers={**as_a, "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and "error" in r.json(), r.text[:200]
    r = requests.put(f"{base}/jobs/{job_a}/log?attempt=1", data=b"\0" * (9 << 20),
                     headers={**as_a, "Content-Type": "application/gzip"}, timeout=30)
    assert r.status_code == 413, r.text[:200]
    event = {"attempt": 1, "seq": 1, "time": 1.0, "status": "running", "kind": "heartbeat"}
    r = requests.post(f"{base}/jobs/{job_b}/events", json=event, headers=as_a, timeout=30)
    assert r.status_code == 403 and r.json()["error"], r.text
    shift = world.server.add_user("rel-shift-only", "Shift")
    r = requests.post(f"{base}/productions", json={"name": "REL_nope", "session": "FastSim",
                                                   "version": "V0.2.5", "revision": 311},
                      headers={"Authorization": f"Bearer {shift}"}, timeout=30)
    assert r.status_code == 403 and r.json()["error"], r.text
    with pytest.raises(Exception):
        world.api.call("GET", "/productions/REL_nope")
    figures("hostile API requests", "5 MiB events body, 9 MiB log, job token on another job, "
            "Shift creating a production", "413, 413, 403, 403; nothing stored", "")


# ---------------------------------------------------------------------- the wrapper's corpus

def _set(obj, path, value):
    obj = json.loads(json.dumps(obj))
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


def broken_descriptions(desc):
    """(name, bytes): each a job description the wrapper must refuse with 001."""
    nested = "[" * 100000 + "]" * 100000
    cases = {
        "job not an object": _set(desc, ["job"], "x"),
        "id a string": _set(desc, ["job", "id"], "seven"),
        "runnum missing": _set(desc, ["job", "runnum"], KeyError),
        "attempt huge": _set(desc, ["job", "attempt"], 10 ** 400),
        "events float huge": _set(desc, ["payload", "events"], 1e308),
        "server url missing": _set(desc, ["server", "url"], KeyError),
        "heartbeat negative": _set(desc, ["server", "heartbeat_s"], -5),
        "output lfn with ..": _set(desc, ["output", "lfn_dir"], desc["output"]["lfn_dir"] + "/../../etc"),
        "software lfn with ..": _set(desc, ["software", "lfn"], "lfn:/grid/../../etc/passwd"),
        "exe escaping the root": _set(desc, ["software", "exe"], "../../bin/sh"),
        "workdir absolute": _set(desc, ["software", "workdir"], "/etc"),
        "output pattern escaping": _set(desc, ["output", "patterns"], ["../*.root"]),
        "NUL in a pattern": _set(desc, ["output", "patterns"], ["a\0b.root"]),
        "NUL in env": _set(desc, ["software", "env"], {"A\0B": "x"}),
        "limits a list": _set(desc, ["limits"], [1, 2]),
    }
    out = [(name, json.dumps(value).encode()) for name, value in cases.items()]
    out += [("non-UTF-8", json.dumps(desc).encode().replace(b'"job"', b'"j\xff\xfeob"')),
            ("deeply nested JSON", nested.encode()),
            ("not JSON", b"{job: 1"),
            ("empty file", b""),
            ("a JSON list", b"[]")]
    return out


def broken_site_configs(se_url):
    good = (f'name = "{d.SITE}"\n[se]\nlfn_prefix = "{d.LFN_PREFIX}"\nurls = ["{se_url}"]\n')
    return [
        ("not TOML", b"name = \n[se"),
        ("non-UTF-8", good.encode().replace(b"name", b"n\xffame", 1)),
        ("NUL byte", good.encode().replace(b"lfn_prefix", b"lfn\0prefix")),
        ("name missing", good.replace(f'name = "{d.SITE}"\n', "").encode()),
        ("name with a slash", good.replace(d.SITE, "../etc").encode()),
        ("prefix with ..", good.replace(d.LFN_PREFIX, "/grid/../etc").encode()),
        ("urls a string", good.replace(f'["{se_url}"]', f'"{se_url}"').encode()),
        ("unknown key", (good + "colour = 1\n").encode()),
        ("huge timeout", (good + "[transfer]\ntimeout_base_s = 1e400\n").encode()),
        ("negative scratch", (good + "[scratch]\nmin_free_gb = -1\n").encode()),
        ("retries a bool", (good + "[transfer]\nretries = true\n").encode()),
        ("fallback not names", (good + '[stageout]\nfallback_sites = ["../x", 3]\n').encode()),
        ("deeply nested", (good + "x = " + "[" * 5000 + "]" * 5000 + "\n").encode()),
    ]


def test_broken_job_descriptions_and_site_configs_get_one_line_and_their_code(world, tmp_path, figures):
    (job_id,) = world.prepare("REL_corpus")
    desc = world.description(job_id)
    bad = []
    runs = 0
    for kind, corpus, code, cfg in (
            ("job", broken_descriptions(desc), 1, None),
            ("site", broken_site_configs(world.se.root_url), 2, None)):
        for n, (name, blob) in enumerate(corpus):
            case = tmp_path / f"{kind}{n}"
            case.mkdir()
            job_file, site_file = case / "job.json", case / "site.toml"
            job_file.write_bytes(blob if kind == "job" else json.dumps(desc).encode())
            site_file.write_bytes(blob if kind == "site" else world.site_config.read_bytes())
            proc = subprocess.run(wrapper_command(job_file, site_file, case / "work", "--final-deadline", "10"),
                                  cwd=ROOT, capture_output=True, timeout=120)
            runs += 1
            err = proc.stderr.decode("utf-8", "replace")
            lines = err.strip().splitlines()
            if proc.returncode != code or len(lines) != 1 or "Traceback" in err \
                    or not lines[0].startswith(f"E{code:03d} "):
                bad.append((kind, name, proc.returncode, err[-300:]))
    figures("wrapper input corpus", f"{runs} broken job descriptions / site configs",
            f"{runs - len(bad)}/{runs}: one stderr line, 001 or 002, no traceback",
            "; ".join(f"{k}:{n} -> {c}" for k, n, c, _ in bad)[:200])
    assert not bad, bad


def hostile_tarball(kind):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tar:
        for name in ("FastSim", "FastSim/V0.2.5", "bin"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        exe = b"#!/bin/sh\nexit 0\n"
        info = tarfile.TarInfo("bin/PacProduction")
        info.size, info.mode = len(exe), 0o755
        tar.addfile(info, io.BytesIO(exe))
        if kind == "bomb":
            info = tarfile.TarInfo("FastSim/zeros.dat")
            info.size = 300 << 20
            tar.addfile(info, _Zeros(info.size))
        elif kind == "symlink":
            info = tarfile.TarInfo("FastSim/escape")
            info.type, info.linkname = tarfile.SYMTYPE, "../../../../../etc/passwd"
            tar.addfile(info)
        else:
            info = tarfile.TarInfo("FastSim/hard")
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
            tar.addfile(info)
    return buf.getvalue()


class _Zeros(io.RawIOBase):
    def __init__(self, size):
        self.left = size

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n

    def readable(self):
        return True


@pytest.mark.parametrize("kind", ["bomb", "symlink", "hardlink"])
def test_hostile_software_tarballs_are_refused_with_013(world, tmp_path, kind, figures):
    from wrapper.transfer import make_transfer
    blob = hostile_tarball(kind)
    adler32 = f"{zlib.adler32(blob) & 0xffffffff:08x}"
    lfn = f"lfn:{d.LFN_PREFIX}/production/FastSim/hostile/{kind}-{adler32}.tgz"
    path = tmp_path / "release.tgz"
    path.write_bytes(blob)
    surl = world.se.root_url + lfn[len(f"lfn:{d.LFN_PREFIX}"):]
    transfer = make_transfer(surl)
    transfer.mkdir(surl.rsplit("/", 1)[0])
    transfer.copy_out(str(path), surl, timeout=60, adler32=adler32)
    world.api.call("POST", "/catalog/replicas", json={"lfn": lfn, "site": d.SITE, "surl": surl,
                                                      "size": len(blob), "adler32": adler32})
    (job_id,) = world.prepare(f"REL_tar_{kind}", software={"lfn": lfn, "adler32": adler32})
    code, stderr = run_wrapper(tmp_path / "job", world.description(job_id), world.site_config)
    assert code == 13 and len(stderr.strip().splitlines()) == 1, stderr
    job = world.job(job_id)
    assert (job["status"], job["error_code"]) == ("sys-failed", 13)
    unpacked = tmp_path / "job" / "work" / "software"
    assert not (unpacked / "FastSim" / "zeros.dat").exists()
    assert not (unpacked / "FastSim" / "escape").is_symlink()
    figures(f"hostile tarball: {kind}", f"{len(blob)} B tarball on the SE" +
            (" unpacking to 300 MiB" if kind == "bomb" else ", link out of the unpack root"),
            "013 before anything escaped; job sys-failed on the server", stderr.strip()[-70:])
