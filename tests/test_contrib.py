"""contrib/: the systemd unit verified and its command served as systemd would run it, the cron
lines run against that server, and gunicorn started for real with the example config (the schema
made by its master, the master's reaper timing out a silent job, every log line JSON)."""
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from tests.infra.postgres import free_port
from tests.server.conftest import API, Api, event, make_production, started_job
from tests.test_gunicorn_metrics import ROOT, serving, server_env
from tests.waiting import poll

CONTRIB = ROOT / "contrib"
VENV_BIN = Path(sys.executable).parent
CRON_FIELD = re.compile(r"(\*|\d+(-\d+)?)(/\d+)?")
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


class HttpClient:
    """What tests/server/conftest.py's Api needs of Flask's test client, over real HTTP."""

    def __init__(self, base):
        self.base = base

    def open(self, path, method, headers=None, json=None, **kw):
        r = requests.request(method, self.base + path, headers=headers, json=json, timeout=30, **kw)
        return SimpleNamespace(status_code=r.status_code, json=r.json() if r.content else None)


def read_unit(text):
    """A systemd unit as {section: [(key, value), ...]} (repeated keys kept in order)."""
    sections, current = {}, None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None and re.fullmatch(r"[A-Za-z]+", key), f"line {number}: {line}"
        current.append((key, value))
    return sections


def read_env_file(text):
    """NAME=value lines (what both EnvironmentFile= and sh's `.` read the same way)."""
    env = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name) and not re.search(r"[\s'\"$`\\]", value), line
            env[name] = value
    return env


def read_cron(text):
    """An /etc/cron.d file: (its variables, [(five time fields, user, command), ...])."""
    variables, jobs = {}, []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"[A-Z_]+=", line):
            name, _, value = line.partition("=")
            variables[name] = value
            continue
        fields = line.split(None, 6)
        assert len(fields) == 7, line
        for field, (lo, hi) in zip(fields[:5], CRON_RANGES):
            for part in field.split(","):
                assert CRON_FIELD.fullmatch(part), (line, part)
                numbers = [int(n) for n in re.findall(r"\d+", part.split("/")[0])]
                assert all(lo <= n <= hi for n in numbers), (line, part)
        jobs.append((fields[:5], fields[5], fields[6]))
    return variables, jobs


def test_env_file_unit_and_cron_parse():
    env = read_env_file((CONTRIB / "sbk.env").read_text())
    assert {"SBK_DB", "SBK_PUBLIC_URL", "SBK_LOG_FORMAT"} <= set(env) and env["SBK_LOG_FORMAT"] == "json"
    unit = read_unit((CONTRIB / "sbk.service").read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    service = dict(unit["Service"])
    assert shlex.split(service["ExecStart"])[1] == "serve" and service["EnvironmentFile"] == "/etc/sbk/sbk.env"
    variables, jobs = read_cron((CONTRIB / "sbk.cron").read_text())
    assert variables["SHELL"] == "/bin/sh"
    assert sorted(shlex.split(command.split(">>")[0])[-1] for _, _, command in jobs) == ["cleanup", "poll", "reap"]
    assert {user for _, user, _ in jobs} == {service["User"]}   # the cron runs as the service does


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze here: test_env_file_unit_and_cron_parse read the unit")
    text = (CONTRIB / "sbk.service").read_text().replace("/opt/sbk/.venv/bin/", f"{VENV_BIN}/")

    def verify(unit_text, name="sbk.service"):
        (tmp_path / name).write_text(unit_text)
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=60)
        return done.returncode, (done.stdout + done.stderr).strip()
    assert verify(text) == (0, "")
    # the check sees a mistake: a misspelt setting is only a warning, so the test reads the output too
    code, said = verify(text.replace("KillMode=mixed", "KillMode=mixd"), "typo.service")
    assert "mixd" in said or code != 0


def deployed(tmp_path, base_url):
    """The paths of a deployment (/etc/sbk, /var/lib/sbk, /var/log/sbk, /run/sbk) under tmp_path, and
    the test's settings in its copy of contrib/sbk.env."""
    places = {"/etc/sbk": tmp_path / "etc", "/var/lib/sbk": tmp_path / "lib", "/var/log/sbk": tmp_path / "log",
              "/run/sbk": tmp_path / "run"}
    for path in places.values():
        path.mkdir()
    env = read_env_file((CONTRIB / "sbk.env").read_text())
    env.update(SBK_DB=f"sqlite:///{tmp_path}/sbk.db", SBK_PUBLIC_URL=base_url, SBK_DATA_DIR=str(places["/var/lib/sbk"]))
    (places["/etc/sbk"] / "sbk.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    places["/opt/sbk/.venv/bin/"] = f"{VENV_BIN}/"
    return places


def here(text, places):
    """`text` with the deployment's paths moved under the test's directory."""
    for path, moved in places.items():
        text = text.replace(path, str(moved))
    assert not re.search(r"(?<![^\s=])/(etc|var|run|opt)/", text), text   # no path of the deployment left
    return text


def test_the_unit_serves_and_the_cron_lines_run_against_it(tmp_path):
    port = free_port()
    places = deployed(tmp_path, f"http://127.0.0.1:{port}")
    service = read_unit((CONTRIB / "sbk.service").read_text())["Service"]
    # as systemd runs it: the environment file, then Environment= lines, in the working directory
    env = server_env(tmp_path)
    env.update(read_env_file(Path(here(dict(service)["EnvironmentFile"], places)).read_text()))
    env.update(here(value, places).split("=", 1) for key, value in service if key == "Environment")
    argv = shlex.split(here(dict(service)["ExecStart"], places).replace("--port 8080", f"--port {port}"))
    assert argv[0] == str(VENV_BIN / "sbk") and f"--port {port}" in " ".join(argv)
    token = subprocess.run([argv[0], "user", "add", "dev", "--groups", "Developer"], env=env, capture_output=True,
                           text=True, timeout=60, check=True).stdout.strip()
    stop_within = float(dict(service)["TimeoutStopSec"])
    with serving(argv, env, port, tmp_path, cwd=here(dict(service)["WorkingDirectory"], places)) as served:
        api = Api(HttpClient(served.base), token)
        production = make_production(api)
        job_id, job_token = started_job(api, production)
        assert api.as_(job_token).post(f"/jobs/{job_id}/events", json=[event(1)]).status_code == 200
        assert requests.get(served.base + "/metrics", timeout=30).status_code == 200
        assert list((places["/run/sbk"] / "metrics").glob("counter_*.db"))   # the workers' counts, summed

        variables, jobs = read_cron((CONTRIB / "sbk.cron").read_text())
        log = places["/var/log/sbk"] / "cron.log"
        said = {}
        for _, _, command in jobs:
            duty = shlex.split(command.split(">>")[0])[-1]
            # cron's environment: the file's variables, HOME; the test's job is silent long enough
            cron_env = {**variables, "HOME": str(tmp_path), "LOGNAME": "sbk", "SBK_HEARTBEAT_MULTIPLE": "0.0001"}
            start = log.stat().st_size if log.exists() else 0
            done = subprocess.run([variables["SHELL"], "-c", here(command, places)], env=cron_env, timeout=120,
                                  capture_output=True, text=True)
            said[duty] = log.read_text()[start:]
            assert done.returncode == 0 and done.stdout == done.stderr == "", (duty, done, said[duty])
        assert f"timed out 1 job(s): {job_id}" in said["reap"], said
        job = api.get(f"/jobs/{job_id}").json
        assert (job["status"], job["error_code"]) == ("timeout", 100)
        assert "sys-failed 0 job(s)" in said["poll"] and "follow-up stage job(s)" in said["poll"], said
        assert "removed 0 file(s), kept 0 (registered), 0 failed; 0 waiting" in said["cleanup"], said
        started = time.monotonic()
    assert served.proc.returncode == 0 and time.monotonic() - started < stop_within   # TERM to the master only
    entries = [json.loads(line) for line in served.stderr().splitlines()]   # SBK_LOG_FORMAT=json of sbk.env
    assert any(e["logger"] == "sbk.access" and e["route"] == f"{API}/jobs/<id:job_id>/events" for e in entries)


def test_gunicorn_with_the_example_config(tmp_path):
    """`gunicorn -c contrib/gunicorn.conf.py 'server:create_app()'` on a database nobody made: the
    master makes the schema before its workers start, its reaper times out a silent job, every log
    line is JSON, the metrics go to $RUNTIME_DIRECTORY/metrics."""
    port = free_port()
    env = server_env(tmp_path, SBK_LOG_FORMAT="json", SBK_REAP_INTERVAL_S="0.3", SBK_HEARTBEAT_MULTIPLE="0.0001",
                     RUNTIME_DIRECTORY=str(tmp_path / "run"))
    argv = [str(VENV_BIN / "gunicorn"), "-c", str(CONTRIB / "gunicorn.conf.py"), "-b", f"127.0.0.1:{port}",
            "server:create_app()"]
    with serving(argv, env, port, tmp_path) as served:
        poll(lambda: len(served.workers()) == 2, 30, what="the config's two workers")
        token = subprocess.run([sys.executable, "-m", "server.cli", "user", "add", "dev", "--groups", "Developer"],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        api = Api(HttpClient(served.base), token)
        production = make_production(api)
        job_id, job_token = started_job(api, production)
        assert api.as_(job_token).post(f"/jobs/{job_id}/events", json=[event(1)]).status_code == 200
        job = poll(lambda: (lambda j: j if j["status"] != "running" else None)(api.get(f"/jobs/{job_id}").json),
                   30, what="the master's reaper")
        assert (job["status"], job["error_code"]) == ("timeout", 100)
        requests.get(served.base + "/metrics", timeout=30)
        assert list((tmp_path / "run" / "metrics").glob("counter_*.db"))
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(timeout=60)
    assert served.proc.returncode == 0
    entries = [json.loads(line) for line in served.stderr().splitlines()]
    messages = [e["message"] for e in entries]
    assert any(m.startswith("Listening at") for m in messages) and any("Booting worker" in m for m in messages)
    assert any(e["logger"] == "sbk.reaper" and "timed out 1 silent job(s)" in e["message"] for e in entries)
    # the schema made once, by the master before any worker booted (the workers leave it alone)
    first = [n for n, m in enumerate(messages) if m.startswith("applying schema migration 1 ")]
    assert len(first) == 1 and first[0] < min(n for n, m in enumerate(messages) if "Booting worker" in m)
